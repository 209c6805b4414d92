"""Publishes a demo event into NSQ every few seconds (started by `make run`).

It talks to nsqd's HTTP API like any backend would: an envelope naming the
channel, published to the envelope topic.

It says what it does once; each event is logged at --log-level=debug only,
so that `make run`'s terminal stays readable. nsqd not answering is said once
when it lasts (nsqd may still be starting when this does), and once more
when it answers again.
"""
import argparse
import logging
import signal
import sys
import time

import ujson

from gateway.nsq.publisher import NsqdUnavailable, PublishError, publish_sync

log = logging.getLogger("demo-publisher")

PATIENCE = 10.0  # seconds nsqd may take to answer at start before it is worth a warning


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nsqd-http-address", default="127.0.0.1:4151")
    parser.add_argument("--topic", default="pushgate")
    parser.add_argument("--channel", default="demo")
    parser.add_argument("--interval", type=float, default=3.0)
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning"),
                        help="debug logs every event (default info: only what changes)")
    args = parser.parse_args()
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    address = args.nsqd_http_address
    if "://" not in address:
        address = "http://" + address
    log.info("publishing a demo event to channel %s every %g s through nsqd %s (each one at --log-level=debug)",
             args.channel, args.interval, address)
    started = time.monotonic()
    failing = False  # said so already
    n = 0
    while True:
        n += 1
        body = ujson.dumps({"channel": args.channel, "id": f"demo-{time.time_ns()}",
                            "data": {"n": n, "text": f"demo event #{n}", "sent_at": time.time()}})
        try:
            publish_sync(address, args.topic, body.encode())
        except (NsqdUnavailable, PublishError) as exc:
            if not failing and time.monotonic() - started > PATIENCE:
                log.warning("nsqd %s does not take demo events (%s); trying again every %g s (--nsqd-http-address)",
                            address, exc, args.interval)
                failing = True
            else:
                log.debug("demo event #%d not published (%s)", n, exc)
        else:
            if failing:
                log.info("nsqd %s takes demo events again", address)
                failing = False
            log.debug("published demo event #%d to channel %s", n, args.channel)
        time.sleep(args.interval)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
