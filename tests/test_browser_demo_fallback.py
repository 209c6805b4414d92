"""The demo page with WebSocket blocked: the page's ``?transports=`` switch
lists only the fallbacks (http_stream then sse, or sse alone), it survives
logging in from a fresh window, the badge names the transport, and the room,
the personal events and notifications work as they do over WebSocket
(tests/browser/demo_fallback.mjs, headless Chromium, against real nsqd, a
gateway and the demo backend)."""
from __future__ import annotations

import os
import signal
import subprocess

from tests.stack import ROOT, free_port
from tests.test_browser_demo import chromium_path, demo_backend, node  # noqa: F401  (fixtures)

SCRIPT = ROOT / "tests" / "browser" / "demo_fallback.mjs"


def test_the_demo_page_works_with_only_the_fallbacks(chromium_path, node, start_gateway, nsqd,  # noqa: F811
                                                     demo_backend):  # noqa: F811
    demo_port = free_port()
    gateway = start_gateway(f"--allowed-origins=http://127.0.0.1:{demo_port}", "--public-channels=chat")
    backend = demo_backend(nsqd, gateway.ws_url, demo_port)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHGATE_")}
    env.update(DEMO_URL=backend.url, CHROMIUM=chromium_path)
    # Its own process group: Chromium goes with it if it has to be killed.
    script = subprocess.Popen([node, str(SCRIPT)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        transcript, _ = script.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(script.pid, signal.SIGKILL)
        transcript, _ = script.communicate()
    print(transcript)
    assert script.returncode == 0 and transcript.strip().endswith("PASS"), (
        f"{transcript}\n--- gateway log ---\n{gateway.log()}\n--- demo log ---\n{backend.log()}")
    assert gateway.metric("pushgate_emulation_requests_total", result="local") >= 1  # the room's subscribe
