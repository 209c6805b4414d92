// The backend decides, in Debian's headless Chromium driven by playwright-core:
// the stock centrifuge-js with no token anywhere. Run by tests/test_browser_proxy.py,
// which starts two gateway nodes with the proxies on and the test backend
// (tests/proxy_backend.py), and passes:
//
//   BACKEND   http://127.0.0.1:PORT: the backend (it serves the page and /login)
//   NODE_A, NODE_B   ws://127.0.0.1:PORT/connection/websocket of each node
//   CHROMIUM  the Chromium executable
//   TRANSPORT alice's transport: websocket (default, to NODE_A), or http_stream or sse
//             (centrifuge-js's fallbacks, through the backend's origin, which forwards
//             /connection/* and /emulation to node A: fetch and EventSource send the
//             cookie to their own origin only)
//
// REFRESHED asks the test to wait until the backend has refreshed alice's
// connection twice; it answers "refreshed" on stdin. The last line is PASS.
import { chromium } from 'playwright-core';
import readline from 'node:readline';

const { BACKEND, NODE_A, NODE_B } = process.env;
const TRANSPORT = process.env.TRANSPORT || 'websocket';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const WAIT = 15_000;
const stdin = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const started = Date.now();

function step(text) { console.log(`STEP ${((Date.now() - started) / 1000).toFixed(1)}s ${text}`); }
function check(condition, message) { if (!condition) throw new Error(message); }

async function request(command, expected) {
  console.log(command);
  const { value, done } = await stdin.next();
  if (done || value.trim() !== expected) throw new Error(`${command}: the test answered ${done ? 'nothing' : value}`);
}

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
});

// A tab of its own (its own cookie jar) for `user`, signed in at the backend, connected
// to `url` (a WebSocket endpoint) or through `transport` on the backend's origin.
async function openTab(user, url, transport = 'websocket') {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on('pageerror', (err) => console.log(`  [${user} page error] ${err.message}`));
  page.on('console', (msg) => console.log(`  [${user} console.${msg.type()}] ${msg.text()}`));
  await page.goto(`${BACKEND}/login?user=${user}`);   // the backend's cookie: the only credential
  const config = transport === 'websocket' ? { url }
    : { transports: [{ transport, endpoint: `${BACKEND}/connection/${transport}` }], emulation: `${BACKEND}/emulation` };
  await page.goto(`${BACKEND}/?config=${encodeURIComponent(JSON.stringify(config))}`);
  return page;
}

async function event(page, match) {
  const handle = await page.waitForFunction((m) => window.events.find(
    (e) => Object.entries(m).every(([k, v]) => JSON.stringify(e[k]) === JSON.stringify(v))), match, { timeout: WAIT });
  return handle.jsonValue();
}

try {
  step(`alice signs in and connects to node A over ${TRANSPORT}, no token`);
  const alice = await openTab('alice', NODE_A, TRANSPORT);
  const connected = await event(alice, { event: 'connected' });
  check(connected.data && connected.data.hello === 'alice', `connect data: ${JSON.stringify(connected.data)}`);
  check(connected.transport === TRANSPORT, `alice connected over ${connected.transport}`);
  await event(alice, { event: 'subscribed', channel: '#alice' });

  step('bob signs in and connects to node B');
  const bob = await openTab('bob', NODE_B);
  await event(bob, { event: 'connected' });

  step('bob may not enter room:staff: refused with the backend\'s code');
  await bob.evaluate(() => window.subscribe('room:staff'));
  const refused = await event(bob, { event: 'unsubscribed', channel: 'room:staff' });
  check(refused.code === 403, `refusal: ${JSON.stringify(refused)}`);

  step('alice enters room:staff and gets the backend\'s initial data');
  await alice.evaluate(() => window.subscribe('room:staff'));
  const staff = await event(alice, { event: 'subscribed', channel: 'room:staff' });
  check(staff.data && staff.data.welcome === 'room:staff' && staff.data.user === 'alice', JSON.stringify(staff));

  step('both in room:lobby; alice publishes, bob on the other node receives it with her info');
  await alice.evaluate(() => window.subscribe('room:lobby'));
  await bob.evaluate(() => window.subscribe('room:lobby'));
  await event(alice, { event: 'subscribed', channel: 'room:lobby' });
  await event(bob, { event: 'subscribed', channel: 'room:lobby' });
  await alice.evaluate(() => window.publish('room:lobby', { text: 'hello from alice' }));
  await event(alice, { event: 'published', channel: 'room:lobby' });
  const pub = await event(bob, { event: 'publication', channel: 'room:lobby' });
  check(pub.data.text === 'hello from alice' && pub.data.by === 'alice', `data: ${JSON.stringify(pub.data)}`);
  check(pub.info && pub.info.user === 'alice' && pub.info.client === connected.client,
        `info: ${JSON.stringify(pub.info)} (alice is ${connected.client})`);

  step('client.rpc() is answered by the backend (with the meta it gave at connect)');
  await alice.evaluate(() => window.rpc('whoami', {}));
  const rpc = await event(alice, { event: 'rpc', method: 'whoami' });
  check(rpc.data.user === 'alice' && rpc.data.meta.session === 's-alice', JSON.stringify(rpc));

  step('alice\'s expire_at is refreshed by the backend, without her client');
  await request('REFRESHED', 'refreshed');
  const gone = await alice.evaluate(() => window.events.filter((e) => e.event === 'disconnected' ||
    (e.event === 'connecting' && e.code !== 0)));
  check(gone.length === 0, `alice was disconnected: ${JSON.stringify(gone)}`);
  await browser.close();
  console.log('PASS');
  process.exit(0);
} catch (err) {
  console.log(`FAIL ${err.stack || err}`);
  await browser.close();
  process.exit(1);
}
