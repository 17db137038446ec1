// Number, time and size formatting shared by every page.

export function duration(ms) {
  if (ms == null || Number.isNaN(ms)) return '–';
  if (ms === 0) return '0 ms';
  if (ms < 1) return `${(ms * 1000).toFixed(0)} µs`;
  if (ms < 1000) return `${ms < 10 ? ms.toFixed(1) : Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
  const minutes = Math.floor(ms / 60_000);
  return `${minutes} min ${Math.round((ms % 60_000) / 1000)} s`;
}

const pad = n => String(n).padStart(2, '0');

/** Local time, with the date only when it is not today. */
export function time(ms) {
  if (ms == null) return '–';
  const d = new Date(ms);
  const clock = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  const today = new Date();
  if (d.toDateString() === today.toDateString()) return clock;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${clock}`;
}

export function dateTime(ms) {
  if (ms == null) return '–';
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function integer(n) {
  return n == null ? '–' : Number(n).toLocaleString('en-US');
}

export function compact(n) {
  if (n == null) return '–';
  const abs = Math.abs(n);
  if (abs >= 1e9) return `${(n / 1e9).toFixed(1)}B`;
  if (abs >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (abs >= 1e4) return `${(n / 1e3).toFixed(1)}k`;
  return Number.isInteger(n) ? String(n) : n.toFixed(2);
}

export function cost(usd) {
  if (usd == null || usd === 0) return usd === 0 ? '$0' : '–';
  if (usd < 0.01) return `$${usd.toFixed(5)}`;
  return `$${usd.toFixed(usd < 10 ? 3 : 2)}`;
}

export function percent(x) {
  return x == null ? '–' : `${(x * 100).toFixed(x < 0.1 ? 2 : 1)}%`;
}

export function score(x) {
  if (x == null) return '–';
  return typeof x === 'number' ? (Number.isInteger(x) ? String(x) : x.toFixed(3)) : String(x);
}

/** One line of text from any value, cut to `max` characters (for table previews). */
export function preview(value, max = 140) {
  let text = typeof value === 'string' ? value : JSON.stringify(value);
  if (text == null) return '';
  text = text.replace(/\s+/g, ' ').trim();
  return text.length > max ? text.slice(0, max - 1) + '…' : text;
}

/** Milliseconds from an ISO string or a number (the APIs use both). */
export function toMillis(value) {
  if (value == null || value === '') return null;
  if (typeof value === 'number') return value;
  const parsed = Date.parse(value);
  return Number.isNaN(parsed) ? null : parsed;
}
