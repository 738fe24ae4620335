// "Why this route": the rule of the routing policy that fired, the priority and scores it
// gave, and the signals it decided on (intent, sentiment, frustration, the customer's
// history). Shown on a case and on an inbox task; the API gives it as `why`.

import { h } from './dom.js';
import { t } from './i18n.js';

const pct = (x) => (typeof x === 'number' ? `${(x * 100).toFixed(0)} %` : '–');

export function priorityBadge(priority) {
  const high = priority === 'high';
  return h('span', { class: `badge ${high ? 'bad' : ''}`, 'data-testid': 'priority', 'data-priority': priority || 'normal' },
    t(high ? 'why.priority.high' : 'why.priority.normal'));
}

export function whyPanel(why) {
  if (!why) return h('p', { class: 'muted', 'data-testid': 'why' }, t('why.none'));
  const s = why.signals || {};
  const c = s.customer || {};
  const scores = Object.entries(why.scores || {});
  return h('dl', { class: 'kv', 'data-testid': 'why', 'data-rule': why.rule },
    h('dt', {}, t('why.rule')), h('dd', {}, h('code', {}, why.rule), ` · ${t('why.policy', { version: why.policy_version })}`),
    h('dt', {}, t('why.priority')), h('dd', {}, priorityBadge(why.priority)),
    h('dt', {}, t('try.intent')), h('dd', {}, `${s.intent || '–'} (${pct(s.confidence)})${s.out_of_scope ? ` · ${t('try.oos')}` : ''}`),
    h('dt', {}, t('why.sentiment')), h('dd', {}, s.sentiment ? `${s.sentiment.label} (${pct(s.sentiment.confidence)})` : '–'),
    h('dt', {}, t('why.frustration')), h('dd', { 'data-testid': 'why-frustration' },
      s.frustration ? `${t(s.frustration.flagged ? 'why.flagged' : 'why.notflagged')} (${pct(s.frustration.score)})` : '–'),
    h('dt', {}, t('why.customer')), h('dd', { 'data-testid': 'why-customer' }, c.known
      ? t('why.history', { contacts: c.contacts_30d, open: c.open_cases, escalations: c.escalations, complaints: c.complaints, days: c.days_since_last_contact ?? '–' })
      : t('why.anonymous')),
    scores.length ? [h('dt', {}, t('why.scores')), h('dd', {}, scores.map(([k, v]) => h('span', { class: 'chip' }, `${k} ${typeof v === 'number' ? v.toFixed(2) : v}`)))] : null);
}
