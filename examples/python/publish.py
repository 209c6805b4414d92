"""Publish to a user and to a topic from any Python backend.

    PUSHGATE_NSQD_HTTP_ADDRESS=127.0.0.1:4151 python examples/python/publish.py 42

Watch it arrive with `python examples/watch.py --user 42` and
`python examples/watch.py news` (under `make run`).
"""
import sys

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
print(f"published to #{user} and news")
