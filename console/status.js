// Box status (admins): throughput, queue depths, cases by status, the classification
// confidence distribution (from /metrics), model, store, retention and limits.

import { get } from './api.js';
import { h, s, clear, fmtBytes, fmtTime } from './dom.js';
import { t } from './i18n.js';
import { showError } from './app.js';

/** Per-band counts of the confidence histogram in the Prometheus text `/metrics` returns. */
export function confidenceBands(text) {
  const cumulative = [];
  for (const line of text.split('\n')) {
    const m = line.match(/^\S*classification_confidence_bucket\{[^}]*le="([^"]+)"[^}]*\}\s+([0-9.eE+-]+)/);
    if (m) cumulative.push({ le: m[1] === '+Inf' ? Infinity : Number(m[1]), count: Number(m[2]) });
  }
  cumulative.sort((a, b) => a.le - b.le);
  let prev = 0;
  let lower = 0;
  const bands = [];
  for (const c of cumulative) {
    if (c.le === Infinity) continue;
    bands.push({ label: `${lower.toFixed(1)}–${c.le.toFixed(1)}`, count: c.count - prev });
    prev = c.count;
    lower = c.le;
  }
  return bands;
}

function barChart(bands, testid) {
  const w = 520;
  const hgt = 200;
  const max = Math.max(1, ...bands.map((b) => b.count));
  const bw = (w - 40) / Math.max(1, bands.length);
  const svg = s('svg', { width: w, height: hgt + 40, viewBox: `0 0 ${w} ${hgt + 40}`, role: 'img', 'data-testid': testid });
  svg.append(s('line', { x1: 30, y1: hgt, x2: w, y2: hgt, stroke: '#8a93a5' }));
  bands.forEach((b, i) => {
    const bh = (b.count / max) * (hgt - 20);
    const x = 34 + i * bw;
    svg.append(
      s('rect', { x, y: hgt - bh, width: bw - 6, height: Math.max(bh, 0.5), fill: '#2457c5' }, s('title', {}, `${b.label}: ${b.count}`)),
      s('text', { x: x + (bw - 6) / 2, y: hgt - bh - 4, 'text-anchor': 'middle', 'font-size': 11 }, String(b.count)),
      s('text', { x: x + (bw - 6) / 2, y: hgt + 14, 'text-anchor': 'middle', 'font-size': 10, fill: '#5d6677' }, b.label),
    );
  });
  return svg;
}

function hbars(entries, testid) {
  const max = Math.max(1, ...entries.map(([, v]) => v));
  const table = h('table', { 'data-testid': testid });
  for (const [k, v] of entries) {
    const bar = s('svg', { width: 220, height: 14 }, s('rect', { x: 0, y: 2, height: 10, width: Math.max(1, (v / max) * 220), fill: '#2457c5' }));
    table.append(h('tr', {}, h('td', {}, k), h('td', {}, h('strong', {}, String(v))), h('td', {}, bar)));
  }
  return table;
}

export async function render(view) {
  const body = h('div');
  const refresh = h('button', { type: 'button', class: 'secondary', 'data-testid': 'status-refresh' }, t('status.refresh'));
  view.append(h('h1', {}, t('status.title')), h('p', { class: 'help' }, t('status.help'), ' ', refresh), body);
  const load = async () => {
    const [st, metrics] = await Promise.all([get('/v1/console/status'), get('/metrics')]);
    clear(body);
    const queues = Object.entries(st.queues);
    const disk = st.storage;
    const diskNote = disk.level !== 'ok' ? t(`status.disk.${disk.level}`) : disk.warning ? t('status.disk.warning') : null;
    if (diskNote) {
      body.append(h('div', { class: `msg ${disk.level === 'ok' || disk.level === 'pressure' ? 'warn' : 'bad'}`, role: 'alert', 'data-testid': 'disk-warning' }, diskNote));
    }
    body.append(h('div', { class: 'grid3' },
      h('div', { class: 'panel', 'data-testid': 'status-throughput' }, h('h2', {}, t('status.throughput')),
        h('div', { class: 'stat' }, String(st.throughput.accepted_last_minute)), h('div', { class: 'muted' }, t('status.lastminute')),
        h('div', { class: 'stat' }, String(st.throughput.accepted_last_hour)), h('div', { class: 'muted' }, t('status.lasthour')),
        h('div', { class: 'stat' }, String(st.throughput.finished_last_hour)), h('div', { class: 'muted' }, t('status.finished'))),
      h('div', { class: 'panel', 'data-testid': 'status-queues' }, h('h2', {}, t('status.queues')),
        queues.length ? h('table', {}, queues.map(([q, v]) => h('tr', {}, h('td', {}, h('code', {}, q)), h('td', {}, h('strong', {}, String(v.open))), h('td', { class: 'muted' }, fmtTime(v.oldest)))))
          : h('p', { class: 'muted' }, t('inbox.empty')),
        h('p', {}, `${t('status.intake')}: `, h('strong', {}, String(st.intake_queue)))),
      h('div', { class: 'panel', 'data-testid': 'status-cases' }, h('h2', {}, t('status.bystatus')),
        hbars(Object.entries(st.cases.by_status), 'cases-by-status'),
        h('p', { class: 'muted' }, `Σ ${st.cases.total}`))),
    automation(st.cases.automation),
    h('div', { class: 'grid2' },
      h('div', { class: 'panel', 'data-testid': 'status-confidence' }, h('h2', {}, t('status.confidence')),
        h('p', { class: 'help' }, t('status.confidence.help')), barChart(confidenceBands(metrics), 'confidence-chart')),
      h('div', { class: 'panel', 'data-testid': 'status-model' }, h('h2', {}, t('status.model')),
        h('dl', { class: 'kv' },
          h('dt', {}, t('try.model')), h('dd', {}, h('code', {}, st.model)),
          h('dt', {}, t('status.workflows')), h('dd', {}, st.workflows.map((w) => h('span', { class: 'chip' }, `${w.id} v${w.version}`))),
          h('dt', {}, t('status.routing')), h('dd', {}, `v${st.routing_version}`),
          h('dt', {}, t('status.profile')), h('dd', { 'data-testid': 'status-profile' }, st.profile ? `${st.profile.name}${st.profile.fits ? '' : ` (${t('status.profile.nofit')})`}` : t('status.profile.none')),
          h('dt', {}, t('status.backend')), h('dd', {}, st.store.backend),
          h('dt', {}, t('status.size')), h('dd', { 'data-testid': 'store-size' }, fmtBytes(st.store.disk_bytes)),
          h('dt', {}, t('status.disk')), h('dd', { 'data-testid': 'disk-status' },
            h('span', { class: `badge ${disk.level === 'ok' ? (disk.warning ? 'warn' : 'ok') : 'bad'}` }, disk.level === 'ok' ? t('status.disk.ok') : disk.level),
            ` ${fmtBytes(disk.free_bytes)} ${t('status.disk.free')}, ${fmtBytes(disk.data_bytes)} ${t('status.disk.data')}`,
            h('div', { class: 'muted' }, t('status.disk.marks', { soft: fmtBytes(disk.soft_free_bytes), hard: fmtBytes(disk.hard_free_bytes) }),
              disk.budget_bytes ? `, ${t('status.disk.budget', { budget: fmtBytes(disk.budget_bytes) })}` : '')),
          h('dt', {}, t('status.retention')), h('dd', { 'data-testid': 'retention-status' },
            h('div', {}, t('status.retention.archived', { n: st.retention.archived_cases }), ', ',
              t('status.retention.lastarchive'), ' ', st.retention.last_archive ? fmtTime(st.retention.last_archive) : t('status.retention.never')),
            h('div', { class: 'muted' }, t('status.retention.lastcompaction'), ' ', st.retention.last_compaction
              ? `${fmtTime(st.retention.last_compaction.at)}: ${fmtBytes(st.retention.last_compaction.bytes_before)} → ${fmtBytes(st.retention.last_compaction.bytes_after)}, ${st.retention.last_compaction.millis} ms`
              : t('status.retention.never'))),
          h('dt', {}, t('status.backoffice')), h('dd', {}, st.simulated_backoffice ? t('status.simulated') : t('status.real')),
          h('dt', {}, t('status.limits')), h('dd', {}, Object.entries(st.limits).map(([k, v]) => h('div', {}, h('code', {}, k), ` ${v}`)))))));
  };
  refresh.addEventListener('click', () => load().catch((e) => showError(body, e)));
  await load();
}

// How the stored cases of each intent were handled: the share finished without a person,
// the box's automation rate ("all" first, then the intents with the most cases).
function automation(by) {
  const rows = Object.entries(by || {});
  if (!rows.length) return null;
  const total = (a) => a.without_person + a.with_person + a.waiting_for_customer + a.failed;
  const pct = (n, a) => (total(a) ? `${((100 * n) / total(a)).toFixed(1)} %` : '–');
  rows.sort(([i, a], [j, b]) => (i === 'all' ? -1 : j === 'all' ? 1 : total(b) - total(a)));
  return h('div', { class: 'panel', 'data-testid': 'status-automation' }, h('h2', {}, t('status.automation')),
    h('p', { class: 'help' }, t('status.automation.help')),
    h('table', {},
      h('tr', {}, ['status.automation.intent', 'status.automation.cases', 'status.automation.without', 'status.automation.with', 'status.automation.customer', 'status.automation.failed']
        .map((k) => h('th', {}, t(k)))),
      rows.slice(0, 25).map(([intent, a]) => h('tr', { 'data-testid': 'automation-row', 'data-intent': intent },
        h('td', {}, h('code', {}, intent)), h('td', {}, String(total(a))),
        h('td', {}, h('strong', {}, pct(a.without_person, a))), h('td', {}, pct(a.with_person, a)),
        h('td', {}, pct(a.waiting_for_customer, a)), h('td', {}, pct(a.failed, a))))));
}
