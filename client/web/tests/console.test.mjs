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

/**
 * Runs in every page before the console's scripts: counts the job-change streams the page opens and ends, as
 * window.__streams {opened, closed}. The console reads its stream with fetch (the token goes in a header);
 * EventSource is wrapped too, so a stream opened either way is counted. A stream ends when its body ends, its
 * request is aborted or refused, or the connection fails.
 */
function countStreams() {
  const w = /** @type {any} */ (window);
  const counts = w.__streams = { opened: 0, closed: 0 };
  const ender = () => {
    let done = false;
    return () => { if (!done) { done = true; counts.closed++; } };
  };
  if (w.EventSource) {
    const ES = w.EventSource;
    w.EventSource = class extends ES {
      constructor(...args) {
        super(...args);
        counts.opened++;
        const end = ender();
        const close = this.close.bind(this);
        this.close = () => { end(); close(); };
        this.addEventListener('error', () => { if (this.readyState === ES.CLOSED) end(); });
      }
    };
  }
  const realFetch = w.fetch.bind(w);
  w.fetch = async (input, init) => {
    const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    if (!url.includes('/api/v1/jobs:stream')) return realFetch(input, init);
    counts.opened++;
    const end = ender();
    if (init && init.signal) init.signal.addEventListener('abort', end);
    let res;
    try {
      res = await realFetch(input, init);
    } catch (e) {
      end();
      throw e;
    }
    if (!res.ok || !res.body) {
      end();
      return res;
    }
    const reader = res.body.getReader();
    const body = new ReadableStream({
      async pull(c) {
        try {
          const r = await reader.read();
          if (r.done) { end(); c.close(); } else c.enqueue(r.value);
        } catch (e) {
          end();
          c.error(e);
        }
      },
      cancel(why) { end(); return reader.cancel(why); },
    });
    return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
  };
}

/**
 * Checks a size the console shows ("31.5 MB", decimal units as dom.js fmtBytes writes them) against the bytes the
 * API gave: equal to within half a unit of the last digit shown.
 * @param {string} text
 * @param {number | string} bytes
 * @param {string} what
 */
function assertBytesShown(text, bytes, what) {
  const m = /^(\d+(?:\.(\d+))?) (B|KB|MB|GB|TB)$/.exec(text.trim());
  assert.ok(m, `${what}: "${text}" is not a size`);
  const unit = 1000 ** ['B', 'KB', 'MB', 'GB', 'TB'].indexOf(m[3]);
  const half = 0.5 * 10 ** -(m[2] || '').length * unit;
  assert.ok(Math.abs(Number(m[1]) * unit - Number(bytes)) <= half * 1.000001, `${what}: the page shows ${text}, the API has ${bytes} bytes`);
}

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
    await ctx.addInitScript(countStreams);
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
    // Calibration and perplexity texts cut from ../shared (whole lines): the first job takes seconds.
    const head = (f, n) => { const b = fs.readFileSync(path.join(SHARED, f)); return b.subarray(0, b.lastIndexOf(10, n) + 1); };  // whole lines
    // Enough text for 256 samples of 512 tokens: the long job (a minute or more on two CPU workers).
    fs.writeFileSync(path.join(tmp, 'calib-long.txt'), head('data/calibration.txt', 700_000));
    // Fewer 64-token windows than the 8 samples the first job asks for: its report carries a warning.
    fs.writeFileSync(path.join(tmp, 'calib-small.txt'), head('data/calibration.txt', 1_500));
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
    await page.fill('#f-dataset', path.join(tmp, 'calib-small.txt'));
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

  it('shows the report: chart drawn, numbers, sizes and warnings as the JSON API has them; the HTML label as text', async () => {
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
    // Input and output sizes (the checkpoint's tensor bytes), as the report has them.
    assertBytesShown(await page.textContent('#input-bytes'), s.input_bytes, 'input size');
    assertBytesShown(await page.textContent('#output-bytes'), s.output_bytes, 'output size');
    assert.ok(s.input_bytes > s.output_bytes && s.output_bytes > 0, JSON.stringify([s.input_bytes, s.output_bytes]));
    assert.equal(await page.textContent('#modules-quantized'), String(s.modules_quantized));
    // Warnings: the report's and its solver's, each one item, in that order (the small calibration file holds
    // fewer 64-token samples than the 8 asked).
    const warned = [...(s.warnings || []), ...((s.solve && s.solve.warnings) || [])];
    assert.ok(warned.some((w) => /^calibration data holds only \d+ samples of 64 tokens \(8 asked\)/.test(w)), JSON.stringify(warned));
    assert.deepEqual(await page.$$eval('#warnings li', (e) => e.map((x) => x.textContent)), warned);
    // No Cancel button on a job that has ended.
    assert.equal(await page.$('#cancel'), null);
    // The GPUs and priority the form left empty: the server's defaults.
    assert.equal(await page.textContent('#gpus-priority'), `${job.spec.gpus || 1} / ${job.spec.priority || 0}`);
    // The HTML label on this page too: shown as text, nothing parsed or run.
    const chips = await page.$$eval('#overview .chip', (e) => e.map((x) => x.textContent));
    assert.ok(chips.includes(`html=${HTML_LABEL}`), JSON.stringify(chips));
    assert.equal(await page.$$eval('#detail-view img, #detail-view b', (e) => e.length), 0);
    assert.equal(await page.evaluate(() => /** @type {any} */ (window).__pwned), undefined);
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

  let longId, listPage;
  it('submits a job on both workers from the form: GPUs and priority reach its spec; the list follows it live', async () => {
    // A second tab on the list, open before the job exists: the job's row appears and then changes as the job
    // runs, from the stream, with no reload of the page.
    listPage = await signIn(tokens.acme);
    await listPage.waitForSelector('#jobs-body tr');
    await listPage.evaluate(() => {
      const w = /** @type {any} */ (window);
      w.__sameDocument = true;
      w.__rowSeen = [];  // "STATE progress text" of the new job's row, each change once
      w.__rowsBefore = new Set([...document.querySelectorAll('#jobs-body tr')].map((tr) => tr.getAttribute('data-job')));
      const note = () => {
        for (const tr of document.querySelectorAll('#jobs-body tr')) {
          if (w.__rowsBefore.has(tr.getAttribute('data-job'))) continue;
          const t = `${tr.querySelector('[data-state]')?.textContent} ${tr.querySelector('.progress-text')?.textContent}`;
          if (w.__rowSeen[w.__rowSeen.length - 1] !== t) w.__rowSeen.push(t);
        }
      };
      new MutationObserver(note).observe(/** @type {HTMLElement} */ (document.getElementById('jobs-body')), { childList: true, subtree: true, characterData: true });
    });
    // A long calibration (minutes) on both workers: it runs while the list, its page and the workers page are
    // checked, then is cancelled.
    await page.click('#nav-submit');
    await page.waitForSelector('#f-model');
    await page.fill('#f-model', FIXTURE);
    await page.fill('#f-output', path.join(tmp, 'out-long'));
    await page.fill('#f-scheme', 'W4A16');
    await page.fill('#f-algorithm', 'gptq');
    await page.fill('#f-dataset', path.join(tmp, 'calib-long.txt'));
    await page.fill('#f-samples', '256');
    await page.fill('#f-seqlen', '512');
    await page.fill('#f-evaltext', '');
    await page.fill('#f-gpus', '2');
    await page.fill('#f-priority', '3');
    await page.fill('#f-labels', 'team=a');
    await page.click('#submit');
    await page.waitForURL(/#\/jobs\/job-/);
    longId = page.url().split('#/jobs/')[1];
    const job = (await api(tokens.acme, 'GET', `/api/v1/jobs/${longId}`)).body;
    assert.equal(job.spec.gpus, 2, JSON.stringify(job.spec));
    assert.equal(job.spec.priority, 3, JSON.stringify(job.spec));
    assert.deepEqual(job.spec.labels, { team: 'a' });
    assert.equal(job.spec.calibration.numSamples, 256);
    assert.equal(job.spec.calibration.seqLen, 512);
    await page.waitForSelector('#gpus-priority:has-text("2 / 3")');

    // The list tab: the row came, then changed as the job started (its blocks are checked below, once they run).
    await listPage.waitForFunction(() => {
      const seen = /** @type {any} */ (window).__rowSeen;
      return seen.length >= 2 && seen.some((/** @type {string} */ t) => t.startsWith('RUNNING '));
    }, null, { timeout: 60_000 });

    // The job's page while it runs: the current block, the timeline so far.
    await page.waitForSelector('#blocks-grid .block.current', { timeout: 90_000 });  // after reading 256 samples
    await page.waitForFunction(() => [...document.querySelectorAll('#timeline [data-state]')].map((e) => e.textContent).join() === 'QUEUED,RUNNING');
    assert.match(await page.textContent('#stage'), /^(load|calibrate|solve|propagate) block [1-6]\/6 \(2 ranks\)$/);
    await page.locator('#detail-view .cols').screenshot({ path: path.join(ARTIFACTS, 'job-running.png') });

    // Meanwhile the list tab followed the blocks, not reloaded: its row's text went through a running block.
    const runningText = /^RUNNING \d+ % · block [0-5]\/6 · (load|calibrate|solve|propagate) block [1-6]\/6 \(2 ranks\)$/;
    await listPage.waitForFunction((re) => /** @type {any} */ (window).__rowSeen.some((/** @type {string} */ t) => new RegExp(re).test(t)),
      runningText.source, { timeout: 30_000 });
    const seen = await listPage.evaluate(() => /** @type {any} */ (window).__rowSeen);
    assert.equal(await listPage.evaluate(() => /** @type {any} */ (window).__sameDocument), true, 'the list tab was not reloaded');
    assert.equal(await listPage.$$eval(`tr[data-job="${longId}"]`, (e) => e.length), 1, JSON.stringify(seen));
    assert.match(seen[0], /^(QUEUED|RUNNING) /, JSON.stringify(seen));
    // What the row showed last is what the job was at some point: its blocks never ahead of the API's.
    const shown = seen.filter((/** @type {string} */ t) => runningText.test(t)).pop();
    const now = (await api(tokens.acme, 'GET', `/api/v1/jobs/${longId}`)).body;
    assert.ok(Number(shown.match(/block (\d)\/6 ·/)[1]) <= Number(now.progress.blocksDone || 0), `${shown} vs ${JSON.stringify(now.progress)}`);
    const streams = await listPage.evaluate(() => /** @type {any} */ (window).__streams);
    assert.equal(streams.opened - streams.closed, 1, `one stream open in the list tab: ${JSON.stringify(streams)}`);
    await listPage.context().close();
  });

  it('shows the workers: both busy with the job at ranks 0 and 1, memory as the API has it', async () => {
    // Both workers BUSY with the job and reporting their memory (heartbeats every 2 s) before the page asks.
    let ws = [];
    for (let i = 0; ; i++) {
      ws = (await api(tokens.acme, 'GET', '/api/v1/workers')).body.workers;
      if (ws.filter((w) => w.state === 'BUSY' && w.jobId === longId && Number(w.memoryTotalBytes) > 0).length === 2) break;
      assert.ok(i < 100, `both workers busy with ${longId}: ${JSON.stringify(ws)}`);
      await sleep(100);
    }
    // The rows are compared with the answer the page drew them from (memory in use moves between heartbeats).
    const answer = page.waitForResponse((r) => r.url().endsWith('/api/v1/workers') && r.status() === 200);
    await page.click('#nav-workers');
    ws = (await (await answer).json()).workers;
    await page.waitForSelector(`#workers-body a[href="#/jobs/${longId}"]`);
    const rows = await page.$$eval('#workers-body tr', (trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent)));
    assert.deepEqual(await page.$$eval('#workers-view th', (e) => e.map((x) => x.textContent)),
      ['Worker', 'Host', 'Device', 'Memory', 'State', 'Job', 'Rank', 'Last heartbeat']);
    assert.equal(rows.length, 2);
    assert.equal(ws.length, 2);
    // cpu workers report the host's memory: MemTotal, and MemTotal - MemAvailable in use.
    const memTotal = Number(/^MemTotal:\s+(\d+) kB$/m.exec(fs.readFileSync('/proc/meminfo', 'utf8'))[1]) * 1024;
    for (const w of ws) {
      const row = rows.find((x) => x[0] === w.id);
      assert.ok(row, w.id);
      assert.equal(row[1], w.host);
      assert.equal(row[2], w.device);
      assert.equal(w.device, 'cpu');
      assert.equal(Number(w.memoryTotalBytes), memTotal, `${w.id}: the host's MemTotal`);
      assert.ok(Number(w.memoryUsedBytes) > 0 && Number(w.memoryUsedBytes) < memTotal, JSON.stringify(w));
      const [used, total] = row[3].split(' / ');
      assertBytesShown(used, w.memoryUsedBytes, `${w.id} memory in use`);
      assertBytesShown(total, w.memoryTotalBytes, `${w.id} memory`);
      assert.equal(row[4], 'BUSY');
      assert.equal(row[5], longId);
      assert.match(row[7], /^\d{4}-\d\d-\d\d /);
    }
    assert.deepEqual(rows.map((x) => x[6]).sort(), ['0', '1']);
    const job = (await api(tokens.acme, 'GET', `/api/v1/jobs/${longId}`)).body;
    assert.equal(rows.find((x) => x[6] === '0')[0], job.workerIds[0], 'rank 0 is the job\'s first worker');
    await shot(page, 'workers');
  });

  let queuedId;
  it('cancels a queued job from its page; a viewer gets no Cancel button there', async () => {
    // Both workers run the long job: this one waits.
    const r = await api(tokens.acme, 'POST', '/api/v1/jobs', { requestId: 'queued-1', spec: {
      modelUri: FIXTURE, outputUri: path.join(tmp, 'out-queued'), preset: { scheme: 'W4A16' }, labels: { team: 'a' } } });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    queuedId = r.body.id;
    assert.equal(r.body.state, 'QUEUED');
    const v = await signIn(tokens.viewer);
    await v.goto(`${base}/console/#/jobs/${queuedId}`);
    await v.waitForSelector('#detail-view .toolbar [data-state=QUEUED]');
    assert.equal(await v.$('#cancel'), null);
    await v.context().close();
    await page.goto(`${base}/console/#/jobs/${queuedId}`);
    await page.waitForSelector('#detail-view .toolbar [data-state=QUEUED]');
    await page.click('#cancel');  // the confirm dialog is accepted
    await page.waitForSelector('#detail-view .toolbar [data-state=CANCELLED]');
    assert.equal(await page.$('#cancel'), null);
    assert.equal((await api(tokens.acme, 'GET', `/api/v1/jobs/${queuedId}`)).body.state, 'CANCELLED');
    await page.waitForFunction(() => [...document.querySelectorAll('#timeline [data-state]')].map((e) => e.textContent).join() === 'QUEUED,CANCELLED');
    assert.match(await page.textContent('#overview'), /none \(nothing made visible\)/);
    assert.equal((await api(tokens.acme, 'GET', `/api/v1/jobs/${longId}`)).body.state, 'RUNNING');
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
    await page.waitForSelector(`tr[data-job="${queuedId}"]`);
    assert.equal(await page.$$eval('#jobs-body tr', (e) => e.length), 1);
    await page.click('#next-page');
    await page.waitForSelector(`tr[data-job="${longId}"]`);
    assert.equal(await page.$$eval('#jobs-body tr', (e) => e.length), 1);
    assert.match(page.url(), /page=/);
    await page.click('#first-page');
    await page.waitForSelector(`tr[data-job="${queuedId}"]`);
    assert.deepEqual(page.errors, []);
  });

  it('keeps one job stream open per page while moving between its pages', async () => {
    await page.evaluate(() => { /** @type {any} */ (window).__sameDocument = true; });
    await page.click('#nav-jobs');
    await page.waitForSelector(`tr[data-job="${jobId}"]`);
    await page.click(`tr[data-job="${jobId}"] a`);
    await page.waitForSelector('#ratio');
    await page.click('#nav-submit');
    await page.waitForSelector('#f-model');
    await page.click('#nav-workers');
    await page.waitForSelector('#workers-body tr');
    await page.click('#nav-jobs');
    await page.waitForSelector(`tr[data-job="${jobId}"]`);
    assert.equal(await page.evaluate(() => /** @type {any} */ (window).__sameDocument), true, 'moved within one page');
    const streams = await page.evaluate(() => /** @type {any} */ (window).__streams);
    assert.equal(streams.opened - streams.closed, 1, JSON.stringify(streams));
    assert.equal(streams.opened, 1, `no stream opened by moving between pages: ${JSON.stringify(streams)}`);
    await page.waitForSelector('#live-status.live-live');
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
