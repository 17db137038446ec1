// One session read like a chat: each trace is a turn, its input the user's bubble and its
// output the assistant's, with a link to the trace behind each turn.
import {h, mount, link} from '../dom.js';
import {api} from '../api.js';
import * as fmt from '../format.js';
import {turnText} from '../content.js';
import {statusBadge} from '../widgets.js';

export async function render(root, sessionId) {
  const {traces} = await api(`/api/v1/sessions/${encodeURIComponent(sessionId)}`);
  const first = traces[0];
  const turns = traces.map(t => h('div', {class: 'turn', dataset: {traceId: t.trace_id}},
    h('div', {class: 'bubble user'}, turnText(t.inputs, 'input') || '(no input)'),
    h('div', {class: `bubble assistant${t.state === 'ERROR' ? ' error' : ''}`}, turnText(t.outputs, 'output') || '(no output)'),
    h('div', {class: 'turn-meta'}, h('span', null, fmt.dateTime(t.request_time)), h('span', null, fmt.duration(t.execution_duration)),
      h('span', null, `${fmt.integer(t.total_tokens)} tokens`), statusBadge(t.state),
      link(`/traces/${encodeURIComponent(t.trace_id)}`, `${t.name || 'trace'} ›`))));
  mount(root,
    h('div', {class: 'page-head'}, link('/sessions', '‹ Sessions'), h('h1', null, `Session ${sessionId}`),
      h('span', {class: 'muted'}, `${traces.length} traces · ${first.project}${first.user_id ? ` · user ${first.user_id}` : ''}`)),
    h('div', {class: 'conversation', id: 'conversation'}, turns));
}
