// Span inputs and outputs come in every convention's shape (DESIGN §6). This module recognises
// chat messages (OTel GenAI parts, OpenAI, Anthropic, OpenInference, legacy events) and
// retrieved documents, and renders them; anything else is shown as pretty JSON or text.
import {h} from './dom.js';
import * as fmt from './format.js';

function parseMaybe(value) {
  if (typeof value !== 'string') return value;
  const t = value.trim();
  if (!/^[[{"]/.test(t)) return value;
  try { return JSON.parse(t); } catch { return value; }
}

function part(p) {
  if (typeof p === 'string') return {type: 'text', text: p};
  if (!p || typeof p !== 'object') return {type: 'other', value: p};
  switch (p.type) {
    case 'text': case 'input_text': case 'output_text':
      return {type: 'text', text: String(p.content ?? p.text ?? '')};
    case 'reasoning': case 'thinking':
      return {type: 'text', text: String(p.content ?? p.thinking ?? p.text ?? ''), reasoning: true};
    case 'tool_call': case 'function_call':
      return {type: 'tool_call', id: p.id ?? p.call_id, name: p.name, args: parseMaybe(p.arguments)};
    case 'tool_use':  // Anthropic
      return {type: 'tool_call', id: p.id, name: p.name, args: p.input};
    case 'tool_call_response': case 'function_call_output':
      return {type: 'tool_result', id: p.id ?? p.call_id, result: parseMaybe(p.response ?? p.result ?? p.output)};
    case 'tool_result':  // Anthropic
      return {type: 'tool_result', id: p.tool_use_id, result: p.content};
    default:
      return typeof p.text === 'string' ? {type: 'text', text: p.text} : {type: 'other', value: p};
  }
}

function message(m) {
  if (!m.role && m.message) m = m.message;
  const parts = [];
  if (Array.isArray(m.parts)) parts.push(...m.parts.map(part));
  if (typeof m.content === 'string') parts.push({type: 'text', text: m.content});
  else if (Array.isArray(m.content)) parts.push(...m.content.map(part));
  else if (m.content != null && typeof m.content === 'object') parts.push({type: 'other', value: m.content});
  for (const call of m.tool_calls || []) {
    parts.push({type: 'tool_call', id: call.id, name: call.function?.name ?? call.name,
                args: parseMaybe(call.function?.arguments ?? call.arguments)});
  }
  if (m.function_call) parts.push({type: 'tool_call', name: m.function_call.name, args: parseMaybe(m.function_call.arguments)});
  if (m.role === 'tool' && m.tool_call_id && parts.length && parts.every(p => p.type === 'text')) {
    return {role: 'tool', name: m.name, parts: [{type: 'tool_result', id: m.tool_call_id,
                                                 result: parseMaybe(parts.map(p => p.text).join('\n'))}]};
  }
  return {role: String(m.role), name: m.name, parts, finish: m.finish_reason};
}

/** A list of {role, parts} when `value` holds chat messages, else null. */
export function asMessages(value) {
  let list = parseMaybe(value);
  if (list && typeof list === 'object' && !Array.isArray(list)) {
    if (Array.isArray(list.messages)) list = list.messages;                          // OpenAI request, MLflow inputs
    else if (Array.isArray(list.choices)) list = list.choices.map(c => c.message ?? c);  // OpenAI response
    else if (typeof list.role === 'string') list = [list];                              // one message (Anthropic response)
    else return null;
  }
  if (!Array.isArray(list) || !list.length) return null;
  const isMessage = m => m && typeof m === 'object' && typeof (m.role ?? m.message?.role) === 'string';
  return list.every(isMessage) ? list.map(message) : null;
}

const CONTENT_KEYS = ['content', 'page_content', 'text', 'document'];

/** A list of {id, score, content, metadata} when `value` holds retrieved documents, else null. */
export function asDocuments(value) {
  let list = parseMaybe(value);
  if (list && !Array.isArray(list) && Array.isArray(list.documents)) list = list.documents;
  if (!Array.isArray(list) || !list.length) return null;
  const docs = [];
  for (const item of list) {
    const doc = item?.document && typeof item.document === 'object' ? {...item.document, ...item} : item;
    const key = doc && typeof doc === 'object' ? CONTENT_KEYS.find(k => typeof doc[k] === 'string') : null;
    if (!key) return null;
    const score = doc.score ?? doc.relevance_score ?? doc.metadata?.score;
    docs.push({id: doc.id ?? doc.metadata?.doc_uri ?? doc.metadata?.source, score: score == null ? null : Number(score),
               content: doc[key], metadata: parseMaybe(doc.metadata)});
  }
  return docs;
}

/** Text to show for one side of a conversation turn (sessions page). */
export function turnText(value, side) {
  const parsed = parseMaybe(value);
  const messages = asMessages(parsed);
  if (messages) {
    const wanted = side === 'input' ? 'user' : 'assistant';
    const m = [...messages].reverse().find(x => x.role === wanted) ?? messages.at(-1);
    return m.parts.map(p => p.type === 'text' ? p.text : p.type === 'tool_call' ? `[tool call: ${p.name}]` : '').join('\n').trim();
  }
  if (typeof parsed === 'string') return parsed;
  if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) {
    const strings = Object.values(parsed).filter(v => typeof v === 'string');
    if (strings.length === 1) return strings[0];
  }
  return parsed == null ? '' : JSON.stringify(parsed, null, 2);
}

// -- rendering ----------------------------------------------------------------------------

const ROLES = new Set(['system', 'user', 'assistant', 'tool', 'developer']);

export function renderChat(messages) {
  return h('div', {class: 'chat'}, messages.map(m => h('div', {class: `msg role-${ROLES.has(m.role) ? m.role : 'other'}`},
    h('div', {class: 'role'}, m.role, m.name ? ` · ${m.name}` : '', m.finish ? ` · ${m.finish}` : ''),
    m.parts.map(p => {
      if (p.type === 'text') return h('div', {class: `text${p.reasoning ? ' muted' : ''}`}, p.text);
      if (p.type === 'tool_call') {
        return h('div', {class: 'tool-call'}, h('span', {class: 'muted'}, 'tool call '), h('span', {class: 'name'}, p.name ?? '?'),
          p.id ? h('span', {class: 'muted'}, ` (${p.id})`) : null, p.args != null ? renderJson(p.args) : null);
      }
      if (p.type === 'tool_result') {
        return h('div', {class: 'tool-call'}, h('span', {class: 'muted'}, `tool result${p.id ? ` (${p.id})` : ''}`),
          typeof p.result === 'string' ? h('div', {class: 'text'}, p.result) : renderJson(p.result));
      }
      return renderJson(p.value);
    }))));
}

export function renderDocuments(docs) {
  return h('div', {class: 'docs'}, docs.map((d, i) => h('div', {class: 'doc'},
    h('div', {class: 'head'}, h('b', null, `#${i + 1}`), d.id != null ? h('span', {class: 'mono'}, String(d.id)) : null,
      d.score != null && !Number.isNaN(d.score) ? [h('span', {class: 'muted'}, `score ${fmt.score(d.score)}`),
        h('span', {class: 'score-bar'}, h('i', {style: {width: `${Math.max(0, Math.min(1, d.score)) * 100}%`}}))] : null),
    h('div', {class: 'text', style: {whiteSpace: 'pre-wrap'}}, d.content),
    d.metadata && typeof d.metadata === 'object' && Object.keys(d.metadata).length ? renderJson(d.metadata) : null)));
}

/** Pretty JSON with colours; every value is a text node. */
export function renderJson(value) {
  return h('pre', {class: 'json'}, jsonNodes(value, ''));
}

function jsonNodes(value, indent) {
  if (value === null || value === undefined) return h('span', {class: 'z'}, 'null');
  if (typeof value === 'string') return h('span', {class: 's'}, JSON.stringify(value));
  if (typeof value === 'number') return h('span', {class: 'n'}, String(value));
  if (typeof value === 'boolean') return h('span', {class: 'b'}, String(value));
  const inner = indent + '  ';
  if (Array.isArray(value)) {
    if (!value.length) return '[]';
    return ['[\n', value.map((v, i) => [inner, jsonNodes(v, inner), i < value.length - 1 ? ',\n' : '\n']), indent, ']'];
  }
  const entries = Object.entries(value);
  if (!entries.length) return '{}';
  return ['{\n', entries.map(([k, v], i) => [inner, h('span', {class: 'k'}, JSON.stringify(k)), ': ', jsonNodes(v, inner),
                                             i < entries.length - 1 ? ',\n' : '\n']), indent, '}'];
}

/** The best view of one input or output value. */
export function renderValue(value, {spanType} = {}) {
  if (value == null || value === '') return h('div', {class: 'muted'}, '(none)');
  const docs = spanType === 'RETRIEVER' || spanType === 'RERANKER' ? asDocuments(value) : null;
  if (docs) return renderDocuments(docs);
  const messages = asMessages(value);
  if (messages) return renderChat(messages);
  const parsed = parseMaybe(value);
  if (typeof parsed === 'string') return h('pre', {class: 'json'}, parsed);
  return renderJson(parsed);
}
