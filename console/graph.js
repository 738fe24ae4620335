// Draws a workflow as an SVG diagram from the definition JSON (`nodes`, `edges`, `start`):
// layered top to bottom (longest path from the start, back edges drawn beside), one shape
// and colour per node kind, every edge labelled with its condition or decision.

import { s } from './dom.js';

export const KINDS = {
  rule: { fill: '#dbe7ff', stroke: '#3d63b8' },
  decision: { fill: '#fff1c9', stroke: '#a07a00' },
  call: { fill: '#e3f5e8', stroke: '#2b7a45' },
  human: { fill: '#fde2e1', stroke: '#b3261e' },
  wait: { fill: '#ece4fb', stroke: '#6a45b5' },
  checkpoint: { fill: '#d9f2f4', stroke: '#1f7a83' },
  reply: { fill: '#f1f1f1', stroke: '#666' },
  ask: { fill: '#fdf0e3', stroke: '#b5651d' },
  end: { fill: '#2f3747', stroke: '#2f3747' },
};

const EDGE_STYLE = {
  next: { stroke: '#4a5263', dash: null },
  when: { stroke: '#2457c5', dash: null },
  otherwise: { stroke: '#7a8290', dash: '6 3' },
  failure: { stroke: '#b3261e', dash: '4 3' },
  decision: { stroke: '#7b4fd0', dash: null },
  escalation: { stroke: '#c56a00', dash: '2 3' },
  answer: { stroke: '#b5651d', dash: null },
  timeout: { stroke: '#c56a00', dash: '2 3' },
};

const RANK_GAP = 130;
const NODE_GAP = 70;
const NODE_H = 46;

function shorten(text, max) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** Layers: longest path from the start over the graph without its back edges. */
function layout(def) {
  const ids = def.nodes.map((n) => n.id);
  const out = new Map(ids.map((id) => [id, []]));
  for (const e of def.edges) out.get(e.from)?.push(e);
  const back = new Set();
  const state = new Map();
  const order = [];
  const visit = (id) => {
    state.set(id, 'open');
    for (const e of out.get(id) || []) {
      const st = state.get(e.to);
      if (st === 'open') back.add(e);
      else if (!st) visit(e.to);
    }
    state.set(id, 'done');
    order.push(id);
  };
  visit(def.start);
  for (const id of ids) if (!state.get(id)) visit(id);
  order.reverse();
  const rank = new Map(ids.map((id) => [id, 0]));
  for (const id of order) {
    for (const e of out.get(id) || []) {
      if (!back.has(e)) rank.set(e.to, Math.max(rank.get(e.to), rank.get(id) + 1));
    }
  }
  const layers = [];
  for (const id of order) {
    const r = rank.get(id);
    (layers[r] ||= []).push(id);
  }
  // Two barycentre sweeps keep crossings down.
  const preds = new Map(ids.map((id) => [id, []]));
  for (const e of def.edges) if (!back.has(e)) preds.get(e.to).push(e.from);
  for (let sweep = 0; sweep < 2; sweep++) {
    for (let r = 1; r < layers.length; r++) {
      const pos = new Map((layers[r - 1] || []).map((id, i) => [id, i]));
      const bary = (id) => {
        const p = preds.get(id).filter((x) => pos.has(x)).map((x) => pos.get(x));
        return p.length ? p.reduce((a, b) => a + b, 0) / p.length : Infinity;
      };
      (layers[r] || []).sort((a, b) => bary(a) - bary(b));
    }
  }
  return { layers: layers.filter(Boolean), back };
}

function subtitle(n) {
  if (n.kind === 'end') return `end: ${n.details.outcome}`;
  if (n.kind === 'human') return `human · ${n.details.queue}`;
  if (n.kind === 'ask') return `ask · ${n.details.question}`;
  return n.kind;
}

function nodeWidth(n) {
  return Math.max(120, Math.min(260, 24 + Math.max(7.8 * Math.min(n.id.length, 28), 6.2 * subtitle(n).length)));
}

function shape(n, w) {
  const k = KINDS[n.kind] || KINDS.rule;
  const hw = w / 2;
  const hh = NODE_H / 2;
  const common = { fill: k.fill, stroke: k.stroke, 'stroke-width': 1.6 };
  switch (n.kind) {
    case 'decision':
      return s('polygon', { ...common, points: `0,${-hh - 6} ${hw + 8},0 0,${hh + 6} ${-hw - 8},0` });
    case 'end':
      return s('ellipse', { ...common, rx: hw, ry: hh });
    case 'human':
      return s('rect', { ...common, x: -hw, y: -hh, width: w, height: NODE_H, rx: 18 });
    case 'wait':
      return s('polygon', { ...common, points: `${-hw + 12},${-hh} ${hw - 12},${-hh} ${hw},0 ${hw - 12},${hh} ${-hw + 12},${hh} ${-hw},0` });
    case 'reply':
      return s('polygon', { ...common, points: `${-hw + 10},${-hh} ${hw},${-hh} ${hw - 10},${hh} ${-hw},${hh}` });
    case 'ask':
      // a speech bubble: the question goes out, the case waits for the answer
      return s('path', { ...common, d: `M${-hw + 10},${-hh} H${hw - 10} Q${hw},${-hh} ${hw},${-hh + 10} V${hh - 10} Q${hw},${hh} ${hw - 10},${hh} H${-hw + 30} L${-hw + 14},${hh + 10} L${-hw + 18},${hh} H${-hw + 10} Q${-hw},${hh} ${-hw},${hh - 10} V${-hh + 10} Q${-hw},${-hh} ${-hw + 10},${-hh} Z` });
    case 'call':
      return s('g', {},
        s('rect', { ...common, x: -hw, y: -hh, width: w, height: NODE_H, rx: 4 }),
        s('rect', { fill: 'none', stroke: k.stroke, 'stroke-width': 1, x: -hw + 4, y: -hh + 4, width: w - 8, height: NODE_H - 8, rx: 2 }));
    case 'checkpoint':
      return s('g', {},
        s('rect', { ...common, x: -hw, y: -hh, width: w, height: NODE_H, rx: 4 }),
        s('rect', { fill: k.stroke, x: -hw, y: -hh, width: 7, height: NODE_H }));
    default:
      return s('rect', { ...common, x: -hw, y: -hh, width: w, height: NODE_H, rx: 4 });
  }
}

function edgeLabel(e) {
  switch (e.kind) {
    case 'when': return e.condition || e.label;
    case 'next': return '';
    case 'failure': return 'on failure';
    case 'escalation': return 'SLA passed';
    case 'answer': return 'answered';
    case 'timeout': return 'no answer';
    default: return e.label;
  }
}

/**
 * Returns an `<svg>` of the workflow. `onSelect(nodeId)` is called when a node is clicked;
 * `highlight` (a list of node ids) marks a path.
 */
export function drawGraph(def, { onSelect, highlight = [] } = {}) {
  const { layers, back } = layout(def);
  const byId = new Map(def.nodes.map((n) => [n.id, n]));
  const pos = new Map();
  const widths = layers.map((layer) => layer.reduce((a, id) => a + nodeWidth(byId.get(id)) + NODE_GAP, -NODE_GAP));
  const width = Math.max(...widths, 300) + 260;
  layers.forEach((layer, r) => {
    let x = (width - 200 - widths[r]) / 2 + 40;
    for (const id of layer) {
      const w = nodeWidth(byId.get(id));
      pos.set(id, { x: x + w / 2, y: 40 + r * RANK_GAP + NODE_H / 2, w });
      x += w + NODE_GAP;
    }
  });
  const height = 40 + layers.length * RANK_GAP;
  const svg = s('svg', { class: 'graph', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': `workflow ${def.id}`, 'data-testid': 'graph' });
  const defs = s('defs');
  for (const [kind, st] of Object.entries(EDGE_STYLE)) {
    defs.append(s('marker', { id: `arrow-${kind}`, viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' },
      s('path', { d: 'M 0 0 L 10 5 L 0 10 z', fill: st.stroke })));
  }
  svg.append(defs);
  const edgesG = s('g', { class: 'edges' });
  const labelsG = s('g', { class: 'labels' });
  const hl = new Set();
  for (let i = 0; i + 1 < highlight.length; i++) hl.add(`${highlight[i]}→${highlight[i + 1]}`);
  // Parallel edges (two branches to one node) are drawn once, with every label.
  const groups = new Map();
  for (const e of def.edges) {
    const key = `${e.from}>${e.to}`;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(e);
  }
  const cubic = (p0, p1, p2, p3, t) => (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t ** 2 * p2 + t ** 3 * p3;
  let backs = 0;
  for (const group of groups.values()) {
    const e = group[0];
    const a = pos.get(e.from);
    const b = pos.get(e.to);
    if (!a || !b) continue;
    const st = EDGE_STYLE[e.kind] || EDGE_STYLE.next;
    let d;
    let lx;
    let ly;
    if (back.has(e) || b.y <= a.y) {
      // Back edge: out of the right side, around, into the right side.
      const bend = Math.max(a.x + a.w / 2, b.x + b.w / 2) + 60 + 20 * backs++;
      d = `M ${a.x + a.w / 2} ${a.y} C ${bend} ${a.y}, ${bend} ${b.y}, ${b.x + b.w / 2 + 4} ${b.y}`;
      lx = bend - 10;
      ly = (a.y + b.y) / 2;
    } else {
      const y1 = a.y + NODE_H / 2 + (byId.get(e.from).kind === 'decision' ? 6 : 0);
      const y2 = b.y - NODE_H / 2 - (byId.get(e.to).kind === 'decision' ? 8 : 2);
      const ym = (y1 + y2) / 2;
      d = `M ${a.x} ${y1} C ${a.x} ${ym}, ${b.x} ${ym}, ${b.x} ${y2}`;
      // Short edges: the curve's point at t = 0.7, so one node's branches are labelled
      // apart, near their targets. Long edges: in the gap just above the target, clear
      // of the nodes of the ranks they pass.
      let tl = 0.7;
      if (b.y - a.y > RANK_GAP * 1.5) {
        const want = b.y - RANK_GAP / 2;
        tl = 0.5;
        while (tl < 0.99 && cubic(y1, ym, ym, y2, tl) < want) tl += 0.01;
      }
      lx = cubic(a.x, a.x, b.x, b.x, tl);
      ly = cubic(y1, ym, ym, y2, tl);
    }
    const on = hl.has(`${e.from}→${e.to}`);
    const kind = EDGE_STYLE[e.kind] ? e.kind : 'next';
    edgesG.append(s('path', {
      d, fill: 'none', stroke: on ? '#e07b00' : st.stroke, 'stroke-width': on ? 3.2 : 1.5,
      'stroke-dasharray': st.dash, 'marker-end': `url(#arrow-${kind})`, 'data-edge': `${e.from}->${e.to}`,
    }, s('title', {}, group.map((x) => `${x.from} → ${x.to}: ${x.label}`).join('\n'))));
    const texts = group.map(edgeLabel).filter(Boolean);
    if (texts.length) {
      const shown = texts.map((x) => shorten(x, 34));
      const wText = 6.3 * Math.max(...shown.map((x) => x.length)) + 8;
      const top = ly - 9 - (shown.length - 1) * 7;
      labelsG.append(s('g', { class: 'edge-label-group', 'data-testid': 'edge-label' },
        s('rect', { class: 'edge-label-bg', x: lx - wText / 2, y: top, width: wText, height: 16 + (shown.length - 1) * 14, rx: 3 }),
        s('text', { class: 'edge-label', 'text-anchor': 'middle' },
          shown.map((x, i) => s('tspan', { x: lx, y: top + 12 + i * 14 }, x)),
          s('title', {}, texts.join('\n')))));
    }
  }
  svg.append(edgesG);
  const nodesG = s('g', { class: 'nodes' });
  for (const n of def.nodes) {
    const p = pos.get(n.id);
    if (!p) continue;
    const dark = n.kind === 'end';
    const g = s('g', {
      class: `node kind-${n.kind}`, transform: `translate(${p.x} ${p.y})`, tabindex: 0,
      'data-node': n.id, 'data-kind': n.kind, role: 'button', 'aria-label': `${n.kind} ${n.id}`,
    },
    shape(n, p.w),
    s('text', { 'text-anchor': 'middle', y: -2, 'font-size': 13, 'font-weight': 600, fill: dark ? '#fff' : '#1d2330' }, shorten(n.id, 28)),
    s('text', { 'text-anchor': 'middle', y: 14, 'font-size': 10.5, fill: dark ? '#cfd5e2' : '#555e70' },
      subtitle(n)),
    s('title', {}, n.description || `${n.kind} ${n.id}`));
    if (highlight.includes(n.id)) g.append(s('circle', { cx: -p.w / 2 + 2, cy: -NODE_H / 2 + 2, r: 5, fill: '#e07b00' }));
    if (n.id === def.start) g.append(s('text', { x: -p.w / 2, y: -NODE_H / 2 - 6, 'font-size': 10.5, fill: '#2457c5' }, 'start'));
    if (onSelect) {
      g.addEventListener('click', () => onSelect(n.id));
      g.addEventListener('keydown', (ev) => { if (ev.key === 'Enter' || ev.key === ' ') onSelect(n.id); });
    }
    nodesG.append(g);
  }
  svg.append(nodesG, labelsG);
  return svg;
}
