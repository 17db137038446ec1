// Small pieces several pages use: project and time range pickers, status and type badges, tag chips.
import {h, mount} from './dom.js';
import {api} from './api.js';
import {RANGES, DEFAULT_RANGE} from './state.js';
import * as fmt from './format.js';

let projectList = null;  // one request per page load; the list changes rarely

/** A <select> of the projects the caller may read; '' is all of them. */
export function projectSelect(value, onChange) {
  const select = h('select', {'aria-label': 'Project', name: 'project', onchange: e => onChange(e.target.value)},
    h('option', {value: ''}, 'All projects'), value ? h('option', {value, selected: true}, value) : null);
  projectList ??= api('/api/v1/projects').then(r => r.projects).catch(() => []);
  projectList.then(projects => {
    mount(select, h('option', {value: ''}, 'All projects'),
      [...new Set([...projects, ...(value ? [value] : [])])].sort().map(p => h('option', {value: p, selected: p === value}, p)));
  });
  return select;
}

function toLocalInput(ms) {
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60e3);
  return d.toISOString().slice(0, 16);
}

/** Relative ranges, or a custom from/to. Edits `state.range/from/to`, then calls onChange(). */
export function rangeSelect(state, onChange) {
  const from = h('input', {type: 'datetime-local', 'aria-label': 'From', value: state.from ? toLocalInput(Number(state.from)) : ''});
  const to = h('input', {type: 'datetime-local', 'aria-label': 'To', value: state.to ? toLocalInput(Number(state.to)) : ''});
  const apply = h('button', {type: 'button', onclick: () => {
    const start = Date.parse(from.value), end = Date.parse(to.value);
    if (Number.isNaN(start) || Number.isNaN(end) || end <= start) return;
    Object.assign(state, {range: '', from: String(start), to: String(end)});
    onChange();
  }}, 'Apply');
  const custom = h('span', {class: state.from ? '' : 'hidden'}, from, ' – ', to, ' ', apply);
  const select = h('select', {'aria-label': 'Time range', name: 'range', onchange: e => {
    if (e.target.value === 'custom') {
      custom.classList.remove('hidden');
      if (!from.value) { from.value = toLocalInput(Date.now() - 3600e3); to.value = toLocalInput(Date.now()); }
      return;
    }
    custom.classList.add('hidden');
    Object.assign(state, {range: e.target.value, from: '', to: ''});
    onChange();
  }},
    RANGES.map(([key, label]) => h('option', {value: key, selected: !state.from && (state.range || DEFAULT_RANGE) === key}, label)),
    h('option', {value: 'custom', selected: !!state.from}, 'Custom…'));
  return h('span', {class: 'range'}, select, ' ', custom);
}

export function statusBadge(state) {
  const cls = {ERROR: 'error', OK: 'ok', IN_PROGRESS: 'warn'}[String(state).toUpperCase()] || '';
  return h('span', {class: `badge ${cls}`}, state || 'UNSET');
}

const TYPES = new Set(['LLM', 'RETRIEVER', 'TOOL', 'AGENT', 'CHAIN', 'EMBEDDING', 'RERANKER']);

export function typeBadge(type) {
  if (!type) return null;
  return h('span', {class: `type${TYPES.has(type) ? ` t-${type}` : ''}`}, type);
}

export function tagChips(tags, max = 4) {
  const entries = entriesOf(tags);
  const chips = entries.slice(0, max).map(([k, v]) => h('span', {class: 'chip', title: `${k} = ${v}`},
    h('b', null, fmt.preview(k, 24)), ' ', fmt.preview(v, 28)));
  if (entries.length > max) chips.push(h('span', {class: 'muted'}, ` +${entries.length - max}`));
  return chips;
}

/** Map columns arrive as objects (trace by id) or as [key, value] pairs (search rows). */
export function entriesOf(map) {
  if (!map) return [];
  return Array.isArray(map) ? map : Object.entries(map);
}
