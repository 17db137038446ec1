// Overview: totals and charts over time from POST /api/v1/aggregates, for the time range and
// project the traces page uses. Traces (requests) are counted at trace level; the per-model
// split is over LLM spans, because a trace can call several models. Charts are uPlot (vendored).
import {h, mount} from '../dom.js';
import {api} from '../api.js';
import * as fmt from '../format.js';
import {params, timeWindow, projects, href, setUrl} from '../state.js';
import {projectSelect, rangeSelect} from '../widgets.js';

const COLORS = ['#2f5bd3', '#e8730c', '#1c9a6a', '#c62828', '#8e44ad', '#17a2b8', '#8a8f1c', '#d63384', '#555'];
const NICE_BUCKETS = [60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400];
const TARGET_BUCKETS = 80;

function bucketSeconds(startMs, endMs) {
  const span = (endMs - startMs) / 1000;
  return NICE_BUCKETS.find(b => span / b <= TARGET_BUCKETS) ?? NICE_BUCKETS.at(-1);
}

let uPlotModule = null;
function loadUPlot() {
  if (!document.querySelector('link[data-uplot]')) {
    document.head.append(h('link', {rel: 'stylesheet', href: '/vendor/uplot/uPlot.min.css', 'data-uplot': ''}));
  }
  uPlotModule ??= import('/vendor/uplot/uPlot.esm.js').then(m => m.default);
  return uPlotModule;
}

/** Per-series value arrays aligned on the bucket times (missing buckets: `empty`). */
function align(rows, times, seriesOf, valueOf, empty) {
  const index = new Map(times.map((t, i) => [t, i]));
  const series = new Map();
  for (const row of rows) {
    const name = seriesOf(row);
    if (!series.has(name)) series.set(name, new Array(times.length).fill(empty));
    series.get(name)[index.get(row.bucket_start_ms / 1000)] = valueOf(row);
  }
  return series;
}

function chart(uPlot, container, title, times, series, format) {
  const names = [...series.keys()];
  const box = h('div', {class: 'chart', dataset: {chart: title}}, h('h2', null, title));
  container.append(box);  // first, so the grid has given it its width
  const opts = {
    width: Math.max(300, box.clientWidth - 24), height: 200,
    series: [{}, ...names.map((name, i) => ({label: name || '(none)', stroke: COLORS[i % COLORS.length], width: 1.5,
                                             points: {size: 4}, value: (u, v) => v == null ? '–' : format(v)}))],
    axes: [{}, {values: (u, vals) => vals.map(v => format(v)), size: 70}],
    // Counts, rates and latencies start at zero; an empty chart still gets a sane axis.
    scales: {x: {time: true}, y: {range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1]}},
    cursor: {points: {size: 6}},
  };
  const plot = new uPlot(opts, [times, ...names.map(n => series.get(n))], box);
  return plot;
}

export async function render(root) {
  const p = params();
  const state = {project: p.get('project') || '', range: p.get('range') || '', from: p.get('from') || '', to: p.get('to') || ''};
  const tiles = h('div', {class: 'tiles', id: 'tiles'});
  const charts = h('div', {class: 'charts', id: 'charts'});
  const errors = h('div');
  const changed = () => { setUrl(href('/overview', state)); draw(); };
  mount(root,
    h('div', {class: 'toolbar'}, h('h1', null, 'Overview'), h('span', {class: 'spacer'}),
      projectSelect(state.project, v => { state.project = v; changed(); }), rangeSelect(state, changed)),
    errors, tiles, charts);
  let plots = [];
  const resize = () => plots.forEach(plot => plot.setSize({width: Math.max(300, plot.root.parentElement.clientWidth - 24), height: 200}));
  window.addEventListener('resize', resize);

  async function draw() {
    const window_ = timeWindow(new URLSearchParams(state));
    const end = window_.end_ms ?? Date.now();
    // "All time" has no start: take it from the data.
    const base = {projects: projects(new URLSearchParams(state)), start_ms: window_.start_ms, end_ms: window_.end_ms};
    let start = window_.start_ms;
    if (start == null) {
      const first = await api('/api/v1/traces/search', {method: 'POST', body: {...base, order_by: ['timestamp_ms ASC'], max_results: 1}});
      start = first.traces[0]?.request_time ?? end - 86400e3;
    }
    const bucket = bucketSeconds(start, end);
    try {
      const [uPlot, totals, traceSeries, modelSeries] = await Promise.all([
        loadUPlot(),
        api('/api/v1/aggregates', {method: 'POST', body: {...base, level: 'traces'}}),
        api('/api/v1/aggregates', {method: 'POST', body: {...base, level: 'traces', bucket_seconds: bucket}}),
        api('/api/v1/aggregates', {method: 'POST', body: {...base, level: 'spans', bucket_seconds: bucket, group_by: ['model'],
                                                          filter_string: "span.type = 'LLM'"}}),
      ]);
      mount(errors);
      const t = totals.groups[0] || {};
      const tile = (label, value) => h('div', {class: 'tile'}, h('div', {class: 'label'}, label), h('div', {class: 'value'}, value));
      mount(tiles, tile('Traces', fmt.integer(t.count)), tile('Error rate', fmt.percent(t.count ? t.error_rate : null)),
        tile('Latency p50', fmt.duration(t.latency_p50_ms)), tile('Latency p99', fmt.duration(t.latency_p99_ms)),
        tile('Tokens', fmt.compact(t.total_tokens)), tile('Cost', fmt.cost(t.cost_usd)));

      const first = Math.floor(start / 1000 / bucket) * bucket;
      const times = [];
      for (let x = first; x * 1000 < end; x += bucket) times.push(x);
      const traceRows = traceSeries.groups, modelRows = modelSeries.groups;
      const byModel = (valueOf, empty) => align(modelRows, times, r => r.model, valueOf, empty);
      // One series over all traces (zeros or gaps where a bucket had none).
      const all = (valueOf, empty) => align(traceRows, times, () => '', valueOf, empty).get('') ?? times.map(() => empty);
      plots.forEach(plot => plot.destroy());
      charts.replaceChildren();
      const count = v => fmt.compact(v);
      const ms = v => fmt.duration(v);
      plots = [
        chart(uPlot, charts, 'Requests (traces)', times,
          new Map([['traces', all(r => r.count, 0)], ['errors', all(r => r.errors, 0)]]), count),
        chart(uPlot, charts, 'Error rate', times, new Map([['error rate', all(r => r.error_rate, null)]]), v => fmt.percent(v)),
        chart(uPlot, charts, 'Trace latency p50 / p99', times,
          new Map([['p50', all(r => r.latency_p50_ms, null)], ['p99', all(r => r.latency_p99_ms, null)]]), ms),
        chart(uPlot, charts, 'LLM calls by model', times, byModel(r => r.count, 0), count),
        chart(uPlot, charts, 'LLM error rate by model', times, byModel(r => r.error_rate, null), v => fmt.percent(v)),
        chart(uPlot, charts, 'LLM latency p50 by model', times, byModel(r => r.latency_p50_ms, null), ms),
        chart(uPlot, charts, 'LLM latency p99 by model', times, byModel(r => r.latency_p99_ms, null), ms),
        chart(uPlot, charts, 'Tokens by model', times, byModel(r => r.total_tokens, 0), count),
        chart(uPlot, charts, 'Cost by model (USD)', times, byModel(r => r.cost_usd, 0), v => fmt.cost(v)),
      ];
      if (!traceRows.length && !modelRows.length) {
        errors.replaceChildren(h('div', {class: 'empty'}, 'No traces in this time range.'));
      }
    } catch (error) {
      mount(errors, h('div', {class: 'error-box'}, error.message));
    }
  }
  await draw();
  return () => { window.removeEventListener('resize', resize); plots.forEach(plot => plot.destroy()); };
}
