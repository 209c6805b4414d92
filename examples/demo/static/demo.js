// The demo page: the stock centrifuge-js client (window.Centrifuge, from
// node_modules/centrifuge/dist/centrifuge.js) connected to pushgate.
'use strict';

const config = JSON.parse(document.getElementById('config').textContent);
const $ = (id) => document.getElementById(id);

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
    throw new Error(`${path}: ${response.status} ${reason}`);
  }
}

async function fetchToken() {
  const response = await fetch('/token', { cache: 'no-store' });
  if (response.status === 401) {
    // Logged out in another tab: stop reconnecting, the page is stale.
    throw new Centrifuge.UnauthorizedError('not logged in');
  }
  if (!response.ok) throw new Error(`/token: ${response.status}`);
  return (await response.json()).token;
}

function showProblem(message) {
  const problem = $('problem');
  problem.textContent = message || '';
  problem.hidden = !message;
}

// --- rendering ---------------------------------------------------------------

function clock(seconds) {
  const when = seconds ? new Date(seconds * 1000) : new Date();
  return when.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
}

// Adds an item to a feed: `parts` are [className, text] pairs, shown as text
// (never as HTML: the messages come from other users).
function addItem(list, className, parts, sentAt) {
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
  list.append(item);
  while (list.children.length > 100) list.firstElementChild.remove();
  list.scrollTop = list.scrollHeight;
}

function showChat(data) {
  const mine = data.from === config.user;
  addItem($('messages'), mine ? 'message mine' : 'message',
          [['from', mine ? `${data.from} (you)` : data.from], ['text', data.text]], data.sent_at);
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
// reconnecting with the attempt number, until connected again.
const badge = { everConnected: false, reconnects: 0, attempt: 0 };

function setState(state, text) {
  const el = $('state');
  el.dataset.state = state;
  el.dataset.reconnects = String(badge.reconnects);
  el.textContent = text;
}

// --- the client --------------------------------------------------------------

const client = new Centrifuge(config.gatewayUrl, {
  token: config.token,
  getToken: fetchToken,          // when the token in the page has expired
  minReconnectDelay: 200,        // snappier than the defaults (500 ms .. 20 s) for a demo
  maxReconnectDelay: 3000,
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
  if (badge.everConnected && client.state === Centrifuge.State.Connecting &&
      (ctx.type === 'transport' || ctx.type === 'connect')) {
    badge.attempt += 1;   // that attempt failed: the next one is scheduled with backoff
    setState('reconnecting', `reconnecting (attempt ${badge.attempt})`);
  }
});

client.on('connected', (ctx) => {
  badge.everConnected = true;
  badge.attempt = 0;
  setState('connected', 'connected');
  showProblem('');
  console.log('connected, client id', ctx.client);
});

client.on('disconnected', (ctx) => {
  setState('disconnected', `disconnected: ${ctx.reason} (${ctx.code})`);
});

// Publications on server-side subscriptions: here the personal channel #<user>.
client.on('publication', (ctx) => {
  if (ctx.channel === `#${config.user}`) showPersonal(ctx.data);
});

// The room: a public channel the page subscribes to itself. The SDK
// subscribes again after every reconnect.
const chat = client.newSubscription('chat');
chat.on('state', (ctx) => {
  $('chat-state').dataset.state = ctx.newState;
  $('chat-state').textContent = ctx.newState;
});
chat.on('publication', (ctx) => showChat(ctx.data));
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
    showProblem(e.message);
  }
});

$('notify-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const text = $('notify-text').value.trim();
  try {
    await post('/notify', { to: $('notify-to').value.trim(), ...(text ? { text } : {}) });
    $('notify-text').value = '';
    showProblem('');
  } catch (e) {
    showProblem(e.message);
  }
});
