// The work list and a task: the region's tasks by stage with the days left on each
// (overdue first, in the warning colour); a task opens its household (status, masked
// members, alerts with the rules that fired and their evidence) and the form for the
// caller's next step, which the server offers in the task's `next_moves`.

import * as api from './api.js';
import { h, replace, dateTime, todayCst, addDays } from './dom.js';
import { t, label, values } from './i18n.js';
import { badge } from './overview.js';

const OPEN_STAGES = ['pending', 'visiting', 'township_review', 'county_decision'];
const FULL_RELOAD_MS = 30000;

/** "3 days left", "due today" or "2 days overdue". */
function daysLeft(task) {
  const n = task.days_left;
  if (n === null || n === undefined) return '';
  if (task.overdue || n < 0) return t('overdueN', { n: Math.max(1, -n) });
  if (n === 0) return t('lastDay');
  return t('daysLeftN', { n });
}

/** Overdue first, then the least time left, then the newest. */
const LEVEL_RANK = { red: 4, orange: 3, yellow: 2, blue: 1 };

// Overdue first, then the fewest days left, then the highest level, then the newest.
function byUrgency(a, b) {
  const oa = a.overdue || (a.days_left ?? 0) < 0 ? 0 : 1;
  const ob = b.overdue || (b.days_left ?? 0) < 0 ? 0 : 1;
  return oa - ob || (a.days_left ?? 1e9) - (b.days_left ?? 1e9)
    || (LEVEL_RANK[b.level] ?? 0) - (LEVEL_RANK[a.level] ?? 0)
    || b.created_at.localeCompare(a.created_at);
}

export async function list(ctx, code, query) {
  const seq = ctx.current();
  const stage = query.get('stage') || 'open';
  const load = () => api.all('/api/tasks', {
    region: code,
    stage: ['open', 'overdue'].includes(stage) ? null : stage,
    overdue: stage === 'overdue' ? true : null,
  }, 5000);
  // The region's task figures tell cheaply whether the list changed; the whole list
  // is read again when they do, and at least every FULL_RELOAD_MS for the rest.
  const figures = async () => JSON.stringify((await api.get(`/api/regions/${code}/summary`)).region.tasks);
  let [tasks, seen] = await Promise.all([load(), figures()]);
  let loadedAt = Date.now();
  if (seq !== ctx.current()) return null;
  const draw = () => {
    const shown = (['open', 'overdue'].includes(stage) ? tasks.filter((x) => x.stage !== 'closed') : tasks).sort(byUrgency);
    const counts = Object.fromEntries(OPEN_STAGES.map((s) => [s, tasks.filter((x) => x.stage === s).length]));
    const tabs = h('div', { class: 'tabs', id: 'stages' },
      [['open', t('allOpen')], ['overdue', t('overdue')], ...OPEN_STAGES.map((s) => [s, label('stage', s)]), ['closed', label('stage', 'closed')]].map(([key, name]) =>
        h('a', { href: `#/tasks/${code}?stage=${key}`, class: key === stage ? 'active' : '', dataset: { stage: key } },
          name, stage === 'open' && counts[key] !== undefined ? h('span', { class: 'count' }, counts[key]) : null)));
    replace(ctx.main, h('section', { id: 'work', dataset: { code } },
      h('h2', {}, `${ctx.regionName(code)} · ${t('work')}`),
      tabs,
      shown.length ? h('ul', { class: 'tasks', id: 'task-list' }, shown.map((task) => taskCard(ctx, task)))
        : h('p', { class: 'muted', id: 'no-tasks' }, t('noTasks'))));
  };
  draw();
  return {
    refresh: async () => {
      const now = await figures();
      if (now === seen && Date.now() - loadedAt < FULL_RELOAD_MS) return;
      const next = await load();
      seen = now;
      loadedAt = Date.now();
      if (seq !== ctx.current()) return;
      if (JSON.stringify(next.map(fingerprint)) !== JSON.stringify(tasks.map(fingerprint))) {
        tasks = next;
        draw();
      }
    },
  };
}

function fingerprint(task) {
  return [task.task_id, task.version, task.stage, task.days_left];
}

function taskCard(ctx, task) {
  const late = task.overdue || (task.days_left ?? 0) < 0;
  return h('li', { class: `task ${late ? 'late' : ''}`, dataset: { task: task.task_id, stage: task.stage, household: task.household_id || '' } },
    h('a', { href: `#/task/${task.task_id}` },
      h('div', { class: 'line' },
        badge(task.level),
        h('strong', {}, task.household_id || label('taskKind', task.kind)),
        h('span', { class: `days ${late ? 'warn' : ''}`, dataset: { daysLeft: task.days_left ?? '' } }, daysLeft(task))),
      h('div', { class: 'line muted small' },
        h('span', {}, label('taskKind', task.kind)),
        h('span', { class: 'stage' }, label('stage', task.stage)),
        h('span', {}, ctx.regionName(task.village_code)),
        task.assignee ? h('span', {}, `${t('assignee')}: ${task.assignee}`) : null)));
}

/** A household's card: status and masked members. */
function householdCard(hh) {
  return h('section', { class: 'card', id: 'household', dataset: { household: hh.household_id, status: hh.status } },
    h('h3', {}, `${t('household')} ${hh.household_id}`),
    h('dl', { class: 'facts' },
      h('dt', {}, t('status')), h('dd', { id: 'household-status' }, label('householdStatus', hh.status)),
      hh.monitoring_type ? [h('dt', {}, t('monitoringType')), h('dd', {}, label('monitoringType', hh.monitoring_type))] : null,
      hh.identified_on ? [h('dt', {}, t('identifiedOn')), h('dd', {}, hh.identified_on)] : null,
      h('dt', {}, t('annualIncome')), h('dd', {}, Math.round(hh.annual_net_income_yuan)),
      h('dt', {}, t('members')), h('dd', {}, `${hh.member_count} (${t('labour')} ${hh.labour_capable})`)),
    h('table', { class: 'grid compact', id: 'members' },
      h('thead', {}, h('tr', {}, h('th', {}, t('person')), h('th', {}, t('relation')), h('th', {}, t('labour')))),
      h('tbody', {}, hh.members.map((m) => h('tr', {},
        h('td', { class: 'mono' }, m.person_masked), h('td', {}, label('relation', m.relation)), h('td', {}, m.labour_capable ? t('yes') : t('no')))))));
}

/** An alert with its rules and evidence events. */
function alertCard(detail) {
  const a = detail.alert;
  return h('article', { class: 'alert', dataset: { alert: a.alert_id, level: a.level } },
    h('div', { class: 'line' }, badge(a.level), h('strong', {}, label('action', a.action)),
      h('span', { class: 'muted small' }, a.risk_types.map((r) => label('riskType', r)).join('、')),
      h('span', { class: 'muted small' }, `${label('alertStatus', a.status)} · ${dateTime(a.opened_at)}`)),
    h('h4', {}, t('rules')),
    h('ul', { class: 'rules' }, a.rules.map((r) => h('li', { dataset: { rule: r.rule_id } },
      h('code', {}, r.rule_id), ' ', badge(r.level), ' ', r.reason))),
    h('h4', {}, t('evidence')),
    h('div', { class: 'scroll' }, h('table', { class: 'grid compact evidence' },
      h('thead', {}, h('tr', {}, [t('occurredAt'), t('source'), t('kind'), t('person')].map((x) => h('th', {}, x)))),
      h('tbody', {}, detail.evidence.map((e) => h('tr', { dataset: { event: e.event_id } },
        h('td', {}, dateTime(e.occurred_at)), h('td', {}, e.source), h('td', {}, e.kind), h('td', { class: 'mono' }, e.person_masked || '—')))))));
}

async function alertsOf(household, only) {
  const wanted = household.alerts.filter((a) => (only ? a.alert_id === only : a.status === 'open'));
  return Promise.all(wanted.map((a) => api.get(`/api/alerts/${a.alert_id}`)));
}

export async function household(ctx, id) {
  const seq = ctx.current();
  const hh = await api.get(`/api/households/${encodeURIComponent(id)}`);
  const alerts = await alertsOf(hh);
  if (seq !== ctx.current()) return null;
  replace(ctx.main, h('div', { class: 'task-page' },
    householdCard(hh),
    h('section', { class: 'card' }, h('h3', {}, t('alerts')), alerts.length ? alerts.map(alertCard) : h('p', { class: 'muted' }, '—')),
    h('section', { class: 'card' }, h('h3', {}, t('tasks')),
      h('ul', { class: 'tasks' }, hh.tasks.map((task) => taskCard(ctx, task))))));
  return null;
}

export async function task(ctx, id) {
  const seq = ctx.current();
  const detail = await api.get(`/api/tasks/${encodeURIComponent(id)}`);
  const tk = detail.task;
  const hh = tk.household_id ? await api.get(`/api/households/${encodeURIComponent(tk.household_id)}`) : null;
  const alerts = hh ? await alertsOf(hh, tk.alert_id) : [];
  if (seq !== ctx.current()) return null;
  const late = tk.overdue || (tk.days_left ?? 0) < 0;
  const status = h('div', { id: 'form-status', role: 'status' });
  replace(ctx.main, h('div', { class: 'task-page', id: 'task', dataset: { task: tk.task_id, stage: tk.stage, version: tk.version } },
    h('a', { href: `#/tasks/${tk.village_code}`, class: 'up' }, `← ${t('work')}`),
    h('section', { class: 'card' },
      h('h2', {}, `${t('task')} · ${label('taskKind', tk.kind)}`, ' ', badge(tk.level)),
      h('dl', { class: 'facts' },
        h('dt', {}, t('stage')), h('dd', { id: 'task-stage' }, label('stage', tk.stage)),
        h('dt', {}, t('daysLeft')), h('dd', { class: late ? 'warn' : '' }, daysLeft(tk) || '—'),
        h('dt', {}, t('due')), h('dd', {}, dateTime(tk.due_at)),
        h('dt', {}, t('region')), h('dd', {}, ctx.regionName(tk.village_code)),
        tk.assignee ? [h('dt', {}, t('assignee')), h('dd', {}, tk.assignee)] : null,
        tk.proposal ? [h('dt', {}, t('outcome')), h('dd', {}, label('outcome', tk.proposal.outcome),
          tk.proposal.monitoring_type ? ` · ${label('monitoringType', tk.proposal.monitoring_type)}` : '')] : null,
        tk.decision ? [h('dt', {}, t('decision')), h('dd', {}, label('decision', tk.decision))] : null,
        tk.outcome_note ? [h('dt', {}, t('note')), h('dd', {}, tk.outcome_note)] : null)),
    h('section', { class: 'card', id: 'next-step' }, h('h3', {}, t('nextStep')), status,
      tk.next_moves.length ? tk.next_moves.map((move) => moveForm(ctx, tk, move, status)) : h('p', { class: 'muted', id: 'no-move' }, t('noMove'))),
    hh ? householdCard(hh) : null,
    alerts.length ? h('section', { class: 'card' }, h('h3', {}, t('alerts')), alerts.map(alertCard)) : null,
    h('section', { class: 'card' }, h('h3', {}, t('history')), h('ol', { class: 'history', id: 'history' },
      detail.history.map((row) => h('li', {}, h('span', { class: 'muted small' }, dateTime(row.at)), ' ',
        `${row.actor} (${label('role', row.actor_role)}): ${row.action}`, row.to_state ? ` → ${label('stage', row.to_state)}` : '',
        row.detail ? h('div', { class: 'muted small' }, row.detail) : null))))));
  return {
    // A task changed by someone else is not redrawn under the user's hands: say so.
    refresh: async () => {
      const next = await api.get(`/api/tasks/${encodeURIComponent(id)}`);
      if (seq !== ctx.current() || next.task.version === tk.version) return;
      replace(status, h('p', { class: 'problem', id: 'stale' }, t('changed'), ' ',
        h('button', { type: 'button', onclick: () => ctx.go(`#/task/${id}`) }, t('reload'))));
    },
  };
}

function field(name, text, input) {
  input.name = name;
  input.id = `f-${name}`;
  return h('label', { class: 'field', for: input.id }, h('span', {}, text), input);
}

function note(name = 'note', text = t('note')) {
  return field(name, text, h('textarea', { rows: 2, maxlength: 2000 }));
}

function outcomesFor(kind) {
  return {
    identify: ['identify', 'not_eligible', 'already_monitored', 'no_risk_found'],
    review_assistance: ['assistance_adjusted', 'no_risk_found'],
    recheck: ['risk_rollback', 'no_risk_found'],
    campaign: ['no_risk_found'],
  }[kind] || [];
}

/** The form of one move, posting `{action, version, ...}` to the task's transitions. */
function moveForm(ctx, tk, move, status) {
  const today = todayCst();
  const yesterday = addDays(today, -1);
  let inputs = [];
  if (move === 'record_visit') {
    inputs = [
      field('visited_on', t('visitedOn'), h('input', { type: 'date', value: today, max: today, required: true })),
      field('per_capita_income_yuan', t('perCapita'), h('input', { type: 'number', min: 0, step: 1, required: true, inputmode: 'numeric' })),
      h('fieldset', { class: 'checks' }, h('legend', {}, t('riskTypes')),
        values('riskType').map((r) => h('label', {}, h('input', { type: 'checkbox', name: 'risk_types', value: r }), label('riskType', r)))),
      note(),
    ];
  } else if (move === 'propose') {
    const outcome = h('select', { required: true }, outcomesFor(tk.kind).map((o) => h('option', { value: o }, label('outcome', o))));
    const typeField = field('monitoring_type', t('monitoringType'), h('select', {}, values('monitoringType').map((m) => h('option', { value: m }, label('monitoringType', m)))));
    const publicity = h('div', { class: 'publicity' },
      field('deliberated_on', t('deliberatedOn'), h('input', { type: 'date', value: addDays(today, -8), max: yesterday })),
      field('publicity_from', t('publicityFrom'), h('input', { type: 'date', value: addDays(today, -7), max: yesterday })),
      field('publicity_to', t('publicityTo'), h('input', { type: 'date', value: yesterday, max: yesterday })));
    const sync = () => {
      typeField.hidden = outcome.value !== 'identify';
      publicity.hidden = !['identify', 'risk_rollback'].includes(outcome.value);
    };
    outcome.addEventListener('change', sync);
    inputs = [field('outcome', t('outcome'), outcome), typeField, publicity, note()];
    sync();
  } else if (move === 'approve') {
    inputs = [note()];
  } else if (move === 'return') {
    inputs = [note('reason', t('returnReason'))];
    inputs[0].querySelector('textarea').required = true;
  } else if (move === 'decide') {
    inputs = [
      h('fieldset', { class: 'checks' }, h('legend', {}, t('decision')),
        ['approved', 'rejected'].map((d, i) => h('label', {}, h('input', { type: 'radio', name: 'decision', value: d, checked: i === 0 }), label('decision', d)))),
      note(),
    ];
  }
  const form = h('form', { class: `move move-${move}`, id: `move-${move}`, dataset: { move } },
    h('h4', {}, t(move)), inputs,
    h('button', { type: 'submit', class: move === 'return' ? 'secondary' : 'primary' }, t(move)));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const body = { action: move, version: tk.version, ...formBody(form, move) };
    for (const b of document.querySelectorAll('#next-step button')) b.disabled = true;
    try {
      await api.post(`/api/tasks/${encodeURIComponent(tk.task_id)}/transitions`, body);
      ctx.go(`#/task/${tk.task_id}`);
    } catch (error) {
      for (const b of document.querySelectorAll('#next-step button')) b.disabled = false;
      const fields = error.problem?.errors || [];
      replace(status, h('div', { class: 'problem', id: 'move-problem', role: 'alert' },
        error.status === 409 ? t('changed') : error.message,
        fields.length ? h('ul', {}, fields.map((f) => h('li', {}, `${f.field}: ${f.message}`))) : null));
    }
  });
  return form;
}

function formBody(form, move) {
  const data = new FormData(form);
  const text = (name) => {
    const v = data.get(name);
    return v === null || String(v).trim() === '' ? undefined : String(v).trim();
  };
  switch (move) {
    case 'record_visit':
      return {
        visited_on: text('visited_on'),
        per_capita_income_yuan: Number(text('per_capita_income_yuan') ?? NaN),
        risk_types: data.getAll('risk_types'),
        note: text('note'),
      };
    case 'propose': {
      const outcome = text('outcome');
      const body = { outcome, note: text('note') };
      if (outcome === 'identify') body.monitoring_type = text('monitoring_type');
      if (outcome === 'identify' || outcome === 'risk_rollback') {
        body.deliberated_on = text('deliberated_on');
        body.publicity_from = text('publicity_from');
        body.publicity_to = text('publicity_to');
      }
      return body;
    }
    case 'approve':
      return { note: text('note') };
    case 'return':
      return { reason: text('reason') || '' };
    case 'decide':
      return { decision: text('decision'), note: text('note') };
    default:
      return {};
  }
}
