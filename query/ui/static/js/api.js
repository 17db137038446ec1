// Every request to the query API goes through `api()`: JSON in and out, the API key (when the
// server asks for one) from sessionStorage, and errors as ApiError carrying the server's `detail`.
import {h} from './dom.js';

const KEY_STORAGE = 'tracehouse.apiKey';

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

export function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE);
}

/** Forget the key and reload, so nothing read with it stays on screen. */
export function signOut() {
  sessionStorage.removeItem(KEY_STORAGE);
  location.reload();
}

/**
 * api('/api/v1/traces/search', {method: 'POST', body: {...}})
 * api('/api/v1/sessions', {query: {project: ['a', 'b'], max_results: 50}})
 */
export async function api(path, {method = 'GET', body, query, signal} = {}) {
  let url = path;
  if (query) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) {
      for (const item of [v].flat()) if (item != null && item !== '') params.append(k, item);
    }
    if ([...params].length) url += `?${params}`;
  }
  const headers = {Accept: 'application/json'};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  const response = await fetch(url, {method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body)});
  if (response.status === 401) {
    await askForKey(key ? 'The server did not accept that key.' : 'This server requires an API key.');
    return api(path, {method, body, query, signal});
  }
  if (!response.ok) throw new ApiError(response.status, await errorDetail(response));
  return response.status === 204 ? null : response.json();
}

async function errorDetail(response) {
  let detail;
  try {
    detail = (await response.json()).detail;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
  if (Array.isArray(detail)) {  // FastAPI's validation errors: [{loc, msg}, …]
    return detail.map(d => `${(d.loc || []).filter(p => p !== 'body').join('.')}: ${d.msg}`).join('; ');
  }
  return typeof detail === 'string' ? detail : JSON.stringify(detail);
}

// One dialog for however many requests got a 401 at the same time.
let pendingKey = null;

function askForKey(message) {
  pendingKey ??= new Promise(resolve => {
    const input = h('input', {type: 'password', name: 'key', autocomplete: 'off', required: true,
                              placeholder: 'API key', 'aria-label': 'API key'});
    const dialog = h('dialog', {id: 'auth-dialog'},
      h('form', {method: 'dialog'},
        h('h2', null, 'API key needed'),
        h('p', {class: 'muted'}, message, ' The key stays in this browser tab only (sessionStorage).'),
        input,
        h('div', {class: 'actions'}, h('button', {class: 'primary', type: 'submit'}, 'Use key'))));
    dialog.addEventListener('cancel', event => event.preventDefault());  // no way around it but a key
    dialog.addEventListener('close', () => {
      sessionStorage.setItem(KEY_STORAGE, input.value.trim());
      dialog.remove();
      pendingKey = null;
      document.dispatchEvent(new Event('tracehouse:key'));
      resolve();
    });
    document.body.append(dialog);
    dialog.showModal();
    input.focus();
  });
  return pendingKey;
}
