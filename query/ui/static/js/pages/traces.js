// Traces page: filter + time range + project, one server-sorted page of traces at a time (the
// API pages with tokens; nothing ever loads every trace), and new traces appearing while open.
import {h, mount, link, errorBox} from '../dom.js';
import {api} from '../api.js';
import * as fmt from '../format.js';
import {DEFAULT_RANGE, params, timeWindow, href, setUrl, navigate} from '../state.js';
import {createFilterBox} from '../filterbox.js';
import {turnText} from '../content.js';
import {projectSelect, rangeSelect, statusBadge, tagChips} from '../widgets.js';

const PAGE_SIZES = [50, 100, 200];
const LIVE_EVERY_MS = 5000;
// column → [header, order_by field or null when the API cannot sort by it]
const COLUMNS = [
  ['start', 'Start', 'timestamp_ms'], ['name', 'Name', 'name'], ['status', 'Status', 'status'],
  ['duration', 'Duration', 'execution_time_ms'], ['spans', 'Spans', 'span_count'],
  ['tokens', 'Tokens in / out', 'total_tokens'], ['cost', 'Cost', 'cost'], ['tags', 'Tags', null],
  ['session', 'Session', null], ['input', 'Input', null], ['output', 'Output', null],
];

/** The page's state, read from and written to the URL. */
function readQuery() {
  const p = params();
  const [sortField, sortDir] = (p.get('sort') || 'timestamp_ms:desc').split(':');
  return {
    filter: p.get('q') || '', project: p.get('project') || '', range: p.get('range') || '',
    from: p.get('from') || '', to: p.get('to') || '', size: Number(p.get('size')) || 100,
    sortField, sortDir: sortDir === 'asc' ? 'asc' : 'desc',
  };
}

function queryUrl(q) {
  return href('/', {q: q.filter, project: q.project, range: q.from ? '' : (q.range !== DEFAULT_RANGE ? q.range : ''),
                    from: q.from, to: q.to, size: q.size !== 100 ? q.size : '',
                    sort: `${q.sortField}:${q.sortDir}` !== 'timestamp_ms:desc' ? `${q.sortField}:${q.sortDir}` : ''});
}

export async function render(root) {
  const q = readQuery();
  let tokens = [null];          // page tokens seen: tokens[i] fetches page i
  let pageIndex = 0;
  let lastIds = null;           // ids on screen, to mark the ones that arrive live
  let inFlight = null;
  let timer = null;
  let shown = null;             // the rows on screen, to skip redrawing an unchanged live refresh

  const filter = createFilterBox({
    value: q.filter, project: () => q.project || null,
    placeholder: "tags.customer_tier = 'premium' AND trace.execution_time_ms > 1000   (Tab completes, Enter searches)",
    onSubmit: restart,
  });
  const projects = projectSelect(q.project, value => { q.project = value; restart(); });
  const range = rangeSelect(q, () => restart());
  const live = h('input', {type: 'checkbox', checked: true, onchange: schedule});
  const status = h('span', {class: 'muted', id: 'live-status'});
  const errors = h('div', {id: 'search-error'});
  const table = h('div', {class: 'table-wrap'});
  const pager = h('div', {class: 'pager'});

  mount(root,
    h('div', {class: 'toolbar'}, projects, range, filter.element,
      h('button', {class: 'primary', type: 'button', onclick: restart}, 'Search'),
      h('label', {title: 'Fetch the first page again every 5 s'}, live, ' Live'), status),
    errors, table, pager);

  function restart() {
    q.filter = filter.value;  // whatever is typed counts, even when the range or project changed the search
    tokens = [null];
    pageIndex = 0;
    lastIds = null;
    setUrl(queryUrl(q));
    load();
  }

  async function load({quiet = false} = {}) {
    inFlight?.abort();
    const controller = inFlight = new AbortController();
    if (!quiet) status.textContent = 'Searching…';
    const window_ = timeWindow(new URLSearchParams({range: q.range || DEFAULT_RANGE, from: q.from, to: q.to}));
    const began = performance.now();
    try {
      const result = await api('/api/v1/traces/search', {method: 'POST', signal: controller.signal, body: {
        projects: q.project ? [q.project] : null, filter_string: q.filter || null,
        start_ms: window_.start_ms, end_ms: window_.end_ms, order_by: [`${q.sortField} ${q.sortDir.toUpperCase()}`],
        max_results: q.size, page_token: tokens[pageIndex],
      }});
      tokens[pageIndex + 1] = result.next_page_token;
      mount(errors);
      // A live refresh that changed nothing leaves the table alone (and the reader's selection).
      const signature = JSON.stringify(result.traces);
      if (!quiet || signature !== shown) drawTable(result.traces);
      shown = signature;
      drawPager(result.traces.length);
      status.textContent = `${result.traces.length} traces · ${Math.round(performance.now() - began)} ms · ${fmt.time(Date.now())}`;
    } catch (error) {
      if (error.name === 'AbortError') return;
      status.textContent = '';
      mount(errors, filterError(error, q.filter));
      if (!quiet) { mount(table, h('div', {class: 'empty'}, 'No results: fix the filter above.')); mount(pager); }
    } finally {
      if (inFlight === controller) inFlight = null;
      schedule();
    }
  }

  function schedule() {
    clearTimeout(timer);
    // Only the first page of a range ending "now" can gain rows; later pages would shift under the reader.
    if (live.checked && pageIndex === 0 && !q.from) timer = setTimeout(tick, LIVE_EVERY_MS);
  }

  function tick() {
    if (document.visibilityState === 'visible' && !inFlight) load({quiet: true});
    else schedule();
  }

  function sortBy(field) {
    if (q.sortField === field) q.sortDir = q.sortDir === 'desc' ? 'asc' : 'desc';
    else { q.sortField = field; q.sortDir = field === 'name' ? 'asc' : 'desc'; }
    restart();
  }

  function drawTable(traces) {
    const seen = lastIds;
    lastIds = new Set(traces.map(t => t.trace_id));
    if (!traces.length) {
      mount(table, h('div', {class: 'empty'}, q.filter ? 'No traces match this filter in this time range.'
                                                    : 'No traces in this time range yet.'));
      return;
    }
    const head = h('tr', null, COLUMNS.map(([key, label, field]) => field
      ? h('th', {class: 'sortable', dataset: {col: key}, onclick: () => sortBy(field)}, label,
          q.sortField === field ? h('span', {class: 'arrow'}, q.sortDir === 'desc' ? '▼' : '▲') : null)
      : h('th', {dataset: {col: key}}, label)));
    const rows = traces.map(t => {
      const url = `/traces/${encodeURIComponent(t.trace_id)}`;
      return h('tr', {class: `clickable${seen && !seen.has(t.trace_id) ? ' row-new' : ''}`, dataset: {traceId: t.trace_id},
                      onclick: event => { if (!event.target.closest('a')) navigate(url); }},
        h('td', {class: 'nowrap', title: fmt.dateTime(t.request_time)}, fmt.time(t.request_time)),
        h('td', {class: 'nowrap'}, link(url, t.name || '(unnamed)')),
        h('td', null, statusBadge(t.state)),
        h('td', {class: 'num'}, fmt.duration(t.execution_duration)),
        h('td', {class: 'num'}, t.span_count),
        h('td', {class: 'num'}, `${fmt.compact(t.input_tokens)} / ${fmt.compact(t.output_tokens)}`),
        h('td', {class: 'num'}, fmt.cost(t.cost_usd)),
        h('td', null, tagChips(t.tags)),
        h('td', {class: 'nowrap'}, t.session_id ? link(`/sessions/${encodeURIComponent(t.session_id)}`, fmt.preview(t.session_id, 24)) : ''),
        previewCell(turnText(t.inputs, 'input')), previewCell(turnText(t.outputs, 'output')));
    });
    mount(table, h('table', {class: 'data', id: 'traces-table'}, h('thead', null, head), h('tbody', null, rows)));
  }

  function drawPager(count) {
    const size = h('select', {'aria-label': 'Rows per page', onchange: e => { q.size = Number(e.target.value); restart(); }},
      PAGE_SIZES.map(n => h('option', {value: n, selected: n === q.size}, `${n} / page`)));
    mount(pager,
      h('button', {type: 'button', disabled: pageIndex === 0, onclick: () => { pageIndex--; load(); }}, '‹ Previous'),
      h('span', null, `Page ${pageIndex + 1}`),
      h('button', {type: 'button', disabled: !tokens[pageIndex + 1], onclick: () => { pageIndex++; load(); }}, 'Next ›'),
      size, h('span', {class: 'muted'}, count ? `rows ${pageIndex * q.size + 1}–${pageIndex * q.size + count}` : ''));
  }

  load();
  const onVisible = () => { if (document.visibilityState === 'visible') schedule(); };
  document.addEventListener('visibilitychange', onVisible);
  return () => { clearTimeout(timer); inFlight?.abort(); document.removeEventListener('visibilitychange', onVisible); };
}

function previewCell(text) {
  return h('td', {class: 'preview', title: fmt.preview(text, 600)}, fmt.preview(text));
}

/** The API's 400 detail, with a caret under the column it names. */
export function filterError(error, filterText) {
  const column = Number(/at column (\d+)/.exec(error.message)?.[1]);
  const pointer = column && filterText
    ? h('pre', {class: 'mono'}, `${filterText}\n${' '.repeat(Math.max(0, column - 1))}^`) : null;
  return errorBox(error.status === 400 ? `Filter error: ${error.message}` : error.message, pointer);
}
