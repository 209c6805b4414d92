#!/usr/bin/env node
// The stock @rails/actioncable client (npm, unchanged) under Node 20, for the
// /cable tests. One JSON line per event on stdout:
//   {"event":"connected","identifier":"…","reconnected":false}
//   {"event":"received","identifier":"…","data":…}
//   {"event":"rejected","identifier":"…"}
//   {"event":"disconnected","identifier":"…","willAttemptReconnect":true}
// plus "socket" lines (open with the selected subprotocol, closed) and, with
// --raw, every frame.
//
//   node actioncable_client.mjs --url 'ws://127.0.0.1:PORT/cable?jid=TOKEN' \
//     [--subscribe '{"channel":"$pubsub","stream_name":"news"}']… [--header X-JID=TOKEN] [--raw]
//
// Commands on stdin: {"subscribe": {…params}}  {"unsubscribe": {…params}}  {"exit": true}
//                    {"perform": {"params": {…}, "action": "speak", "data": {…}}}
//
// Node 20 has neither a global WebSocket nor a global addEventListener (the
// library's ConnectionMonitor listens for "visibilitychange" on it): the
// WebSocket comes from `ws` through ActionCable.adapters, and the listener
// functions are no-ops, since Node has no page visibility.
import { parseArgs } from 'node:util';
import { createRequire } from 'node:module';
import WebSocket from 'ws';
import { emit, onCommands, instrumentedWebSocket } from './lib.mjs';

const { values } = parseArgs({
  options: {
    url: { type: 'string' },
    subscribe: { type: 'string', multiple: true, default: [] },
    header: { type: 'string', multiple: true, default: [] },
    raw: { type: 'boolean', default: false },
  },
});

globalThis.addEventListener ??= () => {};
globalThis.removeEventListener ??= () => {};

// The package's "main" is its UMD build (its ESM build is a .js file in a
// package without "type": "module", which Node would read as CommonJS).
const ActionCable = createRequire(import.meta.url)('@rails/actioncable');
const headers = Object.fromEntries(values.header.map((h) => [h.slice(0, h.indexOf('=')), h.slice(h.indexOf('=') + 1)]));
ActionCable.adapters.WebSocket = instrumentedWebSocket(WebSocket, { headers, raw: values.raw });

const consumer = ActionCable.createConsumer(values.url);
const subscriptions = new Map();

function subscribe(params) {
  const subscription = consumer.subscriptions.create(params, {
    connected(info) { emit('connected', { identifier: this.identifier, reconnected: Boolean(info && info.reconnected) }); },
    disconnected(info) { emit('disconnected', { identifier: this.identifier, willAttemptReconnect: Boolean(info && info.willAttemptReconnect) }); },
    rejected() { emit('rejected', { identifier: this.identifier }); },
    received(data) { emit('received', { identifier: this.identifier, data }); },
  });
  subscriptions.set(subscription.identifier, subscription);
}

for (const text of values.subscribe) subscribe(JSON.parse(text));
if (!values.subscribe.length) consumer.connect();

function finish() {
  consumer.disconnect();
  emit('exit');
  setTimeout(() => process.exit(0), 50);
}

onCommands((command) => {
  if (command.subscribe) subscribe(command.subscribe);
  else if (command.unsubscribe) {
    const identifier = JSON.stringify(command.unsubscribe);
    subscriptions.get(identifier)?.unsubscribe();
    subscriptions.delete(identifier);
    emit('unsubscribed', { identifier });
  } else if (command.perform) {
    const { params, action, data } = command.perform;
    subscriptions.get(JSON.stringify(params)).perform(action, data || {});
  } else if (command.exit) finish();
  else throw new Error('unknown command');
});
process.on('SIGTERM', finish);
