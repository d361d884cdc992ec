// Jobs: the list (filter by state, user and text; refreshed every two seconds) and a job's
// page (SQL, state, timings, rows, error, live progress with an estimate of the time
// left, cancel, the plan, the stage DAG, the acceleration panel, the profile download).
import * as api from './api.js';
import { h, fill, count, duration, when, save } from './dom.js';
import { progressBar } from './results.js';
import { drawDag, summarize } from './dag.js';
import { profileHtml } from './profile.js';

const ENDED = new Set(['COMPLETED', 'FAILED', 'CANCELED']);
const STATES = ['', 'PLANNING', 'QUEUED', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELED'];

export function jobsPage(root, alive) {
  const state = h('select', { 'aria-label': 'State', testid: 'jobs-state', onchange: () => refresh() },
    STATES.map((s) => h('option', { value: s }, s || 'any state')));
  const user = h('input', { placeholder: 'user', 'aria-label': 'User', testid: 'jobs-user', oninput: () => draw() });
  const text = h('input', { placeholder: 'text in SQL or id', 'aria-label': 'Text', testid: 'jobs-text', oninput: () => draw() });
  const list = h('tbody');
  const table = h('table', { class: 'list', testid: 'jobs-list' },
    h('thead', {}, h('tr', {}, ['Job', 'State', 'User', 'Door', 'Submitted', 'Duration', 'Rows', 'SQL'].map((c) => h('th', {}, c)))), list);
  let jobs = [];
  fill(root, h('h2', {}, 'Jobs'), h('div', { class: 'toolbar' }, state, user, text), table);

  function draw() {
    const u = user.value.trim().toLowerCase();
    const t = text.value.trim().toLowerCase();
    const shown = jobs.filter((j) => (!u || j.user.toLowerCase().includes(u))
      && (!t || j.sql.toLowerCase().includes(t) || j.id.includes(t)));
    fill(list, shown.map((j) => h('tr', { 'data-job': j.id },
      h('td', {}, h('a', { href: `#/jobs/${j.id}` }, j.id.slice(0, 8))),
      h('td', {}, h('span', { class: `state ${j.state.toLowerCase()}` }, j.state)),
      h('td', {}, j.user), h('td', {}, j.frontend || 'engine'),
      h('td', {}, when(j.submittedMs)),
      h('td', {}, j.finishedMs && j.startedMs ? duration(j.finishedMs - j.startedMs) : ''),
      h('td', { class: 'num' }, count(j.rowCount)),
      h('td', { class: 'sql-cell', title: j.sql }, j.sql.slice(0, 160)))));
  }

  async function refresh() {
    const query = state.value ? `?limit=500&state=${state.value}` : '?limit=500';
    try {
      jobs = (await api.json(`/api/v1/jobs${query}`)).jobs;
      draw();
    } catch { /* the banner tells of lost connections */ }
  }

  refresh();
  const timer = setInterval(() => { if (alive()) refresh(); else clearInterval(timer); }, 2000);
}

export function jobPage(root, id, alive, { openInEditor }) {
  const head = h('div');
  const progress = h('div');
  const dag = h('div', { class: 'dag-wrap' });
  const stages = h('div');
  const accel = h('div', { testid: 'acceleration' });
  const plan = h('pre', { class: 'plan', testid: 'plan' });
  fill(root, head, progress, h('h3', {}, 'Stages'), dag, stages, h('h3', {}, 'Acceleration'), accel,
    h('h3', {}, 'Plan'), h('button', { testid: 'show-plan', onclick: () => explain() }, 'Show plan (EXPLAIN)'), plan);
  let job = null;

  async function explain() {
    fill(plan, 'Planning…');
    try {
      const answer = await api.json('/api/v1/sql', { method: 'POST', body: { sql: `EXPLAIN ${job.sql}` } });
      fill(plan, answer.rows.map((r) => `${r.plan_type}\n${r.plan}\n`).join('\n'));
    } catch (e) {
      fill(plan, h('span', { class: 'error' }, e.message));
    }
  }

  function draw() {
    const ended = ENDED.has(job.state);
    fill(head,
      h('h2', {}, `Job ${job.id}`),
      h('div', { class: 'toolbar' },
        h('span', { class: `state ${job.state.toLowerCase()}`, testid: 'job-state' }, job.state),
        ended ? null : h('button', { testid: 'cancel', onclick: async () => { await api.cancel(job.id).catch(() => {}); poll(); } }, 'Cancel'),
        h('button', { testid: 'download-profile', onclick: () => save(new Blob([profileHtml(job)], { type: 'text/html' }), `quarry-job-${job.id}.html`) }, 'Download profile'),
        h('button', { onclick: () => openInEditor(job.sql) }, 'Open in editor')),
      h('table', { class: 'facts' },
        h('tr', {}, h('th', {}, 'User'), h('td', {}, job.user), h('th', {}, 'Door'), h('td', {}, job.frontend || 'engine')),
        h('tr', {}, h('th', {}, 'Submitted'), h('td', {}, when(job.submittedMs)), h('th', {}, 'Started'), h('td', {}, when(job.startedMs))),
        h('tr', {}, h('th', {}, 'Finished'), h('td', {}, when(job.finishedMs)), h('th', {}, 'Elapsed'),
          h('td', {}, job.startedMs ? duration((job.finishedMs || Date.now()) - job.startedMs) : '')),
        h('tr', {}, h('th', {}, 'Rows'), h('td', { testid: 'job-rows' }, count(job.rowCount)), h('th', {}, 'Data as of'), h('td', {}, when(job.dataAsOfMs)))),
      job.error ? h('div', { class: 'error', testid: 'error' }, h('strong', {}, `${job.error.code}: `), job.error.message) : null,
      h('pre', { class: 'sql' }, job.sql));
    fill(progress, ended ? null : progressBar(job));
    const picture = drawDag(job.profile);
    fill(dag, picture || h('p', { class: 'muted', testid: 'job-dag', 'data-stages': 0 },
      ended ? 'This job ran no stages on executors (answered by the coordinator).' : 'Stages appear when the job ends.'));
    const summary = summarize(job.profile);
    fill(stages, summary.length ? h('table', { class: 'list' },
      h('thead', {}, h('tr', {}, ['Stage', 'Reads', 'Tasks', 'Rows', 'Bytes', 'Time', 'Skew', 'Spill', 'Retries', 'Executors'].map((c) => h('th', {}, c)))),
      h('tbody', {}, summary.map((s) => h('tr', { 'data-stage': s.id },
        h('td', {}, s.id), h('td', {}, s.inputs.join(', ')), h('td', { class: 'num' }, s.tasks), h('td', { class: 'num' }, count(s.rows)),
        h('td', { class: 'num' }, s.bytes ? `${(s.bytes / 1024).toFixed(0)} KiB` : '0'), h('td', { class: 'num' }, duration(s.time)),
        h('td', { class: 'num' }, `${s.skew.toFixed(2)}×`), h('td', { class: 'num' }, s.spilled),
        h('td', { title: s.failures.join('\n') }, s.retries), h('td', {}, s.executors.join(', ')))))) : null);
    const reflections = job.reflections || [];
    fill(accel, reflections.length
      ? h('ul', {}, reflections.map((r) => h('li', { class: /: chosen/.test(r) ? 'chosen' : '' }, r)))
      : h('p', { class: 'muted' }, 'No reflection was considered for this job.'));
  }

  async function poll() {
    try {
      job = await api.job(id);
    } catch (e) {
      fill(head, h('div', { class: 'error', testid: 'error' }, e.message));
      return;
    }
    draw();
  }

  (async () => {
    await poll();
    while (alive() && job && !ENDED.has(job.state)) {
      await new Promise((r) => setTimeout(r, 250));
      if (alive()) await poll();
    }
  })();
}
