"""A backend worker that reads pushgate's events (docs/events.md) and says
what it would do with each.

    PUSHGATE_EVENTS_TOPIC=pushgate-events make run                  # the stack, with events on
    .venv/bin/python examples/python/events.py                       # this worker, in another terminal
    .venv/bin/python examples/watch.py --user 42                     # a user comes online (Ctrl-C: offline)
    .venv/bin/python examples/python/publish.py 7 --receipt          # a receipted message to user 7

Reads nsqd at PUSHGATE_NSQD_TCP_ADDRESS (127.0.0.1:4150) on the channel
"example" of PUSHGATE_EVENTS_TOPIC (pushgate-events). Ctrl-C stops it
cleanly (CLS: the events in flight go back to nsqd).
"""
import logging
import os
import signal

from pushgate_bridge.events import EventReader

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
log = logging.getLogger("events")

reader = EventReader(os.environ.get("PUSHGATE_EVENTS_TOPIC", "pushgate-events"), "example",
                     nsqd_tcp_addresses=os.environ.get("PUSHGATE_NSQD_TCP_ADDRESS", "127.0.0.1:4150").split(","))


@reader.on("user_online")
def online(event):
    log.info("user %s is online (said by %s)", event["user"], event["node"])


@reader.on("user_offline")
def offline(event):
    log.info("user %s is offline: from now on, notify them another way", event["user"])


@reader.on("delivered")
def delivered(event):
    log.info("message %s reached %d connection(s) of user %s on %s", event["id"], event["connections"],
             event["user"], event["node"])


@reader.on("undelivered")
def undelivered(event):
    log.info("message %s reached no connection of user %s: this is where the backend mails them",
             event["id"], event["user"])


@reader.on("connect")
def connect(event):
    log.info("connect: user %r, client %s, over %s (%s)", event["user"], event["client"], event["transport"],
             event["protocol"])


@reader.on("disconnect")
def disconnect(event):
    log.info("disconnect: user %r after %.1f s (%s)", event["user"], event["duration"], event["reason"])


signal.signal(signal.SIGINT, lambda *_: reader.stop())
signal.signal(signal.SIGTERM, lambda *_: reader.stop())
reader.run()
