// Cases (auditors, admins): search by id, status, intent and date; a case's summary and its
// timeline of audit records, with a badge saying whether the box's audit chain verifies.
// The API masks personal data for auditors; the console shows that it did.

import { get, session } from './api.js';
import { h, clear, fmtTime } from './dom.js';
import { t } from './i18n.js';
import { go, showError } from './app.js';
import { whyPanel } from './why.js';

const STATUSES = ['accepted', 'running', 'waiting', 'completed', 'failed', 'escalated'];
const search = { id: '', status: '', intent: '', from: '', to: '' };

export async function render(view, params) {
  if (params[0]) return caseDetail(view, params[0]);
  const fields = {
    id: h('input', { type: 'text', value: search.id, placeholder: 'c-…', 'data-testid': 'search-id' }),
    status: h('select', { 'data-testid': 'search-status' }, h('option', { value: '' }, t('cases.any')), STATUSES.map((s) => h('option', { value: s, selected: s === search.status }, s))),
    intent: h('input', { type: 'text', value: search.intent, placeholder: 'request_refund', 'data-testid': 'search-intent' }),
    from: h('input', { type: 'date', value: search.from, 'data-testid': 'search-from' }),
    to: h('input', { type: 'date', value: search.to, 'data-testid': 'search-to' }),
  };
  const out = h('div', { class: 'panel', 'data-testid': 'case-results' });
  const form = h('form', { class: 'panel row' },
    ...Object.entries(fields).map(([k, el]) => h('div', {}, h('label', {}, t(`cases.${k}`)), el)),
    h('div', {}, h('button', { type: 'submit', 'data-testid': 'search' }, t('cases.search'))));
  // A page at a time (the API answers at most a page); "more" fetches the next one.
  let body = null;
  const run = async (cursor) => {
    if (!cursor) for (const k of Object.keys(search)) search[k] = fields[k].value.trim();
    const q = new URLSearchParams(Object.entries(search).filter(([, v]) => v));
    if (cursor) q.set('cursor', cursor);
    const r = await get(`/v1/console/cases?${q}`);
    if (!cursor) {
      body = h('tbody');
      clear(out).append(h('p', { class: 'muted' }, t(r.total_exact ? 'cases.total' : 'cases.total_more', { total: r.total })),
        h('table', {},
          h('thead', {}, h('tr', {}, ['id', 'status', 'intent', 'workflow', 'outcome', 'accepted'].map((k) => h('th', {}, t(`cases.${k}`))))),
          body));
    }
    for (const c of r.cases) {
      body.append(h('tr', { class: 'clickable', 'data-testid': 'case-row', 'data-case': c.case_id, onclick: () => go(`cases/${c.case_id}`) },
        h('td', {}, h('a', { href: `#/cases/${c.case_id}` }, c.case_id)),
        h('td', {}, h('span', { class: `badge ${badge(c.status)}` }, c.status)),
        h('td', {}, c.intent || '–', typeof c.confidence === 'number' ? h('span', { class: 'muted' }, ` ${(c.confidence * 100).toFixed(0)} %`) : null),
        h('td', {}, c.workflow ? `${c.workflow.id} v${c.workflow.version}` : c.route && c.route.queue ? `→ ${c.route.queue}` : '–'),
        h('td', {}, c.outcome || '–'),
        h('td', {}, fmtTime(c.accepted_at))));
    }
    const old = out.querySelector('[data-testid="search-more"]');
    if (old) old.remove();
    if (r.next) {
      const more = h('button', { type: 'button', 'data-testid': 'search-more' }, t('cases.more'));
      more.addEventListener('click', () => run(r.next).catch((err) => showError(out, err)));
      out.append(more);
    }
  };
  form.addEventListener('submit', (e) => { e.preventDefault(); run(null).catch((err) => showError(out, err)); });
  view.append(h('h1', {}, t('cases.title')), h('p', { class: 'help' }, t('cases.help')), form, out);
  await run(null);
}

function badge(status) {
  return { completed: 'ok', failed: 'bad', escalated: 'bad', waiting: 'warn' }[status] || '';
}

async function caseDetail(view, id) {
  view.append(h('p', {}, h('a', { href: '#/cases' }, t('cases.back'))));
  const c = await get(`/v1/cases/${encodeURIComponent(id)}`);
  const mayAudit = ['auditor', 'admin'].includes(session.me.role);
  const audit = mayAudit ? await get(`/v1/cases/${encodeURIComponent(id)}/audit`) : null;
  const head = h('h1', { 'data-testid': 'case-title' }, `${t('inbox.case')} `, h('code', {}, c.case_id), ' ',
    h('span', { class: `badge ${badge(c.status)}`, 'data-testid': 'case-status' }, c.status));
  if (audit) {
    head.append(' ', h('span', { class: `badge ${audit.chain_verified ? 'ok' : 'bad'}`, 'data-testid': 'chain-badge', 'data-verified': String(audit.chain_verified) },
      audit.chain_verified ? `✓ ${t('cases.chain.ok')}` : `✗ ${t('cases.chain.bad')}`),
    ' ', h('span', { class: `badge ${audit.records_intact ? 'ok' : 'bad'}` }, audit.records_intact ? t('cases.records.ok') : t('cases.records.bad')));
  }
  view.append(head);
  if (c.masked) view.append(h('div', { class: 'msg info', 'data-testid': 'masked' }, t('cases.masked')));
  if (c.erased) view.append(h('div', { class: 'msg info' }, t('cases.erased')));
  const cls = c.classification || {};
  const summary = h('div', { class: 'panel' }, h('h2', {}, t('cases.summary')),
    h('dl', { class: 'kv' },
      h('dt', {}, t('cases.channel')), h('dd', {}, `${c.channel} · ${c.language}`),
      h('dt', {}, t('cases.customer')), h('dd', {}, h('code', {}, c.customer || '–')),
      h('dt', {}, t('try.intent')), h('dd', {}, `${cls.intent || '–'} (${typeof cls.confidence === 'number' ? (cls.confidence * 100).toFixed(1) : '–'} %)`),
      h('dt', {}, t('try.route')), h('dd', {}, c.route ? `${c.route.workflow || c.route.queue} · ${c.route.rule}` : '–'),
      h('dt', {}, t('cases.workflow')), h('dd', {}, c.workflow ? `${c.workflow.id} v${c.workflow.version}` : '–'),
      h('dt', {}, t('cases.current')), h('dd', {}, c.current_node || '–'),
      h('dt', {}, t('cases.waiting')), h('dd', {}, c.waiting ? `${c.waiting.kind}${c.waiting.queue ? ` · ${c.waiting.queue}` : ''}` : '–'),
      h('dt', {}, t('cases.outcome')), h('dd', {}, c.outcome || '–'),
      h('dt', {}, t('inbox.pathsofar')), h('dd', {}, (c.path || []).map((p) => h('span', { class: 'chip' }, p))),
      h('dt', {}, t('cases.reference')), h('dd', {}, h('code', { 'data-testid': 'case-reference' }, c.reference || '–')),
      c.linked_case ? h('dt', {}, t('cases.linked')) : null,
      c.linked_case ? h('dd', {}, h('a', { href: `#/cases/${encodeURIComponent(c.linked_case)}` }, c.linked_case)) : null,
      h('dt', {}, t('cases.accepted')), h('dd', {}, fmtTime(c.accepted_at)),
      ...proactive(c)),
    conversation(c.messages),
    h('h3', {}, t('why.title')), whyPanel(c.why),
    c.reply ? h('div', {}, h('h3', {}, `${t('cases.reply')} (${c.reply.template}, ${c.reply.language})`),
      h('pre', { class: 'wrap', 'data-testid': 'reply-text' }, c.reply.text ?? t('cases.masked'))) : null,
    c.request ? h('details', {}, h('summary', {}, t('inbox.request')), h('pre', { 'data-testid': 'request-json' }, JSON.stringify(c.request, null, 2))) : null);
  const timeline = h('div', { class: 'panel' }, h('h2', {}, t('cases.timeline')));
  if (!audit) timeline.append(h('p', { class: 'muted' }, t('cases.notimeline')));
  else timeline.append(h('ol', { class: 'timeline', 'data-testid': 'timeline' }, audit.records.map(record)));
  view.append(h('div', { class: 'grid2' }, timeline, summary));
}

// A case an event or a schedule started: what started it, and the consents it decided on
// (from the snapshot in its request, so masked for auditors like other personal data).
function proactive(c) {
  const r = c.request || {};
  const started = r.event ? `${r.event.type} · ${r.event.source} · ${r.event.id}`
    : r.schedule ? `${t('cases.schedule')} ${fmtTime(r.schedule.occurrence)}` : null;
  if (!started && !['event', 'schedule'].includes(c.channel)) return [];
  const consents = r.customer && r.customer.consents
    ? Object.entries(r.customer.consents).map(([p, g]) => h('span', { class: `chip ${g ? 'ok' : 'bad'}`, 'data-testid': 'consent' }, `${p}: ${g ? '✓' : '✗'}`))
    : [t('cases.masked')];
  return [
    h('dt', {}, t('cases.startedby')), h('dd', { 'data-testid': 'started-by' }, started || t('cases.masked')),
    h('dt', {}, t('cases.consents')), h('dd', {}, consents.length ? consents : '–'),
  ];
}

// The conversation: the questions the case sent and what the customer wrote, on which
// channel; a customer message no question has taken yet is marked for the reviewer.
export function conversation(messages) {
  if (!messages || !messages.length) return null;
  return h('div', {}, h('h3', {}, t('cases.conversation')),
    h('ol', { class: 'timeline', 'data-testid': 'conversation' }, messages.map((m) =>
      h('li', { class: m.direction === 'in' ? 'human' : 'step', 'data-testid': 'message', 'data-direction': m.direction },
        h('div', { class: 'head' }, `${m.direction === 'in' ? t('cases.msg.in') : t('cases.msg.out')} · ${m.channel}`,
          h('span', { class: 'muted' }, ` · ${fmtTime(m.at)}${m.node ? ` · ${m.node}` : ''}`),
          m.direction === 'in' && !m.node ? h('span', { class: 'badge warn', 'data-testid': 'message-pending' }, ` ${t('cases.msg.pending')}`) : null),
        h('pre', { class: 'wrap' }, m.text ?? t('cases.masked'))))));
}

const short = (d) => (typeof d === 'string' ? `${d.slice(0, 10)}…` : '–');

function record(r) {
  const b = r.body || {};
  const d = b.detail || {};
  const decided = r.kind === 'task_completed' || d.event === 'task_completed';
  let line;
  switch (decided ? 'decided' : r.kind) {
    case 'decided':
      line = `${t('cases.decision', { decision: b.decision ?? d.decision ?? '–', by: b.by ?? d.by ?? '–' })}${b.node ? ` · ${b.node}` : ''}${b.to ? ` → ${b.to}` : ''}`;
      break;
    case 'classified':
      line = `${b.intent ?? '–'} · ${typeof b.confidence === 'number' ? (b.confidence * 100).toFixed(1) : '–'} %${b.out_of_scope ? ' · out of scope' : ''} · ${b.model ?? ''}${b.stage ? ` · ${t(`cases.stage.${b.stage}`)}` : ''}`;
      break;
    case 'routed':
      line = `rule ${b.rule} → ${b.route ? b.route.workflow || b.route.queue : '–'} (policy v${b.policy_version})${b.priority === 'high' ? ` · ${t('why.priority.high')}` : ''}`;
      break;
    case 'step':
      line = `${b.node ?? ''} [${b.kind ?? ''}]${b.edge ? ` —${b.edge}→ ${b.to ?? ''}` : ''} · in ${short(b.input_digest)} out ${short(b.output_digest)}${b.script_digest ? ` · script ${short(b.script_digest)}` : ''}`;
      break;
    case 'task_completed':
      line = `${b.decision ?? (b.detail && b.detail.decision) ?? ''} · ${b.by ?? (b.detail && b.detail.by) ?? ''}`;
      break;
    case 'outcome':
      line = `${b.status ?? ''} · ${b.outcome ?? ''}`;
      break;
    case 'message':
      line = `${b.direction === 'in' ? t('cases.msg.in') : t('cases.msg.out')} · ${b.channel ?? ''} · ${b.via ?? ''}${b.node ? ` · ${b.node}` : ''}`;
      break;
    default:
      // Digests and keys are long; the full record is under Detail.
      line = Object.entries(b).filter(([, v]) => typeof v !== 'object')
        .map(([k, v]) => `${k}: ${typeof v === 'string' && v.length > 40 ? short(v) : v}`).join(' · ');
  }
  return h('li', { class: decided ? 'human' : r.kind, 'data-testid': 'timeline-record', 'data-kind': r.kind, 'data-event': decided ? 'task_completed' : '' },
    h('div', { class: 'head' }, `#${r.seq} ${r.kind}`, h('span', { class: 'muted' }, ` · ${fmtTime(r.at)}`)),
    h('div', {}, line),
    h('details', {}, h('summary', { class: 'muted' }, t('cases.detail')),
      h('pre', {}, JSON.stringify({ ...b, hash: r.hash, prev: r.prev }, null, 2))));
}
