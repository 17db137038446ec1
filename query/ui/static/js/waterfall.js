// The span tree and its timeline, side by side in one row per span: the name column is the
// tree (indent by depth, fold by clicking the arrow), the track shows the span's bar to scale
// against the whole trace. Rows are plain DOM built once into a fragment; a 1,000-span trace
// is a few thousand nodes, and `content-visibility: auto` (CSS) spares painting those off screen.
import {h} from './dom.js';
import * as fmt from './format.js';
import {typeBadge} from './widgets.js';

/** Spans in depth-first order with their depth: [{span, depth}], children by start time. */
export function flatten(roots) {
  const out = [];
  const byStart = (a, b) => a.start_time_ns - b.start_time_ns;
  const stack = [...roots].sort(byStart).reverse().map(span => ({span, depth: 0}));
  while (stack.length) {  // iterative: a deep chain of spans must not overflow the call stack
    const item = stack.pop();
    out.push(item);
    const children = [...(item.span.children || [])].sort(byStart);
    for (let i = children.length - 1; i >= 0; i--) stack.push({span: children[i], depth: item.depth + 1});
  }
  return out;
}

function ticks(totalMs) {
  return [0, 0.25, 0.5, 0.75, 1].map(f => h('span', {style: {left: `${f * 100}%`}}, fmt.duration(totalMs * f)));
}

/** Build the waterfall; `onSelect(span)` is called when a row is chosen. Returns {element, select(spanId)}. */
export function createWaterfall(roots, onSelect) {
  const items = flatten(roots);
  const start = Math.min(...items.map(i => i.span.start_time_ns));
  const end = Math.max(...items.map(i => i.span.start_time_ns + i.span.duration_ns));
  const total = Math.max(end - start, 1);
  const rows = new Array(items.length);
  const fragment = document.createDocumentFragment();

  items.forEach(({span, depth}, index) => {
    const error = span.status_code === 'Error';
    const left = ((span.start_time_ns - start) / total) * 100;
    const width = (span.duration_ns / total) * 100;
    const hasChildren = span.children?.length > 0;
    const toggle = h('span', {class: 'wf-toggle', 'aria-label': hasChildren ? 'fold' : null}, hasChildren ? '▾' : '');
    // The duration goes right of the bar, else left of it, else (a bar across the track) inside it.
    const place = left + width <= 80 ? {left: `${left + width + 0.5}%`}
      : left >= 15 ? {right: `${100 - left + 0.5}%`} : {right: `${Math.max(0, 100 - left - width) + 0.5}%`, color: '#fff'};
    const durationLabel = h('span', {class: 'wf-dur', style: place}, fmt.duration(span.duration_ms));
    const row = h('div', {class: `wf-row${error ? ' error' : ''}`, role: 'treeitem', 'aria-level': depth + 1,
                          dataset: {spanId: span.span_id, depth, index}},
      h('div', {class: 'wf-name', style: {paddingLeft: `${8 + depth * 14}px`}, title: span.name},
        toggle, error ? h('span', {class: 'err-mark', title: span.status_message || 'error'}, '!') : null,
        typeBadge(span.span_type), h('span', {class: 'label'}, span.name)),
      h('div', {class: 'wf-track'},
        h('div', {class: `wf-bar${error ? ' error' : ''}${span.span_type ? ` t-${span.span_type}` : ''}`,
                  style: {left: `${left}%`, width: `${width}%`},
                  title: `${span.name}: ${fmt.duration(span.duration_ms)} at +${fmt.duration((span.start_time_ns - start) / 1e6)}`}),
        durationLabel));
    rows[index] = row;
    fragment.append(row);
  });

  const body = h('div', {class: 'wf-body', role: 'tree', id: 'waterfall-rows'});
  body.append(fragment);
  let selected = null;

  function select(index) {
    if (selected != null) rows[selected].classList.remove('selected');
    selected = index;
    rows[index].classList.add('selected');
    onSelect(items[index].span);
  }

  function fold(index) {
    const depth = items[index].depth;
    const toggle = rows[index].querySelector('.wf-toggle');
    const folding = toggle.textContent === '▾';
    toggle.textContent = folding ? '▸' : '▾';
    // Descendants are the rows right after this one that are deeper; unfolding restores the
    // fold state of nested folded rows by skipping their subtrees.
    for (let i = index + 1; i < items.length && items[i].depth > depth; i++) {
      rows[i].hidden = folding;
      if (!folding && rows[i].querySelector('.wf-toggle').textContent === '▸') {
        const inner = items[i].depth;
        while (i + 1 < items.length && items[i + 1].depth > inner) i++;
      }
    }
  }

  body.addEventListener('click', event => {
    const row = event.target.closest('.wf-row');
    if (!row) return;
    const index = Number(row.dataset.index);
    if (event.target.closest('.wf-toggle') && items[index].span.children?.length) fold(index);
    else select(index);
  });

  const element = h('div', {class: 'waterfall', id: 'waterfall'},
    h('div', {class: 'wf-head'}, h('div', null, `Spans (${items.length})`), h('div', {class: 'wf-axis'}, ticks(total / 1e6))),
    body);
  return {
    element,
    select(spanId) {
      const index = spanId ? items.findIndex(i => i.span.span_id === spanId) : 0;
      if (index >= 0) select(index);
    },
  };
}
