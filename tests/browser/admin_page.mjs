// The status page (/admin) in Debian's headless Chromium, driven by
// playwright-core. Run by tests/test_admin_page.py, which starts two nodes
// with clients on both and passes:
//
//   ADMIN_URL   e.g. http://127.0.0.1:PORT/admin
//   SECRET      the admin secret (basic auth, any user name)
//   EXPECT      JSON: {"nodes": 2, "connections": N, "channel": "room", "clients": M}
//   OUT         where the screenshot goes
//   CHROMIUM    the Chromium executable
//
// Prints one line per step; the last is PASS, or it exits non-zero.
import { chromium } from 'playwright-core';

const { ADMIN_URL, SECRET, OUT } = process.env;
const EXPECT = JSON.parse(process.env.EXPECT);
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const WAIT = 15_000;

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--no-first-run'],
});
const errors = [];
try {
  // Without credentials: the page is refused.
  const stranger = await browser.newContext();
  const refused = await stranger.request.get(ADMIN_URL);
  if (refused.status() !== 401) throw new Error(`without credentials: HTTP ${refused.status()}, not 401`);
  console.log('STEP refused without the secret (401)');

  const context = await browser.newContext({
    httpCredentials: { username: 'admin', password: SECRET }, viewport: { width: 1280, height: 860 },
  });
  const page = await context.newPage();
  page.on('pageerror', (err) => errors.push(err.message));
  page.on('console', (msg) => { if (msg.type() === 'error') errors.push(msg.text()); });
  await page.goto(ADMIN_URL);

  // Real figures: both nodes, and every connection the test opened.
  await page.waitForFunction((expect) => {
    const rows = document.querySelectorAll('#nodes tbody tr');
    if (rows.length !== expect.nodes) return false;
    let total = 0;
    for (const row of rows) total += Number(row.cells[3].textContent.replace(/\D/g, ''));
    return total === expect.connections;
  }, EXPECT, { timeout: WAIT });
  const nodes = await page.$$eval('#nodes tbody tr', (rows) => rows.map((r) => [...r.cells].map((c) => c.textContent)));
  console.log(`STEP nodes: ${JSON.stringify(nodes)}`);
  if (!nodes.every((cells) => cells[1] === 'ready')) throw new Error('a node is not shown ready');

  // The busiest channel is the room, with its subscribers from both nodes.
  await page.waitForFunction((expect) => {
    const first = document.querySelector('#channels tbody tr');
    return first && first.cells[0].textContent === expect.channel
      && Number(first.cells[1].textContent.replace(/\D/g, '')) === expect.clients;
  }, EXPECT, { timeout: WAIT });
  console.log('STEP busiest channel shown');

  // Its presence, from a click on it.
  await page.click('#channels tbody tr td');
  await page.waitForFunction((expect) => document.querySelectorAll('#presence-list li').length === expect.clients,
    EXPECT, { timeout: WAIT });
  const stats = await page.textContent('#presence-stats');
  console.log(`STEP presence: ${stats}`);
  if (!stats.includes(`${EXPECT.clients} clients`)) throw new Error(`presence says ${stats}`);

  // Live: the counts change without a reload.
  const before = await page.textContent('#updated');
  await page.waitForFunction((b) => document.getElementById('updated').textContent !== b, before, { timeout: WAIT });
  console.log('STEP refreshed by itself');

  await page.screenshot({ path: OUT, fullPage: true });
  if (errors.length) throw new Error(`page errors: ${errors.join('; ')}`);
  console.log('PASS');
} finally {
  await browser.close();
}
