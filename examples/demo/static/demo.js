// The demo page: the stock centrifuge-js client (window.Centrifuge, from
// node_modules/centrifuge/dist/centrifuge.js) connected to pushgate.
'use strict';

const config = JSON.parse(document.getElementById('config').textContent);
const $ = (id) => document.getElementById(id);
const HISTORY_ON_LOAD = 50; // room messages shown from the channel's history

// --- talking to the demo backend ---------------------------------------------

async function post(path, body) {
  const response = await fetch(path, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'X-XSRFToken': config.xsrf },
    body: JSON.stringify(body),
  });
  if (!response.ok) {
    let reason = response.statusText;
    try { reason = (await response.json()).error || reason; } catch (e) { /* not JSON */ }
    const error = new Error(`${path}: ${response.status} ${reason}`);
    error.status = response.status;
    throw error;
  }
}

// The SDK calls this when the token in the page has expired (or the gateway
// says so at connect). A 401 means the user is signed out (in another tab, or
// the cookie is gone): the SDK then stops for good, and the page says so.
// Anything else (the backend restarting, a network error) is temporary: the
// SDK tries again later, and the page says that too.
async function fetchToken() {
  let response;
  try {
    response = await fetch('/token', { cache: 'no-store' });
  } catch (e) {
    throw new Error(`the demo backend cannot be reached (${e.message})`);
  }
  if (response.status === 401) throw new Centrifuge.UnauthorizedError('signed out');
  if (!response.ok) throw new Error(`the demo backend answered ${response.status}`);
  const { token } = await response.json();
  if (tokenTrouble) {   // it had failed before: say it is over
    tokenTrouble = false;
    showProblem('');
  }
  return token;
}
let tokenTrouble = false;

// The backend sends its periodic personal events to the users who are here:
// the page says so at every connect (so that a restarted backend learns it
// again without a reload) and then every config.checkInEvery seconds.
let checkInTimer = null;
async function checkIn() {
  clearTimeout(checkInTimer);
  try {
    await post('/online', {});
    checkInTimer = setTimeout(checkIn, config.checkInEvery * 1000);
  } catch (e) {
    if (e.status === 401) { signedOut(); return; }
    checkInTimer = setTimeout(checkIn, 2000); // the backend is restarting: try again soon
  }
}

function showProblem(message, action) {
  const problem = $('problem');
  problem.replaceChildren(message || '');
  if (action) problem.append(' ', action);
  problem.hidden = !message;
}

// --- rendering ---------------------------------------------------------------

function clock(seconds) {
  const when = seconds ? new Date(seconds * 1000) : new Date();
  return when.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
}

// A feed item: `parts` are [className, text] pairs, shown as text (never as
// HTML: the messages come from other users).
function makeItem(className, parts, sentAt) {
  const item = document.createElement('li');
  item.className = className;
  for (const [cls, text] of parts) {
    const span = document.createElement('span');
    span.className = cls;
    span.textContent = text;
    item.append(span);
  }
  const time = document.createElement('time');
  time.textContent = clock(sentAt);
  item.append(time);
  return item;
}

function trim(list) {
  while (list.children.length > 100) list.firstElementChild.remove();
  list.scrollTop = list.scrollHeight;
}

function addItem(list, className, parts, sentAt) {
  list.append(makeItem(className, parts, sentAt));
  trim(list);
}

// Room messages are kept in stream order by their offset, so that history
// fetched after some live messages arrived goes before them, and a message
// seen both live and in history shows once.
const shownOffsets = new Set();

function showChat(data, offset, fromHistory) {
  if (offset) {
    if (shownOffsets.has(offset)) return;
    shownOffsets.add(offset);
  }
  const mine = data.from === config.user;
  const item = makeItem(`message${mine ? ' mine' : ''}${fromHistory ? ' past' : ''}`,
                        [['from', mine ? `${data.from} (you)` : data.from], ['text', data.text]], data.sent_at);
  const list = $('messages');
  if (offset) {
    item.dataset.offset = String(offset);
    const later = [...list.children].find((li) => li.dataset.offset && Number(li.dataset.offset) > offset);
    if (later) {
      list.insertBefore(item, later);
      trim(list);
      return;
    }
  }
  list.append(item);
  trim(list);
}

function showPersonal(data) {
  if (data.type === 'notify') {
    addItem($('notifications'), 'notify', [['from', `from ${data.from}`], ['text', data.text]], data.sent_at);
  } else if (data.type === 'tick') {
    addItem($('notifications'), 'tick', [['from', 'backend'], ['text', data.text]], data.sent_at);
  } else {
    addItem($('notifications'), 'other', [['from', 'data'], ['text', JSON.stringify(data)]], data.sent_at);
  }
}

// The connection badge: connecting, then connected; after a first connection,
// reconnecting with the attempt number, until connected again; signed out
// when the backend no longer gives this page a token.
const badge = { everConnected: false, reconnects: 0, attempt: 0 };

function setState(state, text) {
  const el = $('state');
  el.dataset.state = state;
  el.dataset.reconnects = String(badge.reconnects);
  el.textContent = text;
}

function setRoomState(state) {
  $('chat-state').dataset.state = state;
  $('chat-state').textContent = state;
}

let isSignedOut = false;
function signedOut() {
  isSignedOut = true;
  clearTimeout(checkInTimer);
  client.disconnect();
  setState('signed-out', 'signed out');
  setRoomState('stopped');
  const again = document.createElement('a');
  again.href = '/';
  again.textContent = 'Sign in again';
  showProblem('You are signed out (perhaps in another tab), so this page gets nothing more.', again);
}

// --- the client --------------------------------------------------------------

// WebSocket by default. With ?transports=http_stream,sse (as when a proxy
// blocks WebSocket) the page lists only those fallbacks, in that order: the
// same gateway's /connection/http_stream and /connection/sse, with the
// client's later commands sent to its /emulation. ?transports=websocket,
// http_stream,sse is the usual list: WebSocket first, the fallbacks after.
function transportsFor(websocketUrl, names) {
  const base = websocketUrl.replace(/^ws/, 'http').replace(/\/connection\/websocket$/, '');
  return {
    endpoints: names.map((name) => ({ transport: name,
                                      endpoint: name === 'websocket' ? websocketUrl : `${base}/connection/${name}` })),
    emulationEndpoint: `${base}/emulation`,
  };
}
const fallbacks = new URLSearchParams(location.search).get('transports');
const transports = fallbacks ? transportsFor(config.gatewayUrl, fallbacks.split(',')) : null;

const client = new Centrifuge(transports ? transports.endpoints : config.gatewayUrl, {
  token: config.token,
  getToken: fetchToken,
  minReconnectDelay: 200,        // snappier than the defaults (500 ms .. 20 s) for a demo
  maxReconnectDelay: 3000,
  ...(transports ? { emulationEndpoint: transports.emulationEndpoint } : {}),
});

client.on('connecting', (ctx) => {
  if (!badge.everConnected) {
    setState('connecting', 'connecting');
    return;
  }
  // Emitted once each time a connection is lost; failed attempts then show up as errors.
  badge.reconnects += 1;
  badge.attempt = 1;
  setState('reconnecting', `reconnecting (attempt ${badge.attempt})`);
  console.log('connection lost:', ctx.code, ctx.reason);
});

client.on('error', (ctx) => {
  if (ctx.type === 'connectToken' || ctx.type === 'refreshToken') {
    tokenTrouble = true;
    showProblem(`Could not get a fresh token: ${String(ctx.error.message).replace(/^Error: /, '')}. Trying again.`);
  }
  if (badge.everConnected && client.state === Centrifuge.State.Connecting &&
      (ctx.type === 'transport' || ctx.type === 'connect' || ctx.type === 'connectToken')) {
    badge.attempt += 1;   // that attempt failed: the next one is scheduled with backoff
    setState('reconnecting', `reconnecting (attempt ${badge.attempt})`);
  }
});

client.on('connected', (ctx) => {
  badge.everConnected = true;
  badge.attempt = 0;
  // The badge names the transport: with ?transports=sse it must say sse.
  setState('connected', `connected over ${ctx.transport}`);
  $('state').dataset.transport = ctx.transport;
  showProblem('');
  checkIn();
  console.log('connected, client id', ctx.client);
});

client.on('disconnected', (ctx) => {
  if (isSignedOut) return;
  if (ctx.reason === 'unauthorized') {   // fetchToken said 401
    signedOut();
    return;
  }
  setState('disconnected', `disconnected: ${ctx.reason} (${ctx.code})`);
  setRoomState('stopped');
});

// Publications on server-side subscriptions: here the personal channel #<user>.
client.on('publication', (ctx) => {
  if (ctx.channel === `#${config.user}`) showPersonal(ctx.data);
});

// The room: a public channel the page subscribes to itself. The SDK
// subscribes again after every reconnect and recovers what it missed; when
// it cannot (the first time, or a gateway that restarted and lost its
// history), the page fills the room from the channel's history.
const chat = client.newSubscription('chat');
chat.on('state', (ctx) => setRoomState(ctx.newState));
chat.on('subscribed', async (ctx) => {
  if (ctx.wasRecovering && ctx.recovered) return;
  try {
    const history = await chat.history({ limit: HISTORY_ON_LOAD, reverse: true });
    for (const pub of history.publications.reverse()) showChat(pub.data, pub.offset, true);
  } catch (e) {
    console.warn('chat history:', e);
  }
});
chat.on('publication', (ctx) => showChat(ctx.data, ctx.offset, false));

// Who is in the room, on every gateway node: the channel's presence when the
// page (re)subscribes, then the join and leave pushes (the gateway runs with
// --presence=chat --join-leave=chat).
const here = new Map(); // client id -> user
function showOnline() {
  const users = [...new Set(here.values())].sort();
  $('online').replaceChildren(...users.map((user) => {
    const el = document.createElement('span');
    el.className = user === config.user ? 'person me' : 'person';
    el.textContent = user === config.user ? `${user} (you)` : user;
    return el;
  }));
}
chat.on('subscribed', async () => {
  try {
    const presence = await chat.presence();
    here.clear();
    for (const [client, info] of Object.entries(presence.clients)) here.set(client, info.user);
    showOnline();
  } catch (e) {
    console.warn('chat presence:', e); // 108 when the gateway keeps no presence for the room
  }
});
chat.on('join', (ctx) => { here.set(ctx.info.client, ctx.info.user); showOnline(); });
chat.on('leave', (ctx) => { here.delete(ctx.info.client); showOnline(); });
chat.on('error', (ctx) => console.warn('chat subscription:', ctx.error));
chat.subscribe();
client.connect();

// --- the forms ---------------------------------------------------------------

$('chat-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const input = $('chat-text');
  try {
    await post('/chat', { text: input.value });
    input.value = '';
    showProblem('');
  } catch (e) {
    if (e.status === 401) signedOut(); else showProblem(e.message);
  }
});

$('notify-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const to = $('notify-to').value.trim();
  const text = $('notify-text').value.trim();
  const status = $('notify-status');
  status.textContent = '';
  try {
    await post('/notify', { to, ...(text ? { text } : {}) });
    $('notify-text').value = '';
    // The backend has handed it to NSQ; every open window of `to` shows it.
    status.textContent = `Sent to ${to} at ${clock()}.`;
    showProblem('');
  } catch (e) {
    if (e.status === 401) signedOut(); else showProblem(e.message);
  }
});
