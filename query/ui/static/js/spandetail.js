// One span in detail: what it did (model, tokens, cost, status), its inputs and outputs
// (chat, documents or JSON: content.js), attributes, events and exceptions.
import {h, mount} from './dom.js';
import * as fmt from './format.js';
import {renderValue, renderJson} from './content.js';
import {statusBadge, typeBadge, entriesOf} from './widgets.js';

const TABS = ['Inputs & outputs', 'Attributes', 'Events', 'JSON'];

function exceptions(span) {
  return (span.events || []).filter(e => e.name === 'exception').map(e => h('div', {class: 'exception'},
    h('span', {class: 'type'}, e.attributes?.['exception.type'] || 'exception'), ' ',
    h('span', null, e.attributes?.['exception.message'] || ''),
    e.attributes?.['exception.stacktrace'] ? h('pre', null, e.attributes['exception.stacktrace']) : null));
}

function facts(span, traceStartNs) {
  const rows = [
    ['Span id', h('span', {class: 'mono'}, span.span_id)],
    ['Started', `+${fmt.duration((span.start_time_ns - traceStartNs) / 1e6)} · ${fmt.dateTime(span.start_time_ns / 1e6)}`],
    ['Duration', fmt.duration(span.duration_ms)],
    ['Kind / service', `${span.kind} · ${span.service_name}`],
  ];
  const model = span.response_model || span.request_model;
  if (model) rows.push(['Model', span.request_model && span.response_model && span.request_model !== span.response_model
    ? `${span.request_model} → ${span.response_model}` : model]);
  if (span.provider) rows.push(['Provider', span.provider]);
  if (span.total_tokens || span.input_tokens || span.output_tokens) {
    const cache = span.cache_read_tokens ? ` · ${fmt.integer(span.cache_read_tokens)} cached` : '';
    rows.push(['Tokens', `${fmt.integer(span.input_tokens)} in · ${fmt.integer(span.output_tokens)} out${cache}`]);
  }
  if (span.cost_usd != null && span.cost_usd > 0) rows.push(['Cost', fmt.cost(span.cost_usd)]);
  if (span.tool_name) rows.push(['Tool', span.tool_name]);
  if (span.status_message) rows.push(['Status message', span.status_message]);
  return h('dl', {class: 'kv'}, rows.map(([k, v]) => [h('dt', null, k), h('dd', null, v)]));
}

function attributeTable(title, map) {
  const entries = entriesOf(map).sort(([a], [b]) => a.localeCompare(b));
  if (!entries.length) return null;
  return [h('h3', null, title), h('table', {class: 'data attr-table'},
    h('tbody', null, entries.map(([k, v]) => h('tr', null, h('td', null, k), h('td', null, v)))))];
}

function tabContent(tab, span) {
  if (tab === 'Inputs & outputs') {
    return [exceptions(span), h('h3', null, 'Inputs'), h('div', {id: 'span-inputs'}, renderValue(span.inputs, {spanType: span.span_type})),
            h('h3', null, 'Outputs'), h('div', {id: 'span-outputs'}, renderValue(span.outputs, {spanType: span.span_type}))];
  }
  if (tab === 'Attributes') {
    return [attributeTable('Span attributes', span.attributes), attributeTable('Resource', span.resource_attributes),
            attributeTable('Tags', span.tags), attributeTable('Metadata', span.metadata)];
  }
  if (tab === 'Events') {
    if (!span.events?.length) return h('div', {class: 'muted'}, 'No events.');
    return [exceptions(span), span.events.map(e => h('div', {class: 'doc'},
      h('div', {class: 'head'}, h('b', null, e.name), h('span', {class: 'muted'}, fmt.dateTime(e.time_ns / 1e6))),
      Object.keys(e.attributes || {}).length ? renderJson(e.attributes) : null))];
  }
  const {children, ...rest} = span;
  return renderJson({...rest, children: (children || []).map(c => c.span_id)});
}

export function renderSpanDetail(container, span, traceStartNs) {
  let tab = TABS[0];
  const tabs = h('div', {class: 'tabs', role: 'tablist'});
  const body = h('div', {id: 'span-tab'});
  function draw() {
    mount(tabs, TABS.map(t => h('button', {type: 'button', role: 'tab', class: t === tab ? 'active' : '',
      'aria-selected': String(t === tab), onclick: () => { tab = t; draw(); }},
      t === 'Events' && span.events?.length ? `Events (${span.events.length})` : t)));
    mount(body, tabContent(tab, span));
  }
  draw();
  mount(container,
    h('div', {class: 'detail-head'}, typeBadge(span.span_type), h('h2', {style: {margin: 0}, id: 'span-name'}, span.name),
      statusBadge(span.status_code?.toUpperCase())),
    facts(span, traceStartNs), tabs, body);
}
