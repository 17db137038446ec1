// What pages share through the URL: the time range and the project. The traces page puts them
// in its URL (so a search is a shareable link); the other pages read the same parameters, and
// the nav links carry them along, so the overview follows the traces page's range.

export const RANGES = [
  ['15m', 'Last 15 minutes', 15 * 60e3], ['1h', 'Last hour', 3600e3], ['6h', 'Last 6 hours', 6 * 3600e3],
  ['24h', 'Last 24 hours', 24 * 3600e3], ['7d', 'Last 7 days', 7 * 86400e3], ['30d', 'Last 30 days', 30 * 86400e3],
  ['all', 'All time', null],
];
export const DEFAULT_RANGE = '24h';
const SHARED = ['range', 'from', 'to', 'project'];
const REMEMBERED = 'tracehouse.shared';

export function params() {
  return new URLSearchParams(location.search);
}

/** {start_ms, end_ms} for the API; a relative range ends now (re-read on every call). */
export function timeWindow(p = params()) {
  const from = Number(p.get('from')), to = Number(p.get('to'));
  if (from && to) return {start_ms: from, end_ms: to, relative: false};
  const range = RANGES.find(r => r[0] === (p.get('range') || DEFAULT_RANGE)) || RANGES[3];
  const now = Date.now();
  return {start_ms: range[2] ? Math.floor(now - range[2]) : null, end_ms: range[2] ? now + 60e3 : null,
          relative: true, key: range[0]};
}

export function project(p = params()) {
  return p.get('project') || null;
}

export function projects(p = params()) {
  const one = project(p);
  return one ? [one] : null;
}

/** The shared parameters of the current URL (or, on a page without them, the last ones seen). */
export function sharedParams() {
  const p = params();
  const out = new URLSearchParams();
  for (const name of SHARED) if (p.get(name)) out.set(name, p.get(name));
  if ([...out].length) {
    sessionStorage.setItem(REMEMBERED, out.toString());
    return out;
  }
  return new URLSearchParams(sessionStorage.getItem(REMEMBERED) || '');
}

/** `path?query` with empty values dropped. */
export function href(path, query = {}) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v != null && v !== '') p.set(k, v);
  const s = p.toString();
  return s ? `${path}?${s}` : path;
}

/** Change the URL without a reload; `replace` for edits that should not fill the back button. */
export function navigate(url, {replace = false} = {}) {
  if (url === location.pathname + location.search) return;
  history[replace ? 'replaceState' : 'pushState'](null, '', url);
  window.dispatchEvent(new Event('tracehouse:navigate'));
}

/** Record a page's own state in the URL without drawing the page again (search box, sort, …). */
export function setUrl(url, {replace = false} = {}) {
  if (url === location.pathname + location.search) return;
  history[replace ? 'replaceState' : 'pushState'](null, '', url);
  updateNav();
}

/** Nav links carry the shared range and project to the other pages. */
export function updateNav() {
  const shared = sharedParams().toString();
  for (const a of document.querySelectorAll('[data-nav]')) {
    const base = a.dataset.nav === 'traces' ? '/' : `/${a.dataset.nav}`;
    a.setAttribute('href', shared ? `${base}?${shared}` : base);
  }
}
