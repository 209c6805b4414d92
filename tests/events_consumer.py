"""The Python bridge's event reader as a worker runs it: every event it is
handed goes to stdout as one JSON line. An event with "fail_once" raises the
first time it is handed over (the reader must REQ it and get it again).
Usage: python tests/events_consumer.py TOPIC CHANNEL NSQD_TCP_ADDRESS[,MORE]|lookupd:HTTP_ADDRESS
(tests/ruby/events_consumer.rb is the Rails bridge's twin)."""
from __future__ import annotations

import json
import signal
import sys

from pushgate_bridge.events import EventReader


def main() -> None:
    topic, channel, nsqd = sys.argv[1:4]
    failed: set[str] = set()

    def handle(event: dict) -> None:
        key = event.get("fail_once")
        if key and key not in failed:
            failed.add(key)
            print(json.dumps({"failed": key}), flush=True)
            raise RuntimeError("failing once, on purpose")
        print(json.dumps(event), flush=True)

    where = ({"lookupd_http_addresses": [nsqd[len("lookupd:"):]]} if nsqd.startswith("lookupd:")
             else {"nsqd_tcp_addresses": nsqd.split(",")})
    reader = EventReader(topic, channel, **where, on_any=handle, requeue_delay=0, max_backoff=0.2,
                         max_reconnect_delay=0.5, lookupd_poll_interval=0.5)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: reader.stop())
    print(json.dumps({"started": True}), flush=True)
    reader.run()
    print(json.dumps({"stopped": True}), flush=True)


if __name__ == "__main__":
    main()
