#!/usr/bin/env node
// The stock @anycable/web client (npm, unchanged) under Node 20, speaking
// AnyCable's extended protocol (actioncable-v1-ext-json) to /cable. One JSON
// line per event on stdout:
//   {"event":"cable","state":"connect","reconnect":false,"restored":false}
//   {"event":"received","identifier":"…","data":…,"stream":"news","epoch":"…","offset":3}
//   {"event":"info","identifier":"…","type":"history_received"}    (confirm_history)
//   {"event":"info","identifier":"…","type":"history_not_found"}   (reject_history)
//   {"event":"channel","identifier":"…","state":"connect","restored":true,"reconnect":true}
// `stream`/`epoch`/`offset` are the position the library recorded for the message.
//
//   node anycable_client.mjs --url 'ws://127.0.0.1:PORT/cable?jid=TOKEN' \
//     [--stream NAME]… ($pubsub, public) [--signed-stream SIGNED]… ($pubsub, signed)
//     [--turbo SIGNED]… (Turbo::StreamsChannel) [--raw]
//
// Commands on stdin: {"stream": "name"}  {"exit": true}
import { parseArgs } from 'node:util';
import WebSocket from 'ws';
import { createCable } from '@anycable/web';
import { emit, onCommands, instrumentedWebSocket } from './lib.mjs';

const { values } = parseArgs({
  options: {
    url: { type: 'string' },
    stream: { type: 'string', multiple: true, default: [] },
    'signed-stream': { type: 'string', multiple: true, default: [] },
    turbo: { type: 'string', multiple: true, default: [] },
    raw: { type: 'boolean', default: false },
  },
});

const cable = createCable(values.url, {
  protocol: 'actioncable-v1-ext-json',
  websocketImplementation: instrumentedWebSocket(WebSocket, { raw: values.raw }),
  logLevel: 'error',
});

const reason = (err) => (err ? { reason: err.reason || err.message || String(err) } : {});
cable.on('connect', (ev) => emit('cable', { state: 'connect', reconnect: ev.reconnect, restored: ev.restored }));
cable.on('disconnect', (err) => emit('cable', { state: 'disconnect', ...reason(err) }));
cable.on('close', (err) => emit('cable', { state: 'close', ...reason(err) }));

function watch(channel) {
  const identifier = channel.identifier;
  channel.on('connect', (ev) => emit('channel', { identifier, state: 'connect', reconnect: ev.reconnect, restored: ev.restored }));
  channel.on('disconnect', (err) => emit('channel', { identifier, state: 'disconnect', ...reason(err) }));
  channel.on('info', (ev) => emit('info', { identifier, type: ev.type }));
  channel.on('message', (data, meta) => emit('received', { identifier, data, ...(meta || {}) }));
  channel.ensureSubscribed().catch((err) => emit('rejected', { identifier, ...reason(err) }));
}

values.stream.forEach((name) => watch(cable.streamFrom(name)));
values['signed-stream'].forEach((signed) => watch(cable.streamFromSigned(signed)));
values.turbo.forEach((signed) => watch(cable.subscribeTo('Turbo::StreamsChannel', { signed_stream_name: signed })));
cable.connect().catch((err) => emit('cable', { state: 'connect-failed', ...reason(err) }));

function finish() {
  cable.disconnect();
  emit('exit');
  setTimeout(() => process.exit(0), 50);
}

onCommands((command) => {
  if (command.stream !== undefined) watch(cable.streamFrom(command.stream));
  else if (command.exit) finish();
  else throw new Error('unknown command');
});
process.on('SIGTERM', finish);
