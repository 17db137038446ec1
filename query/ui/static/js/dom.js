// The one way this UI builds DOM. Strings always become text nodes (never parsed as HTML):
// trace content is untrusted, so no module sets innerHTML, and neither may yours.

/** h('a', {href: '/x', class: 'c', onclick: fn}, 'text', childNode, [more]) → Element */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value == null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'style') Object.assign(el.style, value);
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (key === 'value' || key === 'checked' || key === 'disabled' || key === 'selected') el[key] = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of [children].flat(Infinity)) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** Replace an element's children. */
export function mount(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** A link inside the app (handled by the router, so no page reload). */
export function link(href, ...children) {
  return h('a', {href, 'data-link': ''}, ...children);
}

export function errorBox(error, extra) {
  return h('div', {class: 'error-box', role: 'alert'}, String(error?.message ?? error), extra);
}

/** Copy text to the clipboard; falls back to a hidden textarea where the Clipboard API is refused. */
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const area = h('textarea', {style: {position: 'fixed', opacity: '0'}}, text);
    document.body.append(area);
    area.select();
    document.execCommand('copy');
    area.remove();
  }
}
