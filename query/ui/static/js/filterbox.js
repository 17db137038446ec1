// The filter box: a text input for the filter language with a completion list of field names,
// the tag/attribute keys seen in the data (GET /api/v1/filter/completions), operators and,
// for a few fields, values. Completion is a help, never a gate: the server parses the filter.
import {h, mount} from './dom.js';
import {api} from './api.js';

const OPERATORS = ['=', '!=', '>', '>=', '<', '<=', 'LIKE', 'ILIKE', 'RLIKE', 'IN', 'NOT IN'];
const KEYWORDS = new Set(['AND', 'OR', 'NOT']);
// Pieces of a filter, enough to know what the word under the cursor is (a field, an operator, a value).
const TOKEN = /\s*('(?:[^'\\]|\\.)*'?|"(?:[^"\\]|\\.)*"?|`[^`]*`?|[A-Za-z_][\w\-.`]*(?:`[^`]*`?)?|!=|>=|<=|[=<>(),]|-?[\d.]+)/y;
const MAX_SHOWN = 14;

/** Completion data for a project (fetched once, on first focus). */
const cache = new Map();
function completions(project) {
  const key = project || '';
  if (!cache.has(key)) cache.set(key, api('/api/v1/filter/completions', {query: {project}}).catch(() => ({fields: [], keys: {}})));
  return cache.get(key);
}

function quoteKey(key) {
  return /^[A-Za-z_][\w-]*$/.test(key) ? key : '`' + key.replace(/`/g, '``') + '`';
}

/** Every field suggestion: plain fields, keyed families (`tags.`), and seen keys (`tags.tier`). */
function fieldSuggestions(data) {
  const out = [];
  for (const field of data.fields || []) {
    if (field.keyed) {
      out.push({text: `${field.name}.`, kind: 'prefix', more: true});
      for (const key of data.keys?.[field.name] || []) out.push({text: `${field.name}.${quoteKey(key)}`, kind: 'key'});
    } else {
      out.push({text: field.name, kind: field.kind, values: field.values});
    }
  }
  return out;
}

function tokenize(text) {
  const tokens = [];
  TOKEN.lastIndex = 0;
  let match;
  while (TOKEN.lastIndex < text.length && (match = TOKEN.exec(text))) {
    tokens.push({text: match[1], end: TOKEN.lastIndex});
  }
  return tokens;
}

/** What belongs at the cursor: {kind: 'field'|'operator'|'value', word, start, field}. */
export function contextAt(text, cursor) {
  const before = text.slice(0, cursor);
  const tokens = tokenize(before);
  const endsInWord = tokens.length && tokens.at(-1).end === before.length && !/\s$/.test(before);
  const word = endsInWord ? tokens.at(-1).text : '';
  const previous = tokens.slice(0, endsInWord ? -1 : undefined);
  const last = previous.at(-1)?.text;
  const start = before.length - word.length;
  if (!last || last === '(' || KEYWORDS.has(last.toUpperCase())) {
    if (word.startsWith("'") || word.startsWith('"')) return null;
    return {kind: 'field', word, start};
  }
  if (OPERATORS.includes(last.toUpperCase()) || last === ',') {
    // Walk back to the field this value compares.
    const field = previous.slice().reverse().find(t => /^[A-Za-z_`]/.test(t.text) && !OPERATORS.includes(t.text.toUpperCase())
                                                       && !KEYWORDS.has(t.text.toUpperCase()));
    return {kind: 'value', word, start, field: field?.text};
  }
  if (/^[A-Za-z_`]/.test(last) && !OPERATORS.includes(last.toUpperCase())) return {kind: 'operator', word, start};
  return {kind: 'keyword', word, start};
}

/** `project()` names the project whose keys to offer (null: all the caller may read). */
export function createFilterBox({value = '', project = () => null, placeholder, onSubmit}) {
  const input = h('input', {type: 'text', value, placeholder, spellcheck: 'false', autocomplete: 'off',
                            'aria-label': 'Filter', 'aria-autocomplete': 'list', name: 'filter'});
  const list = h('ul', {class: 'suggestions hidden', role: 'listbox'});
  const box = h('div', {class: 'filterbox'}, input, list);
  let items = [];
  let active = 0;
  let context = null;
  let data = null;  // the completions of the current project, once fetched

  async function refresh() {
    data = await completions(project());
    context = contextAt(input.value, input.selectionStart);
    items = context ? suggestionsFor(context) : [];
    active = 0;
    draw();
  }

  function suggestionsFor(ctx) {
    const word = ctx.word.toLowerCase();
    let pool;
    if (ctx.kind === 'field') pool = fieldSuggestions(data);
    else if (ctx.kind === 'operator') pool = OPERATORS.map(op => ({text: op, kind: 'operator'}));
    else if (ctx.kind === 'keyword') pool = ['AND', 'OR'].map(k => ({text: k, kind: 'keyword'}));
    else {
      const field = fieldSuggestions(data).find(f => f.text.toLowerCase() === (ctx.field || '').toLowerCase());
      pool = (field?.values || []).map(v => ({text: `'${v}'`, kind: 'value'}));
    }
    const starts = pool.filter(s => s.text.toLowerCase().startsWith(word));
    const contains = word ? pool.filter(s => !starts.includes(s) && s.text.toLowerCase().includes(word)) : [];
    const found = [...starts, ...contains];
    // Nothing to offer for a word typed in full.
    return found.length === 1 && found[0].text === ctx.word ? [] : found.slice(0, MAX_SHOWN);
  }

  function draw() {
    list.classList.toggle('hidden', !items.length || document.activeElement !== input);
    mount(list, items.map((item, i) => h('li', {
      role: 'option', class: i === active ? 'active' : '', 'aria-selected': String(i === active),
      onmousedown: event => { event.preventDefault(); accept(i); },
    }, h('span', null, item.text), h('span', {class: 'kind'}, item.kind))));
  }

  function accept(i) {
    const item = items[i];
    if (!item || !context) return;
    const cursor = input.selectionStart;
    const after = input.value.slice(cursor).replace(/^[\w.`-]*/, '');
    const insert = item.more ? item.text : `${item.text} `;
    input.value = input.value.slice(0, context.start) + insert + after.replace(/^\s+/, '');
    const position = context.start + insert.length;
    input.setSelectionRange(position, position);
    refresh();
  }

  input.addEventListener('focus', refresh);
  input.addEventListener('input', refresh);
  input.addEventListener('click', refresh);
  input.addEventListener('blur', () => list.classList.add('hidden'));
  input.addEventListener('keydown', event => {
    const open = !list.classList.contains('hidden');
    if (open && (event.key === 'ArrowDown' || event.key === 'ArrowUp')) {
      event.preventDefault();
      active = (active + (event.key === 'ArrowDown' ? 1 : items.length - 1)) % items.length;
      draw();
      list.children[active]?.scrollIntoView({block: 'nearest'});
    } else if (open && event.key === 'Tab') {
      event.preventDefault();
      accept(active);
    } else if (open && event.key === 'Escape') {
      list.classList.add('hidden');
    } else if (event.key === 'Enter') {
      event.preventDefault();
      // Enter runs the search; picking a suggestion is Tab (or a click), so Enter is never ambiguous.
      list.classList.add('hidden');
      onSubmit(input.value.trim());
    }
  });
  return {element: box, input, get value() { return input.value.trim(); }};
}
