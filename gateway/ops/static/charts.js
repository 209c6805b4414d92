// The status page's charts of the last hour: plain SVG, drawn from
// /admin/trends.json (gateway/core/trends.py). No library, no CDN.
//
// Each chart is an <svg> whose drawn series carry data attributes the tests
// read: <path data-series="cluster|node:NAME" data-last="N" data-max="N"> for
// lines, and <rect data-label="LABEL" data-value="N"> for the bars of a stack.
'use strict';

const Charts = (() => {
  const NS = 'http://www.w3.org/2000/svg';
  const PALETTE = ['#2f6fed', '#e8590c', '#2b8a3e', '#ae3ec9', '#1098ad', '#f08c00', '#c2255c', '#5c940d'];
  const INK = '#1d2430';
  const HEIGHT = 160;
  const PAD = { left: 46, right: 12, top: 12, bottom: 24 };
  const SPAN = 3600;      // seconds drawn at most
  const MIN_SPAN = 600;   // seconds drawn at least, so that a young node's first minutes are not a smear

  const LINES = [
    { id: 'connections', title: 'Connections', unit: '' },
    { id: 'deliveries', title: 'Deliveries per second', unit: '/s' },
    { id: 'publications', title: 'Publications per second', unit: '/s',
      note: 'every node reads every publication: the cluster is its busiest node' },
  ];
  const STACKS = [
    { id: 'refused', title: 'Refused connects, by limit', unit: ' per 10 s',
      note: 'connects a limit of the node turned away before the upgrade (HTTP 503)' },
    { id: 'disconnects', title: 'Disconnects, by reason', unit: ' per 10 s',
      note: 'connections the server ended; clients that leave on their own are not counted' },
  ];

  function el(tag, attrs, parent) {
    const node = document.createElementNS(NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    if (parent) parent.append(node);
    return node;
  }

  function compact(n) {
    if (n === null || n === undefined) return '-';
    const a = Math.abs(n);
    const short = (v, unit) => `${v.toFixed(Math.abs(v) >= 10 ? 0 : 1).replace(/\.0$/, '')}${unit}`;
    if (a >= 1e6) return short(n / 1e6, 'M');
    if (a >= 1e3) return short(n / 1e3, 'k');
    if (a >= 10 || Number.isInteger(n)) return String(Math.round(n));
    return String(Number(n.toFixed(2)));
  }

  function niceMax(value) {
    if (!(value > 0)) return 1;
    const power = 10 ** Math.floor(Math.log10(value));
    for (const m of [1, 2, 4, 6, 8, 10]) if (m * power >= value) return m * power;  // halves that read well
    return 10 * power;
  }

  function clock(t) {
    return new Date(t * 1000).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', hour12: false });
  }

  // [time, value] of the samples a grid holds (None/null: no sample).
  function samples(values, start, step) {
    const out = [];
    (values || []).forEach((v, i) => { if (v !== null && v !== undefined) out.push([start + i * step, v]); });
    return out;
  }

  function lastValue(values) {
    for (let i = (values || []).length - 1; i >= 0; i -= 1) if (values[i] !== null) return values[i];
    return null;
  }

  // The axes, the grid and the scales of one chart, on an emptied <svg>.
  function frame(svg, from, to, yMax) {
    svg.replaceChildren();
    svg.style.width = '100%';
    const width = Math.max(240, Math.floor(svg.getBoundingClientRect().width) || 360);
    svg.setAttribute('width', width);
    svg.setAttribute('height', HEIGHT);
    svg.setAttribute('viewBox', `0 0 ${width} ${HEIGHT}`);
    const plot = { x0: PAD.left, x1: width - PAD.right, y0: HEIGHT - PAD.bottom, y1: PAD.top };
    const x = (t) => plot.x0 + ((t - from) / (to - from)) * (plot.x1 - plot.x0);
    const y = (v) => plot.y0 - (v / yMax) * (plot.y0 - plot.y1);
    for (const fraction of [0, 0.5, 1]) {
      const v = yMax * fraction;
      el('line', { x1: plot.x0, x2: plot.x1, y1: y(v), y2: y(v), class: fraction ? 'grid' : 'axis' }, svg);
      el('text', { x: plot.x0 - 6, y: y(v) + 4, 'text-anchor': 'end', class: 'tick' }, svg).textContent = compact(v);
    }
    const span = to - from;
    const every = [60, 120, 300, 600, 900, 1800].find((s) => span / s <= 7) || 1800;
    for (let t = Math.ceil(from / every) * every; t <= to; t += every) {
      el('line', { x1: x(t), x2: x(t), y1: plot.y0, y2: plot.y0 + 4, class: 'axis' }, svg);
      el('text', { x: x(t), y: HEIGHT - 6, 'text-anchor': 'middle', class: 'tick' }, svg).textContent = clock(t);
    }
    return { svg, x, y, plot, from, to };
  }

  function empty(f, text) {
    el('text', { x: (f.plot.x0 + f.plot.x1) / 2, y: (f.plot.y0 + f.plot.y1) / 2, 'text-anchor': 'middle',
                 class: 'empty' }, f.svg).textContent = text;
  }

  // One line; a gap in the samples (more than one step apart) breaks it.
  function line(f, points, step, attrs) {
    let d = '';
    let previous = null;
    for (const [t, v] of points) {
      if (t < f.from - step) continue;
      d += `${previous === null || t - previous > step * 1.5 ? 'M' : 'L'}${f.x(t).toFixed(1)},${f.y(v).toFixed(1)}`;
      previous = t;
    }
    if (!d) return null;
    const path = el('path', { d, fill: 'none', 'stroke-linejoin': 'round', ...attrs }, f.svg);
    if (points.length === 1) {  // one sample: a dot, or nothing would show
      const [t, v] = points[0];
      el('circle', { cx: f.x(t), cy: f.y(v), r: 2.5, fill: attrs.stroke }, f.svg);
    }
    return path;
  }

  // The hover read-out: a guide and, beside it, each series' value at that step.
  function hover(f, figure, rows) {
    const tip = figure.querySelector('.tip');
    const guide = el('line', { y1: f.plot.y1, y2: f.plot.y0, class: 'guide', visibility: 'hidden' }, f.svg);
    const area = el('rect', { x: f.plot.x0, y: f.plot.y1, width: f.plot.x1 - f.plot.x0, height: f.plot.y0 - f.plot.y1,
                              fill: 'transparent' }, f.svg);
    area.addEventListener('mousemove', (event) => {
      const box = f.svg.getBoundingClientRect();
      const t = f.from + ((event.clientX - box.left - f.plot.x0) / (f.plot.x1 - f.plot.x0)) * (f.to - f.from);
      const lines = rows(t);
      if (!lines) { tip.hidden = true; guide.setAttribute('visibility', 'hidden'); return; }
      guide.setAttribute('x1', f.x(lines.t));
      guide.setAttribute('x2', f.x(lines.t));
      guide.setAttribute('visibility', 'visible');
      tip.replaceChildren(Object.assign(document.createElement('strong'), { textContent: clock(lines.t) }));
      for (const [name, color, value] of lines.values) {
        const row = document.createElement('div');
        const swatch = Object.assign(document.createElement('span'), { className: 'swatch' });
        swatch.style.background = color;
        row.append(swatch, `${name}: ${compact(value)}`);
        tip.append(row);
      }
      tip.hidden = false;
      const left = event.clientX - box.left + 14;
      tip.style.left = `${Math.min(left, box.width - tip.offsetWidth - 4)}px`;
    });
    area.addEventListener('mouseleave', () => { tip.hidden = true; guide.setAttribute('visibility', 'hidden'); });
  }

  function at(values, start, step, t) {
    const i = Math.round((t - start) / step);
    return i >= 0 && i < (values || []).length ? { i, t: start + i * step, v: values[i] } : null;
  }

  function drawLines(figure, spec, data, scope, colorOf) {
    const svg = figure.querySelector('svg');
    const { step } = data;
    const main = scope ? data.nodes.find((n) => n.name === scope) : data.cluster;
    const series = [];
    if (!scope && data.nodes.length > 1) {
      for (const node of data.nodes) {
        series.push({ name: node.name, key: `node:${node.name}`, color: colorOf(node.name), width: 1.5,
                      start: node.start, values: node[spec.id] });
      }
    }
    if (main) {
      series.push({ name: scope || (data.nodes.length > 1 ? 'cluster' : data.nodes[0].name),
                    key: scope ? `node:${scope}` : 'cluster', color: scope ? colorOf(scope) : INK,
                    width: 2.5, start: main.start, values: main[spec.id] });
    }
    const { from, to } = data.range;
    const peak = Math.max(0, ...series.flatMap((s) => samples(s.values, s.start, step)
      .filter(([t]) => t >= from).map(([, v]) => v)));
    const f = frame(svg, from, to, niceMax(peak));
    const mainSeries = series[series.length - 1];
    const now = mainSeries ? lastValue(mainSeries.values) : null;
    figure.querySelector('.now').textContent = now === null ? '' : `${compact(now)}${spec.unit}`;
    if (!mainSeries || samples(mainSeries.values, mainSeries.start, step).length === 0) {
      empty(f, `the first figures come within ${step} s`);
      return;
    }
    for (const s of series) {
      const path = line(f, samples(s.values, s.start, step), step,
                        { stroke: s.color, 'stroke-width': s.width, 'data-series': s.key });
      if (path) {
        path.setAttribute('data-last', String(lastValue(s.values)));
        path.setAttribute('data-max', String(Math.max(...samples(s.values, s.start, step).map(([, v]) => v))));
      }
    }
    hover(f, figure, (t) => {
      const found = series.map((s) => [s, at(s.values, s.start, step, t)]).filter(([, p]) => p && p.v !== null);
      if (!found.length) return null;
      return { t: found[found.length - 1][1].t, values: found.map(([s, p]) => [s.name, s.color, p.v]).reverse() };
    });
  }

  function drawStack(figure, spec, data, scope, colorOfLabel) {
    const svg = figure.querySelector('svg');
    const { step } = data;
    const view = scope ? data.nodes.find((n) => n.name === scope) : data.cluster;
    const stacks = (view && view[spec.id]) || {};
    const labels = Object.keys(stacks).sort();
    const length = Math.max(0, ...labels.map((l) => stacks[l].length));
    const totals = Array.from({ length }, (_, i) => labels.reduce((sum, l) => sum + (stacks[l][i] || 0), 0));
    const { from, to } = data.range;
    const f = frame(svg, from, to, niceMax(Math.max(0, ...totals)));
    const legend = figure.querySelector('.legend');
    legend.replaceChildren();
    const sum = totals.reduce((a, b) => a + b, 0);
    figure.querySelector('.now').textContent = `${compact(sum)} in all`;
    if (!labels.length) {
      empty(f, view && view.start !== null ? 'none' : `the first figures come within ${step} s`);
      return;
    }
    const barWidth = Math.max(1, f.x(from + step) - f.x(from) - 1);
    for (let i = 0; i < length; i += 1) {
      const t = view.start + i * step;
      if (t < from || !totals[i]) continue;
      let base = 0;
      for (const label of labels) {
        const v = stacks[label][i] || 0;
        if (!v) continue;
        el('rect', { x: f.x(t) - barWidth, y: f.y(base + v), width: barWidth, height: f.y(base) - f.y(base + v),
                     fill: colorOfLabel(label), 'data-label': label, 'data-value': v }, svg);
        base += v;
      }
    }
    for (const label of labels) {
      const item = document.createElement('span');
      const swatch = Object.assign(document.createElement('span'), { className: 'swatch' });
      swatch.style.background = colorOfLabel(label);
      item.append(swatch, `${label.replace(/_/g, ' ')} ${compact(stacks[label].reduce((a, b) => a + (b || 0), 0))}`);
      legend.append(item);
    }
    hover(f, figure, (t) => {
      const p = at(totals, view.start, step, t);
      if (!p) return null;
      return { t: p.t, values: labels.map((l) => [l.replace(/_/g, ' '), colorOfLabel(l), stacks[l][p.i] || 0]) };
    });
  }

  // The charts, in `container`, once: each a <figure> with a caption, the
  // current value, an <svg>, a legend and a hover read-out.
  function build(container) {
    for (const spec of [...LINES, ...STACKS]) {
      const figure = document.createElement('figure');
      figure.className = `chart ${STACKS.includes(spec) ? 'stack' : 'line'}`;
      figure.id = `chart-${spec.id}`;
      const caption = document.createElement('figcaption');
      caption.append(Object.assign(document.createElement('span'), { textContent: spec.title }),
                     Object.assign(document.createElement('span'), { className: 'now' }));
      if (spec.note) caption.title = spec.note;
      const tip = Object.assign(document.createElement('div'), { className: 'tip', hidden: true });
      figure.append(caption, el('svg', { role: 'img', 'aria-label': spec.title }), tip,
                    Object.assign(document.createElement('div'), { className: 'legend' }));
      container.append(figure);
    }
  }

  // Draw /admin/trends.json, for the whole cluster (scope '') or one node.
  function render(container, data, scope) {
    if (!container.querySelector('figure')) build(container);
    let first = data.time;
    for (const node of data.nodes) if (node.start !== null && node.start < first) first = node.start;
    data.range = { from: Math.max(data.time - SPAN, Math.min(first, data.time - MIN_SPAN)), to: data.time };
    const names = data.nodes.map((n) => n.name).sort();
    const colorOf = (name) => PALETTE[names.indexOf(name) % PALETTE.length];
    const labels = [...new Set(data.nodes.flatMap((n) => [...Object.keys(n.refused || {}),
                                                           ...Object.keys(n.disconnects || {})]))].sort();
    const colorOfLabel = (label) => PALETTE[(labels.indexOf(label) + 1) % PALETTE.length];
    for (const spec of LINES) drawLines(container.querySelector(`#chart-${spec.id}`), spec, data, scope, colorOf);
    for (const spec of STACKS) drawStack(container.querySelector(`#chart-${spec.id}`), spec, data, scope, colorOfLabel);
    return { colorOf, names };
  }

  return { render };
})();
