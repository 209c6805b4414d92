// The demo page when WebSocket is blocked: its ?transports= switch lists only
// the fallbacks, survives logging in, and the badge names the transport. Run by tests/test_browser_demo_fallback.py with DEMO_URL
// (the demo backend) and CHROMIUM; the last line is PASS, or it exits non-zero.
import { chromium } from 'playwright-core';
import { randomBytes } from 'node:crypto';

const DEMO_URL = process.env.DEMO_URL;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const WAIT = 15_000;
const started = Date.now();
const step = (text) => console.log(`STEP ${((Date.now() - started) / 1000).toFixed(1)}s ${text}`);

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
});
const errors = [];

// As a new user does: open the page with the switch in a fresh window, and log
// in there. Logging in must keep the switch (the page it lands on is the one
// asked for), and the badge must name the transport it connected over.
async function logIn(name, transports) {
  const page = await (await browser.newContext()).newPage();
  page.on('pageerror', (err) => errors.push(`${name}: ${err.message}`));
  const asked = `${DEMO_URL}?transports=${transports}`;
  await page.goto(asked);
  await page.fill('input[name=name]', name);
  await Promise.all([page.waitForURL((url) => url.pathname === '/'), page.click('button[type=submit]')]);
  await page.locator('#me', { hasText: name }).waitFor({ timeout: WAIT });
  const landed = new URL(page.url());
  if (landed.searchParams.get('transports') !== transports) {
    throw new Error(`logging in from ${asked} landed on ${page.url()}: the transports switch was dropped`);
  }
  const first = transports.split(',')[0];
  const badge = page.locator(`#state[data-state="connected"][data-transport="${first}"]`);
  await badge.waitFor({ timeout: WAIT });
  const said = await badge.textContent();
  if (said !== `connected over ${first}`) throw new Error(`the badge says "${said}", not which transport`);
  await page.locator('#chat-state[data-state="subscribed"]').waitFor({ timeout: WAIT });
  step(`${name} logged in from ?transports=${transports}: ${landed.pathname}${landed.search}, badge "${said}"`);
  return page;
}

try {
  const nonce = randomBytes(4).toString('hex');
  step('alice opens the demo with ?transports=http_stream,sse, bob with ?transports=sse');
  const alice = await logIn('alice', 'http_stream,sse');
  const bob = await logIn('bob', 'sse');

  step('alice says hello in the room: both see it');
  await alice.fill('#chat-text', `hello over fallbacks ${nonce}`);
  await alice.press('#chat-text', 'Enter');
  for (const page of [alice, bob]) {
    await page.locator('#messages li', { hasText: `hello over fallbacks ${nonce}` }).waitFor({ timeout: WAIT });
  }

  step('each gets the backend\'s personal events');
  await alice.locator('#notifications li.tick', { hasText: 'for alice' }).first().waitFor({ timeout: WAIT });
  await bob.locator('#notifications li.tick', { hasText: 'for bob' }).first().waitFor({ timeout: WAIT });

  step('bob notifies alice: it reaches her');
  await bob.fill('#notify-to', 'alice');
  await bob.fill('#notify-text', `ping ${nonce}`);
  await bob.click('#notify-form button');
  await alice.locator('#notifications li.notify', { hasText: `ping ${nonce}` }).waitFor({ timeout: WAIT });
  if (errors.length) throw new Error(`errors on the pages: ${errors.join('; ')}`);
  step('done');
  console.log('PASS');
} catch (err) {
  console.log(`FAIL ${err.stack || err}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
