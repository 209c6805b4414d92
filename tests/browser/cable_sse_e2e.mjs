// A plain EventSource on /events (Action Cable over SSE), in Debian's
// headless Chromium driven by playwright-core. Run by tests/test_cable_sse.py,
// which starts the gateway nodes, a proxy in front of them and nsqd, and
// passes:
//
//   ORIGIN    http://127.0.0.1:PORT: the proxy; the page is loaded from it, so
//             the EventSource is same-origin, as an app's page behind its
//             load balancer
//   EVENTS    the path and query of the EventSource (/events?...)
//   CHROMIUM  the Chromium executable
//
// It prints one JSON line per event the page sees ({"type": "open"},
// {"type": "error", "readyState": 0}, {"type": "welcome", "data": ...},
// {"type": "message", "data": ..., "id": ...}, ...) and exits on "exit"
// from stdin. The test decides what the events must be.
import { chromium } from 'playwright-core';
import readline from 'node:readline';

const { ORIGIN, EVENTS } = process.env;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
});
const page = await (await browser.newContext()).newPage();
page.on('pageerror', (err) => console.log(JSON.stringify({ type: 'pageerror', message: err.message })));
await page.exposeFunction('report', (event) => console.log(JSON.stringify(event)));
await page.goto(`${ORIGIN}/health`);
await page.evaluate((url) => {
  const source = new EventSource(url);
  source.onopen = () => window.report({ type: 'open' });
  source.onerror = () => window.report({ type: 'error', readyState: source.readyState });
  source.onmessage = (e) => window.report({ type: 'message', data: e.data, id: e.lastEventId });
  for (const name of ['welcome', 'confirm_subscription', 'reject_subscription', 'ping', 'disconnect',
                      'confirm_history', 'reject_history']) {
    source.addEventListener(name, (e) => window.report({ type: name, data: e.data }));
  }
}, EVENTS);
console.log(JSON.stringify({ type: 'started' }));
for await (const line of readline.createInterface({ input: process.stdin })) {
  if (line.trim() === 'exit') break;
}
await browser.close();
