// Drives the stock centrifuge-js SDK, its Protobuf build, under Node for
// tests/test_sdks.py and prints one JSON object per SDK event on stdout, in
// the event vocabulary the four SDK harnesses share:
//
//   node tests/sdk/node/harness.mjs URL TOKEN [CHANNEL]
//
// CHANNEL, if given, is subscribed client-side and recoverable. The program
// runs until its stdin closes, then disconnects and exits 0.
//
// The packages come from the repository's package.json (`npm ci`):
// 'centrifuge/build/protobuf' is the SDK's Protobuf entry point, and Node 20
// has no global WebSocket, so the `ws` constructor is handed to the SDK.
import { Centrifuge } from 'centrifuge/build/protobuf';
import WebSocket from 'ws';

// Reconnect fast: the tests cut the network and wait for the SDK to come back.
const MIN_RECONNECT_DELAY_MS = 50;
const MAX_RECONNECT_DELAY_MS = 500;

const args = process.argv.slice(2);
if (args.length < 2 || args.length > 3) {
  process.stderr.write('usage: node harness.mjs URL TOKEN [CHANNEL]\n');
  process.exit(2);
}
const [url, token, channel] = args;

function emit(fields) {
  process.stdout.write(JSON.stringify(fields) + '\n');
}

// In Protobuf mode publication data is a Uint8Array of opaque bytes: hand
// them to the test as they came.
function publication(channelName, serverSide, ctx) {
  const data = ctx.data ?? new Uint8Array();
  return {
    event: 'publication', channel: channelName, server_side: serverSide, offset: ctx.offset ?? null,
    data_b64: Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('base64'),
  };
}

function subscribed(channelName, serverSide, ctx) {
  const fields = {
    event: 'subscribed', channel: channelName, server_side: serverSide,
    recoverable: ctx.recoverable, was_recovering: ctx.wasRecovering, recovered: ctx.recovered,
  };
  if (ctx.streamPosition) {
    fields.offset = ctx.streamPosition.offset;
    fields.epoch = ctx.streamPosition.epoch;
  }
  if (ctx.data && ctx.data.byteLength) {
    // The subscription's data (a token's subs claim, a proxy's answer): bytes as they came.
    fields.data_b64 = Buffer.from(ctx.data.buffer, ctx.data.byteOffset, ctx.data.byteLength).toString('base64');
  }
  return fields;
}

function errorText(ctx) {
  return String(ctx.error?.message ?? ctx.error);
}

const client = new Centrifuge(url, {
  token,
  websocket: WebSocket,
  name: 'pushgate-sdk-test-js',
  minReconnectDelay: MIN_RECONNECT_DELAY_MS,
  maxReconnectDelay: MAX_RECONNECT_DELAY_MS,
});

client.on('connecting', (ctx) => emit({ event: 'connecting', code: ctx.code, reason: ctx.reason }));
client.on('connected', (ctx) => emit({ event: 'connected', client: ctx.client }));
client.on('disconnected', (ctx) => emit({ event: 'disconnected', code: ctx.code, reason: ctx.reason }));
client.on('error', (ctx) => emit({ event: 'error', error: errorText(ctx) }));
client.on('subscribed', (ctx) => emit(subscribed(ctx.channel, true, ctx)));
client.on('unsubscribed', (ctx) => emit({ event: 'unsubscribed', channel: ctx.channel, server_side: true }));
client.on('publication', (ctx) => emit(publication(ctx.channel, true, ctx)));

if (channel) {
  const sub = client.newSubscription(channel, { recoverable: true });
  sub.on('subscribing', (ctx) => emit({ event: 'subscribing', channel, code: ctx.code, reason: ctx.reason }));
  sub.on('subscribed', (ctx) => emit(subscribed(channel, false, ctx)));
  sub.on('unsubscribed', (ctx) => emit({ event: 'unsubscribed', channel, code: ctx.code, reason: ctx.reason }));
  sub.on('error', (ctx) => emit({ event: 'error', channel, error: errorText(ctx) }));
  sub.on('publication', (ctx) => emit(publication(channel, false, ctx)));
  sub.subscribe();
}

client.connect();

process.stdin.resume(); // run until stdin closes
process.stdin.on('end', () => {
  client.disconnect();
  // disconnect() queues the close frame: let it go out before exiting.
  setTimeout(() => process.exit(0), 200);
});
