// Reflections: the list (status, type, dataset, last refresh, data as of, expiry, size,
// considered/matched/chosen), create and edit with the dataset's columns offered, refresh
// now, refresh history, and the recommendations with one-click create.
import * as api from './api.js';
import { h, fill, count, bytes, when, ident } from './dom.js';

const enc = encodeURIComponent;
const FUNCTIONS = ['SUM', 'COUNT', 'MIN', 'MAX', 'APPROX_COUNT_DISTINCT'];

/** A dataset's columns: `[{name, type}]` from an empty query over it. */
async function columnsOf(dataset) {
  const [schema, name] = dataset.split('.');
  const answer = await api.json('/api/v1/sql', { method: 'POST', body: { sql: `SELECT * FROM ${ident(schema)}.${ident(name)} LIMIT 0` } });
  return answer.columns;
}

export function reflectionsPage(root, alive, { datasets }) {
  const message = h('div', { role: 'status' });
  const list = h('tbody');
  const form = h('div', { class: 'reflection-form' });
  const history = h('div');
  const recommendations = h('div', { testid: 'recommendations' });
  fill(root,
    h('h2', {}, 'Reflections'),
    h('div', { class: 'toolbar' }, h('button', { testid: 'reflection-new', onclick: () => edit(null) }, 'New reflection'), message),
    form,
    h('table', { class: 'list', testid: 'reflections-list' },
      h('thead', {}, h('tr', {}, ['Name', 'Status', 'Type', 'Dataset', 'Last refresh', 'Data as of', 'Expires', 'Rows', 'Size', 'Considered', 'Matched', 'Chosen', ''].map((c) => h('th', {}, c)))),
      list),
    history,
    h('h3', {}, 'Recommended'), recommendations);

  const say = (text, error) => fill(message, h('span', { class: error ? 'error' : 'ok', testid: error ? 'error' : null }, text));

  async function refreshList() {
    try {
      const { reflections } = await api.json('/api/v1/reflections');
      fill(list, reflections.map((r) => h('tr', { 'data-reflection': r.name },
        h('td', {}, r.name), h('td', { title: r.reason || r.last_error || '' }, h('span', { class: `state ${String(r.status).toLowerCase()}` }, r.status)),
        h('td', {}, r.type), h('td', {}, r.dataset), h('td', {}, when(r.last_refresh)), h('td', {}, when(r.data_as_of)),
        h('td', {}, when(r.expires_at)), h('td', { class: 'num' }, count(r.rows)), h('td', { class: 'num' }, bytes(r.bytes)),
        h('td', { class: 'num' }, r.considered), h('td', { class: 'num' }, r.matched), h('td', { class: 'num' }, r.chosen),
        h('td', {},
          h('button', { class: 'link', testid: 'reflection-refresh', onclick: () => refreshNow(r.name) }, 'refresh'),
          h('button', { class: 'link', onclick: () => edit(r) }, 'edit'),
          h('button', { class: 'link', onclick: () => showHistory(r.name) }, 'history'),
          h('button', { class: 'link danger', onclick: () => drop(r.name) }, 'drop')))));
    } catch (e) { say(e.message, true); }
  }

  async function refreshNow(name) {
    try {
      const answer = await api.json(`/api/v1/reflections/${enc(name)}/refresh`, { method: 'POST' });
      say(answer.message || `Refreshing ${name}`);
      refreshList();
    } catch (e) { say(e.message, true); }
  }

  async function drop(name) {
    if (!confirm(`Drop reflection ${name}?`)) return;
    try { await api.json(`/api/v1/reflections/${enc(name)}`, { method: 'DELETE' }); refreshList(); } catch (e) { say(e.message, true); }
  }

  async function showHistory(name) {
    try {
      const { jobs } = await api.json('/api/v1/jobs?limit=1000');
      const refreshes = jobs.filter((j) => !j.frontend && j.sql.includes(name));
      fill(history, h('h3', {}, `Refreshes of ${name}`), h('table', { class: 'list' },
        h('thead', {}, h('tr', {}, ['Job', 'State', 'Finished', 'Rows', 'Error'].map((c) => h('th', {}, c)))),
        h('tbody', {}, refreshes.map((j) => h('tr', {}, h('td', {}, h('a', { href: `#/jobs/${j.id}` }, j.id.slice(0, 8))),
          h('td', {}, j.state), h('td', {}, when(j.finishedMs)), h('td', { class: 'num' }, count(j.rowCount)), h('td', {}, j.error?.message || ''))))));
    } catch (e) { say(e.message, true); }
  }

  async function edit(existing) {
    const names = datasets();
    const name = h('input', { placeholder: 'name', 'aria-label': 'Reflection name', testid: 'reflection-name', value: existing?.name || '', disabled: !!existing });
    const dataset = h('select', { 'aria-label': 'Dataset', testid: 'reflection-dataset', disabled: !!existing },
      h('option', { value: '' }, 'choose a dataset'), names.map((d) => h('option', { value: d, selected: existing?.dataset === d }, d)));
    const kind = h('select', { 'aria-label': 'Type', testid: 'reflection-type' },
      h('option', { value: 'aggregate', selected: existing?.type !== 'raw' }, 'aggregation'), h('option', { value: 'raw', selected: existing?.type === 'raw' }, 'raw'));
    const columns = h('tbody');
    const loadColumns = async () => {
      fill(columns);
      if (!dataset.value) return;
      try {
        const cols = await columnsOf(dataset.value);
        fill(columns, cols.map((c) => h('tr', { 'data-column': c.name },
          h('td', {}, c.name, h('span', { class: 'type' }, ` ${c.type}`)),
          h('td', {}, h('input', { type: 'checkbox', class: 'dim', 'aria-label': `${c.name} as dimension` })),
          h('td', {}, FUNCTIONS.map((f) => h('label', { class: 'fn' }, h('input', { type: 'checkbox', class: 'measure', value: f, 'aria-label': `${f}(${c.name})` }), f.toLowerCase().replace('approx_count_distinct', 'ndv')))),
          h('td', {}, h('input', { type: 'checkbox', class: 'display', 'aria-label': `${c.name} displayed` })),
          h('td', {}, h('input', { type: 'checkbox', class: 'partition', 'aria-label': `partition by ${c.name}` })))));
      } catch (e) { say(e.message, true); }
    };
    dataset.addEventListener('change', loadColumns);
    const submit = async (e) => {
      e.preventDefault();
      const rows = [...columns.querySelectorAll('tr')];
      const picked = (cls) => rows.filter((r) => r.querySelector(`.${cls}`).checked).map((r) => r.dataset.column);
      const measures = rows.map((r) => ({ column: r.dataset.column, functions: [...r.querySelectorAll('.measure:checked')].map((i) => i.value) }))
        .filter((m) => m.functions.length);
      const definition = {
        type: kind.value,
        dimensions: kind.value === 'aggregate' ? picked('dim').map((column) => ({ column })) : [],
        measures: kind.value === 'aggregate' ? measures : [],
        display: kind.value === 'raw' ? picked('display') : [],
        partitionBy: picked('partition'),
      };
      try {
        const answer = existing
          ? await api.json(`/api/v1/reflections/${enc(existing.name)}`, { method: 'PUT', body: { version: existing.version, ...definition } })
          : await api.json('/api/v1/reflections', { method: 'POST', body: { name: name.value, dataset: dataset.value, ...definition } });
        say(answer.message || 'Saved.');
        fill(form);
        refreshList();
      } catch (err) { say(err.message, true); }
    };
    fill(form, h('form', { onsubmit: submit, testid: 'reflection-form' },
      h('h3', {}, existing ? `Edit ${existing.name}` : 'New reflection'),
      h('div', { class: 'toolbar' }, name, dataset, kind),
      existing ? h('p', { class: 'muted' }, `Now: ${existing.definition}`) : null,
      h('table', { class: 'list' }, h('thead', {}, h('tr', {}, ['Column', 'Dimension', 'Measures', 'Display (raw)', 'Partition'].map((c) => h('th', {}, c)))), columns),
      h('button', { testid: 'reflection-save' }, existing ? 'Save (refreshes)' : 'Create'),
      h('button', { type: 'button', class: 'link', onclick: () => fill(form) }, 'Close')));
    if (existing) loadColumns();
  }

  async function recommend() {
    try {
      const rows = await api.rows('SELECT * FROM sys.recommend_reflections');
      fill(recommendations, rows.length ? h('table', { class: 'list' },
        h('thead', {}, h('tr', {}, ['Dataset', 'Reflection', 'Dimensions', 'Measures', 'Jobs', ''].map((c) => h('th', {}, c)))),
        h('tbody', {}, rows.map((r) => h('tr', {}, h('td', {}, r.dataset), h('td', {}, r.reflection), h('td', {}, r.dimensions),
          h('td', {}, r.measures), h('td', { class: 'num' }, r.jobs),
          h('td', {}, h('button', { testid: 'recommendation-create', onclick: async () => {
            try { await api.rows(r.ddl); say(`Created ${r.reflection}`); refreshList(); recommend(); } catch (e) { say(e.message, true); }
          } }, 'Create')))))) : h('p', { class: 'muted' }, 'No recommendations: no repeated aggregate query lacks a reflection.'));
    } catch (e) { fill(recommendations, h('p', { class: 'muted' }, e.message)); }
  }

  refreshList();
  recommend();
  const timer = setInterval(() => { if (alive()) refreshList(); else clearInterval(timer); }, 3000);
}
