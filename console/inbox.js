// Inbox (reviewers): open tasks by queue, high priority first, then SLA-critical and oldest
// (the API's order), the case behind a task with why routing sent it there, and completing
// it with a decision and a comment (on a triage task also the customer's mood).

import { get, getPage, post } from './api.js';
import { h, clear, fmtTime } from './dom.js';
import { t } from './i18n.js';
import { showError } from './app.js';
import { conversation } from './cases.js';
import { priorityBadge, whyPanel } from './why.js';

let chosenQueue = '';
/** Tasks the inbox lists at a time (the first ones in the API's order; more on request). */
const PAGE = 200;

export async function render(view) {
  const tasksBox = h('div', { class: 'panel' });
  const caseBox = h('div', { 'data-testid': 'task-detail' });
  const queue = h('select', { 'data-testid': 'inbox-queue' });
  const refresh = h('button', { type: 'button', class: 'secondary' }, t('inbox.refresh'));
  view.append(h('h1', {}, t('inbox.title')), h('p', { class: 'help' }, t('inbox.help')),
    h('div', { class: 'panel row' }, h('div', {}, h('label', {}, t('inbox.queue')), queue), h('div', {}, refresh)),
    h('div', { class: 'grid2' }, tasksBox, caseBox));
  const load = async () => {
    // The first page of the chosen queue (or of all) and the count per queue beside it:
    // a backlog of thousands is counted by the box, not sent to the browser.
    const page = `/v1/tasks?limit=${PAGE}${chosenQueue ? `&queue=${encodeURIComponent(chosenQueue)}` : ''}`;
    const [counts, first] = await Promise.all([get('/v1/tasks/queues'), getPage(page)]);
    const queues = counts.queues.map((q) => [q.queue, q.open]);
    if (chosenQueue && !queues.some(([q]) => q === chosenQueue)) queues.push([chosenQueue, 0]);
    clear(queue).append(h('option', { value: '' }, t('inbox.all')), queues.map(([q, n]) => h('option', { value: q, selected: q === chosenQueue }, `${q} (${n})`)));
    const open = chosenQueue ? (queues.find(([q]) => q === chosenQueue)?.[1] ?? 0) : counts.open;
    clear(tasksBox);
    if (!first.data.length) {
      tasksBox.append(h('p', { class: 'muted', 'data-testid': 'inbox-empty' }, t('inbox.empty')));
      return;
    }
    const now = Date.now();
    const body = h('tbody');
    let shown = 0;
    const more = h('p', { class: 'muted', 'data-testid': 'inbox-more' });
    const next = h('button', { type: 'button', class: 'secondary', 'data-testid': 'inbox-next' }, t('inbox.next', { n: PAGE }));
    // The next page continues after the last task shown, in the same order (the API's
    // `Link` header), so tasks completed meanwhile do not shift what comes next.
    let nextPath = null;
    const append = (page) => {
      for (const task of page.data) body.append(row(task));
      shown += page.data.length;
      nextPath = page.next;
      more.textContent = t('inbox.more', { shown, open: Math.max(open, shown) });
      more.hidden = !nextPath && open <= shown;
      next.hidden = !nextPath;
    };
    const row = (task) => {
      const overdue = task.sla_due && new Date(task.sla_due).getTime() < now;
      return h('tr', { class: 'clickable', 'data-testid': 'task-row', 'data-task': task.task_id, 'data-case': task.case_id, 'data-priority': task.priority,
        onclick: (ev) => {
          for (const r of body.children) r.classList.toggle('selected', r === ev.currentTarget);
          openTask(caseBox, task, load).catch((e) => showError(caseBox, e));
        } },
      h('td', {}, h('strong', {}, task.title || task.node), h('div', { class: 'muted' }, h('code', {}, task.queue),
        task.priority === 'high' ? [' ', priorityBadge(task.priority)] : null)),
      h('td', {}, h('code', {}, task.case_id)),
      h('td', {}, fmtTime(task.created_at)),
      h('td', {}, task.sla_due ? h('span', { class: `badge ${overdue ? 'bad' : 'warn'}`, title: fmtTime(task.sla_due) },
        overdue ? t('inbox.overdue') : t('inbox.due', { time: until(new Date(task.sla_due).getTime() - now) })) : '–'));
    };
    next.addEventListener('click', async () => {
      if (!nextPath) return;
      next.disabled = true;
      try {
        append(await getPage(nextPath));
      } catch (e) {
        showError(tasksBox, e);
      } finally {
        next.disabled = false;
      }
    });
    tasksBox.append(more, h('table', { 'data-testid': 'task-list' },
      h('thead', {}, h('tr', {}, h('th', {}, t('inbox.task')), h('th', {}, t('inbox.case')), h('th', {}, t('inbox.created')), h('th', {}, t('inbox.sla')))),
      body), next);
    append(first);
  };
  queue.addEventListener('change', () => { chosenQueue = queue.value; load().catch((e) => showError(tasksBox, e)); });
  refresh.addEventListener('click', () => load().catch((e) => showError(tasksBox, e)));
  await load();
}

function until(ms) {
  const min = Math.max(0, Math.round(ms / 60000));
  const d = Math.floor(min / 1440);
  const hrs = Math.floor((min % 1440) / 60);
  const m = min % 60;
  return d ? `${d} d ${hrs} h` : hrs ? `${hrs} h ${m} min` : `${m} min`;
}

async function openTask(box, task, reload) {
  clear(box).append(h('p', { class: 'muted' }, t('common.loading')));
  const c = await get(`/v1/cases/${encodeURIComponent(task.case_id)}`);
  clear(box);
  const cls = c.classification || {};
  const req = c.request || {};
  const decision = h('select', { 'data-testid': 'decision' }, task.decisions.map((d) => h('option', { value: d }, d)));
  const comment = h('textarea', { rows: 3, 'data-testid': 'comment' });
  // A triage task may also record the reviewer's reading of the customer's mood.
  const triage = task.node === 'triage';
  const sentiment = h('select', { 'data-testid': 'mood-sentiment' }, h('option', { value: '' }, t('inbox.mood.unset')),
    ['negative', 'neutral', 'positive'].map((l) => h('option', { value: l }, l)));
  const frustrated = h('select', { 'data-testid': 'mood-frustrated' }, h('option', { value: '' }, t('inbox.mood.unset')),
    h('option', { value: 'true' }, t('why.flagged')), h('option', { value: 'false' }, t('why.notflagged')));
  const intent = h('input', { type: 'text', placeholder: cls.intent || 'card_acceptance', 'data-testid': 'reviewed-intent' });
  const result = h('div', { 'data-testid': 'complete-result' });
  const complete = h('button', { type: 'submit', 'data-testid': 'complete' }, t('inbox.complete'));
  const form = h('form', {},
    h('label', {}, t('inbox.decision')), decision,
    h('label', {}, t('inbox.comment')), comment,
    triage ? h('label', {}, t('inbox.intent')) : null, triage ? intent : null,
    triage ? h('fieldset', {}, h('legend', {}, t('inbox.mood')),
      h('label', {}, t('inbox.mood.sentiment')), sentiment,
      h('label', {}, t('inbox.mood.frustrated')), frustrated) : null,
    h('p', {}, complete), result);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    complete.disabled = true;
    clear(result);
    try {
      const body = { decision: decision.value };
      if (comment.value.trim()) body.comment = comment.value.trim();
      if (triage && (sentiment.value || frustrated.value)) {
        body.data = {};
        if (sentiment.value) body.data.sentiment = sentiment.value;
        if (frustrated.value) body.data.frustrated = frustrated.value === 'true';
      }
      if (triage && intent.value.trim()) body.data = { ...(body.data || {}), intent: intent.value.trim() };
      const r = await post(`/v1/tasks/${encodeURIComponent(task.task_id)}/complete`, body);
      let after = await get(`/v1/cases/${encodeURIComponent(r.case_id)}`);
      result.append(h('div', { class: 'msg ok', 'data-testid': 'completed' },
        t('inbox.done', { status: after.status }),
        ' ', h('span', { class: 'badge ok', 'data-testid': 'case-status' }, after.status),
        after.outcome ? h('span', {}, ` · ${after.outcome}`) : null));
      if (after.path) result.append(h('p', {}, t('inbox.pathsofar'), ': ', after.path.map((p) => h('span', { class: 'chip' }, p))));
      await reload();
    } catch (err) {
      showError(result, err);
      complete.disabled = false;
    }
  });
  box.append(h('div', { class: 'panel' },
    h('h2', {}, task.title || task.node),
    h('p', {}, h('code', {}, task.case_id), ' · ', h('span', { class: 'badge' }, c.status)),
    h('h3', {}, t('inbox.context')),
    h('dl', { class: 'kv' },
      h('dt', {}, t('cases.channel')), h('dd', {}, `${c.channel} · ${c.language}`),
      h('dt', {}, t('try.intent')), h('dd', {}, `${cls.intent || '–'} (${typeof cls.confidence === 'number' ? (cls.confidence * 100).toFixed(1) : '–'} %)${cls.out_of_scope ? ` · ${t('try.oos')}` : ''}`),
      h('dt', {}, t('try.route')), h('dd', {}, c.route ? `${c.route.workflow || c.route.queue} (${c.route.rule})` : '–'),
      h('dt', {}, t('inbox.pathsofar')), h('dd', {}, (c.path || []).map((p) => h('span', { class: 'chip' }, p)))),
    h('h3', {}, t('why.title')), whyPanel(task.why || c.why),
    h('h3', {}, t('inbox.text')), h('pre', { class: 'wrap', 'data-testid': 'task-text' }, c.masked ? t('cases.masked') : (req.text || JSON.stringify(req.fields || {}, null, 2))),
    conversation(c.messages),
    h('details', {}, h('summary', {}, t('inbox.data')), h('pre', {}, JSON.stringify(c.data, null, 2))),
    form));
}
