// The app shell: a tiny router over the History API. The server answers every page URL with
// index.html, so /traces/<id> can be opened, reloaded or shared; this file picks the page.
import {h, mount, errorBox} from './dom.js';
import {apiKey, signOut, ApiError} from './api.js';
import {navigate, updateNav} from './state.js';

// [pattern, nav section, module, export]: pages load on first use.
const ROUTES = [
  [/^\/(?:traces\/?)?$/, 'traces', () => import('./pages/traces.js')],
  [/^\/traces\/([^/]+)$/, 'traces', () => import('./pages/trace.js')],
  [/^\/sessions\/?$/, 'sessions', () => import('./pages/sessions.js')],
  [/^\/sessions\/(.+)$/, 'sessions', () => import('./pages/session.js')],
  [/^\/evaluations\/?$/, 'evaluations', () => import('./pages/evaluations.js')],
  [/^\/evaluations\/compare$/, 'evaluations', () => import('./pages/compare.js')],
  [/^\/evaluations\/([^/]+)$/, 'evaluations', () => import('./pages/evaluation.js')],
  [/^\/overview\/?$/, 'overview', () => import('./pages/overview.js')],
];

const root = document.getElementById('page');
let cleanup = null;
let generation = 0;

async function render() {
  const current = ++generation;
  if (typeof cleanup === 'function') cleanup();
  cleanup = null;
  updateNav();
  showAuthStatus();
  const path = location.pathname;
  const route = ROUTES.find(([pattern]) => pattern.test(path));
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.nav === route?.[1]);
  if (!route) {
    mount(root, h('div', {class: 'empty'}, 'No page here. ', h('a', {href: '/', 'data-link': ''}, 'Go to traces')));
    return;
  }
  const args = path.match(route[0]).slice(1).map(decodeURIComponent);
  try {
    const page = await route[2]();
    if (current !== generation) return;  // the user moved on while the module loaded
    const container = h('div', {class: `page page-${route[1]}`});
    mount(root, container);
    cleanup = await page.render(container, ...args);
  } catch (error) {
    if (current === generation) mount(root, errorBox(error));
    if (!(error instanceof ApiError)) console.error(error);  // a bug, not an answer of the API
  }
}

function showAuthStatus() {
  const slot = document.getElementById('auth-status');
  mount(slot, apiKey() ? h('button', {type: 'button', title: 'Forget the API key of this tab', onclick: signOut},
                           'Sign out') : null);
}

// Same-origin links marked data-link (and the nav) move without a reload.
document.addEventListener('click', event => {
  const a = event.target.closest('a[data-link], a[data-nav]');
  if (!a || event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
  event.preventDefault();
  navigate(a.getAttribute('href'));
});
window.addEventListener('popstate', render);
window.addEventListener('tracehouse:navigate', render);
document.addEventListener('tracehouse:key', showAuthStatus);
render();
