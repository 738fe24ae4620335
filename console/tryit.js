// Try it (authors): a dry run of a request — classification, routing decision and the
// path the workflow would take — that creates no case.

import { get, post } from './api.js';
import { drawGraph } from './graph.js';
import { h, clear } from './dom.js';
import { t } from './i18n.js';
import { showError } from './app.js';

const SAMPLE = {
  de: 'Sehr geehrte Damen und Herren,\nfür meine stornierte Bestellung wurden mir 89,90 € abgebucht. Bitte erstatten Sie den Betrag.\nMit freundlichen Grüßen\nErika Mustermann',
  en: 'Hello, I was charged 89.90 EUR for an order I cancelled. Please refund it.\nRegards, Jane Doe',
};

export function render(view) {
  const channel = h('select', { 'data-testid': 'try-channel' }, ['letter', 'form', 'chat'].map((c) => h('option', { value: c }, c)));
  const language = h('select', { 'data-testid': 'try-language' }, ['de', 'en'].map((l) => h('option', { value: l }, l)));
  const text = h('textarea', { rows: 8, 'data-testid': 'try-text' });
  text.value = SAMPLE.de;
  language.addEventListener('change', () => {
    if (Object.values(SAMPLE).includes(text.value)) text.value = SAMPLE[language.value];
  });
  const fields = h('textarea', { rows: 2, placeholder: '{"amount": "89.90"}', 'data-testid': 'try-fields' });
  const customer = h('input', { type: 'text', placeholder: 'C-1002345', 'data-testid': 'try-customer' });
  const hint = h('input', { type: 'text', placeholder: 'request_refund', 'data-testid': 'try-intent' });
  const hintConfidence = h('input', { type: 'number', min: 0, max: 1, step: 0.01, value: '0.9', size: 5 });
  const out = h('div', { 'data-testid': 'try-result' });
  const run = h('button', { type: 'submit', 'data-testid': 'try-run' }, t('try.run'));
  const form = h('form', { class: 'panel' },
    h('div', { class: 'row' },
      h('div', {}, h('label', {}, t('try.channel')), channel),
      h('div', {}, h('label', {}, t('try.language')), language),
      h('div', {}, h('label', {}, t('try.customer')), customer),
      h('div', {}, h('label', {}, t('try.hint')), hint),
      h('div', {}, h('label', {}, t('try.hint.confidence')), hintConfidence)),
    h('label', {}, t('try.text')), text,
    h('label', {}, t('try.fields')), fields,
    h('p', {}, run));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clear(out);
    let parsed = {};
    if (fields.value.trim()) {
      try {
        parsed = JSON.parse(fields.value);
        if (typeof parsed !== 'object' || Array.isArray(parsed) || parsed === null) throw new Error('not an object');
      } catch {
        out.append(h('div', { class: 'msg bad' }, t('try.badfields')));
        return;
      }
    }
    const body = { channel: channel.value, language: language.value, text: text.value, fields: parsed };
    if (customer.value.trim()) body.customer_id = customer.value.trim();
    if (hint.value.trim()) body.metadata = { intent: hint.value.trim(), confidence: Number(hintConfidence.value) };
    run.disabled = true;
    try {
      showResult(out, await post('/v1/console/dry-run', body));
    } catch (err) {
      showError(out, err);
    } finally {
      run.disabled = false;
    }
  });
  view.append(h('h1', {}, t('try.title')), h('p', { class: 'help' }, t('try.help')), h('div', { class: 'grid2' }, form, out));
}

function showResult(out, r) {
  const c = r.classification || {};
  const pct = (x) => (typeof x === 'number' ? `${(x * 100).toFixed(1)} %` : '–');
  const cls = h('dl', { class: 'kv', 'data-testid': 'try-classification' },
    h('dt', {}, t('try.intent')), h('dd', { 'data-testid': 'try-out-intent' }, c.intent || '–'),
    h('dt', {}, t('try.confidence')), h('dd', { 'data-testid': 'try-out-confidence' }, pct(c.confidence)),
    h('dt', {}, t('try.oos')), h('dd', { 'data-testid': 'try-out-oos' }, h('span', { class: `badge ${c.out_of_scope ? 'warn' : 'ok'}` }, c.out_of_scope ? t('common.yes') : t('common.no'))),
    h('dt', {}, t('try.topk')), h('dd', {}, (c.top || []).length ? h('ol', {}, c.top.map((x) => h('li', {}, `${x.intent} — ${pct(x.confidence)}`))) : '–'),
    h('dt', {}, t('try.model')), h('dd', {}, h('code', {}, c.model || '–')));
  const route = r.route || {};
  const routeText = route.workflow ? t('try.route.workflow', { workflow: route.workflow }) : route.queue ? t('try.route.queue', { queue: route.queue }) : (r.route_error || '–');
  const routeBox = h('dl', { class: 'kv', 'data-testid': 'try-route' },
    h('dt', {}, t('try.route')), h('dd', { 'data-testid': 'try-out-route' }, h('strong', {}, routeText)),
    h('dt', {}, t('try.rule')), h('dd', {}, h('code', {}, route.rule || '–')));
  out.append(
    h('div', { class: 'msg info', 'data-testid': 'try-nocase' }, `${t('try.nocase')} ${t('try.calls')}`),
    h('div', { class: 'panel' }, h('h2', {}, t('try.classification')), cls),
    h('div', { class: 'panel' }, h('h2', {}, t('try.route')), routeBox));
  if (r.run || r.run_error) {
    const run = r.run || {};
    const panel = h('div', { class: 'panel', 'data-testid': 'try-path' }, h('h2', {}, `${t('try.path')} (${r.workflow.id} v${r.workflow.version})`));
    if (r.run_error) panel.append(h('div', { class: 'msg bad' }, r.run_error));
    if (run.path) panel.append(h('ol', {}, run.path.map((p) => h('li', {}, h('code', {}, p)))));
    const kv = h('dl', { class: 'kv' }, h('dt', {}, t('try.status')), h('dd', {}, run.status || '–'));
    if (run.waiting && run.waiting.kind === 'task') {
      kv.append(h('dt', {}, t('try.stops')), h('dd', {}, t('try.stops.task', { queue: run.waiting.queue, decisions: run.waiting.decisions.join(', ') })));
    }
    if (run.outcome) kv.append(h('dt', {}, t('try.outcome')), h('dd', {}, run.outcome));
    if (run.error) kv.append(h('dt', {}, t('common.error')), h('dd', {}, run.error));
    panel.append(kv);
    if (run.reply) panel.append(h('h3', {}, `${t('try.reply')} (${run.reply.language})`), h('pre', { class: 'wrap' }, run.reply.text));
    out.append(panel);
    if (run.path && run.path.length) {
      // The predicted path, drawn on the workflow's graph.
      const graph = h('div', { class: 'graph-wrap' });
      panel.append(graph);
      get(`/v1/console/workflows/${encodeURIComponent(r.workflow.id)}/definition`)
        .then((def) => graph.append(drawGraph(def, { highlight: run.path })))
        .catch((e) => showError(graph, e));
    }
  }
}
