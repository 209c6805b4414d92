// The demo page end to end, in Debian's headless Chromium driven by
// playwright-core. Run by tests/test_browser_demo.py, which starts the stack
// and two demo backends, and passes:
//
//   DEMO_URL    the demo backend of alice and bob, e.g. http://127.0.0.1:PORT/
//   CAROL_URL   carol's demo backend: the same, but with 3-second tokens
//   OUT_DIR     where the screenshots go
//   CHROMIUM    the Chromium executable (default /usr/bin/chromium)
//
// Lines on stdout are the transcript. Some are requests to the test, which
// answers each with one line on stdin once done:
//
//   STOP_STACK      SIGTERM the gateway and alice and bob's backend, as
//                   Ctrl-C in `make run` does                -> "stopped"
//   START_STACK     start both again, same ports            -> "started" (when /health is 200)
//   STOP_CAROLS_BACKEND / START_CAROLS_BACKEND               -> "stopped" / "started"
//
// The last line is PASS, or the script exits non-zero.
import { chromium } from 'playwright-core';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import readline from 'node:readline';

const DEMO_URL = process.env.DEMO_URL;
const CAROL_URL = process.env.CAROL_URL;
const OUT_DIR = process.env.OUT_DIR;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const WAIT = 15_000; // ms, for any one thing to show up on a page
const PHONE = { width: 360, height: 740 };

if (!DEMO_URL || !CAROL_URL || !OUT_DIR) {
  console.error('DEMO_URL, CAROL_URL and OUT_DIR must be set');
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
const contexts = {};
const pageErrors = [];

// One browser context per user: separate cookies, as two people would have.
async function logIn(name, url = DEMO_URL, viewport = { width: 1100, height: 720 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.on('console', (msg) => console.log(`  [${name} console.${msg.type()}] ${msg.text()}`));
  page.on('pageerror', (err) => {
    pageErrors.push(`${name}: ${err.message}`);
    console.log(`  [${name} page error] ${err.message}`);
  });
  await page.goto(url);
  await page.fill('input[name=name]', name);
  await Promise.all([page.waitForURL(url), page.click('button[type=submit]')]);
  await page.locator('#me', { hasText: name }).waitFor({ timeout: WAIT });
  pages[name] = page;
  contexts[name] = context;
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
async function seesMessage(page, from, text, cls = 'message') {
  await page.locator(`#messages li.${cls}`, { hasText: text })
    .filter({ has: page.locator('.from', { hasText: from }) })
    .waitFor({ timeout: WAIT });
}

async function notifications(page) {
  return page.locator('#notifications li').allInnerTexts();
}

async function ticks(page) {
  return page.locator('#notifications li.tick').count();
}

async function badge(page) {
  return page.locator('#state').innerText();
}

// At phone width: nothing wider than the screen, and the badge on one line.
async function fitsThePhone(page) {
  const layout = await page.evaluate(() => {
    const range = document.createRange();
    range.selectNodeContents(document.getElementById('state'));
    return { scroll: document.documentElement.scrollWidth, width: window.innerWidth,
             badgeLines: range.getClientRects().length, badge: document.getElementById('state').textContent };
  });
  check(layout.scroll <= layout.width, `the page is ${layout.scroll}px wide on a ${layout.width}px screen`);
  check(layout.badgeLines === 1, `the badge "${layout.badge}" wraps over ${layout.badgeLines} lines`);
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
  step(`chromium ${browser.version()}; alice logs in at ${DEMO_URL} and speaks first`);
  const alice = await logIn('alice');
  await ready(alice);
  await say(alice, `before bob ${nonce}`);

  step('bob logs in and finds it in the room: the page loads the channel\'s history');
  const bob = await logIn('bob');
  await ready(bob);
  await seesMessage(bob, 'alice', `before bob ${nonce}`, 'message.past');

  step(`carol logs in on a phone-sized screen at ${CAROL_URL} (a backend with 3 s tokens)`);
  const carol = await logIn('carol', CAROL_URL, PHONE);
  await ready(carol);
  await fitsThePhone(carol);

  step('everyone sees who is in the room: presence on subscribe, then joins');
  for (const [page, names] of [[alice, ['alice (you)', 'bob', 'carol']], [bob, ['alice', 'bob (you)', 'carol']],
                               [carol, ['alice', 'bob', 'carol (you)']]]) {
    await page.waitForFunction((want) => [...document.querySelectorAll('#online .person')]
      .map((el) => el.textContent).join(',') === want.join(','), names, { timeout: WAIT });
  }

  step('alice says hello in the room; bob and carol see it');
  await say(alice, `hello bob ${nonce}`);
  await seesMessage(bob, 'alice', `hello bob ${nonce}`);
  await seesMessage(carol, 'alice', `hello bob ${nonce}`);
  await seesMessage(alice, 'alice (you)', `hello bob ${nonce}`);
  check(await alice.locator('#messages li', { hasText: `hello bob ${nonce}` }).count() === 1,
        'alice sees her message once');

  step('each user gets the backend\'s periodic personal event');
  await alice.locator('#notifications li.tick', { hasText: 'for alice' }).first().waitFor({ timeout: WAIT });
  await bob.locator('#notifications li.tick', { hasText: 'for bob' }).first().waitFor({ timeout: WAIT });
  await carol.locator('#notifications li.tick', { hasText: 'for carol' }).first().waitFor({ timeout: WAIT });

  step('alice notifies bob: it reaches bob only, and alice is told it went out');
  await alice.fill('#notify-to', 'bob');
  await alice.fill('#notify-text', `invoice ${nonce} is ready`);
  await alice.click('#notify-form button');
  await alice.locator('#notify-status', { hasText: 'Sent to bob' }).waitFor({ timeout: WAIT });
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

  step('the stack stops (the gateway and alice and bob\'s backend): every page shows reconnecting');
  await request('STOP_STACK', 'stopped');
  for (const page of [alice, bob, carol]) {
    await page.locator('#state[data-state="reconnecting"]').waitFor({ timeout: WAIT });
    await page.locator('#state', { hasText: /attempt ([2-9]|\d\d)/ }).waitFor({ timeout: WAIT });
    await page.locator('#chat-state[data-state="subscribing"]').waitFor({ timeout: WAIT });
  }
  await fitsThePhone(carol);
  step(`badges: alice "${await badge(alice)}", bob "${await badge(bob)}", carol "${await badge(carol)}"`);
  const ticksBefore = { alice: await ticks(alice), bob: await ticks(bob) };
  await screenshots('-reconnecting');

  step('the stack starts again: every page reconnects and resubscribes, with no reload');
  await request('START_STACK', 'started');
  await Promise.all([ready(alice), ready(bob), ready(carol)]);
  for (const page of [alice, bob, carol]) {
    check(await page.locator('#state').getAttribute('data-reconnects') === '1', 'expected one reconnect');
  }

  step('the restarted backend learns who is here again: the personal events resume');
  await alice.waitForFunction((n) => document.querySelectorAll('#notifications li.tick').length > n,
                              ticksBefore.alice, { timeout: WAIT });
  await bob.waitForFunction((n) => document.querySelectorAll('#notifications li.tick').length > n,
                            ticksBefore.bob, { timeout: WAIT });

  step('the next room message arrives on every page');
  await say(alice, `back again ${nonce}`);
  await seesMessage(bob, 'alice', `back again ${nonce}`);
  await seesMessage(carol, 'alice', `back again ${nonce}`);
  await seesMessage(alice, 'alice (you)', `back again ${nonce}`);

  step('carol\'s backend stops: her next token refresh fails, and her page says so');
  await request('STOP_CAROLS_BACKEND', 'stopped');
  await carol.locator('#problem', { hasText: 'Could not get a fresh token' }).waitFor({ timeout: WAIT });
  check(await carol.locator('#state').getAttribute('data-state') === 'connected',
        'a failed refresh does not cut the connection');
  await request('START_CAROLS_BACKEND', 'started');
  await carol.locator('#problem').waitFor({ state: 'hidden', timeout: WAIT });

  step('carol is signed out elsewhere (her cookie is gone): at the next refresh her page says to sign in again');
  await contexts.carol.clearCookies();
  await carol.locator('#state[data-state="signed-out"]').waitFor({ timeout: WAIT });
  await carol.locator('#problem a', { hasText: 'Sign in again' }).waitFor({ timeout: WAIT });
  check(await carol.locator('#chat-state').innerText() === 'stopped', 'the room says it stopped');
  await fitsThePhone(carol);
  step('carol\'s connection is gone: alice and bob see her leave the room');
  for (const page of [alice, bob]) {
    await page.waitForFunction(() => ![...document.querySelectorAll('#online .person')]
      .some((el) => el.textContent.startsWith('carol')), null, { timeout: WAIT });
  }

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
