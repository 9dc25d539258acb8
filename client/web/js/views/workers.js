// The workers: host, device, device memory (used / total at the last heartbeat), state, current job and rank, last heartbeat. Refreshed every 5 s.
import { el, replace, fmtTime, fmtBytes, stateBadge } from '../dom.js';

/**
 * @param {import('../app.js').Ctx} ctx
 * @returns {import('../app.js').View}
 */
export function render(ctx) {
  const tbody = el('tbody', { id: 'workers-body' });
  const status = el('p', { class: 'muted', id: 'workers-status' }, 'Loading…');
  const root = el('section', { id: 'workers-view' }, el('h2', {}, 'Workers'),
    el('table', { class: 'workers' },
      el('thead', {}, el('tr', {}, ['Worker', 'Host', 'Device', 'Memory', 'State', 'Job', 'Rank', 'Last heartbeat'].map((h) => el('th', {}, h)))),
      tbody),
    status,
    el('p', { class: 'muted' }, 'A worker busy with another tenant\'s job shows BUSY without the job. Workers silent for the lease are LOST; they drop off the list after 10 minutes.'));

  async function load() {
    try {
      const r = await ctx.api.workers();
      const ws = (r.workers || []).slice().sort((/** @type {any} */ a, /** @type {any} */ b) => String(a.id).localeCompare(String(b.id)));
      replace(tbody, ws.map((/** @type {any} */ w) => el('tr', { 'data-worker': w.id },
        el('td', { class: 'mono' }, w.id), el('td', {}, w.host), el('td', {}, w.device),
        el('td', { class: 'memory', title: w.device === 'cpu' ? 'the host\'s memory in use / installed' : 'GPU memory in use (whole device) / installed' },
          Number(w.memoryTotalBytes || 0) ? `${fmtBytes(w.memoryUsedBytes)} / ${fmtBytes(w.memoryTotalBytes)}` : '—'),
        el('td', {}, stateBadge(w.state)),
        el('td', {}, w.jobId ? el('a', { href: `#/jobs/${w.jobId}`, class: 'mono' }, w.jobId) : '—'),
        el('td', {}, w.state === 'BUSY' && w.jobId ? String(w.rank || 0) : '—'),
        el('td', {}, fmtTime(w.lastHeartbeatMs)))));
      replace(status, ws.length ? `${ws.length} worker${ws.length === 1 ? '' : 's'} · updated ${fmtTime(Date.now())}` : 'No workers have registered.');
    } catch (e) {
      replace(status, 'Could not load the workers.');
      ctx.showError(e);
    }
  }
  load();
  const timer = setInterval(load, 5000);
  return { el: root, onJob: () => {}, onResync: load, dispose: () => clearInterval(timer) };
}
