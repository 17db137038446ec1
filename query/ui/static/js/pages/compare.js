// Two evaluation jobs side by side, metric by metric (e.g. two versions of an app).
import {h, mount, link} from '../dom.js';
import {api} from '../api.js';
import * as fmt from '../format.js';
import {params} from '../state.js';
import {jobStatus, metricLabel, jobTitle} from '../evalview.js';

/** +1 when a higher value is better (normalized scores), -1 when lower is (errors), 0 when neither. */
function direction(name) {
  const stat = name.split('/').at(-1);
  if (stat === 'error_count') return -1;
  return ['mean', 'p50', 'p90', 'p99'].includes(stat) ? 1 : 0;
}

export async function render(root) {
  const p = params();
  const ids = [p.get('a'), p.get('b')];
  if (!ids[0] || !ids[1]) {
    mount(root, h('div', {class: 'empty'}, 'Pick two jobs on the ', link('/evaluations', 'evaluations page'), ' to compare.'));
    return;
  }
  const [a, b] = await Promise.all(ids.map(id => api(`/api/v1/evaluations/${encodeURIComponent(id)}`)));
  const names = [...new Set([...Object.keys(a.metrics || {}), ...Object.keys(b.metrics || {})])].sort();
  const head = job => h('th', null, link(`/evaluations/${encodeURIComponent(job.job_id)}`, jobTitle(job)), ' ', jobStatus(job.status));
  mount(root,
    h('div', {class: 'page-head'}, link('/evaluations', '‹ Evaluations'), h('h1', null, 'Compare jobs')),
    h('div', {class: 'table-wrap', style: {maxWidth: '900px'}}, h('table', {class: 'data', id: 'compare-table'},
      h('thead', null, h('tr', null, h('th', null, 'Metric'), head(a), head(b), h('th', null, 'Change (B − A)'))),
      h('tbody', null, names.map(name => {
        const x = a.metrics?.[name], y = b.metrics?.[name];
        const delta = typeof x === 'number' && typeof y === 'number' ? y - x : null;
        const better = !delta ? '' : direction(name) * delta > 0 ? 'delta-up' : direction(name) * delta < 0 ? 'delta-down' : '';
        return h('tr', {dataset: {metric: name}}, h('td', {title: name}, metricLabel(name)),
          h('td', {class: 'num'}, fmt.score(x)), h('td', {class: 'num'}, fmt.score(y)),
          h('td', {class: `num ${better}`}, delta == null ? '–' : `${delta > 0 ? '+' : ''}${fmt.score(delta)}`));
      })))));
}
