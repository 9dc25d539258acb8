// The console's shell: sign-in, the session (token in sessionStorage), the hash router, the header and the one
// job-change stream the views share. Views live in views/*.js; each returns {el, onJob?, onResync?, dispose?}.
import { Api, ApiError } from './api.js';
import { el, replace } from './dom.js';
import * as jobs from './views/jobs.js';
import * as detail from './views/detail.js';
import * as submit from './views/submit.js';
import * as workers from './views/workers.js';

const TOKEN_KEY = 'llmc.token';

/**
 * @typedef {import('./api.js').Me} Me
 * @typedef {{el: HTMLElement, onJob?: (job: any) => void, onResync?: () => void, dispose?: () => void}} View
 * @typedef {{api: Api, me: Me, navigate: (hash: string) => void, setQuery: (q: URLSearchParams) => void,
 *            showError: (e: unknown) => void, clearError: () => void}} Ctx
 */

const main = /** @type {HTMLElement} */ (document.getElementById('main'));
const banner = /** @type {HTMLElement} */ (document.getElementById('banner'));
const who = /** @type {HTMLElement} */ (document.getElementById('who'));
const nav = /** @type {HTMLElement} */ (document.getElementById('nav'));
const live = /** @type {HTMLElement} */ (document.getElementById('live'));

/** @type {Api | null} */
let api = null;
/** @type {Me | null} */
let me = null;
/** @type {View | null} */
let view = null;
/** @type {{close: () => void} | null} */
let stream = null;

let bannerOffline = false;  // the banner says the server cannot be reached (cleared once the stream is back)

/** @param {unknown} e */
function showError(e) {
  bannerOffline = e instanceof ApiError && e.status === 0;
  let text = String(e);
  if (e instanceof ApiError) {
    if (e.status === 0) text = e.message;
    else if (e.code === 'NOT_FOUND') text = `Not found: ${e.message}`;
    else text = `${e.code}: ${e.message}`;
  }
  replace(banner, el('span', { class: 'banner-text' }, text), ' ',
    el('button', { type: 'button', class: 'link', onclick: clearError }, 'dismiss'));
  banner.hidden = false;
}
function clearError() {
  banner.hidden = true;
  replace(banner);
}

function signOut(/** @type {string} */ why) {
  sessionStorage.removeItem(TOKEN_KEY);
  if (stream) stream.close();
  stream = null;
  api = null;
  me = null;
  renderSignIn(why);
}

/** @param {string} [why] */
function renderSignIn(why) {
  if (view && view.dispose) view.dispose();
  view = null;
  nav.hidden = true;
  replace(who);
  replace(live);
  const input = /** @type {HTMLInputElement} */ (el('input', {
    id: 'token', name: 'token', type: 'password', autocomplete: 'off', spellcheck: 'false', required: true,
    placeholder: 'llmc_…',
  }));
  const msg = el('p', { class: 'field-error', id: 'signin-error', role: 'alert' }, why || '');
  const form = el('form', { id: 'signin', class: 'card narrow' },
    el('h2', {}, 'Sign in'),
    el('p', {}, 'Paste an API token (an admin token is in DATA_DIR/admin.token; others come from ',
      el('code', {}, 'llmc-server token create'), '). It is kept in this tab only (sessionStorage).'),
    el('label', { for: 'token' }, 'Token'), input, msg,
    el('button', { type: 'submit', class: 'primary' }, 'Sign in'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const token = input.value.trim();
    const a = new Api(token);
    try {
      const m = await a.whoami();
      sessionStorage.setItem(TOKEN_KEY, token);
      start(a, m);
    } catch (e) {
      replace(msg, e instanceof ApiError && e.status === 401
        ? 'This token was refused (unknown, revoked or mistyped).'
        : e instanceof ApiError ? `${e.code}: ${e.message}` : String(e));
    }
  });
  replace(main, form);
  input.focus();
}

/** @param {Api} a @param {Me} m */
function start(a, m) {
  api = a;
  me = m;
  api.onUnauthenticated = () => signOut('Your token is no longer accepted (expired or revoked): sign in again.');
  nav.hidden = false;
  for (const link of nav.querySelectorAll('[data-needs-submit]'))
    /** @type {HTMLElement} */ (link).hidden = !m.canSubmit;
  replace(who, el('span', { id: 'tenant' }, m.tenant), ' · ', el('span', { id: 'role' }, m.role), ' ',
    el('button', { type: 'button', class: 'link', id: 'signout', onclick: () => signOut('Signed out.') }, 'sign out'));
  if (stream) stream.close();
  /** @type {{close: () => void}} */
  const mine = api.stream((type, data) => {
    if (stream !== mine) return;
    if (type === 'job' && view && view.onJob) view.onJob(data);
    else if (type === 'resync' && view && view.onResync) view.onResync();
  }, (status) => {
    if (stream !== mine) return;  // signed out or replaced
    replace(live, el('span', { class: `live live-${status}`, id: 'live-status', title: 'job updates from the server' },
      status === 'live' ? '● live' : status === 'reconnecting' ? '○ reconnecting…' : '○ offline'));
    if (status === 'live' && bannerOffline) clearError();
    if (status === 'live' && view && view.onResync) view.onResync();  // catch up on what a break missed
  });
  stream = mine;
  route();
}

function route() {
  if (!api || !me) return;
  const hash = location.hash.replace(/^#/, '') || '/jobs';
  const [path, query] = hash.split('?');
  const q = new URLSearchParams(query || '');
  if (view && view.dispose) view.dispose();
  clearError();
  /** @type {Ctx} */
  const ctx = {
    api, me, showError, clearError,
    navigate: (h) => { location.hash = h; },
    setQuery: (nq) => {
      const s = nq.toString();
      history.replaceState(null, '', `#${path}${s ? `?${s}` : ''}`);
    },
  };
  for (const a of nav.querySelectorAll('a')) a.classList.toggle('active', hash.startsWith(a.getAttribute('href')?.slice(1) || '-'));
  const m = path.match(/^\/jobs\/([A-Za-z0-9_.-]+)$/);
  if (m) view = detail.render(ctx, m[1]);
  else if (path === '/submit') view = submit.render(ctx);
  else if (path === '/workers') view = workers.render(ctx);
  else view = jobs.render(ctx, q);
  replace(main, view.el);
}

window.addEventListener('hashchange', route);

async function boot() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) return renderSignIn();
  const a = new Api(token);
  try {
    start(a, await a.whoami());
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return signOut('Your token is no longer accepted (expired or revoked): sign in again.');
    replace(main, el('div', { class: 'card narrow' }, el('h2', {}, 'The llmc server does not answer'),
      el('p', { id: 'boot-error' }, e instanceof ApiError ? e.message : String(e)),
      el('button', { type: 'button', class: 'primary', onclick: boot }, 'Retry')));
  }
}
boot();
