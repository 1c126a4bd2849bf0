// Overview of a region: its figures, its children on a map (points at the regions
// file's longitude/latitude, over the configured boundary GeoJSON when there is one)
// coloured by severity, and a sortable table of the same children. A click on a
// point or a row drills down; the breadcrumb goes back up.

import * as api from './api.js';
import { h, replace, dateTime, chart, disposeCharts } from './dom.js';
import { t, label } from './i18n.js';

/** Colours of severity: the alert levels, "no alerts" and "no data". */
export const COLOURS = {
  red: '#c62828',
  orange: '#ef6c00',
  yellow: '#f9a825',
  blue: '#1e88e5',
  quiet: '#43a047',
  none: '#9e9e9e',
};

const LEVELS = ['red', 'orange', 'yellow', 'blue'];
const STAGES = ['pending', 'visiting', 'township_review', 'county_decision'];

/**
 * The severity of a region's figures: the highest level among its open alerts and
 * active signals; `quiet` when it has figures but no alert or signal; `none` (no data)
 * when every figure is zero.
 */
export function severity(figures) {
  for (const level of LEVELS) {
    if ((figures.alerts.by_level[level] || 0) > 0 || (figures.signals.by_severity[level] || 0) > 0) return level;
  }
  const any = figures.alerts.total + figures.tasks.open + figures.signals.active + figures.monitored_households;
  return any > 0 ? 'quiet' : 'none';
}

const RANK = { red: 5, orange: 4, yellow: 3, blue: 2, quiet: 1, none: 0 };

/** The table's columns: a key (the cell's data-col), a heading and a value. */
function columns() {
  return [
    { key: 'name', head: t('name'), value: (f) => f.region.name, text: true },
    { key: 'severity', head: t('severity'), value: (f) => RANK[severity(f)], show: (f) => badge(severity(f)) },
    { key: 'alerts.total', head: t('openAlerts'), value: (f) => f.alerts.total },
    ...LEVELS.map((level) => ({
      key: `alerts.${level}`, head: label('level', level), value: (f) => f.alerts.by_level[level] || 0, level,
    })),
    ...STAGES.map((stage) => ({
      key: `tasks.${stage}`, head: label('stage', stage), value: (f) => f.tasks.by_stage[stage] || 0,
    })),
    { key: 'tasks.overdue', head: t('overdue'), value: (f) => f.tasks.overdue, warn: true },
    { key: 'monitored', head: t('monitored'), value: (f) => f.monitored_households },
    { key: 'signals', head: t('activeSignals'), value: (f) => f.signals.active },
  ];
}

/** A coloured severity badge. */
export function badge(level) {
  return h('span', { class: `badge sev-${level}`, dataset: { severity: level } }, label('level', level));
}

let sortState = { key: 'severity', desc: true };

export async function render(ctx, code) {
  const seq = ctx.current();
  const summary = await api.get(`/api/regions/${code}/summary`);
  if (seq !== ctx.current()) return null;
  const view = { code, summary };
  draw(ctx, view);
  view.refresh = async () => {
    const next = await api.get(`/api/regions/${code}/summary`);
    if (seq !== ctx.current()) return;
    if (JSON.stringify(figuresOf(next)) !== JSON.stringify(figuresOf(view.summary))) {
      view.summary = next;
      draw(ctx, view);
    }
  };
  return view;
}

function figuresOf(summary) {
  return [summary.region, summary.children];
}

function breadcrumb(ctx, code) {
  const path = ctx.path(code);
  const items = [];
  path.forEach((region, i) => {
    if (i > 0) items.push(h('span', { class: 'sep' }, '›'));
    items.push(i === path.length - 1
      ? h('span', { class: 'here' }, region.name)
      : h('a', { href: `#/region/${region.code}`, dataset: { code: region.code } }, region.name));
  });
  const parent = path.length > 1 ? path[path.length - 2] : null;
  return h('div', { class: 'crumbs', id: 'crumbs' }, items,
    parent ? h('a', { class: 'up', id: 'up', href: `#/region/${parent.code}` }, `↑ ${t('up')}`) : null);
}

function figureCards(figures) {
  const f = figures;
  const card = (key, title, value, extra) =>
    h('div', { class: `figure ${extra || ''}`, dataset: { figure: key } }, h('div', { class: 'value' }, value), h('div', { class: 'muted small' }, title));
  return h('div', { class: 'figures', id: 'figures' },
    card('alerts', t('openAlerts'), f.alerts.total),
    ...LEVELS.map((level) => card(`alerts.${level}`, label('level', level), f.alerts.by_level[level] || 0, `sev-text-${level}`)),
    card('tasks', t('tasks'), f.tasks.open),
    card('overdue', t('overdue'), f.tasks.overdue, f.tasks.overdue > 0 ? 'warn' : ''),
    card('monitored', t('monitored'), f.monitored_households),
    card('signals', t('activeSignals'), f.signals.active));
}

function draw(ctx, view) {
  const { summary, code } = view;
  const region = summary.region.region;
  const children = summary.children;
  const mapEl = h('div', { id: 'region-map', class: 'chart map' });
  const tableHost = h('div', { class: 'table-host' });
  const links = h('div', { class: 'row links' },
    h('a', { class: 'button', id: 'open-risk', href: `#/risk/${code}` }, `${t('risk')} →`),
    ctx.may('households') ? h('a', { class: 'button', id: 'open-tasks', href: `#/tasks/${code}` }, `${t('work')} →`) : null);
  const body = children.length
    ? h('div', { class: 'split' },
      h('section', { class: 'card' }, h('h3', {}, t('map')), mapEl, legend()),
      h('section', { class: 'card' }, h('h3', {}, `${t('table')} · ${label('regionLevel', children[0].region.level)}`), tableHost))
    : h('section', { class: 'card', id: 'village-alerts' }, h('h3', {}, t('openAlerts')), h('p', { class: 'muted' }, ctx.may('households') ? t('loading') : t('noChildren')));
  replace(ctx.main,
    h('section', { class: 'overview', id: 'overview', dataset: { code } },
      breadcrumb(ctx, code),
      h('h2', {}, region.name, ' ', h('span', { class: 'muted small' }, label('regionLevel', region.level)), ' ', badge(severity(summary.region))),
      figureCards(summary.region),
      links,
      body,
      h('p', { class: 'muted small' }, `${dateTime(summary.computed_at)}`)));
  if (children.length) {
    drawTable(ctx, tableHost, children);
    drawMap(ctx, mapEl, children);
  } else if (ctx.may('households')) {
    drawAlerts(ctx, code, body);
  }
}

/** A village's open alerts, most severe first, each opening its household. */
async function drawAlerts(ctx, code, host) {
  const alerts = await api.all('/api/alerts', { region: code, status: 'open' }, 1000);
  if (!host.isConnected) return;
  const rank = { red: 4, orange: 3, yellow: 2, blue: 1 };
  alerts.sort((a, b) => rank[b.level] - rank[a.level] || b.opened_at.localeCompare(a.opened_at));
  replace(host, h('h3', {}, `${t('openAlerts')} (${alerts.length})`),
    alerts.length ? h('ul', { class: 'tasks', id: 'alert-list' }, alerts.map((a) => h('li', { class: 'task', dataset: { alert: a.alert_id } },
      h('a', { href: `#/household/${a.household_id}` },
        h('div', { class: 'line' }, badge(a.level), h('strong', {}, a.household_id),
          h('span', { class: 'days muted small' }, dateTime(a.opened_at))),
        h('div', { class: 'line muted small' }, label('action', a.action), ' · ',
          a.risk_types.map((r) => label('riskType', r)).join('、'))))))
      : h('p', { class: 'muted' }, '—'));
}

function legend() {
  return h('div', { class: 'legend' },
    Object.keys(COLOURS).map((level) => h('span', { class: 'legend-item' },
      h('i', { style: `background:${COLOURS[level]}` }), label('level', level))));
}

function drawTable(ctx, host, children) {
  const cols = columns();
  const col = cols.find((c) => c.key === sortState.key) || cols[1];
  const rows = [...children].sort((a, b) => {
    const va = col.value(a);
    const vb = col.value(b);
    const cmp = col.text ? String(va).localeCompare(String(vb), 'zh') : va - vb;
    return (sortState.desc ? -cmp : cmp) || a.region.code.localeCompare(b.region.code);
  });
  const head = h('tr', {}, cols.map((c) => h('th', {
    dataset: { col: c.key },
    class: c.key === sortState.key ? (sortState.desc ? 'sorted desc' : 'sorted asc') : '',
    'aria-sort': c.key === sortState.key ? (sortState.desc ? 'descending' : 'ascending') : 'none',
    onclick: () => {
      sortState = { key: c.key, desc: c.key === sortState.key ? !sortState.desc : !c.text };
      drawTable(ctx, host, children);
    },
  }, c.head)));
  const body = rows.map((f) => h('tr', { dataset: { code: f.region.code }, onclick: () => ctx.go(`#/region/${f.region.code}`) },
    cols.map((c) => {
      const value = c.value(f);
      const cell = c.key === 'name'
        ? h('a', { href: `#/region/${f.region.code}` }, f.region.name)
        : c.show ? c.show(f) : String(value);
      return h('td', {
        dataset: { col: c.key },
        class: [c.text ? '' : 'num', c.warn && value > 0 ? 'warn' : '', c.level && value > 0 ? `sev-text-${c.level}` : ''].join(' ').trim(),
      }, cell);
    })));
  replace(host, h('div', { class: 'scroll' }, h('table', { id: 'children', class: 'grid' }, h('thead', {}, head), h('tbody', {}, body))));
}

/** A point's tooltip (ECharts reads it as HTML: the region's name is escaped). */
function pointTooltip(p) {
  const name = window.echarts.format.encodeHTML(p.name);
  return `${name}<br>${label('level', p.data.severity)} · ${t('openAlerts')} ${p.value[2]}`;
}

/** The villages of `townships` that have coordinates, with their figures. */
async function villagesOf(townships) {
  try {
    const summaries = await Promise.all(townships.map((f) => api.get(`/api/regions/${f.region.code}/summary`)));
    return summaries.flatMap((s) => s.children)
      .filter((f) => Number.isFinite(f.region.longitude) && Number.isFinite(f.region.latitude));
  } catch {
    return [];
  }
}

let boundaries; // undefined: not asked yet; null: none configured

async function loadBoundaries() {
  if (boundaries !== undefined) return boundaries;
  try {
    const response = await fetch('/web/boundaries.geojson', { cache: 'no-store' });
    const geojson = response.ok ? await response.json() : null;
    boundaries = geojson?.features?.length ? geojson : null;
    if (boundaries) window.echarts.registerMap('yujing-boundaries', boundaries);
  } catch {
    boundaries = null;
  }
  return boundaries;
}

async function drawMap(ctx, el, children) {
  const placed = children.filter((f) => Number.isFinite(f.region.longitude) && Number.isFinite(f.region.latitude));
  const missing = children.filter((f) => !placed.includes(f));
  if (missing.length) {
    el.after(h('p', { class: 'muted small', id: 'unplaced' }, t('coordinatesMissing'), ' ', missing.map((f) => f.region.name).join('、')));
  }
  const geo = await loadBoundaries();
  if (!el.isConnected) return;
  const points = placed.map((f) => {
    const level = severity(f);
    return {
      name: f.region.name,
      code: f.region.code,
      severity: level,
      value: [f.region.longitude, f.region.latitude, f.alerts.total],
      itemStyle: { color: COLOURS[level], borderColor: '#fff', borderWidth: 1 },
    };
  });
  const max = Math.max(1, ...points.map((p) => p.value[2]));
  const series = {
    id: 'regions',
    type: 'scatter',
    data: points,
    symbolSize: (value) => 12 + 22 * Math.sqrt(value[2] / max),
    label: { show: true, formatter: '{b}', position: 'right', fontSize: 11, color: '#333' },
    emphasis: { scale: 1.3 },
    tooltip: {
      formatter: pointTooltip,
    },
  };
  const option = { animation: false, tooltip: { trigger: 'item' }, series: [series] };
  // Below a county the townships' villages are drawn too, small, for the shape of it.
  const grandchildren = children.every((f) => f.region.level === 'township') ? await villagesOf(children) : [];
  if (!el.isConnected) return;
  if (grandchildren.length) {
    series.z = 3;
    option.series.unshift({
      id: 'villages',
      type: 'scatter',
      data: grandchildren.map((f) => ({
        name: f.region.name, code: f.region.code, severity: severity(f),
        value: [f.region.longitude, f.region.latitude, f.alerts.total],
        itemStyle: { color: COLOURS[severity(f)], opacity: 0.55 },
      })),
      symbolSize: 7,
      z: 2,
      tooltip: { formatter: pointTooltip },
    });
  }
  if (geo) {
    for (const s of option.series) s.coordinateSystem = 'geo';
    option.geo = { map: 'yujing-boundaries', roam: true, itemStyle: { areaColor: '#f4f6f8', borderColor: '#8a99a8' }, emphasis: { disabled: true } };
    series.coordinateSystem = 'geo';
  } else {
    // A margin around the points, so the outermost ones and their labels show whole.
    const pad = (v) => Math.max((v.max - v.min) * 0.12, 0.01);
    const axis = { type: 'value', show: false, min: (v) => v.min - pad(v), max: (v) => v.max + pad(v) };
    option.grid = { left: 16, right: 56, top: 20, bottom: 20 };
    option.xAxis = axis;
    option.yAxis = { ...axis };
  }
  disposeCharts();
  const instance = chart(el);
  instance.setOption(option);
  instance.on('click', (p) => { if (p.data?.code) ctx.go(`#/region/${p.data.code}`); });
}
