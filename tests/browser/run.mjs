// Browser tests of the web console: one real `casegraph serve` on 127.0.0.1:0 with a fresh
// data directory, one headless Chromium from the OS (driven by playwright-core), and the
// steps a process owner, a reviewer, an auditor and an operator take, in order. Each
// screen is saved under artifacts/screenshots/. Prints a pass/fail line per step and a
// summary; exits non-zero when a step failed.
//
//   node tests/browser/run.mjs            (uses target/debug/casegraph; CASEGRAPH_BIN overrides)

import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const bin = process.env.CASEGRAPH_BIN || join(root, 'target', 'debug', 'casegraph');
const shots = join(root, 'artifacts', 'screenshots');
mkdirSync(shots, { recursive: true });

// ---------------------------------------------------------------- server

const data = mkdtempSync(join(tmpdir(), 'casegraph-console-'));
const profileDir = mkdtempSync(join(tmpdir(), 'casegraph-chromium-'));
let server;
let browser;

function startServer() {
  return new Promise((ok, fail) => {
    server = spawn(bin, ['serve', '--listen', '127.0.0.1:0', '--data', data, '--workflows', join(root, 'workflows'), '--log', 'warn'],
      { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const timer = setTimeout(() => fail(new Error(`server did not start in 30 s:\n${out}`)), 30_000);
    server.stdout.on('data', (chunk) => {
      out += chunk;
      const m = out.match(/listening on (http:\/\/[0-9.:]+)/);
      if (m) { clearTimeout(timer); ok(m[1]); }
    });
    server.stderr.on('data', (chunk) => { out += chunk; });
    server.on('exit', (code) => { clearTimeout(timer); fail(new Error(`server exited (${code}):\n${out}`)); });
  });
}

async function waitReady(base) {
  for (let i = 0; i < 100; i++) {
    const r = await fetch(`${base}/readyz`).catch(() => null);
    if (r && r.ok) return;
    await new Promise((z) => setTimeout(z, 100));
  }
  throw new Error('server not ready in 10 s');
}

async function call(base, token, method, path, body) {
  const r = await fetch(`${base}${path}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${text}`);
  return json;
}

async function until(what, fn, ms = 15_000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((z) => setTimeout(z, 150));
  }
}

// ---------------------------------------------------------------- steps

const steps = [];
const step = (name, fn) => steps.push({ name, fn });
const ctx = {};

async function shot(page, name) {
  await page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
}

async function signIn(page, token) {
  await page.goto(`${ctx.base}/console/`);
  if (await page.locator('#signout').isVisible().catch(() => false)) await page.click('#signout');
  await page.evaluate(() => sessionStorage.clear());
  await page.goto(`${ctx.base}/console/#/`);
  await page.getByTestId('token').fill(token);
  await page.getByTestId('signin-submit').click();
  await page.locator('#whoami').filter({ hasText: /\S/ }).waitFor();
}

async function navNames(page) {
  return page.locator('#nav a').evaluateAll((as) => as.map((a) => a.dataset.testid.replace('nav-', '')));
}

step('every UI text exists in English and German', async ({ page }) => {
  await page.goto(`${ctx.base}/console/`);
  const missing = await page.evaluate(async () => (await import('/console/i18n.js')).missingKeys());
  assert.deepEqual(missing, []);
});

step('sign in: a wrong token is refused; an author sees the author screens only', async ({ page }) => {
  await page.goto(`${ctx.base}/console/`);
  await page.getByTestId('signin').waitFor();
  await shot(page, '01-sign-in');
  await page.getByTestId('token').fill('cg_not_a_token');
  await page.getByTestId('signin-submit').click();
  await page.getByTestId('signin-error').waitFor();
  await signIn(page, ctx.tokens.author);
  assert.deepEqual(await navNames(page), ['workflows', 'try']);
});

step('workflows: list with versions and intents', async ({ page }) => {
  await page.goto(`${ctx.base}/console/#/workflows`);
  const row = page.getByTestId('wf-request_refund');
  await row.waitFor();
  assert.match(await row.innerText(), /v1/);
  assert.match(await row.innerText(), /request_refund/);
  await shot(page, '02-workflows');
});

step('workflow graph: node kinds drawn distinctly, edge conditions shown, node detail with its script', async ({ page }) => {
  await page.getByTestId('wf-request_refund').click();
  const graph = page.getByTestId('graph');
  await graph.waitFor();
  const kinds = await graph.locator('.node').evaluateAll((ns) => [...new Set(ns.map((n) => n.dataset.kind))].sort());
  assert.deepEqual(kinds, ['ask', 'call', 'checkpoint', 'decision', 'end', 'human', 'reply', 'rule']);
  const labels = await graph.getByTestId('edge-label').evaluateAll((ls) => ls.map((l) => l.textContent));
  assert.ok(labels.some((l) => l.includes('case.amount <= 50.00')), `edge labels: ${labels}`);
  assert.ok(labels.some((l) => l.includes('answered')) && labels.some((l) => l.includes('no answer')), `the question's edges: ${labels}`);
  assert.ok(labels.some((l) => l.includes('decision approve')), `edge labels: ${labels}`);
  await graph.locator('[data-node="extract"]').click();
  await page.getByTestId('node-title').filter({ hasText: 'extract' }).waitFor();
  const script = await page.getByTestId('node-script').innerText();
  const source = readFileSync(join(root, 'workflows', 'request_refund', 'extract.rhai'), 'utf8');
  assert.ok(script.trim().length > 0 && source.includes(script.trim().split('\n')[0]), 'the node shows extract.rhai');
  await shot(page, '03-workflow-graph');
});

step('fixtures: run them and see pass/fail', async ({ page }) => {
  await page.getByTestId('tab-fixtures').click();
  await page.getByTestId('run-fixtures').click();
  await page.getByTestId('fixture-summary').waitFor();
  const rows = page.getByTestId('fixture-row');
  assert.ok(await rows.count() >= 5);
  assert.deepEqual([...new Set(await rows.evaluateAll((rs) => rs.map((r) => r.dataset.passed)))], ['true']);
  assert.match(await page.getByTestId('fixture-summary').innerText(), /0 failed/);
  await shot(page, '04-fixtures');
});

step('publish a broken version: every error inline with file, line and node; nothing published', async ({ page }) => {
  await page.getByTestId('tab-edit').click();
  const editor = page.getByTestId('editor');
  const yaml = await editor.inputValue();
  const broken = yaml.replace(/^version: 1$/m, 'version: 2').replace('next: check_amount', 'next: no_such_node');
  assert.notEqual(broken, yaml);
  await editor.fill(broken);
  await page.getByTestId('publish').click();
  await page.getByTestId('invalid').waitFor();
  const diags = page.getByTestId('diagnostic');
  assert.ok(await diags.count() >= 1);
  const text = await page.getByTestId('diagnostics').innerText();
  assert.match(text, /no_such_node/);
  assert.match(text, /workflow\.yaml/);
  assert.match(text, /extract/, 'the node is named');
  assert.equal(await page.getByTestId('published').count(), 0);
  // The problems of the file being edited show under the editor, with the line in question.
  const note = page.getByTestId('editor-note').filter({ hasText: 'no_such_node' });
  await note.waitFor();
  assert.match(await note.innerText(), /workflow\.yaml:\d+ \(extract\)/);
  await shot(page, '05-publish-broken');
  const served = await call(ctx.base, ctx.tokens.admin, 'GET', '/v1/workflows/request_refund');
  assert.equal(served.version, 1, 'the broken version was not published');
});

step('publish a valid version and compare it with the shipped one', async ({ page }) => {
  await page.getByRole('button', { name: /Reset/ }).click();
  const editor = page.getByTestId('editor');
  const yaml = await editor.inputValue();
  await editor.fill(yaml.replace(/^version: 1$/m, 'version: 2').replace('title: Refund request', 'title: Refund request (reviewed)'));
  await page.getByTestId('check').click();
  await page.getByTestId('valid').waitFor();
  await page.getByTestId('publish').click();
  await page.getByTestId('published').waitFor();
  const served = await call(ctx.base, ctx.tokens.admin, 'GET', '/v1/workflows/request_refund');
  assert.equal(served.version, 2);
  await page.goto(`${ctx.base}/console/#/workflows`);
  await page.goto(`${ctx.base}/console/#/workflows/request_refund`);
  await page.getByTestId('tab-compare').click();
  const diff = page.getByTestId('diff').first();
  await diff.waitFor();
  const text = await diff.innerText();
  assert.match(text, /- version: 1/);
  assert.match(text, /\+ version: 2/);
  await shot(page, '06-compare-versions');
});

step('try it: a dry run of a German letter shows classification and routing and creates no case', async ({ page }) => {
  const before = (await call(ctx.base, ctx.tokens.admin, 'GET', '/v1/console/cases')).total;
  await page.goto(`${ctx.base}/console/#/try`);
  await page.getByTestId('try-channel').selectOption('letter');
  await page.getByTestId('try-language').selectOption('de');
  await page.getByTestId('try-text').fill('Sehr geehrte Damen und Herren,\nfür die stornierte Bestellung GK-2026-118 wurden mir 1.249,90 € abgebucht. Bitte erstatten Sie den Betrag.\nMit freundlichen Grüßen\nErika Mustermann');
  await page.getByTestId('try-run').click();
  await page.getByTestId('try-nocase').waitFor();
  await page.getByTestId('try-classification').waitFor();
  assert.match(await page.getByTestId('try-out-confidence').innerText(), /%/);
  assert.match(await page.getByTestId('try-out-oos').innerText(), /yes|no/);
  assert.match(await page.getByTestId('try-out-route').innerText(), /Workflow|queue/i);
  // With a stated intent (metadata.intent) the model is not asked, so the route is the
  // workflow's and its predicted path is drawn.
  await page.getByTestId('try-intent').fill('request_refund');
  await page.getByTestId('try-run').click();
  await page.getByTestId('try-route').waitFor();
  if (/Workflow/.test(await page.getByTestId('try-out-route').innerText())) {
    await page.getByTestId('try-path').getByTestId('graph').waitFor();
  }
  await shot(page, '07-try-it');
  const after = (await call(ctx.base, ctx.tokens.admin, 'GET', '/v1/console/cases')).total;
  assert.equal(after, before, 'a dry run creates no case');
});

step('inbox: a reviewer completes the task and the case finishes', async ({ page }) => {
  // Sent with the admin token: only a token that may state a classification (admin, or
  // one granted `state_intent`) has its metadata.intent decide the route; the timeline
  // below needs the refund workflow to have run.
  const { case_id: caseId } = await call(ctx.base, ctx.tokens.admin, 'POST', '/v1/requests', {
    channel: 'letter',
    language: 'de',
    customer_id: 'C-1002345',
    text: 'Sehr geehrte Damen und Herren,\nfür die stornierte Bestellung (Vertragsnummer GK-2026-118) wurden mir 1.249,90 € abgebucht.\nBitte erstatten Sie den Betrag auf mein Konto DE89 3704 0044 0532 0130 00.\nMit freundlichen Grüßen\nErika Mustermann',
    fields: {},
    metadata: { intent: 'request_refund', confidence: 0.92 },
  });
  ctx.caseId = caseId;
  // Whatever the model answers, the case waits for a person: a refund above the automatic
  // limit needs approval, and anything else goes to a human queue.
  await until('the case to wait for a reviewer', async () => {
    const tasks = await call(ctx.base, ctx.tokens.reviewer, 'GET', '/v1/tasks');
    return tasks.find((x) => x.case_id === caseId);
  });
  await signIn(page, ctx.tokens.reviewer);
  assert.deepEqual(await navNames(page), ['inbox']);
  const row = page.locator(`[data-testid="task-row"][data-case="${caseId}"]`);
  await row.waitFor();
  await row.click();
  await page.getByTestId('task-text').filter({ hasText: 'Erika' }).waitFor();
  const decisions = await page.getByTestId('decision').locator('option').allInnerTexts();
  await page.getByTestId('decision').selectOption(decisions.includes('approve') ? 'approve' : 'close');
  await page.getByTestId('comment').fill('Stornobeleg liegt vor');
  await shot(page, '08-inbox');
  await page.getByTestId('complete').click();
  await page.getByTestId('completed').waitFor();
  assert.equal(await page.getByTestId('case-status').innerText(), 'completed');
  await shot(page, '09-inbox-completed');
  const c = await call(ctx.base, ctx.tokens.admin, 'GET', `/v1/cases/${caseId}`);
  assert.equal(c.status, 'completed');
});

step('cases: an auditor finds the case, opens its timeline, sees the chain verified and personal data masked', async ({ page }) => {
  await signIn(page, ctx.tokens.auditor);
  assert.deepEqual(await navNames(page), ['cases']);
  await page.getByTestId('search-id').fill(ctx.caseId);
  await page.getByTestId('search-status').selectOption('completed');
  await page.getByTestId('search').click();
  const row = page.locator(`[data-testid="case-row"][data-case="${ctx.caseId}"]`);
  await row.waitFor();
  assert.equal(await page.getByTestId('case-row').count(), 1);
  await shot(page, '10-cases-search');
  await row.click();
  await page.getByTestId('timeline').waitFor();
  const kinds = await page.getByTestId('timeline-record').evaluateAll((rs) => rs.map((r) => r.dataset.kind));
  for (const k of ['accepted', 'classified', 'routed', 'step', 'outcome']) assert.ok(kinds.includes(k), `timeline has ${k}: ${kinds}`);
  const decision = page.locator('[data-testid="timeline-record"][data-event="task_completed"]');
  assert.equal(await decision.count(), 1, 'the reviewer\'s decision is on the timeline');
  assert.match(await decision.innerText(), /console-reviewer/);
  assert.equal(await page.getByTestId('chain-badge').getAttribute('data-verified'), 'true');
  assert.equal(await page.getByTestId('why').getAttribute('data-rule'), 'intent_has_workflow', 'why this route is shown');
  await page.getByTestId('masked').waitFor();
  assert.equal(await page.getByTestId('request-json').count(), 0, 'no request shown to an auditor');
  const body = await page.locator('main').innerText();
  assert.ok(!body.includes('Erika') && !body.includes('DE89'), 'no personal data on the page');
  await shot(page, '11-case-timeline');
});

step('inbox: a frustrated repeat customer is listed first, says why, and the reviewer records the mood', async ({ page }) => {
  // Stated by the admin token, as the refund above: the mood signals are stated with the
  // intent until the model gives them.
  const send = (text, metadata) => call(ctx.base, ctx.tokens.admin, 'POST', '/v1/requests', {
    channel: 'chat', language: 'en', customer_id: 'C-1002366', fields: {}, text, metadata,
  });
  const { case_id: earlier } = await send('What exchange rate do you use for USD?', { intent: 'exchange_rate', confidence: 0.9 });
  await until('the first contact to wait in a queue', async () => {
    const tasks = await call(ctx.base, ctx.tokens.reviewer, 'GET', '/v1/tasks');
    return tasks.find((x) => x.case_id === earlier);
  });
  const { case_id: caseId } = await send('Third time I ask for my 40 euros back. Nobody answers.', {
    intent: 'request_refund', confidence: 0.95,
    sentiment: { label: 'negative', confidence: 0.93 }, frustration: { score: 0.91, flagged: true },
  });
  await until('the frustrated repeat contact to wait in the priority queue', async () => {
    const tasks = await call(ctx.base, ctx.tokens.reviewer, 'GET', '/v1/tasks');
    return tasks.find((x) => x.case_id === caseId && x.queue === 'priority');
  });
  await signIn(page, ctx.tokens.reviewer);
  const first = page.getByTestId('task-row').first();
  await first.waitFor();
  assert.equal(await first.getAttribute('data-case'), caseId, 'the priority task is listed first');
  assert.equal(await first.getAttribute('data-priority'), 'high');
  await first.click();
  const why = page.getByTestId('task-detail').getByTestId('why');
  await why.waitFor();
  assert.equal(await why.getAttribute('data-rule'), 'frustrated_repeat_contact');
  assert.match(await page.getByTestId('why-customer').innerText(), /1 contact/);
  assert.match(await page.getByTestId('why-frustration').innerText(), /frustrated/);
  await page.getByTestId('decision').selectOption('close');
  await page.getByTestId('mood-sentiment').selectOption('negative');
  await page.getByTestId('mood-frustrated').selectOption('true');
  await shot(page, '11b-inbox-priority-why');
  await page.getByTestId('complete').click();
  await page.getByTestId('completed').waitFor();
  const audit = await call(ctx.base, ctx.tokens.auditor, 'GET', `/v1/cases/${caseId}/audit`);
  const decided = audit.records.find((r) => r.kind === 'task_completed');
  assert.equal(decided.body.sentiment, 'negative');
  assert.equal(decided.body.frustrated, true);
});

step('conversation: the case asks, the answer comes back on another channel, the case shows both', async ({ page }) => {
  const { case_id: id } = await call(ctx.base, ctx.tokens.admin, 'POST', '/v1/requests', {
    channel: 'letter',
    language: 'de',
    customer_id: 'C-1002346',
    text: 'Sehr geehrte Damen und Herren,\nich möchte eine Rückerstattung für meine stornierte Bestellung.\nMit freundlichen Grüßen\nErika Mustermann',
    fields: {},
    metadata: { intent: 'request_refund', confidence: 0.92 },
  });
  const until = async (done) => {
    for (let i = 0; i < 400; i++) {
      const c = await call(ctx.base, ctx.tokens.admin, 'GET', `/v1/cases/${id}`);
      if (done(c)) return c;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`case ${id} did not get there`);
  };
  const waiting = await until((c) => c.waiting && c.waiting.kind === 'answer');
  await call(ctx.base, ctx.tokens.admin, 'POST', `/v1/cases/${id}/messages`, { channel: 'chat', text: 'Es waren 42,50 EUR' });
  await until((c) => c.status === 'completed');
  await signIn(page, ctx.tokens.admin);
  await page.goto(`${ctx.base}/console/#/cases/${id}`);
  await page.getByTestId('conversation').waitFor();
  const directions = await page.getByTestId('message').evaluateAll((ms) => ms.map((m) => m.dataset.direction));
  assert.deepEqual(directions, ['out', 'in']);
  assert.equal(await page.getByTestId('case-reference').innerText(), waiting.reference);
  assert.match(await page.getByTestId('conversation').innerText(), /42,50 EUR/);
  const kinds = await page.getByTestId('timeline-record').evaluateAll((rs) => rs.map((r) => r.dataset.kind));
  assert.equal(kinds.filter((k) => k === 'message').length, 2, `the timeline has the question and the answer: ${kinds}`);
  await shot(page, '12-conversation');
});

step('box status: an admin sees throughput, queues, cases by status and the confidence chart', async ({ page }) => {
  await signIn(page, ctx.tokens.admin);
  assert.deepEqual(await navNames(page), ['workflows', 'try', 'inbox', 'cases', 'status']);
  await page.goto(`${ctx.base}/console/#/status`);
  await page.getByTestId('confidence-chart').waitFor();
  assert.ok(await page.getByTestId('confidence-chart').locator('rect').count() >= 10);
  assert.match(await page.getByTestId('cases-by-status').innerText(), /completed/);
  assert.match(await page.getByTestId('store-size').innerText(), /B/);
  // The automation rate: the refund the reviewer approved went through a person, the
  // conversation's refund did not.
  const all = page.locator('[data-testid="automation-row"][data-intent="all"]');
  await all.waitFor();
  const refunds = page.locator('[data-testid="automation-row"][data-intent="request_refund"]');
  const without = await refunds.locator('td').nth(2).innerText();
  const withPerson = await refunds.locator('td').nth(3).innerText();
  assert.ok(parseFloat(without) > 0 && parseFloat(withPerson) > 0, await refunds.innerText());
  await shot(page, '12-box-status');
});

step('language switch: the console speaks German', async ({ page }) => {
  await page.getByTestId('lang-switch').click();
  await page.getByTestId('nav-cases').filter({ hasText: 'Fälle' }).waitFor();
  assert.match(await page.locator('h1').first().innerText(), /Box-Status/);
  await shot(page, '13-box-status-de');
  await page.goto(`${ctx.base}/console/#/try`);
  await page.getByTestId('try-run').filter({ hasText: 'Probelauf' }).waitFor();
  await page.getByTestId('lang-switch').click();
  await page.getByTestId('nav-cases').filter({ hasText: 'Cases' }).waitFor();
});

step('inbox: a backlog lists its first 200 tasks, says how many are open and shows the next on request', async ({ page }) => {
  const before = (await call(ctx.base, ctx.tokens.reviewer, 'GET', '/v1/tasks/queues')).open;
  for (let i = 0; i < 205; i += 1) {
    await call(ctx.base, ctx.tokens.admin, 'POST', '/v1/requests', {
      channel: 'chat', language: 'en', fields: {}, text: `What exchange rate do you use for USD? (${i})`,
      metadata: { intent: 'exchange_rate', confidence: 0.9 },
    });
  }
  const open = await until('the backlog to wait in its queue', async () => {
    const counts = await call(ctx.base, ctx.tokens.reviewer, 'GET', '/v1/tasks/queues');
    return counts.open >= before + 205 && counts.open;
  });
  await signIn(page, ctx.tokens.reviewer);
  await page.getByTestId('task-row').first().waitFor();
  assert.equal(await page.getByTestId('task-row').count(), 200);
  assert.match(await page.getByTestId('inbox-more').innerText(), new RegExp(`200 of ${open} open tasks`));
  await shot(page, '11c-inbox-backlog');
  // the next page follows the API's Link header: the rest of the backlog, in order, no task twice
  await page.getByTestId('inbox-next').click();
  const all = Math.min(open, 400);
  await until('the next page to be listed', async () => (await page.getByTestId('task-row').count()) === all);
  const ids = await page.getByTestId('task-row').evaluateAll((rows) => rows.map((r) => r.dataset.task));
  assert.equal(new Set(ids).size, all);
  const listed = [];
  for (let path = '/v1/tasks?limit=200'; path && listed.length < all;) {
    const r = await fetch(`${ctx.base}${path}`, { headers: { Authorization: `Bearer ${ctx.tokens.reviewer}` } });
    listed.push(...(await r.json()).map((task) => task.task_id));
    path = /<([^>]+)>;\s*rel="next"/.exec(r.headers.get('link') || '')?.[1];
  }
  assert.deepEqual(ids, listed.slice(0, all));
  if (open > 400) {
    assert.match(await page.getByTestId('inbox-more').innerText(), new RegExp(`400 of ${open} open tasks`));
    assert.ok(await page.getByTestId('inbox-next').isVisible());
  } else {
    assert.ok(await page.getByTestId('inbox-more').isHidden());
    assert.ok(await page.getByTestId('inbox-next').isHidden());
  }
});

step('the console loaded nothing from outside the box', async () => {
  const foreign = ctx.requests.filter((u) => !u.startsWith(ctx.base) && !u.startsWith('data:'));
  assert.deepEqual(foreign, []);
});

// ---------------------------------------------------------------- run

const results = [];
let exitCode = 0;
try {
  ctx.base = await startServer();
  await waitReady(ctx.base);
  const admin = readFileSync(join(data, 'admin.token'), 'utf8').trim();
  ctx.tokens = { admin };
  for (const role of ['author', 'reviewer', 'auditor', 'submitter']) {
    ctx.tokens[role] = (await call(ctx.base, admin, 'POST', '/v1/tokens', { role, name: `console-${role}` })).token;
  }
  // A persistent context is how playwright passes a fresh `--user-data-dir` (its own temp dir).
  browser = await chromium.launchPersistentContext(profileDir, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1400, height: 900 },
    locale: 'en-US',
  });
  const page = browser.pages()[0] || await browser.newPage();
  page.setDefaultTimeout(15_000);
  ctx.requests = [];
  const consoleErrors = [];
  page.on('request', (r) => ctx.requests.push(r.url()));
  page.on('pageerror', (e) => consoleErrors.push(String(e)));
  for (const { name, fn } of steps) {
    const started = Date.now();
    try {
      await fn({ page });
      if (consoleErrors.length) throw new Error(`script errors in the page: ${consoleErrors.splice(0).join('; ')}`);
      results.push({ name, ok: true, ms: Date.now() - started });
      console.log(`  ok    ${name} (${Date.now() - started} ms)`);
    } catch (e) {
      results.push({ name, ok: false, ms: Date.now() - started });
      console.log(`  FAIL  ${name}\n        ${String(e && e.stack || e).split('\n').slice(0, 6).join('\n        ')}`);
      await page.screenshot({ path: join(shots, `failed-${results.length}.png`), fullPage: true }).catch(() => {});
    }
  }
} catch (e) {
  console.log(`  FAIL  set-up: ${e && e.stack || e}`);
  exitCode = 1;
} finally {
  if (browser) await browser.close().catch(() => {});
  if (server) { server.removeAllListeners('exit'); server.kill('SIGTERM'); }
  rmSync(profileDir, { recursive: true, force: true });
  rmSync(data, { recursive: true, force: true });
}
const failed = results.filter((r) => !r.ok).length;
if (failed) exitCode = 1;
console.log(`\nbrowser tests: ${results.length - failed} passed, ${failed} failed${exitCode && !failed ? ' (set-up failed)' : ''}; screenshots in artifacts/screenshots/`);
process.exit(exitCode);
