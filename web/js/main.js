// The page: sign-in, the shell (header, navigation, language, "last heard"), and the
// router over the address's fragment:
//   #/region/CODE            overview of a region (map and table of its children)
//   #/risk/CODE?kind=K       risk over time of a region
//   #/tasks/CODE             the work list of a region
//   #/task/ID                a task: the household, its alerts, the next step's form
//   #/household/ID           a household
//   #/signout                forgets the token
// Each view renders into the main element and may return { refresh } for the live poll.

import * as api from './api.js';
import { h, replace, clock, disposeCharts } from './dom.js';
import { t, label, lang, setLang } from './i18n.js';
import * as overview from './overview.js';
import * as risk from './risk.js';
import * as work from './work.js';
import * as live from './live.js';

const app = document.getElementById('app');
const ctx = { me: null, regions: new Map(), view: null };

/** Navigates to `hash` (the router renders it). */
ctx.go = (hash) => {
  if (location.hash === hash) route();
  else location.hash = hash;
};

/** The region and its ancestors inside the account's scope, top first. */
ctx.path = (code) => {
  const path = [];
  let region = ctx.regions.get(code);
  while (region) {
    path.unshift(region);
    if (region.code === ctx.me.region_code) break;
    region = ctx.regions.get(region.parent);
  }
  return path;
};

/** The children of `code`, by code. */
ctx.children = (code) => [...ctx.regions.values()].filter((r) => r.parent === code);

/** The name of a region (its code when unknown). */
ctx.regionName = (code) => ctx.regions.get(code)?.name ?? code;

ctx.may = (what) => {
  const role = ctx.me?.role;
  if (what === 'households') return role !== 'department';
  return true;
};

function signInPage(message) {
  const input = h('input', { id: 'token', type: 'password', autocomplete: 'off', required: true, size: 40 });
  const form = h('form', { class: 'signin', id: 'signin' },
    h('h1', {}, t('title')),
    h('label', { for: 'token' }, t('tokenLabel')),
    input,
    h('p', { class: 'muted small' }, t('tokenHint')),
    message ? h('p', { class: 'problem', role: 'alert' }, message) : null,
    h('div', { class: 'row' },
      h('button', { type: 'submit', class: 'primary' }, t('signIn')),
      h('button', { type: 'button', class: 'link', onclick: () => { setLang(lang() === 'zh' ? 'en' : 'zh'); signInPage(message); } }, t('language'))));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    api.setToken(input.value.trim());
    await start();
  });
  replace(app, form);
  input.focus();
}

async function start() {
  if (location.hash === '#/signout') {
    api.clearToken();
    history.replaceState(null, '', location.pathname);
  }
  if (!api.token()) {
    signInPage();
    return;
  }
  try {
    ctx.me = await api.get('/api/me');
    const regions = await api.get('/api/regions');
    ctx.regions = new Map(regions.items.map((r) => [r.code, r]));
  } catch (error) {
    api.clearToken();
    signInPage(error.status === 401 ? t('badToken') : error.message);
    return;
  }
  shell();
  live.start(ctx);
  window.addEventListener('hashchange', route);
  route();
}

let heardEl = null;
api.onHeard((at, ok) => {
  if (!heardEl) return;
  heardEl.classList.toggle('offline', !ok);
  if (ok) {
    heardEl.dataset.at = at.toISOString();
    heardEl.textContent = `${t('lastHeard')} ${clock(at)}`;
  } else {
    heardEl.textContent = `${t('offline')} (${t('lastHeard')} ${heardEl.dataset.at ? clock(new Date(heardEl.dataset.at)) : '—'})`;
  }
});

function shell() {
  const me = ctx.me;
  const home = me.role === 'village' ? `#/tasks/${me.region_code}` : `#/region/${me.region_code}`;
  heardEl = h('span', { id: 'last-heard', class: 'heard' }, t('noContact'));
  const nav = h('nav', { id: 'nav' },
    h('a', { href: `#/region/${me.region_code}`, dataset: { nav: 'region' } }, t('overview')),
    h('a', { href: `#/risk/${me.region_code}`, dataset: { nav: 'risk' } }, t('risk')),
    ctx.may('households') ? h('a', { href: `#/tasks/${me.region_code}`, dataset: { nav: 'tasks' } }, t('work')) : null);
  const header = h('header', { class: 'top' },
    h('a', { class: 'brand', href: home }, t('title')),
    nav,
    h('div', { class: 'who' },
      h('span', { id: 'account', title: t('signedInAs') },
        `${me.name} · ${label('role', me.role)} · ${me.region_name ?? me.region_code}`),
      heardEl,
      h('span', { id: 'news', class: 'news', hidden: true }),
      h('button', { type: 'button', class: 'link', id: 'lang', onclick: () => { setLang(lang() === 'zh' ? 'en' : 'zh'); shell(); route(); } }, t('language')),
      h('button', { type: 'button', class: 'link', id: 'signout', onclick: signOut }, t('signOut'))));
  ctx.main = h('main', { id: 'main' });
  replace(app, header, ctx.main);
  live.attach(document.getElementById('news'));
}

function signOut(message) {
  api.clearToken();
  disposeCharts(true);
  live.stop();
  window.removeEventListener('hashchange', route);
  history.replaceState(null, '', location.pathname);
  signInPage(typeof message === 'string' ? message : undefined);
}

/** The token stopped working (revoked): sign in again. */
ctx.signedOut = () => signOut(t('badToken'));

/** Renders "not found" (also what a region, task or household outside the scope gives). */
ctx.notFound = () => {
  replace(ctx.main, h('section', { class: 'card', id: 'not-found' },
    h('h2', {}, t('notFound')), h('p', {}, t('notFoundDetail'))));
};

/** Renders an error of the API in the main element. */
ctx.fail = (error) => {
  if (error.status === 404) return ctx.notFound();
  replace(ctx.main, h('section', { class: 'card problem', id: 'failure', role: 'alert' },
    h('h2', {}, error.status === 403 ? t('forbidden') : t('error')),
    h('p', {}, error.message)));
};

let routeSeq = 0;

async function route() {
  const seq = ++routeSeq;
  const me = ctx.me;
  const [path, queryText] = location.hash.replace(/^#/, '').split('?');
  const query = new URLSearchParams(queryText || '');
  const parts = path.split('/').filter(Boolean);
  const [page, id] = parts;
  if (page === 'signout') {
    signOut();
    return;
  }
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.nav === page);
  ctx.view = null;
  disposeCharts(true);
  replace(ctx.main, h('p', { class: 'muted' }, t('loading')));
  const render = {
    region: () => overview.render(ctx, id || me.region_code),
    risk: () => risk.render(ctx, id || me.region_code, query),
    tasks: () => work.list(ctx, id || me.region_code, query),
    task: () => work.task(ctx, id),
    household: () => work.household(ctx, id),
  }[page];
  if (!page) {
    ctx.go(me.role === 'village' ? `#/tasks/${me.region_code}` : `#/region/${me.region_code}`);
    return;
  }
  if (!render) {
    ctx.notFound();
    return;
  }
  try {
    const view = await render();
    if (seq === routeSeq) ctx.view = view || null;
  } catch (error) {
    if (seq === routeSeq) ctx.fail(error);
  }
}

/** Whether the route that rendered is still the current one. */
ctx.current = () => routeSeq;

start();
