// Live: a short poll. Every few seconds it asks for the newest alerts, signals and
// tasks; what is new since the page opened is counted in the header (and listed on a
// click), and the current view refreshes itself when its figures changed. Every
// answer moves the "last heard from the server" line.

import * as api from './api.js';
import { h, replace, dateTime } from './dom.js';
import { t, label } from './i18n.js';

const POLL_MS = 4000;

let timer = null;
let generation = 0; // a tick of an earlier start (before a sign-out) stops itself
let ctxRef = null;
let newsEl = null;
let seen = null; // ids seen: alerts, signals (with status), tasks (with version)
const news = [];

/** Starts polling for `ctx` (the view it refreshes is `ctx.view`). */
export function start(ctx) {
  stop();
  ctxRef = ctx;
  seen = null;
  news.length = 0;
  drawNews();
  tick(generation);
}

/** Stops polling. */
export function stop() {
  generation += 1;
  if (timer) clearTimeout(timer);
  timer = null;
}

/** Where the count of news is shown. */
export function attach(el) {
  newsEl = el;
  drawNews();
}

async function latest() {
  const ctx = ctxRef;
  const households = ctx.may('households');
  const [alerts, signals, tasks] = await Promise.all([
    households ? api.get('/api/alerts', { limit: 20 }) : { items: [] },
    api.get('/api/signals', { limit: 20 }),
    households ? api.get('/api/tasks', { limit: 50 }) : { items: [] },
  ]);
  return {
    alerts: alerts.items.map((a) => ({ key: `a:${a.alert_id}:${a.updated_at}`, kind: 'newAlert', at: a.opened_at, text: `${label('level', a.level)} · ${a.household_id}`, href: `#/household/${a.household_id}` })),
    signals: signals.items.map((s) => ({ key: `s:${s.signal_id}:${s.status}:${s.updated_at}`, kind: 'newSignal', at: s.updated_at, text: `${label('level', s.severity)} · ${ctx.regionName(s.region_code)} · ${label('riskKind', s.risk_kind)}`, href: `#/risk/${s.region_code}?kind=${s.risk_kind}` })),
    tasks: tasks.items.map((x) => ({ key: `t:${x.task_id}:${x.version}`, kind: 'taskChanged', at: x.updated_at, text: `${x.household_id || ''} · ${label('stage', x.stage)}`, href: `#/task/${x.task_id}` })),
  };
}

async function tick(mine) {
  if (mine !== generation) return;
  try {
    const found = await latest();
    if (mine !== generation) return;
    const all = [...found.alerts, ...found.signals, ...found.tasks];
    if (seen === null) {
      seen = new Set(all.map((x) => x.key));
    } else {
      for (const item of all) {
        if (!seen.has(item.key)) {
          seen.add(item.key);
          news.unshift(item);
        }
      }
      news.splice(30);
      drawNews();
    }
    const view = ctxRef.view;
    if (view?.refresh) await view.refresh();
  } catch (error) {
    // A revoked token: back to the sign-in. Otherwise the "last heard" line already
    // says the server is unreachable.
    if (error.status === 401 && mine === generation && ctxRef.signedOut) {
      ctxRef.signedOut();
      return;
    }
  }
  if (mine === generation) timer = setTimeout(() => tick(mine), POLL_MS);
}

function drawNews() {
  if (!newsEl) return;
  newsEl.hidden = news.length === 0;
  newsEl.dataset.count = String(news.length);
  const list = h('ul', { class: 'news-list', id: 'news-list', hidden: true },
    news.map((item) => h('li', { dataset: { key: item.key } }, h('a', { href: item.href },
      h('strong', {}, t(item.kind)), ' ', item.text, ' ', h('span', { class: 'muted small' }, dateTime(item.at))))));
  replace(newsEl,
    h('button', { type: 'button', class: 'news-button', onclick: () => { list.hidden = !list.hidden; } }, `${t('newItems')} ${news.length}`),
    list);
}
