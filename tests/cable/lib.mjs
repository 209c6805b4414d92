// What the /cable client harnesses share: one JSON line per event on stdout
// (stamped with milliseconds since start), JSON-line commands on stdin, and
// a WebSocket class from `ws` (Node 20 has no global WebSocket) that adds
// handshake headers and reports the socket's own life without changing what
// the client library sees.
//
// It delivers messages as a browser does: one per task, so promise
// continuations run between two messages that arrived in one TCP read (ws
// otherwise emits them in the same tick, which a browser never does, and
// @anycable/core then drops a confirm_history that follows its
// confirm_subscription too closely).
import readline from 'node:readline';

const started = Date.now();

export function emit(event, fields = {}) {
  process.stdout.write(JSON.stringify({ t: Date.now() - started, event, ...fields }) + '\n');
}

export function onCommands(handler) {
  const input = readline.createInterface({ input: process.stdin });
  input.on('line', (line) => {
    if (!line.trim()) return;
    let command;
    try {
      command = JSON.parse(line);
    } catch {
      emit('error', { error: 'stdin: not JSON', line });
      return;
    }
    Promise.resolve()
      .then(() => handler(command))
      .catch((err) => emit('error', { error: String((err && err.message) || err), command }));
  });
  // The test closing our stdin means it is done with us.
  input.on('close', () => process.exit(0));
  return input;
}

export function instrumentedWebSocket(BaseWebSocket, { headers = {}, raw = false } = {}) {
  return class InstrumentedWebSocket extends BaseWebSocket {
    constructor(url, protocols, options = {}) {
      const merged = { allowSynchronousEvents: false, ...options };
      if (Object.keys(headers).length) merged.headers = { ...(options.headers || {}), ...headers };
      super(url, protocols, merged);
      emit('socket', { state: 'opening', offered: [].concat(protocols || []) });
      this.addEventListener('open', () => emit('socket', { state: 'open', protocol: this.protocol }));
      this.addEventListener('close', (ev) => emit('socket', { state: 'closed', code: ev.code, reason: ev.reason }));
      this.addEventListener('error', (ev) => emit('socket', { state: 'error', error: String(ev.message || 'error') }));
      if (raw) this.addEventListener('message', (ev) => emit('frame', { dir: 'in', data: String(ev.data) }));
      this._raw = raw;
    }

    send(data, ...rest) {
      if (this._raw) emit('frame', { dir: 'out', data: String(data) });
      return super.send(data, ...rest);
    }
  };
}
