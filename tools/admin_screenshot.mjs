// The picture of the status page for docs/admin.png, in Debian's headless
// Chromium (playwright-core): run by tools/admin_screenshot.py with ADMIN_URL,
// SECRET (the admin secret) and OUT; CHROMIUM to use another Chromium.
import { chromium } from 'playwright-core';

const { ADMIN_URL, SECRET, OUT } = process.env;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--no-first-run'],
});
try {
  const context = await browser.newContext({
    httpCredentials: { username: 'admin', password: SECRET }, viewport: { width: 1280, height: 1000 },
  });
  const page = await context.newPage();
  await page.goto(ADMIN_URL);
  await page.locator('#chart-connections path[data-series="cluster"]').waitFor({ state: 'attached' });
  await page.locator('#channels tbody tr td').first().click();  // the busiest channel's presence
  await page.locator('#presence-list li').first().waitFor();
  await page.screenshot({ path: OUT });  // the top of the page: the charts, the nodes, the busiest channels
  console.log(`wrote ${OUT}`);
} finally {
  await browser.close();
}
