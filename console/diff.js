// Line diff (longest common subsequence) for comparing workflow versions, and rendering of
// unified diffs (fixture failures) with added and removed lines marked.

import { h } from './dom.js';

/** Returns [{op: ' '|'+'|'-', line}] turning `a` into `b`. */
export function diffLines(a, b) {
  const x = a.split('\n');
  const y = b.split('\n');
  const n = x.length;
  const m = y.length;
  if (n * m > 4_000_000) {
    return [...x.map((line) => ({ op: '-', line })), ...y.map((line) => ({ op: '+', line }))];
  }
  const lcs = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i][j] = x[i] === y[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  const out = [];
  let i = 0;
  let j = 0;
  while (i < n && j < m) {
    if (x[i] === y[j]) { out.push({ op: ' ', line: x[i] }); i++; j++; }
    else if (lcs[i + 1][j] >= lcs[i][j + 1]) { out.push({ op: '-', line: x[i] }); i++; }
    else { out.push({ op: '+', line: y[j] }); j++; }
  }
  while (i < n) out.push({ op: '-', line: x[i++] });
  while (j < m) out.push({ op: '+', line: y[j++] });
  return out;
}

/** A `<pre>` of the changed lines with `context` lines around each change. */
export function renderDiff(ops, context = 3) {
  const keep = new Set();
  ops.forEach((o, i) => {
    if (o.op !== ' ') for (let k = i - context; k <= i + context; k++) keep.add(k);
  });
  const pre = h('pre', { class: 'diff', 'data-testid': 'diff' });
  let skipped = false;
  ops.forEach((o, i) => {
    if (!keep.has(i)) { skipped = true; return; }
    if (skipped) { pre.append(h('span', { class: 'hunk' }, '…')); skipped = false; }
    const cls = o.op === '+' ? 'add' : o.op === '-' ? 'del' : 'ctx';
    pre.append(h('span', { class: cls }, `${o.op} ${o.line}`));
  });
  return pre;
}

/** Text that may hold a unified diff (lines starting with +, - or @@), marked up. */
export function renderFailure(text) {
  const pre = h('pre', { class: 'diff' });
  for (const line of text.split('\n')) {
    const cls = line.startsWith('+++') || line.startsWith('---') ? 'hunk'
      : line.startsWith('+') ? 'add' : line.startsWith('-') ? 'del' : line.startsWith('@@') ? 'hunk' : 'ctx';
    pre.append(h('span', { class: cls }, line));
  }
  return pre;
}
