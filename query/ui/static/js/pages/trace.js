// Trace view: summary, span tree + timeline, the selected span's detail, and assessments.
import {h, mount, link, copyText} from '../dom.js';
import {api} from '../api.js';
import * as fmt from '../format.js';
import {params, setUrl, href, sharedParams} from '../state.js';
import {createWaterfall} from '../waterfall.js';
import {renderSpanDetail} from '../spandetail.js';
import {createAssessments} from '../assessments.js';
import {statusBadge, tagChips, entriesOf} from '../widgets.js';

function copyButton(text, label) {
  const note = h('span', {class: 'copy-ok', role: 'status'});
  return [h('button', {type: 'button', id: 'copy-trace-id', title: 'Copy to clipboard', onclick: async () => {
    await copyText(text);
    note.textContent = 'Copied';
    setTimeout(() => { note.textContent = ''; }, 1500);
  }}, label), ' ', note];
}

function summary(trace) {
  const stat = (label, value) => h('div', {class: 'stat'}, h('span', {class: 'label'}, label), h('span', {class: 'value'}, value));
  return h('div', {class: 'panel', style: {marginBottom: '12px'}},
    h('div', {class: 'page-head'},
      link(href('/', Object.fromEntries(sharedParams())), '‹ Traces'),
      h('h1', {id: 'trace-name'}, trace.name || '(unnamed trace)'), statusBadge(trace.state),
      h('span', {class: 'mono muted', id: 'trace-id'}, trace.trace_id), copyButton(trace.trace_id, 'Copy trace id')),
    h('div', {class: 'stats'},
      stat('Started', fmt.dateTime(trace.request_time)), stat('Duration', fmt.duration(trace.execution_duration)),
      stat('Spans', fmt.integer(trace.span_count)), stat('Errors', fmt.integer(trace.error_count)),
      stat('Tokens in / out', `${fmt.integer(trace.input_tokens)} / ${fmt.integer(trace.output_tokens)}`),
      stat('Cost', fmt.cost(trace.cost_usd)), stat('Project', trace.project), stat('Service', trace.service_name || '–'),
      trace.session_id ? stat('Session', link(`/sessions/${encodeURIComponent(trace.session_id)}`, trace.session_id)) : null,
      trace.user_id ? stat('User', trace.user_id) : null,
      trace.models?.length ? stat('Models', trace.models.join(', ')) : null),
    entriesOf(trace.tags).length ? h('div', {style: {marginTop: '8px'}}, tagChips(trace.tags, 50)) : null);
}

export async function render(root, traceId) {
  mount(root, h('p', {class: 'muted loading'}, 'Loading trace…'));
  const load = () => api(`/api/v1/traces/${encodeURIComponent(traceId)}`);
  const trace = await load();
  if (!trace.spans.length) {
    mount(root, summary(trace), h('div', {class: 'empty'}, 'No spans of this trace are stored yet.'));
    return;
  }
  const started = performance.now();
  const detail = h('section', {class: 'panel', id: 'span-detail'});
  let selected = null;
  const startNs = Math.min(...trace.spans.map(s => s.start_time_ns));
  const waterfall = createWaterfall(trace.spans, span => {
    selected = span;
    renderSpanDetail(detail, span, startNs);
    setUrl(href(location.pathname, {span: span.span_id}), {replace: true});
  });
  const assessments = createAssessments(trace, {selectedSpan: () => selected, reload: load});
  mount(root, summary(trace),
    h('div', {class: 'trace-layout'}, waterfall.element, h('div', {class: 'side'}, assessments, detail)));
  waterfall.select(params().get('span'));
  // Read by the UI benchmark: how long drawing took once the data was here.
  root.dataset.renderMs = String(Math.round(performance.now() - started));
}
