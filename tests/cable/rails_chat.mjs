#!/usr/bin/env node
// Users of a Rails chat page (tests/ruby/rails_app `serve`: the stock
// @rails/actioncable, cookie sign-in) in Debian's headless Chromium driven
// by playwright-core, one browser context (its own cookies) per user. One
// JSON line per event, named by the user:
//   {"event":"connected","name":"alice"}   {"event":"rejected","name":"alice"}
//   {"event":"received","name":"alice","data":{…}}
//   {"event":"disconnected","name":"alice","willAttemptReconnect":true}
//   {"event":"console","name":"alice","type":"error","text":"…"}   {"event":"pageerror",…}
//
//   node rails_chat.mjs [--chromium /usr/bin/chromium]
//
// Commands on stdin:
//   {"open": {"name": "alice", "login": "http://…/login?name=alice", "url": "http://…/rooms/1?cable=ws://…"}}
//   {"open": {"name": "mallory", "cookies": [{"name": "user_id", "value": "forged", "url": "http://…"}], "url": …}}
//   {"speak": {"name": "alice", "text": "hi", "others": false}}   (the page's subscription.perform("speak", …))
//   {"close": "alice"}   (the tab is closed)        {"exit": true}
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';
import { emit, onCommands } from './lib.mjs';

const { values } = parseArgs({
  options: { chromium: { type: 'string', default: process.env.CHROMIUM || '/usr/bin/chromium' } },
});

// No sandbox as root, and no background traffic to hosts this network refuses.
const browser = await chromium.launch({
  executablePath: values.chromium,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
});
const tabs = new Map();

async function open({ name, login, cookies, url }) {
  const context = await browser.newContext();
  await context.exposeFunction('__report', (event, fields) => emit(event, { name, ...fields }));
  if (cookies) await context.addCookies(cookies);
  const tab = await context.newPage();
  tab.on('console', (msg) => emit('console', { name, type: msg.type(), text: msg.text() }));
  tab.on('pageerror', (err) => emit('pageerror', { name, text: err.message }));
  if (login) {
    const response = await tab.goto(login);
    emit('signed_in', { name, status: response.status() });
  }
  await tab.goto(url);
  tabs.set(name, { context, tab });
  emit('opened', { name });
}

let finishing = false;
async function finish() {
  if (finishing) return;
  finishing = true;
  emit('exit');
  await browser.close().catch(() => {});
  process.exit(0);
}

onCommands(async (command) => {
  if (command.open) await open(command.open);
  else if (command.speak) {
    const { name, text, others } = command.speak;
    await tabs.get(name).tab.evaluate(([t, o]) => window.speak(t, o), [text, Boolean(others)]);
    emit('spoke', { name, text });
  } else if (command.close) {
    const { context, tab } = tabs.get(command.close);
    await tab.close();
    await context.close();
    tabs.delete(command.close);
    emit('closed', { name: command.close });
  } else if (command.exit) await finish();
  else throw new Error('unknown command');
});
process.on('SIGTERM', finish);
