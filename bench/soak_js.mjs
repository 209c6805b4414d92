// One honest client of the soak (bench/soak.py): the stock centrifuge-js SDK
// (npm centrifuge 5.8.0, unchanged) under Node 20, over WebSocket (JSON or
// Protobuf) or a fallback with /emulation: http_stream (JSON or Protobuf),
// or sse (JSON; Node 20 has no EventSource, so npm eventsource, the one
// Node's own later EventSource follows, is given to the SDK), subscribed to its
// personal channel (server-side) and to the channels given (client-side,
// recoverable). It prints one JSON object a line for every SDK event the
// soak's checker reads (bench/soak_check.py):
//
//   {"ev":"connecting","code":N,"reason":"..."}      {"ev":"connected","client":"...","transport":"..."}
//   {"ev":"disconnected","code":N,"reason":"..."}
//   {"ev":"subscribing","ch":"...","code":N,"reason":"..."}   (a client-side subscription; 2500 lands here)
//   {"ev":"subscribed","ch":"...","server":bool,"recovered":bool,"was_recovering":bool,"recoverable":bool,"offset":N}
//   {"ev":"unsubscribed","ch":"...","code":N,"reason":"..."}
//   {"ev":"pub","ch":"...","data":{...},"offset":N}
//   {"ev":"error",...}  {"ev":"sub_error","ch":"...",...}
//
// Environment: URL (the WebSocket endpoint, or the http_stream one),
// TRANSPORT (websocket | http_stream | sse), EMULATION (the /emulation URL,
// for the fallbacks), PROTOCOL (json | protobuf), SECRET, USER, CHANNELS
// (comma-separated, client-side). It exits when its stdin closes.
import { createHmac } from 'node:crypto';
import WebSocket from 'ws';
import { EventSource } from 'eventsource';

const protocol = process.env.PROTOCOL || 'json';
const { Centrifuge } = await import(protocol === 'protobuf' ? 'centrifuge/build/protobuf' : 'centrifuge');

function out(event) {
  process.stdout.write(JSON.stringify(event) + '\n');
}

function b64url(data) {
  return Buffer.from(data).toString('base64url');
}

function token() {
  const now = Math.floor(Date.now() / 1000);
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const claims = b64url(JSON.stringify({ sub: process.env.USER, iat: now, exp: now + 4 * 3600 }));
  const signature = createHmac('sha256', process.env.SECRET).update(`${header}.${claims}`).digest('base64url');
  return `${header}.${claims}.${signature}`;
}

// Protobuf hands the application the bytes the backend published (JSON here).
function decode(data) {
  if (data instanceof Uint8Array) {
    const text = new TextDecoder().decode(data);
    try { return JSON.parse(text); } catch { return { undecodable: text }; }
  }
  return data;
}

const transport = process.env.TRANSPORT || 'websocket';
const endpoint = transport === 'websocket' ? process.env.URL : [{ transport, endpoint: process.env.URL }];
const client = new Centrifuge(endpoint, {
  protocol,
  token: token(),
  getToken: async () => token(),
  websocket: WebSocket,
  eventsource: EventSource,
  emulationEndpoint: process.env.EMULATION,
  // An application's settings, not a test's: back off from 0.2 s to 5 s.
  minReconnectDelay: 200,
  maxReconnectDelay: 5000,
});

const position = (ctx) => (ctx.streamPosition ? { offset: Number(ctx.streamPosition.offset), epoch: ctx.streamPosition.epoch } : {});
const message = (ctx) => String((ctx.error && ctx.error.message) || '');

client.on('connecting', (ctx) => out({ ev: 'connecting', code: ctx.code, reason: ctx.reason }));
client.on('connected', (ctx) => out({ ev: 'connected', client: ctx.client, transport: ctx.transport }));
client.on('disconnected', (ctx) => out({ ev: 'disconnected', code: ctx.code, reason: ctx.reason }));
client.on('error', (ctx) => out({ ev: 'error', type: ctx.type, message: message(ctx) }));
// Server-side subscriptions: the personal channel.
client.on('subscribed', (ctx) => out({ ev: 'subscribed', ch: ctx.channel, server: true, recovered: Boolean(ctx.recovered),
                                      was_recovering: Boolean(ctx.wasRecovering), recoverable: Boolean(ctx.recoverable),
                                      ...position(ctx) }));
client.on('subscribing', (ctx) => out({ ev: 'subscribing', ch: ctx.channel, server: true, code: ctx.code, reason: ctx.reason }));
client.on('unsubscribed', (ctx) => out({ ev: 'unsubscribed', ch: ctx.channel, server: true, code: ctx.code, reason: ctx.reason }));
client.on('publication', (ctx) => out({ ev: 'pub', ch: ctx.channel, data: decode(ctx.data), offset: Number(ctx.offset) }));

for (const channel of (process.env.CHANNELS || '').split(',').filter(Boolean)) {
  const sub = client.newSubscription(channel, { recoverable: true });
  sub.on('subscribing', (ctx) => out({ ev: 'subscribing', ch: channel, code: ctx.code, reason: ctx.reason }));
  sub.on('subscribed', (ctx) => out({ ev: 'subscribed', ch: channel, server: false, recovered: Boolean(ctx.recovered),
                                     was_recovering: Boolean(ctx.wasRecovering), recoverable: Boolean(ctx.recoverable),
                                     ...position(ctx) }));
  sub.on('unsubscribed', (ctx) => out({ ev: 'unsubscribed', ch: channel, code: ctx.code, reason: ctx.reason }));
  sub.on('error', (ctx) => out({ ev: 'sub_error', ch: channel, type: ctx.type, message: message(ctx) }));
  sub.on('publication', (ctx) => out({ ev: 'pub', ch: channel, data: decode(ctx.data), offset: Number(ctx.offset) }));
  sub.subscribe();
}
client.connect();

process.stdin.on('data', () => {});
process.stdin.on('end', () => {
  client.disconnect();
  setTimeout(() => process.exit(0), 100);
});
