// The fleet (hub only; admins and auditors): every branch with its last sign of life, how
// far the hub is behind it, its cases and open tasks, whether its audit chain verifies,
// its versions and its last rollout. A branch whose chain does not verify, that is far
// behind or sent messages the hub refused is shown red with the reasons.

import { get } from './api.js';
import { h, clear, fmtTime } from './dom.js';
import { t } from './i18n.js';
import { go, showError } from './app.js';

const chips = (obj) => Object.entries(obj || {}).map(([k, v]) => h('span', { class: 'chip' }, `${k} ${v}`));

function versions(v) {
  const wfs = Object.entries(v.workflows || {}).map(([id, n]) => `${id} v${n}`).join(', ');
  return [v.engine ? `casegraph ${v.engine}` : null, v.model, v.routing != null ? `routing v${v.routing}` : null, wfs || null]
    .filter(Boolean).join(' · ');
}

function rollout(r) {
  if (!r) return '–';
  const s = r.result.status;
  const label = s === 'applied' ? `${r.result.workflow} v${r.result.version}` : t(`fleet.rollout.${s}`);
  return h('span', { class: `badge ${s === 'applied' ? 'ok' : 'bad'}`, title: r.rollout_id }, label);
}

function row(b) {
  const flagged = b.flags.length > 0;
  const chain = b.chain === 'verified'
    ? h('span', { class: 'badge ok' }, t('fleet.verified'))
    : h('span', { class: 'badge bad', title: b.chain }, t('fleet.broken'));
  return h('tr', {
    class: `clickable${flagged ? ' flagged' : ''}`,
    'data-testid': 'fleet-row',
    'data-branch': b.branch,
    'data-flagged': String(flagged),
    onclick: () => go(`fleet/${encodeURIComponent(b.branch)}`),
  },
  h('td', {}, h('strong', {}, b.branch), flagged ? h('div', { class: 'flags' }, b.flags.map((f) => h('div', {}, f))) : null),
  h('td', {}, b.last_seen ? fmtTime(b.last_seen) : t('fleet.never')),
  h('td', { 'data-testid': 'fleet-lag' }, b.lag == null ? '–' : String(b.lag)),
  h('td', {}, String(b.records)),
  h('td', {}, chips(b.cases)),
  h('td', {}, chips(b.open_tasks)),
  h('td', { 'data-testid': 'fleet-chain' }, chain),
  h('td', { class: 'muted' }, versions(b.versions)),
  h('td', {}, b.backlog == null ? '–' : String(b.backlog)),
  h('td', {}, rollout(b.last_rollout)));
}

async function list(view) {
  const table = h('table', { 'data-testid': 'fleet-table' },
    h('tr', {}, ['fleet.branch', 'fleet.lastseen', 'fleet.lag', 'fleet.records', 'fleet.cases', 'fleet.tasks',
      'fleet.chain', 'fleet.versions', 'fleet.backlog', 'fleet.rollout'].map((k) => h('th', {}, t(k)))));
  const summary = h('p', { class: 'muted', 'data-testid': 'fleet-summary' });
  const more = h('button', { type: 'button', class: 'secondary', hidden: true, 'data-testid': 'fleet-more' }, t('fleet.more'));
  const refresh = h('button', { type: 'button', class: 'secondary', 'data-testid': 'fleet-refresh' }, t('status.refresh'));
  view.append(h('h1', {}, t('fleet.title')), h('p', { class: 'help' }, t('fleet.help'), ' ', refresh), summary,
    h('div', { class: 'panel' }, table), more);
  let shown = 0;
  let flagged = 0;
  let next = null;
  const page = async (after) => {
    const p = await get(`/v1/fleet/branches${after ? `?after=${encodeURIComponent(after)}` : ''}`);
    for (const b of p.branches) {
      table.append(row(b));
      shown += 1;
      if (b.flags.length) flagged += 1;
    }
    next = p.next;
    more.hidden = !next;
    summary.textContent = t('fleet.summary', { n: shown, flagged });
  };
  more.addEventListener('click', () => page(next).catch((e) => showError(view, e)));
  refresh.addEventListener('click', () => { clear(view); list(view).catch((e) => showError(view, e)); });
  await page(null);
}

async function detail(view, name) {
  const b = await get(`/v1/fleet/branches/${encodeURIComponent(name)}`);
  const back = h('a', { href: '#/fleet' }, t('fleet.back'));
  view.append(h('p', {}, back), h('h1', {}, b.branch),
    b.flags.length ? h('div', { class: 'msg bad', role: 'alert', 'data-testid': 'fleet-flags' }, b.flags.map((f) => h('div', {}, f))) : null,
    h('div', { class: 'panel' }, h('dl', { class: 'kv' },
      h('dt', {}, t('fleet.domain')), h('dd', {}, b.domain || '–'),
      h('dt', {}, t('fleet.lastseen')), h('dd', {}, b.last_seen ? fmtTime(b.last_seen) : t('fleet.never')),
      h('dt', {}, t('fleet.lag')), h('dd', {}, b.lag == null ? '–' : String(b.lag)),
      h('dt', {}, t('fleet.records')), h('dd', {}, `${b.records} (${t('fleet.head')} ${b.applied})`),
      h('dt', {}, t('fleet.chain')), h('dd', { 'data-testid': 'fleet-detail-chain' }, b.chain),
      h('dt', {}, t('fleet.boxchain')), h('dd', {}, b.box_chain || t('fleet.verified')),
      h('dt', {}, t('fleet.cases')), h('dd', {}, chips(b.cases)),
      h('dt', {}, t('fleet.tasks')), h('dd', {}, chips(b.open_tasks)),
      h('dt', {}, t('fleet.versions')), h('dd', {}, versions(b.versions)),
      h('dt', {}, t('fleet.backlog')), h('dd', {}, b.backlog == null ? '–' : String(b.backlog)),
      h('dt', {}, t('fleet.rejected')), h('dd', {}, `${b.rejected}${b.last_rejected ? ` — ${b.last_rejected}` : ''}`))),
    h('div', { class: 'panel' }, h('h2', {}, t('fleet.problems')),
      b.problems.length ? h('ol', { 'data-testid': 'fleet-problems' }, b.problems.map((p) => h('li', {}, p))) : h('p', { class: 'muted' }, t('common.none')),
      b.problems_dropped ? h('p', { class: 'muted' }, t('fleet.dropped', { n: b.problems_dropped })) : null),
    h('div', { class: 'panel' }, h('h2', {}, t('fleet.rollouts')),
      b.rollouts.length
        ? h('table', {}, b.rollouts.map((r) => h('tr', {}, h('td', {}, h('code', {}, r.rollout_id)), h('td', {}, fmtTime(r.at)), h('td', {}, rollout(r)),
          h('td', { class: 'muted' }, r.result.status === 'refused' ? r.result.errors.join('; ') : ''))))
        : h('p', { class: 'muted' }, t('common.none'))));
}

export async function render(view, params) {
  clear(view);
  if (params && params[0]) await detail(view, params[0]);
  else await list(view);
}
