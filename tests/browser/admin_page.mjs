// The status page (/admin) in Debian's headless Chromium, driven by
// playwright-core. Run by tests/test_admin_page.py, which starts two nodes
// with clients on both and passes:
//
//   ADMIN_URL   e.g. http://127.0.0.1:PORT/admin
//   SECRET      the admin secret (basic auth, any user name)
//   EXPECT      JSON: {"nodes": 2, "connections": N, "channel": "room", "clients": M,
//               "names": [node names], "refusedOn": the node that refused a connect (capacity),
//               "disconnected": the reason of the server's disconnects}
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

  // The charts of the last hour: a line per node and the cluster's, with the
  // connections of now; deliveries; the refused connect and the disconnect.
  // They come with the first sample after the events (every 10 s).
  const drawn = () => page.evaluate(() => [...document.querySelectorAll('#charts path, #charts rect[data-label]')]
    .map((e) => (e.dataset.series ? `${e.closest('figure').id} ${e.dataset.series} last=${e.dataset.last} `
      + `max=${e.dataset.max}` : `${e.closest('figure').id} ${e.dataset.label}=${e.dataset.value}`)));
  await page.waitForFunction((expect) => {
    const path = (chart, series) => document.querySelector(`#chart-${chart} path[data-series="${series}"]`);
    const cluster = path('connections', 'cluster');
    return cluster && Number(cluster.dataset.last) === expect.connections
      && expect.names.every((name) => path('connections', `node:${name}`))
      && Number(path('deliveries', 'cluster')?.dataset.max) > 0
      && Number(path('publications', 'cluster')?.dataset.max) > 0
      && document.querySelector('#chart-refused rect[data-label="capacity"]')
      && document.querySelector(`#chart-disconnects rect[data-label="${expect.disconnected}"]`);
  }, EXPECT, { timeout: 45_000 }).catch(async (err) => {
    throw new Error(`the charts did not show it all: ${err.message}\ndrawn: ${(await drawn()).join('\n')}`);
  });
  const perNode = await page.$$eval('#chart-connections path[data-series^="node:"]',
    (paths) => paths.map((p) => `${p.dataset.series}=${p.dataset.last}`));
  console.log(`STEP charts: connections per node ${perNode.join(', ')}, cluster ${EXPECT.connections}; `
    + `refused: ${await page.textContent('#chart-refused .legend')}; `
    + `disconnects: ${await page.textContent('#chart-disconnects .legend')}`);

  // One node's own: the refusal was on refusedOn, not on the other.
  await page.selectOption('#scope', EXPECT.refusedOn);
  await page.locator('#chart-refused rect[data-label="capacity"]').first().waitFor({ timeout: WAIT });
  const single = await page.$$eval('#chart-connections path', (paths) => paths.map((p) => p.dataset.series));
  if (single.join() !== `node:${EXPECT.refusedOn}`) throw new Error(`one node's view draws ${single}`);
  const other = EXPECT.names.find((name) => name !== EXPECT.refusedOn);
  await page.selectOption('#scope', other);
  await page.waitForFunction(() => !document.querySelector('#chart-refused rect'), null, { timeout: WAIT });
  console.log(`STEP one node at a time: ${EXPECT.refusedOn} refused a connect, ${other} none`);
  await page.selectOption('#scope', '');
  await page.locator('#chart-connections path[data-series="cluster"]').waitFor({ state: 'attached', timeout: WAIT });

  await page.screenshot({ path: OUT, fullPage: true });
  if (errors.length) throw new Error(`page errors: ${errors.join('; ')}`);
  console.log('PASS');
} finally {
  await browser.close();
}
