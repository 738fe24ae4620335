// Browser test of the console's Fleet page on a real hub: one `nats-server` (from
// scripts/setup.sh test), three simulated branches (`casegraph hub simulate`, one of them
// publishing an altered record), one `casegraph hub`, headless Chromium. An auditor sees
// the fleet screen only, the altered branch in red and the others not, and the branch's
// detail names the record; a reviewer may open nothing. Screenshots land in
// artifacts/screenshots/.
//
//   node tests/browser/fleet.mjs     (target/debug/casegraph; CASEGRAPH_BIN, NATS_SERVER override)

import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const bin = process.env.CASEGRAPH_BIN || join(root, 'target', 'debug', 'casegraph');
const natsBin = process.env.NATS_SERVER || join(root, '.local', 'nats', 'nats-server');
const shots = join(root, 'artifacts', 'screenshots');
mkdirSync(shots, { recursive: true });

const dir = mkdtempSync(join(tmpdir(), 'casegraph-fleet-'));
const profileDir = mkdtempSync(join(tmpdir(), 'casegraph-chromium-'));
const children = [];
let browser;

function freePort() {
  return new Promise((ok) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => ok(port)); });
  });
}

/** Spawns `cmd` and resolves with the first match of `pattern` in its output. */
function start(cmd, args, pattern, what) {
  return new Promise((ok, fail) => {
    const child = spawn(cmd, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let out = '';
    const timer = setTimeout(() => fail(new Error(`${what} did not start in 30 s:\n${out}`)), 30_000);
    const seen = (chunk) => {
      out += chunk;
      const m = out.match(pattern);
      if (m) { clearTimeout(timer); ok(m); }
    };
    child.stdout.on('data', seen);
    child.stderr.on('data', seen);
    child.on('exit', (code) => { clearTimeout(timer); fail(new Error(`${what} exited (${code}):\n${out}`)); });
  });
}

async function until(what, fn, ms = 30_000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn().catch(() => null);
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((z) => setTimeout(z, 150));
  }
}

const steps = [];
const step = (name, fn) => steps.push({ name, fn });
const ctx = {};

async function signIn(page, token) {
  await page.goto(`${ctx.base}/console/`);
  if (await page.locator('#signout').isVisible().catch(() => false)) await page.click('#signout');
  await page.evaluate(() => sessionStorage.clear());
  await page.goto(`${ctx.base}/console/#/`);
  await page.getByTestId('token').fill(token);
  await page.getByTestId('signin-submit').click();
  await page.locator('#whoami').filter({ hasText: /\S/ }).waitFor();
}

step('fleet: an auditor sees the fleet screen only, the altered branch in red, the others not', async ({ page }) => {
  await signIn(page, ctx.tokens.auditor);
  const nav = await page.locator('#nav a').evaluateAll((as) => as.map((a) => a.dataset.testid));
  assert.deepEqual(nav, ['nav-fleet']);
  await page.getByTestId('fleet-table').waitFor();
  const rows = page.getByTestId('fleet-row');
  await until('three branches', async () => (await rows.count()) === 3);
  const flagged = await rows.evaluateAll((rs) => Object.fromEntries(rs.map((r) => [r.dataset.branch, r.dataset.flagged])));
  assert.deepEqual(flagged, { 'sim-1': 'false', 'sim-2': 'true', 'sim-3': 'false' });
  const red = page.locator('[data-testid="fleet-row"][data-branch="sim-2"]');
  assert.equal(await red.evaluate((r) => getComputedStyle(r).backgroundColor), 'rgb(251, 224, 222)');
  assert.match(await red.innerText(), /record 5 is altered/);
  assert.match(await page.locator('[data-branch="sim-1"] [data-testid="fleet-chain"]').innerText(), /verified/);
  assert.match(await page.getByTestId('fleet-summary').innerText(), /3 branches shown, 1 flagged/);
  await page.screenshot({ path: join(shots, '20-fleet.png'), fullPage: true });
});

step('fleet: a branch\'s detail names the altered record', async ({ page }) => {
  await page.locator('[data-testid="fleet-row"][data-branch="sim-2"]').click();
  await page.getByTestId('fleet-problems').waitFor();
  assert.match(await page.getByTestId('fleet-problems').innerText(), /record 5 is altered: its content hashes to/);
  assert.match(await page.getByTestId('fleet-flags').innerText(), /chain: record 5/);
  await page.screenshot({ path: join(shots, '21-fleet-branch.png'), fullPage: true });
});

step('fleet: in German too', async ({ page }) => {
  await page.goto(`${ctx.base}/console/#/fleet`);
  await page.getByTestId('lang-switch').click();
  await page.getByTestId('fleet-table').waitFor();
  assert.match(await page.locator('h1').innerText(), /Flotte/);
  await page.getByTestId('lang-switch').click();
});

step('fleet: a reviewer may open nothing on the hub', async ({ page }) => {
  await signIn(page, ctx.tokens.reviewer);
  assert.deepEqual(await page.locator('#nav a').count(), 0);
  await page.goto(`${ctx.base}/console/#/fleet`);
  await page.getByTestId('forbidden').waitFor();
});

const results = [];
let exitCode = 0;
try {
  const port = await freePort();
  mkdirSync(join(dir, 'hub'), { recursive: true });
  writeFileSync(join(dir, 'nats.conf'),
    `host: 127.0.0.1\nport: ${port}\njetstream { store_dir: "${join(dir, 'js')}", domain: hub }\n`);
  await start(natsBin, ['-c', join(dir, 'nats.conf')], /Server is ready/, 'nats-server');
  const nats = `nats://127.0.0.1:${port}`;
  execFileSync(bin, ['hub', 'simulate', '--nats', nats, '--branches', '3', '--cases', '20', '--alter', 'sim-2:5',
    '--write-branches', join(dir, 'hub', 'branches.toml')], { cwd: root, stdio: 'ignore' });
  const m = await start(bin, ['hub', '--nats', nats, '--data', join(dir, 'hub'), '--listen', '127.0.0.1:0', '--log', 'warn'],
    /listening on (http:\/\/[0-9.:]+)/, 'casegraph hub');
  ctx.base = m[1];
  // The hub makes its admin token first; tokens made before it would keep it from that.
  const admin = await until('the admin token', async () => readFileSync(join(dir, 'hub', 'admin.token'), 'utf8').trim());
  ctx.tokens = {};
  for (const role of ['auditor', 'reviewer']) {
    const out = execFileSync(bin, ['token', 'create', '--data', join(dir, 'hub'), '--role', role, '--name', `fleet-${role}`], { cwd: root, stdio: ['ignore', 'pipe', 'ignore'] });
    ctx.tokens[role] = out.toString().trim().split('\n').pop().trim();
  }
  await until('all 60 records at the hub', async () => {
    const r = await fetch(`${ctx.base}/v1/fleet/ingest`, { headers: { Authorization: `Bearer ${admin}` } });
    return r.ok && (await r.json()).records === 60;
  });
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
  const consoleErrors = [];
  page.on('pageerror', (e) => consoleErrors.push(String(e)));
  for (const { name, fn } of steps) {
    const started = Date.now();
    try {
      await fn({ page });
      if (consoleErrors.length) throw new Error(`script errors in the page: ${consoleErrors.splice(0).join('; ')}`);
      results.push({ name, ok: true });
      console.log(`  ok    ${name} (${Date.now() - started} ms)`);
    } catch (e) {
      results.push({ name, ok: false });
      console.log(`  FAIL  ${name}\n        ${String(e && e.stack || e).split('\n').slice(0, 6).join('\n        ')}`);
      await page.screenshot({ path: join(shots, `failed-fleet-${results.length}.png`), fullPage: true }).catch(() => {});
    }
  }
} catch (e) {
  console.log(`  FAIL  set-up: ${e && e.stack || e}`);
  exitCode = 1;
} finally {
  if (browser) await browser.close().catch(() => {});
  for (const c of children.reverse()) { c.removeAllListeners('exit'); c.kill('SIGTERM'); }
  rmSync(profileDir, { recursive: true, force: true });
  rmSync(dir, { recursive: true, force: true });
}
const failed = results.filter((r) => !r.ok).length;
if (failed) exitCode = 1;
console.log(`\nfleet browser tests: ${results.length - failed} passed, ${failed} failed${exitCode && !failed ? ' (set-up failed)' : ''}`);
process.exit(exitCode);
