// The status page: polls /admin/status.json and /admin/trends.json every few
// seconds and renders them (the charts with charts.js); /admin/presence.json
// for one channel. The browser sends the basic-auth
// credentials it was asked for with every request.
'use strict';

const REFRESH_MS = 3000;
const $ = (id) => document.getElementById(id);
let presenceChannel = '';

function text(tag, value, cls) {
  const el = document.createElement(tag);
  el.textContent = value;
  if (cls) el.className = cls;
  return el;
}

function duration(seconds) {
  if (seconds < 60) return `${seconds} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
  return `${Math.floor(seconds / 86400)} d ${Math.floor((seconds % 86400) / 3600)} h`;
}

function bytes(n) {
  if (!n) return '-';
  return n >= 1 << 30 ? `${(n / (1 << 30)).toFixed(1)} GiB` : `${(n / (1 << 20)).toFixed(0)} MiB`;
}

function health(node) {
  const p = node.pushgate || {};
  if (p.draining) return ['draining', 'bad'];
  if (p.silent_for > 2 * 5) return [`silent ${p.silent_for} s`, 'bad'];
  if (p.ready === false) return ['no nsqd', 'bad'];
  return ['ready', 'good'];
}

function renderNodes(status) {
  const body = $('nodes').tBodies[0];
  body.replaceChildren();
  let clients = 0;
  let subs = 0;
  for (const node of status.nodes) {
    const p = node.pushgate || {};
    clients += node.num_clients;
    subs += node.num_subs;
    const [state, cls] = health(node);
    const drops = Object.entries(p.drops || {}).map(([reason, n]) => `${reason} ${n}`).join(', ') || 'none';
    const row = document.createElement('tr');
    row.append(text('td', node.name), text('td', state, cls), text('td', duration(node.uptime)),
      text('td', node.num_clients.toLocaleString(), 'n'), text('td', node.num_users.toLocaleString(), 'n'),
      text('td', node.num_subs.toLocaleString(), 'n'), text('td', node.num_channels.toLocaleString(), 'n'),
      text('td', (p.presence_entries || 0).toLocaleString(), 'n'),
      text('td', `${Math.round((p.loop_lag || 0) * 1000)} ms`, 'n'),
      text('td', bytes(node.process && node.process.rss), 'n'), text('td', drops, drops === 'none' ? '' : 'bad'));
    body.append(row);
  }
  $('summary').textContent = `${status.nodes.length} node${status.nodes.length === 1 ? '' : 's'}, `
    + `${clients.toLocaleString()} connections, ${subs.toLocaleString()} subscriptions, `
    + `${status.num_channels.toLocaleString()} channels`;
}

function renderChannels(status) {
  const body = $('channels').tBodies[0];
  body.replaceChildren();
  for (const { channel, num_clients: n } of status.channels) {
    const row = document.createElement('tr');
    const name = text('td', channel);
    name.title = 'show presence';
    name.style.cursor = 'pointer';
    name.addEventListener('click', () => { $('presence-channel').value = channel; showPresence(channel); });
    row.append(name, text('td', n.toLocaleString(), 'n'));
    body.append(row);
  }
  $('channels-note').textContent = status.unanswered.length
    ? `No answer in time from ${status.unanswered.join(', ')}: their channels are missing.`
    : (status.channels.length ? '' : 'No channel has a subscriber.');
}

async function getJson(url) {
  const response = await fetch(url, { cache: 'no-store', credentials: 'same-origin' });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

// The charts (charts.js): the whole cluster, or the node chosen in #scope.
let trends = null;
function renderTrends() {
  if (!trends) return;
  const scope = $('scope');
  const chosen = scope.value;
  const names = trends.nodes.map((n) => n.name).sort();
  if ([...scope.options].slice(1).map((o) => o.value).join() !== names.join()) {
    scope.replaceChildren(scope.options[0], ...names.map((name) => new Option(name, name)));
    scope.value = names.includes(chosen) ? chosen : '';
  }
  const { colorOf } = Charts.render($('charts'), trends, scope.value);
  const legend = $('nodes-legend');
  legend.replaceChildren();
  if (!scope.value && names.length > 1) {
    for (const name of [...names, 'cluster']) {
      const item = document.createElement('span');
      const swatch = text('span', '', 'swatch');
      swatch.style.background = name === 'cluster' ? '#1d2430' : colorOf(name);
      item.append(swatch, name);
      legend.append(item);
    }
  }
  $('trends-note').textContent = trends.unanswered.length
    ? `No answer in time from ${trends.unanswered.join(', ')}: their figures are missing.` : '';
}
$('scope').addEventListener('change', renderTrends);
window.addEventListener('resize', renderTrends);

async function refresh() {
  try {
    const [status, latest] = await Promise.all([getJson('/admin/status.json'), getJson('/admin/trends.json')]);
    $('asked').textContent = status.node;
    renderNodes(status);
    renderChannels(status);
    trends = latest;
    renderTrends();
    $('updated').textContent = new Date(status.time * 1000).toLocaleTimeString();
    $('problem').hidden = true;
    if (presenceChannel) await showPresence(presenceChannel);
  } catch (err) {
    $('problem').textContent = `(${err.message})`;
    $('problem').hidden = false;
  }
}

async function showPresence(channel) {
  presenceChannel = channel;
  const result = await getJson(`/admin/presence.json?channel=${encodeURIComponent(channel)}`);
  const list = $('presence-list');
  list.replaceChildren();
  if (!result.enabled) {
    $('presence-stats').textContent = `No presence is kept for ${channel} (--presence).`;
    return;
  }
  $('presence-stats').textContent = `${channel}: ${result.num_clients} clients, ${result.num_users} users`
    + (result.clients.length < result.num_clients ? ` (the first ${result.clients.length} shown)` : '');
  for (const client of result.clients) {
    const item = document.createElement('li');
    item.append(text('strong', client.user || '(anonymous)'), ' ', text('code', client.client));
    if (client.conn_info) item.append(' ', text('code', client.conn_info));
    list.append(item);
  }
}

$('presence-form').addEventListener('submit', (event) => {
  event.preventDefault();
  showPresence($('presence-channel').value.trim()).catch((err) => {
    $('presence-stats').textContent = err.message;
  });
});

refresh();
setInterval(refresh, REFRESH_MS);
