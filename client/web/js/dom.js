// Building DOM nodes. Every value is inserted as text (Text nodes, textContent, setAttribute), never parsed
// as HTML: a job label holding "<img onerror=...>" shows those characters.

/**
 * @typedef {import('./types').Child} Child
 * @typedef {import('./types').Children} Children  nested lists are flattened
 * @typedef {{[name: string]: string | number | boolean | null | undefined | ((e: Event) => void)}} Attrs
 */

/**
 * Creates element `tag` with attributes (`onclick`-style keys add listeners; false/null/undefined skip) and
 * children (strings become text nodes; null/false are skipped).
 * @param {string} tag
 * @param {Attrs} [attrs]
 * @param {...Children} children
 * @returns {HTMLElement}
 */
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (typeof v === 'function') e.addEventListener(k.replace(/^on/, ''), v);
    else if (v === true) e.setAttribute(k, '');
    else e.setAttribute(k, String(v));
  }
  append(e, children);
  return e;
}

/**
 * @param {Node} parent
 * @param {Children[]} children
 */
export function append(parent, children) {
  for (const c of /** @type {Child[]} */ (/** @type {any[]} */ (children).flat(Infinity))) {
    if (c === null || c === undefined || c === false) continue;
    parent.appendChild(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
  }
}

/**
 * Replaces the children of `parent`.
 * @param {Node} parent
 * @param {...Children} children
 */
export function replace(parent, ...children) {
  while (parent.firstChild) parent.removeChild(parent.firstChild);
  append(parent, children);
}

/** @param {number | string | undefined} ms Unix milliseconds (JSON int64s arrive as strings) */
export function fmtTime(ms) {
  const n = Number(ms || 0);
  if (!n) return '—';
  const d = new Date(n);
  const p = (/** @type {number} */ x) => String(x).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** @param {number | string | undefined} bytes */
export function fmtBytes(bytes) {
  let n = Number(bytes || 0);
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let u = 0;
  while (n >= 1000 && u < units.length - 1) {
    n /= 1000;
    u++;
  }
  return `${u === 0 ? n : n.toFixed(n >= 100 ? 0 : n >= 10 ? 1 : 2)} ${units[u]}`;
}

/** @param {number} s seconds */
export function fmtDuration(s) {
  if (!isFinite(s) || s < 0) return '—';
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

/**
 * A state badge: the text is the state's name.
 * @param {string} state
 */
export function stateBadge(state) {
  return el('span', { class: `state state-${String(state || '').toLowerCase()}`, 'data-state': state }, state || '—');
}

export const TERMINAL = new Set(['SUCCEEDED', 'FAILED', 'CANCELLED']);
