// Takes docs/demo.png from the running demo (`make run` first):
//
//   node examples/demo/screenshot.mjs [http://127.0.0.1:8080/] [docs/demo.png]
//
// Alice and Bob log in with Debian's headless Chromium (playwright-core from
// npm), chat, and Alice sends Bob a notification; the picture is Bob's page
// once a periodic event from the backend has arrived too.
import { chromium } from 'playwright-core';

const url = process.argv[2] || 'http://127.0.0.1:8080/';
const out = process.argv[3] || 'docs/demo.png';
const WAIT = 20_000;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
});

async function logIn(name) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 600 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  await page.goto(url);
  await page.fill('input[name=name]', name);
  await Promise.all([page.waitForURL(url), page.click('button[type=submit]')]);
  await page.locator('#state[data-state="connected"]').waitFor({ timeout: WAIT });
  await page.locator('#chat-state[data-state="subscribed"]').waitFor({ timeout: WAIT });
  return page;
}

async function say(page, text, to) {
  await page.fill('#chat-text', text);
  await page.press('#chat-text', 'Enter');
  await to.locator('#messages li', { hasText: text }).waitFor({ timeout: WAIT });
}

try {
  const alice = await logIn('alice');
  const bob = await logIn('bob');
  await say(alice, 'Hi Bob! The invoice run just finished.', bob);
  await say(bob, 'Great, thanks Alice. Did mine go out?', alice);
  await alice.fill('#notify-to', 'bob');
  await alice.fill('#notify-text', 'Your invoice #1042 is ready');
  await alice.click('#notify-form button');
  await bob.locator('#notifications li.notify').waitFor({ timeout: WAIT });
  await say(alice, 'Sent you a notification just now.', bob);
  await bob.locator('#notifications li.tick').first().waitFor({ timeout: WAIT });
  await bob.screenshot({ path: out });
  console.log(`wrote ${out}`);
} finally {
  await browser.close();
}
