// The web console in a real browser (Debian's chromium, driven by playwright-core) against a real `llmc serve`
// on loopback with two CPU workers and the shared fixture model (docs/console.md, "Tests"). Screenshots go to
// $LLMC_ARTIFACTS (ctest: build/client/web/artifacts).
//   LLMC_BIN        the llmc binary (llmc-server, llmc-worker beside it; the console in BIN/../share/llmc/web)
//   LLMC_SHARED_DIR the shared folder with models/llmc-fixture-llama and data/ (default: <repo>/../shared)
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '../../..');
const LLMC = process.env.LLMC_BIN || path.join(REPO, 'build/bin/llmc');
const SHARED = process.env.LLMC_SHARED_DIR || path.join(REPO, '../shared');
const FIXTURE = path.join(SHARED, 'models/llmc-fixture-llama');
const ARTIFACTS = process.env.LLMC_ARTIFACTS || path.join(REPO, 'build/client/web/artifacts');
const CHROMIUM = process.env.LLMC_CHROMIUM || '/usr/bin/chromium';
const HTML_LABEL = '<img src=x onerror="window.__pwned=1"><b>bold</b>';

for (const f of [LLMC, path.join(path.dirname(LLMC), 'llmc-server'), path.join(path.dirname(LLMC), 'llmc-worker'), FIXTURE]) {
  if (!fs.existsSync(f)) throw new Error(`${f} is missing: build llmc, llmc-server and llmc-worker (LLMC_BIN) and provide ../shared (LLMC_SHARED_DIR)`);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

describe('llmc web console', { timeout: 150_000 }, () => {
  let tmp, serve, base, log = '', browser;
  const tokens = {};

  /** The JSON API with a token, from the test itself (to compare with what the page shows). */
  async function api(token, method, p, body) {
    const res = await fetch(base + p, {
      method, headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : {}, headers: res.headers };
  }
  async function waitJob(id, pred, what, ms = 90_000) {
    const end = Date.now() + ms;
    let j;
    while (Date.now() < end) {
      j = (await api(tokens.admin, 'GET', `/api/v1/jobs/${id}`)).body;
      if (pred(j)) return j;
      await sleep(200);
    }
    throw new Error(`job ${id}: ${what} not reached in ${ms} ms; last: ${JSON.stringify(j).slice(0, 400)}\n${log}`);
  }
  async function shot(page, name) {
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: true });
  }
  async function signIn(token) {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = await ctx.newPage();
    page.on('dialog', (d) => d.accept());
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    // Script errors; a refused request (the 403 of the rejected spec) is logged by the browser too and is expected.
    page.on('console', (m) => { if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) errors.push(m.text()); });
    page.errors = errors;
    await page.goto(base + '/');
    await page.fill('#token', token);
    await page.click('#signin button[type=submit]');
    await page.waitForSelector('#tenant');
    return page;
  }

  before(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'llmc-console-'));
    // Tiny calibration and perplexity texts: the job takes seconds.
    const head = (f, n) => { const b = fs.readFileSync(path.join(SHARED, f)); return b.subarray(0, b.lastIndexOf(10, n) + 1); };  // whole lines
    fs.writeFileSync(path.join(tmp, 'calib.txt'), head('data/calibration.txt', 40_000));
    fs.writeFileSync(path.join(tmp, 'eval.txt'), head('data/eval.txt', 5_000));
    const data = path.join(tmp, 'data');
    serve = spawn(LLMC, ['serve', '--data-dir', data, '--port', '0', '--http-port', '0', '--workers', '2', '--threads', '1',
      '--no-cwd-root', '--allowed-root', tmp, '--allowed-input-root', FIXTURE], { cwd: tmp, stdio: ['ignore', 'pipe', 'pipe'] });
    serve.stdout.on('data', (d) => { log += d; });
    serve.stderr.on('data', (d) => { log += d; });
    const ready = path.join(data, 'serve.ready');
    for (let i = 0; i < 300 && !fs.existsSync(ready); i++) await sleep(100);
    const [, httpPort] = fs.readFileSync(ready, 'utf8').trim().split(/\s+/);
    base = `http://127.0.0.1:${httpPort}`;
    tokens.admin = fs.readFileSync(path.join(data, 'admin.token'), 'utf8').trim();
    const server = path.join(path.dirname(LLMC), 'llmc-server');
    const mk = (tenant, role) => execFileSync(server, ['token', 'create', '--data-dir', data, '--tenant', tenant, '--role', role]).toString().trim();
    tokens.acme = mk('acme', 'submitter');
    tokens.viewer = mk('acme', 'viewer');
    tokens.other = mk('other', 'submitter');
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
    // Both workers registered.
    for (let i = 0; i < 100; i++) {
      const w = await api(tokens.admin, 'GET', '/api/v1/workers');
      if ((w.body.workers || []).filter((x) => x.state === 'IDLE').length === 2) break;
      await sleep(100);
    }
  });

  after(async () => {
    if (browser) await browser.close();
    if (serve) {
      serve.kill('SIGTERM');
      await new Promise((r) => { serve.on('exit', r); setTimeout(r, 15_000); });
    }
    if (process.env.LLMC_TEST_SHOW_LOGS) console.log(log);
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('llmc serve prints the console URL; the server sets security headers and confines static files', async () => {
    assert.match(log, new RegExp(`llmc serve: web console on ${base}/console/`));
    const index = await fetch(base + '/console/');
    assert.equal(index.status, 200);
    const csp = index.headers.get('content-security-policy');
    assert.match(csp, /script-src 'self'/);
    assert.doesNotMatch(csp, /unsafe-inline/);
    assert.equal(index.headers.get('x-content-type-options'), 'nosniff');
    assert.match(index.headers.get('content-type'), /^text\/html/);
    assert.doesNotMatch(await index.text(), /<script>|\son[a-z]+=/, 'no inline script or handler in index.html');
    assert.match((await fetch(base + '/console/js/app.js')).headers.get('content-type'), /^text\/javascript/);
    assert.match((await fetch(base + '/console/vendor/uPlot.esm.js')).headers.get('content-type'), /^text\/javascript/);
    for (const p of ['/console/../../etc/passwd', '/console/%2e%2e/%2e%2e/etc/passwd', '/console/js/../../../data/admin.token',
      '/console/.hidden', '/console/nope.js', '/console/index.html%00.js']) {
      const r = await fetch(base + p);
      assert.notEqual(r.status, 200, p);
      assert.doesNotMatch(await r.text(), /root:|llmc_/, p);
    }
    // Every API call needs a token; /healthz and /metrics stay open.
    assert.equal((await fetch(base + '/api/v1/jobs')).status, 401);
    assert.equal((await fetch(base + '/api/v1/workers')).status, 401);
    assert.equal((await fetch(base + '/api/v1/jobs:stream')).status, 401);
    assert.equal((await fetch(base + '/healthz')).status, 200);
  });

  let page, jobId;
  it('signs in with a token kept out of the URL and shows tenant and role', async () => {
    page = await signIn(tokens.acme);
    assert.equal(await page.textContent('#tenant'), 'acme');
    assert.equal(await page.textContent('#role'), 'submitter');
    assert.ok(!page.url().includes(tokens.acme));
    assert.equal(await page.evaluate(() => sessionStorage.getItem('llmc.token')), tokens.acme);
    await page.waitForSelector('#live-status.live-live');
  });

  it('refuses a bad spec with the error next to its field, then submits a job that reaches SUCCEEDED live', async () => {
    await page.click('#nav-submit');
    await page.fill('#f-model', FIXTURE);
    await page.fill('#f-output', '/etc/llmc-console-out');
    await page.fill('#f-scheme', 'W4A16');
    await page.fill('#f-algorithm', 'gptq');
    await page.fill('#f-dataset', path.join(tmp, 'calib.txt'));
    await page.fill('#f-samples', '8');
    await page.fill('#f-seqlen', '64');
    await page.fill('#f-evaltext', path.join(tmp, 'eval.txt'));
    await page.fill('#f-labels', `team=a, html=${HTML_LABEL}`);
    await page.click('#submit');
    await page.waitForSelector('#err-output:not(:empty)');
    assert.match(await page.textContent('#err-output'), /spec\.output_uri: .*outside the allowed/);
    assert.equal(await page.textContent('#form-error'), '');
    await shot(page, 'submit-error');
    // A recipe file instead of a preset: a good one validates, a bad one is refused under the file field.
    await page.check('#mode-recipe');
    const recipe = 'quant_stage:\n  quant_modifiers:\n    QuantizationModifier:\n      targets: [Linear]\n      scheme: W8A16\n      ignore: [lm_head]\n';
    await page.setInputFiles('#f-recipe', { name: 'recipe.yaml', mimeType: 'text/yaml', buffer: Buffer.from(recipe) });
    await page.waitForSelector('#recipe-info:has-text("recipe.yaml")');
    await page.fill('#f-output', path.join(tmp, 'out-recipe'));
    await page.click('#validate');
    await page.waitForSelector('#validate-ok');
    assert.match(await page.textContent('#validate-ok'), /W8A16/);
    await page.setInputFiles('#f-recipe', { name: 'bad.yaml', mimeType: 'text/yaml', buffer: Buffer.from('stage:\n  mods:\n    FooModifier: {}\n') });
    await page.waitForSelector('#recipe-info:has-text("bad.yaml")');
    await page.click('#validate');
    await page.waitForSelector('#err-recipe:not(:empty)');
    assert.match(await page.textContent('#err-recipe'), /^spec\.recipe_yaml: .*FooModifier/);
    await page.check('#mode-preset');
    await page.fill('#f-output', '/etc/llmc-console-out');
    // Nothing is lost on reload: the draft comes back.
    await page.reload();
    await page.waitForSelector('#f-model');
    assert.equal(await page.inputValue('#f-model'), FIXTURE);
    await page.fill('#f-output', path.join(tmp, 'out-ok'));
    await page.click('#submit');
    await page.waitForURL(/#\/jobs\/job-/);
    jobId = page.url().split('#/jobs/')[1];
    // Record every progress text the page shows while the job runs.
    await page.waitForSelector('#progress-section .progress-text');
    await page.evaluate(() => {
      const seen = /** @type {any} */ (window).__seen = new Set();
      const note = () => { const t = document.querySelector('#progress-section .progress-text'); if (t) seen.add(t.textContent); };
      note();
      new MutationObserver(note).observe(document.getElementById('progress-section'), { childList: true, subtree: true, characterData: true });
    });
    // The page follows the job through the stream (no reload) to SUCCEEDED.
    const end = '#detail-view .toolbar :is([data-state=SUCCEEDED], [data-state=FAILED], [data-state=CANCELLED])';
    await page.waitForSelector(end, { timeout: 90_000 });
    assert.equal(await page.getAttribute(end, 'data-state'), 'SUCCEEDED', await page.textContent('#overview'));
    await page.waitForFunction(() => document.querySelectorAll('#timeline [data-state]').length >= 3);
    const states = await page.$$eval('#timeline [data-state]', (els) => els.map((e) => e.textContent));
    assert.deepEqual(states, ['QUEUED', 'RUNNING', 'SUCCEEDED']);
    const seen = await page.evaluate(() => [.../** @type {any} */ (window).__seen]);
    assert.ok(seen.some((t) => /^\d+ % · block [0-5]\/6/.test(t)), `live progress before the end: ${JSON.stringify(seen)}`);
    assert.ok(seen.includes('100 % · block 6/6'), JSON.stringify(seen));
  });

  it('shows the report: chart drawn, numbers as the JSON API has them', async () => {
    const job = (await api(tokens.acme, 'GET', `/api/v1/jobs/${jobId}`)).body;
    const s = JSON.parse(job.summaryJson);
    const points = s.solve.modules.filter((m) => typeof m.relative_weight_error === 'number').length;
    assert.ok(points >= 6 * 7, `a relative error for every solved Linear (${points})`);
    await page.waitForSelector('#layer-chart canvas');
    assert.equal(await page.getAttribute('#layer-chart', 'data-points'), String(points));
    assert.equal(await page.textContent('#ratio'), `${s.compression_ratio.toFixed(3)}×`);
    assert.equal(await page.textContent('#ppl-before'), s.eval.perplexity_before.toFixed(3));
    assert.equal(await page.textContent('#ppl-after'), s.eval.perplexity_after.toFixed(3));
    assert.equal(await page.textContent('#recovery'), `${s.eval.recovery_percent.toFixed(2)} %`);
    assert.equal(await page.textContent('#output'), path.join(tmp, 'out-ok'));
    assert.equal(await page.textContent('#blocks'), '6 / 6');
    assert.equal(await page.$$eval('#blocks-grid .block.done', (e) => e.length), 6);
    assert.equal(await page.$$eval('#block-table tbody tr', (e) => e.length), 6);
    assert.equal(await page.$$eval('#events-body tr', (e) => e.length) > 2, true);
    // The chart's canvas has been drawn on (not blank).
    const inked = await page.$eval('#layer-chart canvas', (c) => {
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      let n = 0;
      for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
      return n;
    });
    assert.ok(inked > 500, `chart pixels drawn: ${inked}`);
    await shot(page, 'job-detail');
    await page.locator('#report').locator('..').screenshot({ path: path.join(ARTIFACTS, 'job-report.png') });
    await page.locator('#detail-view .cols').screenshot({ path: path.join(ARTIFACTS, 'job-progress.png') });
    // Reload keeps the session and the page.
    await page.reload();
    await page.waitForSelector('#ratio');
    assert.equal(await page.textContent('#tenant'), 'acme');
  });

  it('lists jobs with filters; an HTML label is shown as text', async () => {
    await page.goto(`${base}/console/#/jobs`);
    const row = `tr[data-job="${jobId}"]`;
    await page.waitForSelector(row);
    const chips = await page.$$eval(`${row} .chip`, (e) => e.map((x) => x.textContent));
    assert.ok(chips.includes(`html=${HTML_LABEL}`), JSON.stringify(chips));
    assert.equal(await page.$$eval(`${row} img, ${row} b`, (e) => e.length), 0);
    assert.equal(await page.evaluate(() => /** @type {any} */ (window).__pwned), undefined);
    await page.selectOption('#filter-state', 'FAILED');
    await page.click('#filters button');
    await page.waitForSelector('#jobs-status:has-text("No jobs match")');
    await page.selectOption('#filter-state', 'SUCCEEDED');
    await page.fill('#filter-label', 'team=a');
    await page.click('#filters button');
    await page.waitForSelector(row);
    assert.match(page.url(), /state=SUCCEEDED/);
    await page.fill('#filter-label', 'team=b');
    await page.click('#filters button');
    await page.waitForSelector('#jobs-status:has-text("No jobs match")');
    await page.goto(`${base}/console/#/jobs`);
    await page.waitForSelector(row);
    await shot(page, 'jobs');
  });

  let longId;
  it('shows the workers, one busy with a running job and its rank', async () => {
    // A long calibration (minutes): it runs while the workers page is checked, then is cancelled.
    const r = await api(tokens.acme, 'POST', '/api/v1/jobs', { requestId: 'long-1', spec: {
      modelUri: FIXTURE, outputUri: path.join(tmp, 'out-long'), preset: { scheme: 'W4A16', algorithm: 'gptq' },
      calibration: { datasetUri: path.join(tmp, 'calib.txt'), numSamples: 64, seqLen: 512 }, labels: { team: 'a' } } });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    longId = r.body.id;
    await waitJob(longId, (j) => j.state === 'RUNNING', 'RUNNING');
    await page.click('#nav-workers');
    await page.waitForSelector(`#workers-body a[href="#/jobs/${longId}"]`);
    const rows = await page.$$eval('#workers-body tr', (trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent)));
    assert.equal(rows.length, 2);
    const ws = (await api(tokens.acme, 'GET', '/api/v1/workers')).body.workers;
    for (const w of ws) {
      const row = rows.find((x) => x[0] === w.id);
      assert.ok(row, w.id);
      assert.equal(row[1], w.host);
      assert.equal(row[2], w.device);
      assert.ok(['IDLE', 'BUSY'].includes(row[4]));
      assert.match(row[7], /^\d{4}-\d\d-\d\d /);
    }
    const busy = rows.find((x) => x[5] === longId);
    assert.equal(busy[4], 'BUSY');
    assert.equal(busy[6], '0');
    await shot(page, 'workers');
  });

  it('cancels a running job from the list', async () => {
    await page.click('#nav-jobs');
    const row = `tr[data-job="${longId}"]`;
    await page.waitForSelector(`${row} [data-state=RUNNING]`);
    await shot(page, 'jobs-running');
    await page.click(`${row} [data-cancel]`);
    await page.waitForSelector(`${row} [data-state=CANCELLED]`);
    assert.equal((await api(tokens.acme, 'GET', `/api/v1/jobs/${longId}`)).body.state, 'CANCELLED');
    assert.equal(await page.$(`${row} [data-cancel]`), null);
    // Paging: one job a page, newest first.
    await page.goto(`${base}/console/#/jobs?size=1`);
    await page.waitForSelector(`tr[data-job="${longId}"]`);
    assert.equal(await page.$$eval('#jobs-body tr', (e) => e.length), 1);
    await page.click('#next-page');
    await page.waitForSelector(`tr[data-job="${jobId}"]`);
    assert.equal(await page.$$eval('#jobs-body tr', (e) => e.length), 1);
    assert.match(page.url(), /page=/);
    await page.click('#first-page');
    await page.waitForSelector(`tr[data-job="${longId}"]`);
    assert.deepEqual(page.errors, []);
  });

  it('a viewer cannot submit: no button, and the server refuses', async () => {
    const v = await signIn(tokens.viewer);
    assert.equal(await v.textContent('#role'), 'viewer');
    assert.equal(await v.isHidden('#nav-submit'), true);
    await v.waitForSelector(`tr[data-job="${jobId}"]`);  // same tenant: it sees the job
    assert.equal(await v.$$eval('[data-cancel]', (e) => e.length), 0);
    await v.goto(`${base}/console/#/submit`);
    await v.waitForSelector('#submit-denied');
    const r = await api(tokens.viewer, 'POST', '/api/v1/jobs', { requestId: 'v1', spec: { modelUri: FIXTURE, outputUri: path.join(tmp, 'vout'), preset: { scheme: 'W4A16' } } });
    assert.equal(r.status, 403);
    await v.context().close();
  });

  it('another tenant does not see the job; a refused token sends back to sign-in', async () => {
    const o = await signIn(tokens.other);
    await o.waitForSelector('#jobs-status:has-text("No jobs match")');
    assert.equal(await o.$(`tr[data-job="${jobId}"]`), null);
    await o.goto(`${base}/console/#/jobs/${jobId}`);
    await o.waitForSelector('#job-gone');
    assert.equal((await api(tokens.other, 'GET', `/api/v1/jobs/${jobId}`)).status, 404);
    await shot(o, 'job-gone');
    await o.evaluate(() => sessionStorage.setItem('llmc.token', 'llmc_' + '0'.repeat(64)));
    await o.reload();
    await o.waitForSelector('#signin-error:has-text("no longer accepted")');
    await o.context().close();
  });

  it('says plainly when the server is down', async () => {
    await page.click('#nav-jobs');
    await page.waitForSelector('#jobs-body tr');
    serve.kill('SIGTERM');
    await new Promise((r) => serve.on('exit', r));
    serve = null;
    await page.waitForSelector('#live-status.live-reconnecting');
    await page.click('#nav-workers');
    await page.waitForSelector('#banner:has-text("Cannot reach the llmc server")');
    await shot(page, 'server-down');
  });
});
