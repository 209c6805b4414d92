"""The server API in process: a node that is built but not started (no NSQ,
no port), its ServerApi called as the HTTP handler calls it. What is between
processes (two nodes, cent, the control topic) is tests/test_server_api.py."""
from __future__ import annotations

import asyncio
import logging

import pytest
import ujson

from gateway.config import Settings
from gateway.node import Node
from gateway.ops.server_api import MAX_BATCH, BadRequest, ServerApi
from tests.stack import SECRET

LONE = "\ud800"       # a JSON \ud800 escape decodes into a string no UTF-8 encoder takes
HUGE = 10**400         # an integer no float, and no int64, holds


def make_api(**overrides) -> ServerApi:
    options = dict(jwt_secret=SECRET, nsqd_tcp_address=["127.0.0.1:1"], nsqd_http_address="http://127.0.0.1:1",
                   node_name="unit", api_key="key", presence=["room:*"])
    options.update(overrides)
    return ServerApi(Node(Settings(**options)))


async def interleaved(work) -> tuple[object, int]:
    """Run ``work`` (a coroutine) beside a task that counts its turns of the
    event loop; returns what ``work`` returned and how many turns the other
    task had before ``work`` was done."""
    turns = 0
    done = False

    async def other() -> None:
        nonlocal turns
        while not done:
            turns += 1
            await asyncio.sleep(0)

    task = asyncio.ensure_future(other())
    await asyncio.sleep(0)   # the other task has started
    start = turns
    try:
        result = await work
    finally:
        done = True
        await task
    return result, turns - start


def test_a_batch_without_io_gives_the_loop_back_while_it_runs():
    api = make_api()
    commands = [{"presence_stats": {"channel": f"room:{n}"}} for n in range(MAX_BATCH)]

    reply, turns = asyncio.run(interleaved(api.batch({"commands": commands})))
    assert len(reply["replies"]) == MAX_BATCH
    assert reply["replies"][0] == {"presence_stats": {"num_clients": 0, "num_users": 0}}
    # Presence counters need no I/O: a batch that never yields holds every
    # other connection of the node until its last command.
    assert turns >= MAX_BATCH // 32, turns


def test_v4_commands_in_one_body_give_the_loop_back_while_they_run():
    api = make_api()
    body = b"\n".join(ujson.dumps({"id": n + 1, "method": "presence_stats", "params": {"channel": "room:a"}}).encode()
                      for n in range(MAX_BATCH))

    replies, turns = asyncio.run(interleaved(api.commands(body)))
    assert len(replies) == MAX_BATCH and ujson.loads(replies[-1])["id"] == MAX_BATCH
    assert turns >= MAX_BATCH // 32, turns


def test_a_batch_of_more_commands_than_the_bound_is_refused_before_any_runs():
    api = make_api()
    commands = [{"info": {}}] * (MAX_BATCH + 1)
    with pytest.raises(BadRequest, match=f"more than {MAX_BATCH}"):
        asyncio.run(api.batch({"commands": commands}))
    body = b"\n".join([b'{"method": "info", "params": {}}'] * (MAX_BATCH + 1))
    with pytest.raises(BadRequest, match=f"more than {MAX_BATCH}"):
        asyncio.run(api.commands(body))
    calls = api.node.metrics.api_calls.collect()[0].samples
    assert not [s for s in calls if s.labels["method"] == "info"]   # none of them ran


# --- bad input: a lone surrogate, an absurd number (see tests/test_bad_input.py) ---------------------

@pytest.mark.parametrize("method, params", [
    ("publish", {"channel": "c", "data": LONE}), ("publish", {"user": LONE, "data": 1}),
    ("publish", {"channel": "c", "data": 1, "idempotency_key": LONE}),
    ("broadcast", {"channels": ["a"], "data": {"k": LONE}}),
    ("subscribe", {"user": LONE, "channel": "c"}), ("subscribe", {"user": "u", "channel": "c", "info": LONE}),
    ("unsubscribe", {"user": "u", "channel": LONE}), ("disconnect", {"user": "u", "whitelist": [LONE]}),
    ("disconnect", {"user": "u", "disconnect": {"code": 4000, "reason": LONE}}),
    ("refresh", {"user": LONE}), ("refresh", {"user": "u", "expire_at": HUGE}),
    ("history", {"channel": "c", "limit": HUGE}), ("history_remove", {"channel": LONE}),
    ("channels", {"pattern": LONE}), ("presence_stats", {"channel": "room:" + LONE}),
    ("publish", {"channel": "c", "data": float("inf")}),
])
def test_requests_with_a_lone_surrogate_or_an_absurd_number_are_bad_requests(method, params, caplog):
    api = make_api()
    reply = asyncio.run(api.reply(method, params, lenient=True))      # in a batch, or /api commands
    assert reply == {"error": {"code": 107, "message": "bad request"}}
    with pytest.raises(BadRequest):                                    # /api/<method>: HTTP 400
        asyncio.run(api.reply(method, params))
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


@pytest.mark.parametrize("method", ["subscribe", "unsubscribe", "disconnect", "refresh"])
@pytest.mark.parametrize("pro", [{"all_users": True}, {"label_filter": {"op": "eq", "key": "k", "val": "v"}}])
def test_centrifugo_pro_connection_filters_are_refused_not_dropped(method, pro):
    # Dropped, all_users/label_filter would let the call reach other
    # connections than the caller picked (or none, with a 200).
    api = make_api()
    reply = asyncio.run(api.reply(method, {"user": "u1", "channel": "room:1", **pro}))
    assert reply["error"]["code"] == 108
    assert next(iter(pro)) in reply["error"]["message"]


def test_a_disconnect_whitelist_with_a_client_id_that_is_not_a_string_is_a_bad_request():
    # Dropping the entry would disconnect the very connection it meant to keep.
    api = make_api()
    with pytest.raises(BadRequest):
        asyncio.run(api.reply("disconnect", {"user": "u1", "whitelist": ["c1", 7]}))
    assert asyncio.run(api.reply("disconnect", {"user": "u1", "whitelist": ["c1", 7]}, lenient=True)) == \
        {"error": {"code": 107, "message": "bad request"}}
