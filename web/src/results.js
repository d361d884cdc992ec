// Running a statement and showing its answer: progress while it runs, then the grid (or
// a chart) over its rows, the row count, the time it took, where a reflection served it
// how old its data is, and exports of the whole result.
import * as api from './api.js';
import { h, fill, count, duration, when, save, ident } from './dom.js';
import { Grid, PAGE } from './grid.js';
import { Chart } from './chart.js';

// Quick statements are seen ending at once; long ones are asked about every 150 ms.
const POLL_MS = [5, 10, 20, 40, 80, 150];
const ENDED = new Set(['COMPLETED', 'FAILED', 'CANCELED']);

/** `done / total` tasks as a bar, with an estimate of the time left from the rate so far. */
export function progressBar(job, startedAt) {
  const { tasksDone = 0, tasksTotal = 0 } = job.progress || {};
  const fraction = tasksTotal ? tasksDone / tasksTotal : 0;
  const elapsed = Date.now() - (job.startedMs || startedAt || job.submittedMs);
  // The rate so far, honestly: nothing is estimated before the first task ends.
  const eta = tasksDone > 0 && tasksDone < tasksTotal ? (elapsed / tasksDone) * (tasksTotal - tasksDone) : null;
  return h('div', { class: 'progress', testid: 'job-progress', 'data-done': tasksDone, 'data-total': tasksTotal },
    h('progress', { max: 1, value: fraction }),
    h('span', {}, `${job.state} · ${tasksDone}/${tasksTotal} tasks · ${count(job.rowCount)} rows · ${duration(elapsed)}`,
      eta === null ? '' : ` · about ${duration(eta)} left`));
}

export class Results {
  constructor({ onError, onJob }) {
    this.onError = onError;
    this.onJob = onJob;
    this.status = h('div', { class: 'status' });
    this.body = h('div', { class: 'results-body' });
    this.view = 'grid';
    this.element = h('section', { class: 'results', 'aria-label': 'Results' }, this.status, this.body);
    this.idle();
  }

  idle() {
    fill(this.status, h('span', { class: 'muted' }, 'Run a statement with Ctrl+Enter (the statement under the cursor, or the selection).'));
    fill(this.body);
  }

  /** Run `sql`; resolves to its job when it ends, or null when another run replaced it. */
  async run(sql, { context, sorted } = {}) {
    this.stop();
    const runId = Symbol('run');
    this.current = runId;
    this.sql = sql;
    this.context = context;
    this.started = performance.now();
    fill(this.status, h('span', {}, 'Submitting…'));
    fill(this.body);
    let id;
    try {
      id = await api.submit(sql, context);
    } catch (e) {
      if (this.current !== runId) return null;
      this.failed(e.message, e.code);
      return { state: 'FAILED', error: { code: e.code, message: e.message } };
    }
    this.jobId = id;
    this.submittedAt = performance.now();
    this.onJob?.(id);
    let job;
    for (let polls = 0; ; polls += 1) {
      if (this.current !== runId) return null;
      try {
        job = await api.job(id);
      } catch (e) {
        if (e.status === 0) { await new Promise((r) => setTimeout(r, 1000)); continue; }
        this.failed(e.message, e.code);
        return { state: 'FAILED', error: { code: e.code, message: e.message } };
      }
      if (ENDED.has(job.state)) break;
      this.running(job);
      await new Promise((r) => setTimeout(r, POLL_MS[Math.min(polls, POLL_MS.length - 1)]));
    }
    if (this.current !== runId) return null;
    document.body.dataset.phases = JSON.stringify({ submit: Math.round(this.submittedAt - this.started), ended: Math.round(performance.now() - this.started) });
    this.job = job;
    if (job.state === 'FAILED') {
      this.failed(job.error?.message || 'The job failed.', job.error?.code);
    } else if (job.state === 'CANCELED') {
      this.failed(job.error?.message || 'The job was cancelled.', 'CANCELLED');
    } else {
      await this.show(job, sorted);
    }
    return job;
  }

  running(job) {
    fill(this.status,
      progressBar(job),
      h('button', { class: 'link', onclick: () => { location.hash = `#/jobs/${job.id}`; } }, 'Job details'));
  }

  failed(message, code) {
    this.job = null;
    fill(this.status, h('div', { class: 'error', testid: 'error', role: 'alert' },
      h('strong', {}, code ? `${code}: ` : 'Error: '), message));
    fill(this.body);
    this.onError?.(message);
  }

  async show(job, sorted) {
    // The first page gives the columns and the rows first on screen.
    const first = await api.page(job.id, 0, PAGE).catch((e) => e);
    if (first instanceof Error) { this.failed(first.message, first.code); return; }
    const columns = first.schema.fields.map((f) => ({ name: f.name, type: f.type }));
    this.columns = columns;
    const elapsed = (job.finishedMs ?? Date.now()) - (job.startedMs ?? job.submittedMs);
    this.grid?.destroy();
    this.grid = new Grid({
      columns,
      rowCount: job.rowCount,
      sorted,
      fetchPage: (offset, limit, signal) => api.page(job.id, offset, limit, signal),
      firstPage: first,
      // Run → first rows drawn, as the page measures it (the benchmark reads it).
      onRowsShown: () => { document.body.dataset.firstRowsMs = String(Math.round(performance.now() - this.started)); },
      onSort: (name) => this.sortBy(name, sorted),
    });
    const asOf = job.dataAsOfMs ? h('span', { class: 'badge', testid: 'data-as-of', title: (job.reflections || []).join('\n') },
      `from a reflection · data as of ${when(job.dataAsOfMs)}`) : null;
    const format = h('select', { 'aria-label': 'Export format', testid: 'export-format' },
      ['csv', 'ndjson', 'arrow', 'parquet'].map((f) => h('option', { value: f }, f.toUpperCase())));
    const exportButton = h('button', { testid: 'export', onclick: () => this.export(format.value, exportButton) }, 'Export');
    const gotoRow = h('input', { type: 'number', min: 1, placeholder: 'Go to row', testid: 'goto-row', 'aria-label': 'Go to row',
      onkeydown: (e) => { if (e.key === 'Enter') this.grid.goto(Number(gotoRow.value) - 1); } });
    const tabs = h('span', { class: 'segmented' },
      h('button', { class: this.view === 'grid' ? 'on' : '', testid: 'show-grid', onclick: () => this.switchTo('grid') }, 'Grid'),
      h('button', { class: this.view === 'chart' ? 'on' : '', testid: 'show-chart', onclick: () => this.switchTo('chart') }, 'Chart'));
    fill(this.status,
      h('span', { testid: 'row-count', 'data-rows': job.rowCount }, `${count(job.rowCount)} rows`),
      h('span', { class: 'muted', testid: 'elapsed' }, ` in ${duration(elapsed)}`),
      asOf, tabs, gotoRow, format, exportButton,
      h('button', { class: 'link', onclick: () => { location.hash = `#/jobs/${job.id}`; } }, 'Job details'));
    this.switchTo(this.view);
  }

  switchTo(view) {
    this.view = view;
    this.status.querySelectorAll('.segmented button').forEach((b, i) => b.classList.toggle('on', (i === 0) === (view === 'grid')));
    if (!this.job) return;
    if (view === 'grid') {
      fill(this.body, this.grid.element);
      this.grid.layout();
    } else {
      this.chart = new Chart({ columns: this.columns, load: (limit) => api.page(this.job.id, 0, limit) });
      fill(this.body, this.chart.element);
    }
  }

  /** The same statement again, ordered by a column (the whole result, on the server). */
  sortBy(name, sorted) {
    const descending = sorted && sorted.column === name ? !sorted.descending : false;
    const inner = sorted?.base ?? this.sql.replace(/;\s*$/, '');
    this.run(`SELECT * FROM (${inner}) AS sorted ORDER BY ${ident(name)} ${descending ? 'DESC' : 'ASC'}`,
      { context: this.context, sorted: { column: name, descending, base: inner } });
  }

  async export(format, button) {
    if (!this.job) return;
    button.disabled = true;
    const label = button.textContent;
    button.textContent = 'Exporting…';
    try {
      const blob = await api.exported(this.job.id, format);
      save(blob, `quarry-${this.job.id}.${format === 'arrow' ? 'arrows' : format}`);
    } catch (e) {
      this.onError?.(e.message);
    } finally {
      button.disabled = false;
      button.textContent = label;
    }
  }

  /** Cancel the running job, if any. */
  async cancel() {
    if (this.jobId && !this.job) {
      try { await api.cancel(this.jobId); } catch { /* ended meanwhile */ }
    }
  }

  stop() {
    this.current = null;
    this.job = null;
    this.grid?.destroy();
    this.grid = null;
  }
}
