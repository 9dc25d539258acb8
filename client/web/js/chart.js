// The per-layer error chart (uPlot, copied into vendor/ from npm by the build; docs/console.md).
import { el, replace } from './dom.js';

/**
 * Draws the relative weight error of each solved module (the job report's solve.modules, in report order:
 * block by block, modules by name) into `box`. Resolves to the number of points drawn.
 * @param {HTMLElement} box
 * @param {{name: string, relative_weight_error?: number, gptq_loss?: number}[]} modules
 * @returns {Promise<number>}
 */
export async function drawLayerErrors(box, modules) {
  const pts = modules.filter((m) => typeof m.relative_weight_error === 'number');
  if (!pts.length) {
    replace(box, el('p', { class: 'muted' }, 'No per-layer errors in this report (data-free methods report none).'));
    return 0;
  }
  /** @type {any} */
  let uPlot;
  try {
    const url = '../vendor/uPlot.esm.js';  // copied in by the build (client/web/CMakeLists.txt)
    uPlot = (await import(url)).default;
  } catch (e) {
    replace(box, el('p', { class: 'field-error' }, 'The chart library is not installed on this server (vendor/uPlot.esm.js); run npm ci in client/web and rebuild.'));
    return 0;
  }
  const xs = pts.map((_, i) => i);
  const ys = pts.map((m) => /** @type {number} */ (m.relative_weight_error));
  const short = (/** @type {string} */ n) => n.replace(/^model\.layers\./, 'L').replace(/\.(self_attn|mlp)\./, '.');
  replace(box);
  const width = Math.max(320, Math.min(900, box.clientWidth || 800));
  new uPlot({
    width,
    height: 260,
    title: 'Relative weight error per module',
    scales: { x: { time: false } },
    axes: [
      { label: 'module (report order)', values: (/** @type {any} */ _u, /** @type {number[]} */ ticks) => ticks.map((t) => (pts[t] ? short(pts[t].name) : '')) },
      { label: '‖W − Q‖ / ‖W‖', size: 60 },
    ],
    series: [
      { label: 'module', value: (/** @type {any} */ _u, /** @type {number} */ i) => (pts[i] ? pts[i].name : '') },
      { label: 'relative error', stroke: '#1f6feb', width: 2, points: { show: true, size: 5 }, value: (/** @type {any} */ _u, /** @type {number} */ v) => (v == null ? '—' : v.toFixed(4)) },
    ],
  }, [xs, ys], box);
  box.setAttribute('data-points', String(pts.length));
  return pts.length;
}
