"""Publishes a demo event into NSQ every few seconds (started by `make run`).

It talks to nsqd's HTTP API like any backend would: an envelope naming the
channel, published to the envelope topic.
"""
import argparse
import signal
import sys
import time

import ujson

from gateway.nsq.publisher import NsqdUnavailable, PublishError, publish_sync


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nsqd-http-address", default="127.0.0.1:4151")
    parser.add_argument("--topic", default="pushgate")
    parser.add_argument("--channel", default="demo")
    parser.add_argument("--interval", type=float, default=3.0)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    address = args.nsqd_http_address
    if "://" not in address:
        address = "http://" + address
    n = 0
    while True:
        n += 1
        body = ujson.dumps({"channel": args.channel, "id": f"demo-{time.time_ns()}",
                            "data": {"n": n, "text": f"demo event #{n}", "sent_at": time.time()}})
        try:
            publish_sync(address, args.topic, body.encode())
            print(f"published demo event #{n} to channel {args.channel}", flush=True)
        except (NsqdUnavailable, PublishError) as exc:
            print(f"nsqd not ready ({exc}); retrying", flush=True)
        time.sleep(args.interval)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
