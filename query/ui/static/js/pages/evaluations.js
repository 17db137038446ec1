// Evaluation jobs: status, progress and per-scorer means; pick two to compare side by side.
import {h, mount, link} from '../dom.js';
import {api} from '../api.js';
import * as fmt from '../format.js';
import {navigate, href} from '../state.js';
import {jobStatus, progressBar, meanChips, jobTitle} from '../evalview.js';

const REFRESH_MS = 3000;

export async function render(root) {
  const picked = new Set();
  const table = h('div', {class: 'table-wrap'});
  const compare = h('button', {type: 'button', class: 'primary', disabled: true, id: 'compare-jobs', onclick: () =>
    navigate(href('/evaluations/compare', {a: [...picked][0], b: [...picked][1]}))}, 'Compare 2 selected');
  mount(root, h('div', {class: 'toolbar'}, h('h1', null, 'Evaluations'), h('span', {class: 'spacer'}), compare), table);
  let timer = null;

  async function load() {
    const {jobs} = await api('/api/v1/evaluations');
    if (!jobs.length) {
      mount(table, h('div', {class: 'empty'}, 'No evaluation jobs yet. Start one with ',
        h('code', null, 'client.evaluate(...)'), ' or POST /api/v1/evaluations.'));
      return;
    }
    mount(table, h('table', {class: 'data', id: 'jobs-table'},
      h('thead', null, h('tr', null, ['', 'Job', 'Status', 'Progress', 'Metrics (mean)', 'Created', 'Finished'].map(c => h('th', null, c)))),
      h('tbody', null, jobs.map(job => h('tr', {dataset: {jobId: job.job_id}},
        h('td', null, h('input', {type: 'checkbox', 'aria-label': `select ${jobTitle(job)}`, checked: picked.has(job.job_id),
          onchange: e => { e.target.checked ? picked.add(job.job_id) : picked.delete(job.job_id); compare.disabled = picked.size !== 2; }})),
        h('td', null, link(`/evaluations/${encodeURIComponent(job.job_id)}`, jobTitle(job)),
          job.name ? h('div', {class: 'muted mono'}, job.job_id) : null),
        h('td', null, jobStatus(job.status)), h('td', null, progressBar(job.progress)),
        h('td', null, meanChips(job.metrics)),
        h('td', {class: 'nowrap'}, fmt.dateTime(fmt.toMillis(job.created_at))),
        h('td', {class: 'nowrap'}, fmt.dateTime(fmt.toMillis(job.finished_at))))))));
    // Keep refreshing while something is still running.
    if (jobs.some(j => j.status === 'queued' || j.status === 'running')) timer = setTimeout(load, REFRESH_MS);
  }
  await load();
  return () => clearTimeout(timer);
}
