// Pieces shared by the evaluation pages: status, progress, metric names.
import {h} from './dom.js';
import * as fmt from './format.js';

export function jobStatus(status) {
  const cls = {succeeded: 'ok', failed: 'error', cancelled: 'warn', running: 'accent', queued: ''}[status] ?? '';
  return h('span', {class: `badge ${cls}`}, status);
}

export function progressBar({done = 0, failed = 0, total = 0} = {}) {
  const pct = n => `${total ? (n / total) * 100 : 0}%`;
  return h('span', {class: 'nowrap', title: `${done} done, ${failed} failed, of ${total}`},
    h('span', {class: 'progress'}, h('i', {style: {width: pct(done), float: 'left'}}),
      h('i', {class: 'failed', style: {width: pct(failed), float: 'left'}})),
    ` ${done + failed} / ${total}`, failed ? h('span', {class: 'delta-down'}, ` (${failed} failed)`) : null);
}

/** `answer_relevance/v1/mean` → `answer_relevance mean`; the full name stays in the title. */
export function metricLabel(name) {
  const [scorer, , stat] = name.split('/');
  return stat ? `${scorer} ${stat}` : name;
}

/** The `/mean` metrics of a job, as chips. */
export function meanChips(metrics) {
  return Object.entries(metrics || {}).filter(([k]) => k.endsWith('/mean'))
    .map(([k, v]) => h('span', {class: 'chip', title: k}, h('b', null, k.split('/')[0]), ' ', fmt.score(v)));
}

export function jobTitle(job) {
  return job.name || job.job_id;
}
