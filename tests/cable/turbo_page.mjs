#!/usr/bin/env node
// A page that uses the stock @hotwired/turbo-rails bundle (npm) with a
// <turbo-cable-stream-source>, in Debian's headless Chromium driven by
// playwright-core. The page itself comes from the test (rendered by a Rails
// app with the bridge's view helpers); this serves it, and the bundle as
// importmap-rails would pin it, on 127.0.0.1:PORT. One JSON line per event:
//   {"event":"page","url":"http://127.0.0.1:PORT/"}
//   {"event":"subscribed"}            the element got its `connected` attribute (confirm_subscription)
//   {"event":"dom","html":"<p>…</p>"} #messages changed (a Turbo Stream was applied)
//   {"event":"console","type":"error","text":"…"}   {"event":"pageerror","text":"…"}
//
//   node turbo_page.mjs --page page.html --port PORT [--chromium /usr/bin/chromium]
//
// Commands on stdin: {"screenshot": "path.png"}  {"exit": true}
import http from 'node:http';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';
import { emit, onCommands } from './lib.mjs';

const { values } = parseArgs({
  options: {
    page: { type: 'string' },
    port: { type: 'string', default: '0' },
    chromium: { type: 'string', default: process.env.CHROMIUM || '/usr/bin/chromium' },
  },
});

// The package's "require" export is its self-contained ES module bundle
// (Turbo with @rails/actioncable and the stream source element built in).
const bundle = await readFile(createRequire(import.meta.url).resolve('@hotwired/turbo-rails'));
const page = await readFile(values.page);
const server = http.createServer((req, res) => {
  if (req.url === '/') res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(page);
  else if (req.url === '/turbo-rails.js') res.writeHead(200, { 'content-type': 'text/javascript' }).end(bundle);
  else res.writeHead(404).end();
});
await new Promise((resolve) => server.listen(Number(values.port), '127.0.0.1', resolve));
const url = `http://127.0.0.1:${server.address().port}/`;

// No sandbox as root, and no background traffic to hosts this network refuses.
const browser = await chromium.launch({
  executablePath: values.chromium,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
});
const tab = await browser.newPage({ viewport: { width: 800, height: 400 } });
tab.on('console', (msg) => emit('console', { type: msg.type(), text: msg.text() }));
tab.on('pageerror', (err) => emit('pageerror', { text: err.message }));
await tab.exposeFunction('__reportDom', (html) => emit('dom', { html }));
await tab.exposeFunction('__reportSubscribed', (on) => emit(on ? 'subscribed' : 'unsubscribed'));
await tab.addInitScript(() => {
  document.addEventListener('DOMContentLoaded', () => {
    const messages = document.getElementById('messages');
    new MutationObserver(() => window.__reportDom(messages.innerHTML))
      .observe(messages, { childList: true, subtree: true, characterData: true });
    const source = document.querySelector('turbo-cable-stream-source');
    new MutationObserver(() => window.__reportSubscribed(source.hasAttribute('connected')))
      .observe(source, { attributes: true, attributeFilter: ['connected'] });
  });
});
await tab.goto(url);
emit('page', { url });

let finishing = false;
async function finish() {
  if (finishing) return;
  finishing = true;
  emit('exit');
  await browser.close().catch(() => {});
  server.close();
  process.exit(0);
}

onCommands(async (command) => {
  if (command.screenshot) {
    await tab.screenshot({ path: command.screenshot });
    emit('screenshot', { path: command.screenshot });
  } else if (command.exit) await finish();
  else throw new Error('unknown command');
});
process.on('SIGTERM', finish);
