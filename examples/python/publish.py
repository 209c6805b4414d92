"""Publish to a user and to a channel from any Python backend.

    pip install ./bridges/python      # in your backend's environment (make's .venv has it)
    PUSHGATE_NSQD_HTTP_ADDRESS=127.0.0.1:4151 .venv/bin/python examples/python/publish.py 42
    PUSHGATE_JWT_SECRET=dev-secret-change-me-in-production .venv/bin/python examples/python/publish.py 42 --token
    .venv/bin/python examples/python/publish.py 42 --receipt   # and one message asking for a receipt

Watch it arrive with `.venv/bin/python examples/watch.py --user 42` and
`.venv/bin/python examples/watch.py news` (under `make run`).
"""
import sys
import uuid

import pushgate_bridge as pushgate

user = sys.argv[1] if len(sys.argv) > 1 else "42"

pushgate.publish_to_user(user, {"event": "invoice.paid", "amount": 1250})
pushgate.broadcast("news", {"title": "Hello from Python"})

with pushgate.batch():  # one /mpub request for all three
    for n in range(3):
        pushgate.publish_to_user(user, {"event": "digest", "n": n})

# A token for a browser (needs PUSHGATE_JWT_SECRET, the gateway's secret).
if len(sys.argv) > 2 and sys.argv[2] == "--token":
    print(pushgate.connection_token(user, ttl=600, channels=["news"]))

# A receipt: with --events-topic, the gateway says delivered or undelivered (examples/python/events.py).
if len(sys.argv) > 2 and sys.argv[2] == "--receipt":
    message_id = f"example-{uuid.uuid4().hex[:8]}"
    pushgate.publish_to_user(user, {"event": "reminder"}, id=message_id, receipt=True)
    print(f"asked for a receipt of {message_id}")
print(f"published to #{user} and news")
