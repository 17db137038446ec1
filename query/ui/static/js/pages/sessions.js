// Sessions page: conversations (traces sharing a session id), newest first.
import {h, mount, link} from '../dom.js';
import {api} from '../api.js';
import * as fmt from '../format.js';
import {params, timeWindow, href, setUrl} from '../state.js';
import {projectSelect, rangeSelect} from '../widgets.js';

export async function render(root) {
  const p = params();
  const state = {project: p.get('project') || '', range: p.get('range') || '', from: p.get('from') || '', to: p.get('to') || ''};
  const table = h('div', {class: 'table-wrap'}, h('p', {class: 'muted loading'}, 'Loading sessions…'));
  const changed = () => { setUrl(href('/sessions', state)); load(); };
  mount(root,
    h('div', {class: 'toolbar'}, h('h1', null, 'Sessions'), h('span', {class: 'spacer'}),
      projectSelect(state.project, v => { state.project = v; changed(); }), rangeSelect(state, changed)),
    table);

  async function load() {
    const window_ = timeWindow(new URLSearchParams(state));
    const {sessions} = await api('/api/v1/sessions', {query: {project: state.project, start_ms: window_.start_ms,
                                                              end_ms: window_.end_ms, max_results: 200}});
    if (!sessions.length) { mount(table, h('div', {class: 'empty'}, 'No sessions in this time range.')); return; }
    mount(table, h('table', {class: 'data', id: 'sessions-table'},
      h('thead', null, h('tr', null, ['Session', 'Project', 'User', 'Traces', 'First', 'Last', 'Tokens', 'Cost', 'Errors']
        .map(c => h('th', null, c)))),
      h('tbody', null, sessions.map(s => h('tr', null,
        h('td', null, link(`/sessions/${encodeURIComponent(s.session_id)}`, s.session_id)),
        h('td', null, s.project), h('td', null, s.user_id || '–'), h('td', {class: 'num'}, s.trace_count),
        h('td', {class: 'nowrap'}, fmt.time(s.first_trace_time)), h('td', {class: 'nowrap'}, fmt.time(s.last_trace_time)),
        h('td', {class: 'num'}, fmt.compact(s.total_tokens)), h('td', {class: 'num'}, fmt.cost(s.cost_usd)),
        h('td', {class: 'num'}, s.error_count || ''))))));
  }
  await load();
}
