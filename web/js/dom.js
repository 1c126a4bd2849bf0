// Small helpers for building the page: h() makes an element, and a few formatters.

/**
 * h('a', {href: '#/x', class: 'link'}, 'text', child) — attributes whose name starts
 * with "on" become listeners; `dataset` is an object of data-* attributes; null and
 * false children are skipped.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      el.addEventListener(name.slice(2), value);
    } else if (name === 'dataset') {
      Object.assign(el.dataset, value);
    } else if (name === 'class') {
      el.className = value;
    } else if (value === true) {
      el.setAttribute(name, '');
    } else {
      el.setAttribute(name, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** Replaces the children of `el`. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A date-time as local "YYYY-MM-DD HH:MM". */
export function dateTime(text) {
  if (!text) return '';
  const d = new Date(text);
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** A time as "HH:MM:SS". */
export function clock(d) {
  const pad = (n) => String(n).padStart(2, '0');
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** Today in China Standard Time as YYYY-MM-DD (the procedure counts days in CST). */
export function todayCst() {
  const now = new Date(Date.now() + 8 * 3600 * 1000);
  return now.toISOString().slice(0, 10);
}

/** `day` (YYYY-MM-DD) moved by `days`. */
export function addDays(day, days) {
  const d = new Date(`${day}T00:00:00Z`);
  d.setUTCDate(d.getUTCDate() + days);
  return d.toISOString().slice(0, 10);
}

const charts = new Set();

/**
 * An ECharts instance on `el` (replacing one already there), resized with it and
 * disposed of when the view that drew it goes (see disposeCharts).
 */
export function chart(el) {
  const existing = window.echarts.getInstanceByDom(el);
  if (existing) existing.dispose();
  const instance = window.echarts.init(el);
  const observer = new ResizeObserver(() => {
    if (!el.isConnected || instance.isDisposed()) return;
    instance.resize();
  });
  observer.observe(el);
  charts.add({ instance, observer });
  return instance;
}

/** Disposes of every chart whose element left the page (all of them: `everything`). */
export function disposeCharts(everything = false) {
  for (const entry of [...charts]) {
    const el = entry.instance.isDisposed() ? null : entry.instance.getDom();
    if (everything || !el || !el.isConnected) {
      entry.observer.disconnect();
      if (!entry.instance.isDisposed()) entry.instance.dispose();
      charts.delete(entry);
    }
  }
}
