// The demo page end to end, in Debian's headless Chromium driven by
// playwright-core. Run by tests/test_browser_demo.py, which starts the stack
// and the demo backend, and passes:
//
//   DEMO_URL    the demo backend, e.g. http://127.0.0.1:PORT/
//   OUT_DIR     where the screenshots go
//   CHROMIUM    the Chromium executable (default /usr/bin/chromium)
//
// Lines on stdout are the transcript. Two of them are requests to the test,
// which answers each with one line on stdin once done:
//
//   KILL_GATEWAY    kill -9 the gateway          -> "killed"
//   START_GATEWAY   start it again, same port     -> "started" (when /health is 200)
//
// The last line is PASS, or the script exits non-zero.
import { chromium } from 'playwright-core';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import readline from 'node:readline';

const DEMO_URL = process.env.DEMO_URL;
const OUT_DIR = process.env.OUT_DIR;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const WAIT = 15_000; // ms, for any one thing to show up on a page

if (!DEMO_URL || !OUT_DIR) {
  console.error('DEMO_URL and OUT_DIR must be set');
  process.exit(2);
}

const stdin = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();

async function request(command, expected) {
  console.log(command);
  const { value, done } = await stdin.next();
  if (done || value.trim() !== expected) {
    throw new Error(`${command}: the test answered ${done ? 'nothing' : JSON.stringify(value)}`);
  }
}

const started = Date.now();
function step(text) {
  console.log(`STEP ${((Date.now() - started) / 1000).toFixed(1)}s ${text}`);
}

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
});
const pages = {};
const pageErrors = [];

// One browser context per user: separate cookies, as two people would have.
async function logIn(name) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 720 } });
  const page = await context.newPage();
  page.on('console', (msg) => console.log(`  [${name} console.${msg.type()}] ${msg.text()}`));
  page.on('pageerror', (err) => {
    pageErrors.push(`${name}: ${err.message}`);
    console.log(`  [${name} page error] ${err.message}`);
  });
  await page.goto(DEMO_URL);
  await page.fill('input[name=name]', name);
  await Promise.all([page.waitForURL(DEMO_URL), page.click('button[type=submit]')]);
  await page.locator('#me', { hasText: name }).waitFor({ timeout: WAIT });
  pages[name] = page;
  return page;
}

// The badge says connected and the room subscription is live.
async function ready(page) {
  await page.locator('#state[data-state="connected"]').waitFor({ timeout: WAIT });
  await page.locator('#chat-state[data-state="subscribed"]').waitFor({ timeout: WAIT });
}

async function say(page, text) {
  await page.fill('#chat-text', text);
  await page.press('#chat-text', 'Enter');
  // The page clears the field once the backend has published the message.
  await page.waitForFunction(() => document.getElementById('chat-text').value === '', null, { timeout: WAIT });
}

// A chat line from `from` with `text` shows up on `page`.
async function seesMessage(page, from, text) {
  await page.locator('#messages li.message', { hasText: text })
    .filter({ has: page.locator('.from', { hasText: from }) })
    .waitFor({ timeout: WAIT });
}

async function notifications(page) {
  return page.locator('#notifications li').allInnerTexts();
}

async function badge(page) {
  return page.locator('#state').innerText();
}

async function screenshots(suffix = '') {
  for (const [name, page] of Object.entries(pages)) {
    const file = path.join(OUT_DIR, `${name}${suffix}.png`);
    await page.screenshot({ path: file, fullPage: true });
    console.log(`SCREENSHOT ${file}`);
  }
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

try {
  const nonce = randomBytes(4).toString('hex');
  step(`chromium ${browser.version()}; logging in alice and bob at ${DEMO_URL}`);
  const alice = await logIn('alice');
  const bob = await logIn('bob');
  await Promise.all([ready(alice), ready(bob)]);

  step('alice says hello in the room; bob sees it');
  await say(alice, `hello bob ${nonce}`);
  await seesMessage(bob, 'alice', `hello bob ${nonce}`);
  await seesMessage(alice, 'alice (you)', `hello bob ${nonce}`);

  step('each user gets the backend\'s periodic personal event');
  await alice.locator('#notifications li.tick', { hasText: 'for alice' }).first().waitFor({ timeout: WAIT });
  await bob.locator('#notifications li.tick', { hasText: 'for bob' }).first().waitFor({ timeout: WAIT });

  step('alice notifies bob; it reaches bob only');
  await alice.fill('#notify-to', 'bob');
  await alice.fill('#notify-text', `invoice ${nonce} is ready`);
  await alice.click('#notify-form button');
  await bob.locator('#notifications li.notify', { hasText: `invoice ${nonce}` })
    .filter({ has: bob.locator('.from', { hasText: 'from alice' }) })
    .waitFor({ timeout: WAIT });
  // Anything for alice that was published before bob's answer has reached her by the time it does.
  await say(bob, `got it ${nonce}`);
  await seesMessage(alice, 'bob', `got it ${nonce}`);
  const aliceSees = await notifications(alice);
  check(!aliceSees.some((t) => t.includes(`invoice ${nonce}`)), `alice got bob's notification: ${aliceSees}`);
  check(!aliceSees.some((t) => t.includes('for bob')), `alice got bob's personal events: ${aliceSees}`);
  const bobSees = await notifications(bob);
  check(!bobSees.some((t) => t.includes('for alice')), `bob got alice's personal events: ${bobSees}`);

  step('the gateway is killed: both pages show reconnecting, and count failed attempts');
  await request('KILL_GATEWAY', 'killed');
  for (const page of [alice, bob]) {
    await page.locator('#state[data-state="reconnecting"]').waitFor({ timeout: WAIT });
    await page.locator('#state', { hasText: /attempt ([2-9]|\d\d)/ }).waitFor({ timeout: WAIT });
    await page.locator('#chat-state[data-state="subscribing"]').waitFor({ timeout: WAIT });
  }
  step(`badges: alice "${await badge(alice)}", bob "${await badge(bob)}"`);
  await screenshots('-reconnecting');

  step('the gateway is back on the same port: both pages reconnect and resubscribe');
  await request('START_GATEWAY', 'started');
  await Promise.all([ready(alice), ready(bob)]);
  for (const page of [alice, bob]) {
    check(await page.locator('#state').getAttribute('data-reconnects') === '1', 'expected one reconnect');
  }

  step('the next room message arrives on both pages');
  await say(alice, `back again ${nonce}`);
  await seesMessage(bob, 'alice', `back again ${nonce}`);
  await seesMessage(alice, 'alice (you)', `back again ${nonce}`);

  await screenshots();
  check(pageErrors.length === 0, `errors on the pages: ${pageErrors.join('; ')}`);
  step('done');
  console.log('PASS');
} catch (err) {
  console.log(`FAIL ${err.stack || err}`);
  for (const [name, page] of Object.entries(pages)) {
    try {
      console.log(`  ${name}: badge "${await badge(page)}", problem "${await page.locator('#problem').innerText()}", ` +
                  `notifications ${JSON.stringify(await notifications(page))}`);
    } catch (e) { /* the page is gone */ }
  }
  try { await screenshots('-failure'); } catch (e) { console.log(`no failure screenshots: ${e.message}`); }
  process.exitCode = 1;
} finally {
  await browser.close();
  process.stdin.destroy();
}
