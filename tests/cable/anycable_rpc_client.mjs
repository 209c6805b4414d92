#!/usr/bin/env node
// The stock @anycable/web client (npm, unchanged) under Node 20 on a Ruby
// channel the app decides over RPC, signed in by a cookie as a browser is.
// One JSON line per event on stdout:
//   {"event":"cable","state":"connect"}   {"event":"channel","state":"connect"}
//   {"event":"received","data":…}         {"event":"presence","message":{type,id,info}}
//   {"event":"info","state":{"id":info,…}} (presence.info() resolved)
//   {"event":"info-failed","reason":…}    (presence.info() rejected)
//
//   node anycable_rpc_client.mjs --url ws://127.0.0.1:PORT/cable --cookie 'user=…' --room 1
//
// Commands on stdin: {"whisper": data}  {"join": {"id": …, "info": …}}  {"leave": true}
//                    {"info": true}  {"perform": "action", "data": {…}}  {"exit": true}
import { parseArgs } from 'node:util';
import WebSocket from 'ws';
import { createCable } from '@anycable/web';
import { emit, onCommands, instrumentedWebSocket } from './lib.mjs';

const { values } = parseArgs({
  options: {
    url: { type: 'string' },
    cookie: { type: 'string', default: '' },
    room: { type: 'string', default: '1' },
    protocol: { type: 'string', default: 'actioncable-v1-ext-json' },
  },
});

const headers = values.cookie ? { Cookie: values.cookie } : {};
const cable = createCable(values.url, {
  protocol: values.protocol,
  websocketImplementation: instrumentedWebSocket(WebSocket, { headers }),
  logLevel: 'error',
});

const reason = (err) => (err ? { reason: err.reason || err.message || String(err) } : {});
cable.on('connect', (ev) => emit('cable', { state: 'connect', reconnect: ev.reconnect }));
cable.on('disconnect', (err) => emit('cable', { state: 'disconnect', ...reason(err) }));
cable.on('close', (err) => emit('cable', { state: 'close', ...reason(err) }));

const channel = cable.subscribeTo('ChatChannel', { room: values.room });
channel.on('connect', () => emit('channel', { state: 'connect' }));
channel.on('disconnect', (err) => emit('channel', { state: 'disconnect', ...reason(err) }));
channel.on('message', (data) => emit('received', { data }));
channel.on('presence', (message) => emit('presence', { message }));
channel.ensureSubscribed().catch((err) => emit('rejected', reason(err)));
cable.connect().catch((err) => emit('cable', { state: 'connect-failed', ...reason(err) }));

function finish() {
  cable.disconnect();
  emit('exit');
  setTimeout(() => process.exit(0), 50);
}

onCommands(async (command) => {
  if (command.whisper !== undefined) await channel.whisper(command.whisper);
  else if (command.join) await channel.presence.join(command.join.id, command.join.info);
  else if (command.leave) await channel.presence.leave();
  else if (command.info) {
    channel.presence.reset();
    try {
      emit('info', { state: await channel.presence.info() });
    } catch (err) {
      emit('info-failed', reason(err));
    }
  } else if (command.perform) await channel.perform(command.perform, command.data || {});
  else if (command.exit) finish();
  else throw new Error('unknown command');
});
process.on('SIGTERM', finish);
