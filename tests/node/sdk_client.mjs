// The stock centrifuge-js SDK (npm centrifuge 5.8.0) in Node.js, driven by a
// test (tests/jsclient.py) through stdin and stdout, one JSON object a line.
//
// Environment:
//   TRANSPORTS  the SDK's transport list, JSON, e.g.
//               [{"transport":"http_stream","endpoint":"http://127.0.0.1:8000/connection/http_stream"}]
//   EMULATION   the emulationEndpoint (absolute: this is not a browser)
//   PROTOCOL    json (default) or protobuf
//   SECRET, USER, TOKEN_TTL   connection tokens are minted here (HS256), for
//               the first connect and for every getToken (refresh)
//   PING_DELAY  the SDK's maxServerPingDelay, ms (default 10000)
//
// Events out: {"event": "connected", "transport", "client"}, "connecting",
// "disconnected", "error", "publication" {channel, data, offset, tags},
// "subscribed" {channel, recovered, wasRecovering, positioned, recoverable},
// "unsubscribed", "token" (getToken was called), "ready".
// Commands in: {"op": "subscribe"|"unsubscribe", "channel", "tagsFilter"?}, {"op": "disconnect"},
// {"op": "connect"}, {"op": "exit"}.
import { createHmac } from 'node:crypto';
import readline from 'node:readline';
import WebSocket from 'ws';   // Node 20 has no global WebSocket: for the websocket transport

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
  const claims = b64url(JSON.stringify({ sub: process.env.USER, iat: now, exp: now + Number(process.env.TOKEN_TTL || 3600) }));
  const signature = createHmac('sha256', process.env.SECRET).update(`${header}.${claims}`).digest('base64url');
  return `${header}.${claims}.${signature}`;
}

// Publication data arrives as parsed JSON (json) or as bytes (protobuf: the
// gateway's payloads are JSON bytes).
function decode(data) {
  if (data instanceof Uint8Array) return JSON.parse(new TextDecoder().decode(data));
  return data;
}

const client = new Centrifuge(JSON.parse(process.env.TRANSPORTS), {
  protocol,
  token: token(),
  getToken: async () => { out({ event: 'token' }); return token(); },
  emulationEndpoint: process.env.EMULATION,
  websocket: WebSocket,
  minReconnectDelay: 100,
  maxReconnectDelay: 500,
  maxServerPingDelay: Number(process.env.PING_DELAY || 10000),
});

client.on('connecting', (ctx) => out({ event: 'connecting', code: ctx.code, reason: ctx.reason }));
client.on('connected', (ctx) => out({ event: 'connected', transport: ctx.transport, client: ctx.client }));
client.on('disconnected', (ctx) => out({ event: 'disconnected', code: ctx.code, reason: ctx.reason }));
client.on('error', (ctx) => out({ event: 'error', type: ctx.type, message: String(ctx.error && ctx.error.message) }));
client.on('subscribed', (ctx) => out({ event: 'subscribed', channel: ctx.channel, recovered: ctx.recovered,
                                        wasRecovering: ctx.wasRecovering, recoverable: ctx.recoverable }));
client.on('publication', (ctx) => out({ event: 'publication', channel: ctx.channel, data: decode(ctx.data),
                                         offset: ctx.offset }));

const subs = {};
function subscription(channel, tagsFilter) {
  if (!subs[channel]) {
    const sub = client.newSubscription(channel, tagsFilter ? { recoverable: true, tagsFilter } : { recoverable: true });
    sub.on('subscribed', (ctx) => out({ event: 'subscribed', channel, recovered: ctx.recovered,
                                        wasRecovering: ctx.wasRecovering, recoverable: ctx.recoverable }));
    sub.on('unsubscribed', (ctx) => out({ event: 'unsubscribed', channel, code: ctx.code }));
    sub.on('error', (ctx) => out({ event: 'sub_error', channel, type: ctx.type, message: String(ctx.error && ctx.error.message) }));
    sub.on('publication', (ctx) => out({ event: 'publication', channel, data: decode(ctx.data), offset: ctx.offset,
                                         tags: ctx.tags }));
    subs[channel] = sub;
  }
  return subs[channel];
}

client.connect();
out({ event: 'ready' });

for await (const line of readline.createInterface({ input: process.stdin })) {
  const cmd = JSON.parse(line);
  if (cmd.op === 'subscribe') subscription(cmd.channel, cmd.tagsFilter).subscribe();
  else if (cmd.op === 'unsubscribe') subscription(cmd.channel).unsubscribe();
  else if (cmd.op === 'disconnect') client.disconnect();
  else if (cmd.op === 'connect') client.connect();
  else if (cmd.op === 'exit') break;
}
client.disconnect();
process.exit(0);
