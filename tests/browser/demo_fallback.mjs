// The demo page when WebSocket is blocked: its ?transports= switch lists only
// the fallbacks. Run by tests/test_browser_demo_fallback.py with DEMO_URL
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

async function logIn(name, transports) {
  const page = await (await browser.newContext()).newPage();
  page.on('pageerror', (err) => errors.push(`${name}: ${err.message}`));
  await page.goto(DEMO_URL);
  await page.fill('input[name=name]', name);
  await Promise.all([page.waitForURL(DEMO_URL), page.click('button[type=submit]')]);
  // Logged in: open the page again with the switch.
  await page.goto(`${DEMO_URL}?transports=${transports}`);
  await page.locator(`#state[data-state="connected"][data-transport="${transports.split(',')[0]}"]`)
    .waitFor({ timeout: WAIT });
  await page.locator('#chat-state[data-state="subscribed"]').waitFor({ timeout: WAIT });
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
