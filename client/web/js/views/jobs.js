// The jobs list: state and label filters, paging, live progress from the job stream, cancel.
import { el, replace, fmtTime, stateBadge, TERMINAL } from '../dom.js';

const STATES = ['', 'QUEUED', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED', 'RETRYING'];
const PAGE_SIZE = 20;  // jobs a page; the address may ask for 1-1000 with size=N

/**
 * Progress cell: a bar and "42 % · block 3/6 · solve".
 * @param {any} job
 */
export function progressCell(job) {
  const p = job.progress || {};
  const frac = Math.max(0, Math.min(1, Number(p.fraction || 0)));
  const parts = [`${(frac * 100).toFixed(0)} %`];
  if (p.blocksTotal) parts.push(`block ${p.blocksDone || 0}/${p.blocksTotal}`);
  if (p.stage && job.state === 'RUNNING') parts.push(p.stage);
  const bar = el('progress', { max: 1, value: frac, class: 'bar' });
  return el('div', { class: 'progress' }, bar, el('span', { class: 'progress-text' }, parts.join(' · ')));
}

/** @param {any} job */
export function labelChips(job) {
  const labels = (job.spec && job.spec.labels) || {};
  return Object.keys(labels).sort().map((k) => el('span', { class: 'chip' }, `${k}=${labels[k]}`));
}

/**
 * @param {import('../app.js').Ctx} ctx
 * @param {URLSearchParams} q state, label (k=v, comma-separated), page (token), size (jobs a page)
 * @returns {import('../app.js').View}
 */
export function render(ctx, q) {
  const state = q.get('state') || '';
  const labelText = q.get('label') || '';
  const page = q.get('page') || '';
  const pageSize = Math.min(1000, Math.max(1, Number(q.get('size')) || PAGE_SIZE));
  /** @type {Map<string, HTMLElement>} */
  const rows = new Map();

  const stateSel = /** @type {HTMLSelectElement} */ (el('select', { id: 'filter-state', name: 'state' },
    STATES.map((s) => el('option', { value: s, selected: s === state }, s || 'any state'))));
  const labelIn = /** @type {HTMLInputElement} */ (el('input', {
    id: 'filter-label', name: 'label', value: labelText, placeholder: 'team=a, run=nightly', size: 24,
  }));
  const filters = el('form', { class: 'filters', id: 'filters' },
    el('label', { for: 'filter-state' }, 'State'), stateSel,
    el('label', { for: 'filter-label' }, 'Labels'), labelIn,
    el('button', { type: 'submit' }, 'Filter'));
  filters.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const nq = new URLSearchParams();
    if (stateSel.value) nq.set('state', stateSel.value);
    if (labelIn.value.trim()) nq.set('label', labelIn.value.trim());
    ctx.navigate(`/jobs?${nq}`);
  });

  const tbody = el('tbody', { id: 'jobs-body' });
  const pager = el('div', { class: 'pager', id: 'pager' });
  const status = el('p', { class: 'muted', id: 'jobs-status' }, 'Loading…');
  const root = el('section', { id: 'jobs-view' },
    el('div', { class: 'toolbar' }, el('h2', {}, 'Jobs'), filters),
    el('table', { class: 'jobs' },
      el('thead', {}, el('tr', {}, ['Job', 'State', 'Progress', 'Labels', 'Created', 'Output', ''].map((h) => el('th', {}, h)))),
      tbody),
    status, pager);

  /** @param {any} job */
  function row(job) {
    const cancel = ctx.me.canSubmit && !TERMINAL.has(job.state)
      ? el('button', { type: 'button', class: 'danger small', 'data-cancel': job.id, onclick: () => doCancel(job.id) }, 'Cancel')
      : '';
    return el('tr', { 'data-job': job.id },
      el('td', {}, el('a', { href: `#/jobs/${job.id}`, class: 'mono' }, job.id)),
      el('td', {}, stateBadge(job.state)),
      el('td', {}, progressCell(job)),
      el('td', { class: 'labels' }, labelChips(job)),
      el('td', {}, fmtTime(job.createTimeMs)),
      el('td', { class: 'mono wrap' }, (job.spec && job.spec.outputUri) || ''),
      el('td', {}, cancel));
  }

  /** @param {string} id */
  async function doCancel(id) {
    if (!confirm(`Cancel job ${id}?`)) return;
    try {
      const job = await ctx.api.cancel(id);
      update(job);
    } catch (e) {
      ctx.showError(e);
    }
  }

  /** @param {any} job */
  function update(job) {
    const old = rows.get(job.id);
    if (!old) return false;
    const fresh = row(job);
    old.replaceWith(fresh);
    rows.set(job.id, fresh);
    return true;
  }

  const labels = labelText.split(',').map((s) => s.trim()).filter(Boolean);
  let loading = false;
  async function load() {
    if (loading) return;
    loading = true;
    try {
      const r = await ctx.api.listJobs({ state, labels, pageSize, pageToken: page });
      rows.clear();
      replace(tbody, (r.jobs || []).map((/** @type {any} */ j) => {
        const tr = row(j);
        rows.set(j.id, tr);
        return tr;
      }));
      replace(status, (r.jobs || []).length ? '' : 'No jobs match.');
      replace(pager,
        page ? el('button', { type: 'button', id: 'first-page', onclick: () => { q.delete('page'); ctx.navigate(`/jobs?${q}`); } }, '« First page') : '',
        r.nextPageToken ? el('button', { type: 'button', id: 'next-page', onclick: () => { q.set('page', r.nextPageToken); ctx.navigate(`/jobs?${q}`); } }, 'Next page »') : '');
    } catch (e) {
      replace(status, 'Could not load the jobs.');
      ctx.showError(e);
    } finally {
      loading = false;
    }
  }
  load();

  /** @type {ReturnType<typeof setTimeout> | null} */
  let reloadTimer = null;
  return {
    el: root,
    onJob(job) {
      if (update(job)) {
        // A job that left the filtered state leaves the page at the next reload; keep it shown until then.
        return;
      }
      // A new job (or one that entered the filter) shows on the first page.
      if (!page && !reloadTimer) reloadTimer = setTimeout(() => { reloadTimer = null; load(); }, 300);
    },
    onResync: load,
    dispose() {
      if (reloadTimer) clearTimeout(reloadTimer);
    },
  };
}
