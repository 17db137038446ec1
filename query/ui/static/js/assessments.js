// A trace's assessments (evaluation scores, rationales, human feedback) and the form that adds
// feedback through POST /api/v1/traces/{id}/assessments.
import {h, mount} from './dom.js';
import {api} from './api.js';
import * as fmt from './format.js';

const NAME_STORAGE = 'tracehouse.feedbackName';

function valueView(a) {
  if (a.value === true || a.value === 'true') return h('span', {class: 'badge ok'}, '▲ thumbs up');
  if (a.value === false || a.value === 'false') return h('span', {class: 'badge error'}, '▼ thumbs down');
  const shown = typeof a.value === 'object' && a.value !== null ? JSON.stringify(a.value) : fmt.score(a.value);
  return h('b', null, fmt.preview(shown, 80));
}

function assessmentView(a) {
  return h('div', {class: 'assessment', dataset: {name: a.name}},
    h('div', null, h('b', null, a.name), ' ', valueView(a),
      a.label ? [' ', h('span', {class: 'badge'}, a.label)] : null,
      a.score != null && typeof a.value !== 'number' ? h('span', {class: 'muted'}, ` score ${fmt.score(a.score)}`) : null,
      ' ', h('span', {class: `badge${a.kind === 'expectation' ? ' accent' : ''}`}, a.kind || 'feedback')),
    h('div', {class: 'muted'}, [a.source_type, a.source_id].filter(Boolean).join(' · '),
      a.span_id ? ` · span ${a.span_id}` : '', a.created_at ? ` · ${fmt.dateTime(fmt.toMillis(a.created_at))}` : ''),
    a.rationale ? h('div', {class: 'rationale'}, a.rationale) : null,
    a.error ? h('div', {class: 'error-box'}, a.error) : null);
}

/**
 * The assessments panel. `trace` is the GET /api/v1/traces/{id} document; `selectedSpan()`
 * returns the span chosen in the waterfall (feedback can be attached to it); `reload()`
 * fetches the trace again and returns it.
 */
export function createAssessments(trace, {selectedSpan, reload}) {
  const list = h('div', {id: 'assessment-list'});
  const message = h('div', {role: 'status'});
  const name = h('input', {type: 'text', name: 'feedback-name', 'aria-label': 'Feedback name', size: 14,
                           value: localStorage.getItem(NAME_STORAGE) || 'user_feedback'});
  const comment = h('textarea', {name: 'comment', placeholder: 'Comment (optional)', 'aria-label': 'Comment'});
  const scoreInput = h('input', {type: 'number', name: 'score', step: 'any', placeholder: 'score', 'aria-label': 'Score',
                                 style: {width: '90px'}});
  const onSpan = h('input', {type: 'checkbox', name: 'on-span'});
  const buttons = [];

  function drawList(assessments) {
    mount(list, assessments?.length ? assessments.map(assessmentView)
                                     : h('div', {class: 'muted'}, 'No assessments yet.'));
  }

  async function send(value) {
    const body = {name: name.value.trim() || 'user_feedback', value, kind: 'feedback', source_type: 'HUMAN',
                  source_id: 'web-ui', rationale: comment.value.trim() || null,
                  span_id: onSpan.checked ? selectedSpan()?.span_id ?? null : null};
    localStorage.setItem(NAME_STORAGE, body.name);
    buttons.forEach(b => { b.disabled = true; });
    mount(message, h('span', {class: 'muted'}, 'Saving…'));
    try {
      await api(`/api/v1/traces/${encodeURIComponent(trace.trace_id)}/assessments`, {method: 'POST', body});
      comment.value = '';
      scoreInput.value = '';
      mount(message, h('span', {class: 'copy-ok'}, 'Saved.'));
      drawList((await reload()).assessments);
    } catch (error) {
      mount(message, h('div', {class: 'error-box'}, `Could not save feedback: ${error.message}`));
    } finally {
      buttons.forEach(b => { b.disabled = false; });
    }
  }

  const up = h('button', {type: 'button', class: 'thumb up', 'aria-label': 'Thumbs up', onclick: () => send(true)}, '▲ Good');
  const down = h('button', {type: 'button', class: 'thumb down', 'aria-label': 'Thumbs down', onclick: () => send(false)}, '▼ Bad');
  const saveScore = h('button', {type: 'button', onclick: () => {
    const value = Number(scoreInput.value);
    if (scoreInput.value === '' || Number.isNaN(value)) { mount(message, h('div', {class: 'error-box'}, 'Enter a number to save a score.')); return; }
    send(value);
  }}, 'Save score');
  buttons.push(up, down, saveScore);
  drawList(trace.assessments);

  return h('section', {class: 'panel', id: 'assessments'},
    h('h2', null, 'Assessments'), list,
    h('div', {class: 'feedback-form'},
      h('h3', null, 'Add feedback'),
      h('div', {class: 'row'}, up, down, h('span', {class: 'muted'}, 'or'), scoreInput, saveScore),
      comment,
      h('div', {class: 'row'}, h('label', null, 'Name ', name),
        h('label', {title: 'Attach the feedback to the span selected in the timeline'}, onSpan, ' on selected span')),
      message));
}
