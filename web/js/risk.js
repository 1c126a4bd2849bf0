// Risk over time: a region's daily count series for one risk kind, with a detector's
// expected value and upper bound, its alarm days marked, and the signals raised on
// the region for that kind with their reasons.

import * as api from './api.js';
import { h, replace, addDays, dateTime, chart } from './dom.js';
import { t, label, values } from './i18n.js';
import { badge } from './overview.js';

const DEFAULT_DAYS = 120;

/** The kinds the account may chart (a department: its feed's). */
function kinds(ctx) {
  const all = values('riskKind');
  if (ctx.me.role !== 'department') return all;
  const byFeed = {
    civil_affairs: ['low_income'], medical_insurance: ['illness'], health: ['illness'],
    disabled_persons_federation: ['disability'], human_resources: ['unemployment'],
    emergency_management: ['disaster'], water: ['disaster'], agriculture: ['industry_failure'],
    education: ['dropout'], housing: ['housing'],
  };
  return byFeed[ctx.me.source] || [];
}

export async function render(ctx, code, query) {
  const seq = ctx.current();
  const allowed = kinds(ctx);
  const kind = allowed.includes(query.get('kind')) ? query.get('kind') : allowed[0];
  if (!kind) {
    replace(ctx.main, h('p', { class: 'muted' }, t('forbidden')));
    return null;
  }
  let to = query.get('to');
  let from = query.get('from');
  if (!to) {
    // Open on the region's counted days (the last DEFAULT_DAYS of them), not on today.
    const summary = await api.get(`/api/regions/${code}/summary`);
    const counted = summary.counted_days;
    to = counted?.last || null;
    if (!from && counted) {
      const earliest = addDays(counted.last, 1 - DEFAULT_DAYS);
      from = counted.first > earliest ? addDays(counted.first, -7) : earliest;
    }
  }
  const params = { kind, to, from: from || (to ? addDays(to, 1 - DEFAULT_DAYS) : null) };
  const [series, signals] = await Promise.all([
    api.get(`/api/regions/${code}/series`, params),
    api.all('/api/signals', { region: code, kind }, 500),
  ]);
  if (seq !== ctx.current()) return null;
  from = series.from;
  to = series.to;
  const methods = [...new Set(series.days.flatMap((d) => d.judgements.map((j) => j.method)))];
  const method = methods.includes(query.get('method')) ? query.get('method') : methods.includes('ears_c2') ? 'ears_c2' : methods[0];
  const ownSignals = signals.filter((s) => s.region_code === code);

  const link = (changes) => {
    const next = new URLSearchParams({ kind, method: method || '', from, to, ...changes });
    return `#/risk/${code}?${next}`;
  };
  const kindSelect = h('select', { id: 'kind', onchange: (e) => ctx.go(link({ kind: e.target.value })) },
    allowed.map((k) => h('option', { value: k, selected: k === kind }, label('riskKind', k))));
  const methodSelect = h('select', { id: 'method', onchange: (e) => ctx.go(link({ method: e.target.value })) },
    methods.map((m) => h('option', { value: m, selected: m === method }, label('method', m))));
  const fromInput = h('input', { type: 'date', id: 'from', value: from, onchange: (e) => ctx.go(link({ from: e.target.value })) });
  const toInput = h('input', { type: 'date', id: 'to', value: to, onchange: (e) => ctx.go(link({ to: e.target.value })) });
  const chartEl = h('div', { id: 'risk-chart', class: 'chart series' });
  const path = ctx.path(code);
  replace(ctx.main, h('section', { id: 'risk', dataset: { code, kind, method: method || '' } },
    h('div', { class: 'crumbs' }, path.map((r, i) => [i ? h('span', { class: 'sep' }, '›') : null,
      h('a', { href: `#/risk/${r.code}?kind=${kind}`, dataset: { code: r.code } }, r.name)])),
    h('h2', {}, `${ctx.regionName(code)} · ${t('risk')}`),
    h('div', { class: 'controls' },
      h('label', {}, t('kind'), ' ', kindSelect),
      h('label', {}, t('method'), ' ', methodSelect),
      h('label', {}, t('from'), ' ', fromInput),
      h('label', {}, t('to'), ' ', toInput),
      h('a', { class: 'button', href: `#/region/${code}` }, t('overview'))),
    h('section', { class: 'card' }, chartEl),
    h('section', { class: 'card' }, h('h3', {}, t('signals')), signalTable(ownSignals))));
  drawChart(chartEl, series, method, ownSignals);
  return null;
}

function signalTable(signals) {
  if (!signals.length) return h('p', { class: 'muted', id: 'no-signals' }, t('noSignals'));
  return h('div', { class: 'scroll' }, h('table', { class: 'grid', id: 'signals' },
    h('thead', {}, h('tr', {}, [t('day'), t('severity'), t('status'), t('method'), t('observed'), t('expected'), t('upperBound'), t('households'), t('reason')].map((x) => h('th', {}, x)))),
    h('tbody', {}, signals.map((s) => h('tr', { dataset: { signal: s.signal_id, day: s.day } },
      h('td', {}, s.onset_day === s.day ? s.day : `${s.onset_day} – ${s.day}`),
      h('td', {}, badge(s.severity)),
      h('td', {}, label('signalStatus', s.status)),
      h('td', {}, s.methods.map((m) => label('method', m)).join(', ')),
      h('td', { class: 'num' }, fmt(s.observed)),
      h('td', { class: 'num' }, fmt(s.expected)),
      h('td', { class: 'num' }, fmt(s.upper_bound)),
      h('td', { class: 'num' }, s.households_affected),
      h('td', { class: 'reason' }, s.reason, h('div', { class: 'muted small' }, dateTime(s.raised_at))))))));
}

function fmt(value) {
  return value === null || value === undefined ? '—' : Number(value).toFixed(value % 1 ? 2 : 0);
}

function drawChart(el, series, method, signals) {
  const days = series.days.map((d) => d.day);
  const judged = series.days.map((d) => d.judgements.find((j) => j.method === method) || null);
  const counts = series.days.map((d) => d.count);
  const expected = judged.map((j) => (j && j.expected !== null ? Number(j.expected.toFixed(3)) : null));
  const upper = judged.map((j) => (j && j.upper_bound !== null ? Number(j.upper_bound.toFixed(3)) : null));
  const alarms = series.days.map((d, i) => (judged[i]?.alarm ? [d.day, d.count] : null)).filter(Boolean);
  const signalDays = new Set(signals.map((s) => s.day));
  const option = {
    animation: false,
    tooltip: { trigger: 'axis' },
    legend: { top: 0 },
    grid: { left: 40, right: 20, top: 36, bottom: 60 },
    xAxis: { type: 'category', data: days },
    yAxis: { type: 'value', minInterval: 1 },
    dataZoom: [{ type: 'inside' }, { type: 'slider', height: 18, bottom: 8 }],
    series: [
      { id: 'count', name: t('count'), type: 'bar', data: counts, itemStyle: { color: '#5b8def' },
        markLine: signalDays.size ? { symbol: 'none', silent: true, lineStyle: { color: '#c62828', type: 'dotted' }, label: { show: false },
          data: [...signalDays].filter((d) => days.includes(d)).map((d) => ({ xAxis: d })) } : undefined },
      { id: 'expected', name: t('expected'), type: 'line', data: expected, showSymbol: false, connectNulls: false, lineStyle: { type: 'dashed', color: '#2e7d32' }, itemStyle: { color: '#2e7d32' } },
      { id: 'upper', name: t('upperBound'), type: 'line', data: upper, showSymbol: false, connectNulls: false, lineStyle: { color: '#ef6c00' }, itemStyle: { color: '#ef6c00' } },
      { id: 'alarms', name: t('alarm'), type: 'scatter', data: alarms, symbol: 'triangle', symbolSize: 12, itemStyle: { color: '#c62828' }, z: 5 },
    ],
  };
  chart(el).setOption(option);
}
