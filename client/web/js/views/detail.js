// One job: state, stages and timeline, per-block progress, the report (sizes, compression ratio, perplexity,
// per-layer error chart, warnings), the output, and the event log; kept live by the job stream.
import { ApiError } from '../api.js';
import { drawLayerErrors } from '../chart.js';
import { el, replace, fmtTime, fmtBytes, fmtDuration, stateBadge, TERMINAL } from '../dom.js';
import { progressCell, labelChips } from './jobs.js';

/**
 * @param {string} k
 * @param {import('../dom.js').Children} v
 * @param {string} [id]
 */
function kv(k, v, id) {
  return [el('dt', {}, k), el('dd', id ? { id } : {}, v)];
}

/** @param {string} s */
function parseSummary(s) {
  if (!s) return null;
  try {
    return JSON.parse(s);
  } catch {
    return null;
  }
}

/**
 * @param {import('../app.js').Ctx} ctx
 * @param {string} id
 * @returns {import('../app.js').View}
 */
export function render(ctx, id) {
  /** @type {any} */
  let job = null;
  /** @type {any[]} */
  const events = [];
  let lastSeq = 0;
  let chartDrawn = false;
  let showProgress = false;

  const head = el('div', { class: 'toolbar' });
  const overview = el('dl', { class: 'grid', id: 'overview' });
  const progress = el('div', { id: 'progress-section' });
  const timeline = el('ol', { class: 'timeline', id: 'timeline' });
  const report = el('div', { id: 'report' });
  const chart = el('div', { class: 'chart', id: 'layer-chart' });
  const blocks = el('div', { id: 'block-table' });
  const warnings = el('ul', { class: 'warnings', id: 'warnings' });
  const log = el('tbody', { id: 'events-body' });
  const toggle = /** @type {HTMLInputElement} */ (el('input', { type: 'checkbox', id: 'show-progress', onchange: () => { showProgress = toggle.checked; drawLog(); } }));
  const root = el('section', { id: 'detail-view' },
    el('p', {}, el('a', { href: '#/jobs' }, '← Jobs')),
    head,
    el('div', { class: 'cols' },
      el('div', { class: 'card' }, el('h3', {}, 'Overview'), overview),
      el('div', { class: 'card' }, el('h3', {}, 'Progress'), progress, el('h3', {}, 'Timeline'), timeline)),
    el('div', { class: 'card' }, el('h3', {}, 'Report'), report, chart, blocks, el('h3', {}, 'Warnings'), warnings),
    el('div', { class: 'card' }, el('h3', {}, 'Events'),
      el('label', { class: 'inline' }, toggle, 'show progress events'),
      el('table', { class: 'events' }, el('thead', {}, el('tr', {}, ['#', 'Time', 'Type', 'State', 'Message'].map((h) => el('th', {}, h)))), log)));

  async function cancel() {
    if (!confirm(`Cancel job ${id}?`)) return;
    try {
      job = await ctx.api.cancel(id);
      draw();
      fetchEvents();
    } catch (e) {
      ctx.showError(e);
    }
  }

  function draw() {
    const s = job.spec || {};
    const summary = parseSummary(job.summaryJson);
    const solve = (summary && summary.solve) || {};
    replace(head, el('h2', { class: 'mono' }, job.id), stateBadge(job.state),
      ctx.me.canSubmit && !TERMINAL.has(job.state) ? el('button', { type: 'button', class: 'danger', id: 'cancel', onclick: cancel }, 'Cancel job') : '');
    const method = summary ? summary.method : s.recipeYaml ? 'recipe' : `${(s.preset && s.preset.scheme) || ''} ${(s.preset && s.preset.algorithm) || 'rtn'}`;
    const started = Number(job.startTimeMs || 0), ended = Number(job.endTimeMs || 0);
    replace(overview,
      kv('Tenant', job.tenant),
      kv('Labels', labelChips(job)),
      kv('Method', method, 'method'),
      kv('Model', el('span', { class: 'mono wrap' }, s.modelUri || '')),
      kv('Output', el('span', { class: 'mono wrap' }, s.outputUri || ''), 'output'),
      kv('Output state', job.state === 'SUCCEEDED' ? 'written (complete checkpoint)' : TERMINAL.has(job.state) ? 'none (nothing made visible)' : 'being written to a staging folder'),
      s.calibration && s.calibration.datasetUri ? kv('Calibration', `${s.calibration.datasetUri} · ${s.calibration.numSamples || 128} samples × ${s.calibration.seqLen || 512} tokens`) : [],
      kv('GPUs / priority', `${s.gpus || 1} / ${s.priority || 0}`, 'gpus-priority'),
      kv('Created', fmtTime(job.createTimeMs)),
      kv('Started', fmtTime(job.startTimeMs)),
      kv('Ended', fmtTime(job.endTimeMs)),
      kv('Run time', started ? fmtDuration(((ended || Date.now()) - started) / 1000) : '—'),
      kv('Attempts', `${job.attempts || 0} (fails after ${job.maxAttempts || 0} lost)`),
      kv('Workers', (job.workerIds || []).join(', ') || '—'),
      job.message ? kv('Message', job.message) : [],
      job.error ? kv('Error', el('span', { class: 'field-error', id: 'job-error' }, `${job.errorCode ? job.errorCode + ': ' : ''}${job.error}`)) : []);

    // Per-block progress: one cell per decoder block; done = reported by the worker or durable in the output.
    const p = job.progress || {};
    const total = Number(p.blocksTotal || 0);
    const done = Math.max(Number(p.blocksDone || 0), Number(job.finishedBlocks || 0));
    const cells = [];
    for (let i = 0; i < total; i++)
      cells.push(el('span', { class: `block ${i < done ? 'done' : i === done && job.state === 'RUNNING' ? 'current' : ''}`, title: `block ${i}` }, String(i)));
    replace(progress, progressCell(job),
      el('dl', { class: 'grid small' },
        kv('Stage', p.stage || '—', 'stage'),
        kv('Blocks', total ? `${done} / ${total}` : '—', 'blocks'),
        kv('Modules', p.modulesTotal ? `${p.modulesDone || 0} / ${p.modulesTotal}` : '—'),
        kv('Input read', p.bytesTotal ? `${fmtBytes(p.bytesDone)} / ${fmtBytes(p.bytesTotal)}` : '—')),
      total ? el('div', { class: 'blocks', id: 'blocks-grid' }, cells) : '');

    if (summary) {
      const ev = summary.eval;
      replace(report, el('dl', { class: 'grid' },
        kv('Input size', fmtBytes(summary.input_bytes), 'input-bytes'),
        kv('Output size', fmtBytes(summary.output_bytes), 'output-bytes'),
        kv('Compression ratio', `${Number(summary.compression_ratio).toFixed(3)}×`, 'ratio'),
        kv('Modules quantized', String(summary.modules_quantized), 'modules-quantized'),
        kv('Shards', String(summary.shards)),
        kv('Compression time', fmtDuration(Number(summary.seconds)), 'seconds'),
        ev ? [
          kv('Perplexity before', Number(ev.perplexity_before).toFixed(3), 'ppl-before'),
          kv('Perplexity after', Number(ev.perplexity_after).toFixed(3), 'ppl-after'),
          kv('Recovery', `${Number(ev.recovery_percent).toFixed(2)} %`, 'recovery'),
          ev.activations_quantized ? kv('Perplexity after (weights only)', Number(ev.perplexity_after_weights_only).toFixed(3)) : [],
        ] : kv('Perplexity', 'not measured (no perplexity text in the spec)')));
      if (!chartDrawn) {
        chartDrawn = true;
        drawLayerErrors(chart, solve.modules || []);
        const bl = solve.blocks || [];
        if (bl.length)
          replace(blocks, el('table', { class: 'blocks-table' },
            el('thead', {}, el('tr', {}, ['Block', 'Calibrate', 'Solve', 'Propagate'].map((h) => el('th', {}, h)))),
            el('tbody', {}, bl.map((/** @type {any} */ b) => el('tr', {}, el('td', {}, String(b.layer)),
              ['calibrate_s', 'solve_s', 'propagate_s'].map((k) => el('td', {}, fmtDuration(Number(b[k])))))))));
      }
      const ws = [...(summary.warnings || []), ...(solve.warnings || [])];
      replace(warnings, ws.length ? ws.map((w) => el('li', {}, String(w))) : el('li', { class: 'muted' }, 'none'));
    } else {
      replace(report, el('p', { class: 'muted' }, job.state === 'SUCCEEDED' ? 'No report.' : 'The report appears when the job has succeeded.'));
      replace(warnings, el('li', { class: 'muted' }, 'none yet'));
    }
  }

  function drawTimeline() {
    const states = events.filter((e) => e.type === 'state');
    replace(timeline, states.map((e, i) => {
      const next = states[i + 1];
      const dur = next ? ` (${fmtDuration((Number(next.timeMs) - Number(e.timeMs)) / 1000)})` : '';
      return el('li', {}, stateBadge(e.state), ' ', fmtTime(e.timeMs), dur, e.message ? el('div', { class: 'muted' }, e.message) : '');
    }));
  }

  function drawLog() {
    replace(log, events.filter((e) => showProgress || e.type !== 'progress').map((e) =>
      el('tr', { 'data-seq': e.seq }, el('td', {}, String(e.seq)), el('td', {}, fmtTime(e.timeMs)), el('td', {}, e.type),
        el('td', {}, stateBadge(e.state)), el('td', { class: 'wrap' }, e.message || ''))));
  }

  let fetching = false;
  let again = false;  // events arrived while fetching: fetch once more after
  async function fetchEvents() {
    if (fetching) {
      again = true;
      return;
    }
    fetching = true;
    again = false;
    try {
      while (job && lastSeq < Number(job.lastEventSeq || 0)) {
        const r = await ctx.api.events(id, lastSeq);
        const got = r.events || [];
        if (!got.length) break;
        for (const e of got) events.push(e);
        lastSeq = Number(got[got.length - 1].seq);
      }
      drawTimeline();
      drawLog();
    } catch (e) {
      ctx.showError(e);
    } finally {
      fetching = false;
    }
    if (again) fetchEvents();
  }

  async function load() {
    try {
      job = await ctx.api.getJob(id);
      draw();
      await fetchEvents();
    } catch (e) {
      if (e instanceof ApiError && e.code === 'NOT_FOUND')
        replace(root, el('p', {}, el('a', { href: '#/jobs' }, '← Jobs')),
          el('div', { class: 'card narrow', id: 'job-gone' }, el('h2', {}, 'Job not found'),
            el('p', {}, `There is no job ${id} for your tenant: it may have been mistyped, or belong to another tenant.`)));
      else ctx.showError(e);
    }
  }
  load();

  return {
    el: root,
    onJob(j) {
      if (j.id !== id) return;
      job = j;
      draw();
      fetchEvents();
    },
    onResync: load,
  };
}
