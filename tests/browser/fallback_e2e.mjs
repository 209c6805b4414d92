// WebSocket blocked, in Debian's headless Chromium driven by playwright-core.
// Run by tests/test_browser_fallback.py, which starts two gateway nodes (A and
// B), a proxy in front of A, and the page server, and passes:
//
//   PAGE_URL     the test page (tests/browser/fallback.html), on its own origin
//   PROXY        http://127.0.0.1:PORT: the proxy in front of node A
//   NODE_B       http://127.0.0.1:PORT: node B, where every /emulation request goes
//   BLOCKED      a port nothing listens on: the "blocked" WebSocket (and, in
//                the second run, the blocked http_stream too)
//   NSQD         nsqd's HTTP address, to publish to
//   CHROMIUM     the Chromium executable
//
// Lines on stdout are the transcript. CUT asks the test to cut the network
// (the proxy drops every connection and refuses new ones) and RESTORE to
// route it to node A again; the test answers "cut" / "restored" on stdin.
// The last line is PASS, or the script exits non-zero.
import { chromium } from 'playwright-core';
import readline from 'node:readline';

const { PAGE_URL, PROXY, NODE_B, BLOCKED, NSQD } = process.env;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const WAIT = 15_000;
const stdin = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const started = Date.now();

function step(text) {
  console.log(`STEP ${((Date.now() - started) / 1000).toFixed(1)}s ${text}`);
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

async function request(command, expected) {
  console.log(command);
  const { value, done } = await stdin.next();
  if (done || value.trim() !== expected) throw new Error(`${command}: the test answered ${done ? 'nothing' : value}`);
}

async function publish(envelope) {
  const response = await fetch(`http://${NSQD}/pub?topic=pushgate`, { method: 'POST', body: JSON.stringify(envelope) });
  check(response.ok, `nsqd answered ${response.status}`);
}

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
});

async function openPage(name, config) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on('pageerror', (err) => console.log(`  [${name} page error] ${err.message}`));
  page.on('console', (msg) => console.log(`  [${name} console.${msg.type()}] ${msg.text()}`));
  await page.goto(`${PAGE_URL}?config=${encodeURIComponent(JSON.stringify(config))}`);
  return page;
}

// The first event from `from` on that matches, waited for in the page.
async function event(page, match, from = 0) {
  const handle = await page.waitForFunction(([m, f]) => window.events.slice(f).find(
    (e) => Object.entries(m).every(([k, v]) => JSON.stringify(e[k]) === JSON.stringify(v))), [match, from],
    { timeout: WAIT });
  return handle.jsonValue();
}

async function mark(page) {
  return page.evaluate(() => window.events.length);
}

async function publications(page, channel, from) {
  return page.evaluate(([c, f]) => window.events.slice(f).filter((e) => e.event === 'publication' && e.channel === c)
    .map((e) => e.data), [channel, from]);
}

async function cutAndRecover(page, user, channels) {
  const from = await mark(page);
  await request('CUT', 'cut');
  await event(page, { event: 'connecting' }, from);
  for (let n = 0; n < 5; n++) {
    for (const channel of channels) {
      await publish(channel === `#${user}` ? { user, data: { n } } : { channel, data: { n } });
    }
  }
  await new Promise((resolve) => setTimeout(resolve, 500));
  await request('RESTORE', 'restored');
  for (const channel of channels) {
    const subscribed = await event(page, { event: 'subscribed', channel }, from);
    check(subscribed.wasRecovering && subscribed.recovered, `${channel} not recovered: ${JSON.stringify(subscribed)}`);
    await event(page, { event: 'publication', channel, data: { n: 4 } }, from);
  }
  await new Promise((resolve) => setTimeout(resolve, 300));
  for (const channel of channels) {
    const got = await publications(page, channel, from);
    check(JSON.stringify(got) === JSON.stringify([0, 1, 2, 3, 4].map((n) => ({ n }))),
          `${channel}: after the cut got ${JSON.stringify(got)}`);
  }
}

async function sdkRun(transport, transports) {
  const user = `fb-${transport}`;
  step(`${transport} run: transports ${transports.map((t) => `${t.transport} ${t.endpoint}`).join(', ')}; ` +
       `/emulation on node B`);
  const page = await openPage(user, { mode: 'sdk', user, tokenTtl: 3, transports, emulation: `${NODE_B}/emulation` });
  const connected = await event(page, { event: 'connected' });
  check(connected.transport === transport, `connected over ${connected.transport}, not ${transport}`);
  const failed = await page.evaluate(() => window.events.filter((e) => e.event === 'error').map((e) => e.transport));
  step(`connected over ${transport} after failed attempts over ${JSON.stringify(failed)}`);
  check(failed.includes('websocket'), 'the blocked websocket was not tried first');

  step('a personal publication arrives');
  await publish({ user, data: { hello: 1 } });
  await event(page, { event: 'publication', channel: `#${user}`, data: { hello: 1 } });

  step('subscribe to the public channel news (through node B): its publications arrive');
  await page.evaluate(() => window.subscribe('news'));
  await event(page, { event: 'subscribed', channel: 'news' });
  await publish({ channel: 'news', data: { n: 'first' } });
  await event(page, { event: 'publication', channel: 'news', data: { n: 'first' } });

  step('unsubscribe: nothing more from news');
  await page.evaluate(() => window.unsubscribe('news'));
  await event(page, { event: 'unsubscribed', channel: 'news' });
  let from = await mark(page);
  await publish({ channel: 'news', data: { n: 'unseen' } });
  await publish({ user, data: { marker: 1 } });
  await event(page, { event: 'publication', channel: `#${user}`, data: { marker: 1 } }, from);
  check((await publications(page, 'news', from)).length === 0, 'a news publication after unsubscribe');

  step('subscribe again; the 3-second token is refreshed through node B, and the connection stays');
  await page.evaluate(() => window.subscribe('news'));
  await event(page, { event: 'subscribed', channel: 'news' }, from);
  await event(page, { event: 'token' });
  await new Promise((resolve) => setTimeout(resolve, 4500));
  from = await mark(page);
  await publish({ user, data: { still: 1 } });
  await event(page, { event: 'publication', channel: `#${user}`, data: { still: 1 } }, from);
  const connects = await page.evaluate(() => window.events.filter((e) => e.event === 'connected').length);
  check(connects === 1, `${connects} connects: the connection did not stay`);

  step('the network is cut and comes back: exactly the missed publications, recovered');
  await cutAndRecover(page, user, [`#${user}`, 'news']);
  const transportAfter = await page.evaluate(() => window.client._transport.name());
  check(transportAfter === transport, `reconnected over ${transportAfter}`);
  await page.context().close();
}

try {
  step(`chromium ${browser.version()}`);
  const blockedWs = { transport: 'websocket', endpoint: `ws://127.0.0.1:${BLOCKED}/connection/websocket` };
  await sdkRun('http_stream', [blockedWs, { transport: 'http_stream', endpoint: `${PROXY}/connection/http_stream` },
                               { transport: 'sse', endpoint: `${PROXY}/connection/sse` }]);
  await sdkRun('sse', [blockedWs, { transport: 'http_stream', endpoint: `http://127.0.0.1:${BLOCKED}/connection/http_stream` },
                       { transport: 'sse', endpoint: `${PROXY}/connection/sse` }]);

  step('a plain EventSource on /connection/uni_sse, no SDK');
  const user = 'fb-uni';
  const page = await openPage(user, { mode: 'uni', user, tokenTtl: 600, endpoint: `${PROXY}/connection/uni_sse` });
  await event(page, { event: 'connected' });
  await publish({ user, data: { hello: 'uni' } });
  await event(page, { event: 'publication', channel: `#${user}`, data: { hello: 'uni' } });
  await new Promise((resolve) => setTimeout(resolve, 300));
  step('the network is cut and comes back: the page sends its position and gets exactly what it missed');
  await cutAndRecover(page, user, [`#${user}`]);
  step('done');
  console.log('PASS');
} catch (err) {
  console.log(`FAIL ${err.stack || err}`);
  for (const context of browser.contexts()) {
    for (const page of context.pages()) {
      try {
        console.log(`  events: ${JSON.stringify(await page.evaluate(() => window.events))}`);
      } catch (e) { /* gone */ }
    }
  }
  process.exitCode = 1;
} finally {
  await browser.close();
  process.stdin.destroy();
}
