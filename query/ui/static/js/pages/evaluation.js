// One evaluation job: its spec, metrics, errors and per-trace scores (optionally failing only).
import {h, mount, link} from '../dom.js';
import {api} from '../api.js';
import * as fmt from '../format.js';
import {params, href, setUrl} from '../state.js';
import {jobStatus, progressBar, metricLabel, jobTitle} from '../evalview.js';

const PAGE = 200;

export async function render(root, jobId) {
  const base = `/api/v1/evaluations/${encodeURIComponent(jobId)}`;
  const job = await api(base);
  const state = {failing: params().get('failing') === '1', scorer: params().get('scorer') || ''};
  const results = h('div', {id: 'results'});
  const spec = job.spec || {};
  const metrics = Object.entries(job.metrics || {}).sort(([a], [b]) => a.localeCompare(b));

  mount(root,
    h('div', {class: 'page-head'}, link('/evaluations', '‹ Evaluations'), h('h1', null, jobTitle(job)), jobStatus(job.status),
      progressBar(job.progress)),
    h('div', {class: 'panel', style: {marginBottom: '12px'}},
      h('dl', {class: 'kv'},
        h('dt', null, 'Job id'), h('dd', {class: 'mono'}, job.job_id),
        h('dt', null, 'Scorers'), h('dd', null, (spec.scorers || []).map(s => typeof s === 'string' ? s : s.name ?? JSON.stringify(s)).join(', ') || '–'),
        spec.filter_string ? [h('dt', null, 'Filter'), h('dd', {class: 'mono'}, spec.filter_string)] : null,
        spec.projects?.length ? [h('dt', null, 'Projects'), h('dd', null, spec.projects.join(', '))] : null,
        spec.judge ? [h('dt', null, 'Judge'), h('dd', null, typeof spec.judge === 'string' ? spec.judge : spec.judge.model ?? JSON.stringify(spec.judge))] : null,
        h('dt', null, 'Created'), h('dd', null, fmt.dateTime(fmt.toMillis(job.created_at))),
        h('dt', null, 'Finished'), h('dd', null, fmt.dateTime(fmt.toMillis(job.finished_at)))),
      job.errors?.length ? h('div', {class: 'error-box', style: {marginTop: '10px'}}, job.errors.slice(0, 20).map(e => h('div', null, e))) : null),
    h('h2', null, 'Metrics'),
    h('div', {class: 'table-wrap', style: {marginBottom: '14px', maxWidth: '620px'}}, metrics.length
      ? h('table', {class: 'data', id: 'metrics-table'}, h('tbody', null, metrics.map(([k, v]) =>
          h('tr', null, h('td', {title: k}, metricLabel(k)), h('td', {class: 'num'}, fmt.score(v))))))
      : h('div', {class: 'empty'}, 'No metrics yet.')),
    h('div', {class: 'toolbar'}, h('h2', {style: {margin: 0}}, 'Scores per trace'),
      h('label', null, h('input', {type: 'checkbox', name: 'failing', checked: state.failing,
        onchange: e => { state.failing = e.target.checked; changed(); }}), ' Failing only')),
    results);

  function changed() {
    setUrl(href(location.pathname, {failing: state.failing ? '1' : '', scorer: state.scorer}), {replace: true});
    load();
  }

  async function load() {
    const {results: rows} = await api(`${base}/results`, {query: {failing_only: state.failing ? 'true' : ''}});
    const scorers = [...new Set(rows.map(r => r.scorer))].sort();
    const shown = rows.filter(r => !state.scorer || r.scorer === state.scorer);
    let limit = PAGE;
    const body = h('tbody');
    const more = h('button', {type: 'button', onclick: () => { limit += PAGE; draw(); }}, 'Show more');
    function draw() {
      mount(body, shown.slice(0, limit).map(r => h('tr', {class: r.passed === false || r.error ? 'failing' : ''},
        h('td', {class: 'mono'}, link(`/traces/${encodeURIComponent(r.trace_id)}`, r.trace_id.slice(0, 12) + '…')),
        h('td', null, r.scorer), h('td', {class: 'num'}, fmt.score(r.value)), h('td', {class: 'num'}, fmt.score(r.score)),
        h('td', null, r.label || ''),
        h('td', null, r.passed == null ? '' : h('span', {class: `badge ${r.passed ? 'ok' : 'error'}`}, r.passed ? 'pass' : 'fail')),
        h('td', {class: 'preview', title: r.rationale || ''}, fmt.preview(r.rationale || '', 160)),
        h('td', null, r.error ? h('span', {class: 'badge error', title: r.error}, fmt.preview(r.error, 60)) : ''))));
      more.classList.toggle('hidden', shown.length <= limit);
    }
    draw();
    const scorerSelect = h('select', {'aria-label': 'Scorer', onchange: e => { state.scorer = e.target.value; changed(); }},
      h('option', {value: ''}, 'All scorers'), scorers.map(s => h('option', {value: s, selected: s === state.scorer}, s)));
    mount(results, h('div', {class: 'toolbar'}, scorerSelect, h('span', {class: 'muted'}, `${shown.length} results`)),
      shown.length ? h('div', {class: 'table-wrap'}, h('table', {class: 'data', id: 'results-table'},
        h('thead', null, h('tr', null, ['Trace', 'Scorer', 'Value', 'Score', 'Label', 'Passed', 'Rationale', 'Error'].map(c => h('th', null, c)))),
        body)) : h('div', {class: 'empty'}, state.failing ? 'No failing results.' : 'No results yet.'),
      more);
  }
  await load();
}
