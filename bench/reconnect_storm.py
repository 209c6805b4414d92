"""Reconnect storm: N clients on node A, A drains, all move to node B.

Starts a real nsqd and two gateway nodes. N bare protocol clients
(bench/storm_clients.py, spread over processes) connect to A, all
subscribed to channel `storm` through their token. A publisher sends a
numbered message to `storm` (--rate a second) throughout. A gets SIGTERM: it
closes its clients with 3001 spread over its drain period; each reconnects
to B after a full-jitter delay and asks to recover from its position.

Prints the time until every client is back, connect errors (target 0), how
many recovered, and messages missing or duplicated across all clients.

    .venv/bin/python bench/reconnect_storm.py --clients 5000
"""
from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from auth import connection_token  # noqa: E402
from tests.stack import SECRET, Gateway, Nsqd, http  # noqa: E402

PER_PROCESS = 2500


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=5000)
    parser.add_argument("--drain", type=float, default=10.0, help="node A's --drain-period")
    parser.add_argument("--rate", type=float, default=10.0, help="messages per second to the storm channel "
                        "(each goes to every client: keep rate x clients within one node's capacity)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pushgate-storm-"))
    nsqd = Nsqd(work / "nsqd").start()
    common = ("--log-level=warning", "--history-size=1000", f"--drain-period={args.drain:g}")
    a = Gateway(work / "a", nsqd, None, *common).start()
    b = Gateway(work / "b", nsqd, None, *common).start()
    token = connection_token(SECRET, "storm-user", ttl=3600, channels=["storm"])
    time.sleep(1.5)  # B's continuity starts before the clients' positions
    children = []
    published = [0]
    stop = threading.Event()

    def publisher():
        while not stop.is_set():
            body = json.dumps({"channel": "storm", "data": {"n": published[0]}}).encode()
            status, _ = http("POST", f"http://{nsqd.http_address}/pub?topic=pushgate", body)
            if status == 200:
                published[0] += 1
            time.sleep(1 / args.rate)

    try:
        processes = max(1, -(-args.clients // PER_PROCESS))
        for n in range(processes):
            count = args.clients // processes + (1 if n < args.clients % processes else 0)
            children.append(subprocess.Popen(
                [sys.executable, str(Path(__file__).with_name("storm_clients.py")), f"--port-a={a.port}",
                 f"--port-b={b.port}", f"--count={count}", f"--token={token}"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        for child in children:
            json.loads(child.stdout.readline())
        thread = threading.Thread(target=publisher, daemon=True)
        thread.start()
        time.sleep(1.0)
        drained_at = time.monotonic()
        a.proc.send_signal(signal.SIGTERM)
        backs = [json.loads(child.stdout.readline()) for child in children]
        all_back = max(x["back"] for x in backs) - drained_at
        first_back = min(x["first_back"] for x in backs) - drained_at
        a_exit = a.stop()
        time.sleep(1.0)
        stop.set()
        thread.join()
        time.sleep(0.5)
        for child in children:
            child.stdin.write(f"{published[0]}\n")
            child.stdin.flush()
        results = [json.loads(child.stdout.readline()) for child in children]
        total = {key: sum(r[key] for r in results) for key in results[0]}
        print(f"pushgate reconnect storm: {args.clients} clients, node A drained over {args.drain:g} s to node B")
        print(f"  first client back on B:     {first_back:.2f} s after SIGTERM")
        print(f"  all clients back on B:      {all_back:.2f} s after SIGTERM")
        print(f"  node A exit code:           {a_exit}")
        print(f"  connect errors:             {total['connect_errors']} during the storm (target 0); "
              f"{total['initial_retries']} retries while first connecting to A")
        print(f"  recovered:                  {total['recovered']} of {args.clients} "
              f"(not recovered: {total['not_recovered']})")
        print(f"  messages published:         {published[0]} to channel storm ({args.rate:g}/s, "
              f"{args.rate * args.clients:,.0f} deliveries/s)")
        print(f"  missing / duplicated:       {total['missing']} / {total['duplicates']} "
              f"(over {args.clients} clients)")
    finally:
        stop.set()
        for child in children:
            child.kill()
            child.wait()
        a.stop()
        b.stop()
        nsqd.stop()


if __name__ == "__main__":
    main()
