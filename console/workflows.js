// Workflows (authors): the list, and per workflow its graph with node details, fixture
// runs, editing or uploading a new version with every problem shown inline, publishing,
// and a comparison of two versions.

import { get, post, ApiError } from './api.js';
import { h, clear } from './dom.js';
import { t } from './i18n.js';
import { drawGraph, KINDS } from './graph.js';
import { diffLines, renderDiff, renderFailure } from './diff.js';
import { go, showError } from './app.js';

export async function render(view, params) {
  if (params[0]) return detail(view, params[0]);
  return list(view);
}

async function list(view) {
  view.append(h('h1', {}, t('wf.title')), h('p', { class: 'help' }, t('wf.help')));
  const all = await get('/v1/workflows');
  // Every version the box knows (served, plus those cases ran on), per workflow.
  const details = await Promise.all(all.map((w) => get(`/v1/workflows/${encodeURIComponent(w.id)}`).catch(() => null)));
  const body = h('tbody');
  for (const [i, w] of all.entries()) {
    const versions = details[i] ? details[i].versions : [{ version: w.version, current: true }];
    body.append(h('tr', { class: 'clickable', 'data-testid': `wf-${w.id}`, onclick: () => go(`workflows/${w.id}`) },
      h('td', {}, h('a', { href: `#/workflows/${w.id}` }, w.id), w.title ? h('div', { class: 'muted' }, w.title) : null),
      h('td', {}, versions.map((v) => h('span', { class: `chip${v.current ? ' current' : ''}`, title: v.current ? t('wf.compare.source.current') : '' }, `v${v.version}`))),
      h('td', {}, w.intents.map((i) => h('span', { class: 'chip' }, i)),
        (w.triggers ? w.triggers.events : []).map((e) => h('span', { class: 'chip', title: t('wf.trigger.event') }, `⚡ ${e}`)),
        w.triggers && w.triggers.schedule ? h('span', { class: 'chip', title: t('wf.trigger.schedule') }, `⏰ ${w.triggers.schedule.cron}`) : null),
      h('td', {}, w.languages.join(', '))));
  }
  view.append(h('div', { class: 'panel' }, h('table', { 'data-testid': 'workflow-list' },
    h('thead', {}, h('tr', {}, h('th', {}, t('wf.id')), h('th', {}, t('wf.version')), h('th', {}, t('wf.intents')), h('th', {}, t('wf.languages')))),
    body)));
}

/** The lines of a node's entry in workflow.yaml, from its line to the next sibling. */
export function yamlBlock(yaml, line) {
  const lines = (yaml || '').split('\n');
  const start = line - 1;
  if (start < 0 || start >= lines.length) return '';
  const indent = lines[start].match(/^ */)[0].length;
  const out = [lines[start]];
  for (let i = start + 1; i < lines.length; i++) {
    const l = lines[i];
    if (l.trim() !== '' && l.match(/^ */)[0].length <= indent) break;
    out.push(l);
  }
  return out.join('\n').trimEnd();
}

/** What starts a workflow besides intents: its events, its schedule and next occurrences. */
function triggers(tr) {
  if (!tr) return null;
  const s = tr.schedule;
  return h('div', { class: 'panel', 'data-testid': 'wf-triggers' }, h('h2', {}, t('wf.triggers')),
    h('dl', { class: 'kv' },
      h('dt', {}, t('wf.trigger.event')), h('dd', {}, tr.events.length ? tr.events.map((e) => h('span', { class: 'chip' }, e)) : '–'),
      h('dt', {}, t('wf.trigger.purpose')), h('dd', {}, tr.purpose || '–'),
      h('dt', {}, t('wf.trigger.schedule')), h('dd', {}, s ? `${s.cron} (${s.timezone}) · ${s.subjects}${s.catch_up ? '' : ' · no catch-up'}` : '–'),
      ...(s ? [h('dt', {}, t('wf.trigger.next')), h('dd', { 'data-testid': 'wf-next' }, s.next.map((n) => h('span', { class: 'chip' }, n)))] : [])));
}

async function detail(view, id) {
  const [def, info] = await Promise.all([
    get(`/v1/console/workflows/${encodeURIComponent(id)}/definition`),
    get(`/v1/workflows/${encodeURIComponent(id)}`),
  ]);
  view.append(
    h('p', {}, h('a', { href: '#/workflows' }, t('wf.back'))),
    h('h1', { 'data-testid': 'wf-title' }, `${def.title || def.id} `, h('span', { class: 'muted' }, `${def.id} · v${def.version}`)),
    h('p', {}, def.intents.map((i) => h('span', { class: 'chip' }, i)), ' ', h('span', { class: 'muted' }, `${def.languages.join(', ')} · ${def.digest.slice(0, 19)}…`)),
    triggers(info.triggers),
  );
  const panes = {
    graph: h('section', { 'data-testid': 'pane-graph' }),
    fixtures: h('section', { 'data-testid': 'pane-fixtures' }),
    edit: h('section', { 'data-testid': 'pane-edit' }),
    compare: h('section', { 'data-testid': 'pane-compare' }),
  };
  const tabs = h('div', { class: 'tabs', role: 'tablist' });
  const shown = new Set();
  const open = (name) => {
    for (const [k, pane] of Object.entries(panes)) pane.classList.toggle('hidden', k !== name);
    for (const b of tabs.children) b.classList.toggle('active', b.dataset.tab === name);
    if (!shown.has(name)) {
      shown.add(name);
      const fill = { graph: graphPane, fixtures: fixturesPane, edit: editPane, compare: comparePane }[name];
      Promise.resolve(fill(panes[name], def, info)).catch((e) => showError(panes[name], e));
    }
  };
  for (const name of Object.keys(panes)) {
    const b = h('button', { type: 'button', role: 'tab', 'data-testid': `tab-${name}`, onclick: () => open(name) }, t(`wf.tab.${name}`));
    b.dataset.tab = name;
    tabs.append(b);
  }
  view.append(tabs, ...Object.values(panes));
  open('graph');
}

function graphPane(pane, def) {
  const detailBox = h('div', { class: 'panel', 'data-testid': 'node-detail' }, h('p', { class: 'muted' }, t('wf.node.pick')));
  let svg;
  const select = (nodeId) => {
    for (const g of svg.querySelectorAll('.node')) g.classList.toggle('selected', g.dataset.node === nodeId);
    showNode(detailBox, def, nodeId);
  };
  svg = drawGraph(def, { onSelect: select });
  const legend = h('div', { class: 'legend' }, h('strong', {}, `${t('wf.legend')}:`),
    Object.keys(KINDS).map((k) => h('span', { class: `k-${k}` }, k)));
  pane.append(h('p', { class: 'help' }, t('wf.graph.help')),
    h('div', { class: 'grid2' },
      h('div', {}, legend, h('div', { class: 'graph-wrap' }, svg)),
      detailBox));
}

function showNode(box, def, nodeId) {
  const n = def.nodes.find((x) => x.id === nodeId);
  clear(box);
  if (!n) return;
  const kv = h('dl', { class: 'kv' },
    h('dt', {}, t('wf.node.kind')), h('dd', {}, h('span', { class: `badge k-${n.kind}` }, n.kind)),
    h('dt', {}, t('wf.node.line')), h('dd', {}, String(n.line)));
  if (n.description) kv.append(h('dt', {}, t('wf.node.description')), h('dd', {}, n.description));
  for (const [k, v] of Object.entries(n.details || {})) {
    if (v === null || v === undefined) continue;
    kv.append(h('dt', {}, k), h('dd', {}, Array.isArray(v) ? v.join(', ') : String(v)));
  }
  const outgoing = def.edges.filter((e) => e.from === n.id);
  box.append(h('h2', { 'data-testid': 'node-title' }, n.id), kv);
  if (outgoing.length) {
    box.append(h('h3', {}, t('wf.node.outgoing')),
      h('ul', {}, outgoing.map((e) => h('li', {}, h('code', {}, e.label), ' → ', h('strong', {}, e.to)))));
  }
  box.append(h('h3', {}, t('wf.node.definition')), h('pre', {}, yamlBlock(def.files['workflow.yaml'], n.line)));
  if (n.script) {
    const file = n.script.file;
    const source = file.endsWith('.rhai') ? def.files[file] : yamlBlock(def.files[file] || def.files['workflow.yaml'], n.script.line);
    box.append(h('h3', {}, `${t('wf.node.script')}: `, h('code', {}, `${file}${file.endsWith('.rhai') ? '' : `:${n.script.line}`}`)),
      h('pre', { 'data-testid': 'node-script' }, source || ''));
  }
}

async function fixturesPane(pane, def) {
  const out = h('div');
  const run = h('button', { type: 'button', 'data-testid': 'run-fixtures' }, t('wf.fixtures.run'));
  run.addEventListener('click', async () => {
    run.disabled = true;
    clear(out).append(h('p', { class: 'muted' }, t('common.loading')));
    try {
      const r = await post(`/v1/console/workflows/${encodeURIComponent(def.id)}/fixtures`);
      clear(out).append(fixtureResults(r.fixtures));
    } catch (e) {
      clear(out);
      showError(out, e);
    } finally {
      run.disabled = false;
    }
  });
  pane.append(h('p', { class: 'help' }, t('wf.fixtures.help')), h('p', {}, run), out);
}

function fixtureResults(fixtures) {
  const passed = fixtures.filter((f) => f.passed).length;
  const failed = fixtures.length - passed;
  const body = h('tbody');
  for (const f of fixtures) {
    body.append(h('tr', { 'data-testid': 'fixture-row', 'data-passed': String(f.passed) },
      h('td', {}, h('span', { class: `badge ${f.passed ? 'ok' : 'bad'}` }, f.passed ? t('wf.fixtures.passed') : t('wf.fixtures.failed'))),
      h('td', {}, f.name, h('div', { class: 'muted' }, h('code', {}, f.file))),
      h('td', {}, f.failures.map((x) => renderFailure(x)))));
  }
  return h('div', { class: 'panel' },
    h('p', { 'data-testid': 'fixture-summary' }, h('span', { class: `badge ${failed ? 'bad' : 'ok'}` }, t('wf.fixtures.summary', { passed, failed }))),
    h('table', {}, body));
}

function editPane(pane, def) {
  let files = { ...def.files };
  let current = 'workflow.yaml';
  const select = h('select', { 'data-testid': 'edit-file' });
  const area = h('textarea', { class: 'code', spellcheck: 'false', 'data-testid': 'editor' });
  const result = h('div', { 'data-testid': 'edit-result' });
  // Problems of the last check, shown under the editor for the file being edited.
  let problems = [];
  const notes = h('div', { class: 'notes', 'data-testid': 'editor-notes' });
  const showNotes = () => {
    clear(notes);
    const lines = (files[current] ?? '').split('\n');
    for (const d of problems.filter((p) => p.file === current)) {
      notes.append(h('div', { class: 'note', 'data-testid': 'editor-note' },
        h('strong', {}, d.line ? `${current}:${d.line}` : current),
        d.node ? ` (${d.node})` : '', ` — ${d.message}`,
        d.line ? h('pre', {}, `${d.line} | ${lines[d.line - 1] ?? ''}`) : null));
    }
  };
  const setProblems = (diags) => {
    problems = diags.map((d) => ({ ...d, file: relative(String(d.file), def.id) }));
    showNotes();
  };
  const fillSelect = () => {
    clear(select);
    for (const name of Object.keys(files).sort()) select.append(h('option', { value: name, selected: name === current }, name));
  };
  const show = (name, line) => {
    current = name;
    select.value = name;
    area.value = files[name] ?? '';
    showNotes();
    if (line > 0) {
      const lines = area.value.split('\n');
      const start = lines.slice(0, line - 1).reduce((a, l) => a + l.length + 1, 0);
      area.focus();
      area.setSelectionRange(start, start + (lines[line - 1] || '').length);
      area.scrollTop = Math.max(0, (line - 5) * 17);
    }
  };
  select.addEventListener('change', () => show(select.value));
  area.addEventListener('input', () => { files[current] = area.value; });
  const upload = h('input', { type: 'file', multiple: true, 'data-testid': 'upload' });
  upload.addEventListener('change', async () => {
    for (const f of upload.files) {
      const name = f.name === 'workflow.yaml' || !f.name.match(/\.ya?ml$/) ? f.name : `tests/${f.name}`;
      files[name] = await f.text();
      current = name;
    }
    fillSelect();
    show(current);
  });
  const newName = h('input', { type: 'text', placeholder: 'tests/new_case.yaml', size: 24 });
  const add = h('button', { type: 'button', class: 'secondary', onclick: () => {
    const name = newName.value.trim();
    if (!name) return;
    files[name] = files[name] ?? '';
    current = name;
    fillSelect();
    show(name);
  } }, t('wf.edit.add'));
  const check = h('button', { type: 'button', class: 'secondary', 'data-testid': 'check' }, t('wf.edit.check'));
  const publish = h('button', { type: 'button', 'data-testid': 'publish' }, t('wf.edit.publish'));
  const reset = h('button', { type: 'button', class: 'secondary', onclick: () => { files = { ...def.files }; current = 'workflow.yaml'; problems = []; fillSelect(); show(current); clear(result); } }, t('wf.edit.reset'));

  const showCheck = (r) => {
    clear(result);
    const count = r.diagnostics.length + r.fixtures.filter((f) => !f.passed).length;
    setProblems(r.diagnostics);
    result.append(h('div', { class: `msg ${r.valid ? 'ok' : 'bad'}`, 'data-testid': r.valid ? 'valid' : 'invalid' },
      r.valid ? t('wf.edit.valid') : t('wf.edit.invalid', { n: count })));
    if (r.diagnostics.length) result.append(diagnosticsTable(r.diagnostics, def.id, show));
    if (r.fixtures.length) result.append(fixtureResults(r.fixtures));
    return r.valid;
  };
  const runCheck = async () => showCheck(await post('/v1/console/workflows/check', { id: def.id, files }));
  check.addEventListener('click', async () => {
    check.disabled = true;
    try { await runCheck(); } catch (e) { clear(result); showError(result, e); } finally { check.disabled = false; }
  });
  publish.addEventListener('click', async () => {
    publish.disabled = true;
    try {
      // Publishing is offered only for a version that checks out; the server checks again.
      if (!(await runCheck())) return;
      const w = await post('/v1/workflows', { id: def.id, files });
      clear(result).append(h('div', { class: 'msg ok', 'data-testid': 'published' }, t('wf.edit.published', { version: w.version })));
    } catch (e) {
      clear(result);
      if (e instanceof ApiError) {
        result.append(h('div', { class: 'msg bad', 'data-testid': 'invalid' }, t('wf.edit.refused', { message: e.message })));
        if (e.details && e.details.diagnostics) {
          setProblems(e.details.diagnostics);
          result.append(diagnosticsTable(e.details.diagnostics.map((d) => ({ ...d, file: String(d.file) })), def.id, show));
        }
        if (e.details && e.details.fixtures) {
          result.append(fixtureResults(e.details.fixtures.map((f) => ({ ...f, passed: false }))));
        }
      } else showError(result, e);
    } finally {
      publish.disabled = false;
    }
  });
  fillSelect();
  show(current);
  pane.append(h('p', { class: 'help' }, t('wf.edit.help')),
    h('div', { class: 'panel' },
      h('div', { class: 'row' },
        h('div', {}, h('label', {}, t('wf.edit.file')), select),
        h('div', {}, h('label', {}, t('wf.edit.upload')), upload),
        h('div', {}, h('label', {}, t('wf.edit.newfile')), newName),
        h('div', {}, add)),
      h('p', {}),
      area,
      notes,
      h('p', { class: 'row' }, check, publish, reset)),
    result);
}

/** Files are reported relative to the catalog (`<id>/file`); the editor names them without the id. */
function relative(file, id) {
  return file.startsWith(`${id}/`) ? file.slice(id.length + 1) : file;
}

function diagnosticsTable(diags, id, show) {
  const body = h('tbody');
  for (const d of diags) {
    const file = relative(String(d.file), id);
    body.append(h('tr', { class: 'clickable', 'data-testid': 'diagnostic', onclick: () => show(file, d.line) },
      h('td', {}, h('code', {}, file)),
      h('td', {}, d.line ? String(d.line) + (d.column ? `:${d.column}` : '') : '–'),
      h('td', {}, d.node || '–'),
      h('td', {}, h('code', {}, d.code)),
      h('td', {}, d.message)));
  }
  return h('div', { class: 'panel' }, h('table', { 'data-testid': 'diagnostics' },
    h('thead', {}, h('tr', {}, ['file', 'line', 'node', 'code', 'message'].map((k) => h('th', {}, t(`wf.edit.diag.${k}`))))),
    body));
}

async function comparePane(pane, def) {
  const { versions } = await get(`/v1/console/workflows/${encodeURIComponent(def.id)}/versions`);
  if (versions.length < 2) {
    pane.append(h('p', { class: 'msg info', 'data-testid': 'compare-only' }, t('wf.compare.only')));
    return;
  }
  const label = (v) => `v${v.version} (${t(`wf.compare.source.${v.source}`)})`;
  const left = h('select', { 'data-testid': 'compare-left' }, versions.map((v, i) => h('option', { value: i, selected: i === versions.length - 2 }, label(v))));
  const right = h('select', { 'data-testid': 'compare-right' }, versions.map((v, i) => h('option', { value: i, selected: i === versions.length - 1 }, label(v))));
  const out = h('div', { 'data-testid': 'compare-result' });
  const run = () => {
    clear(out);
    const a = versions[Number(left.value)].files;
    const b = versions[Number(right.value)].files;
    // Stored versions keep no fixtures: compare the workflow's own files only then.
    const names = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort()
      .filter((n) => !n.startsWith('tests/') || (n in a && n in b));
    let changed = 0;
    for (const name of names) {
      const ops = diffLines(a[name] ?? '', b[name] ?? '');
      if (ops.every((o) => o.op === ' ')) continue;
      changed++;
      const tag = !(name in a) ? ' (+)' : !(name in b) ? ' (−)' : '';
      out.append(h('h3', {}, h('code', {}, name), tag), renderDiff(ops));
    }
    if (!changed) out.append(h('p', { class: 'msg info' }, t('wf.compare.same')));
  };
  left.addEventListener('change', run);
  right.addEventListener('change', run);
  pane.append(h('div', { class: 'panel row' },
    h('div', {}, h('label', {}, t('wf.compare.left')), left),
    h('div', {}, h('label', {}, t('wf.compare.right')), right)), out);
  run();
}
