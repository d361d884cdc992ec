// The console's shell: login, the header with its pages, the lost-connection banner, the
// theme, and the SQL page (catalog, editor, results). Pages live under `#/...`.
import 'uplot/dist/uPlot.min.css';
import './style.css';
import * as api from './api.js';
import { h, fill, when } from './dom.js';
import { Editor, queryHistory } from './editor.js';
import { Results } from './results.js';
import { CatalogTree, loadCatalog, completionSchema } from './catalog.js';
import { jobsPage, jobPage } from './jobs.js';
import { reflectionsPage } from './reflections.js';
import { nodesPage } from './nodes.js';
import { adminPage } from './admin.js';

const THEME = 'quarry-theme';
const PAGES = [['sql', 'SQL'], ['jobs', 'Jobs'], ['reflections', 'Reflections'], ['nodes', 'Nodes'], ['admin', 'Admin']];

const banner = h('div', { class: 'banner', role: 'alert', testid: 'banner', hidden: true }, 'Lost the connection to the Quarry server; trying again…');
const nav = h('nav', { class: 'pages' });
const who = h('span', { class: 'who' });
const header = h('header', {}, h('span', { class: 'brand' }, 'Quarry'), nav, who);
const main = h('main');
let catalog = { sources: [], schemas: [] };
let generation = 0;

function applyTheme(theme) {
  document.documentElement.dataset.theme = theme;
  localStorage.setItem(THEME, theme);
}
applyTheme(localStorage.getItem(THEME) || (matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light'));

api.on('connection', (ok) => { banner.hidden = ok; if (ok) refreshCatalog(); });
api.on('auth', () => showLogin());

// ---- the SQL page, built once and kept while other pages are shown ----
let sqlPage = null;

function buildSqlPage() {
  const results = new Results({ onError: () => {} });
  const context = h('select', { 'aria-label': 'Context schema', testid: 'context', title: 'Schema unqualified names resolve against',
    onchange: () => editor.setDefaultSchema(context.value) });
  const editor = new Editor({ onRun: () => run(false), onRunAll: () => run(true) });
  const historyList = h('div', { class: 'history', hidden: true, testid: 'history' });

  async function run(all) {
    editor.clearError();
    const list = all ? editor.all() : [editor.target()];
    for (const statement of list) {
      if (!statement.sql.trim()) continue;
      queryHistory.add(statement.sql);
      const use = /^\s*USE\s+("?)([\w$]+)\1\s*;?\s*$/i.exec(statement.sql);
      const job = await results.run(statement.sql, { context: context.value || undefined });
      if (!job) return; // another run took its place
      if (job.state !== 'COMPLETED') {
        const message = results.status.textContent;
        editor.markError(statement.from, api.position(message, statement.sql));
        return;
      }
      if (use) { setContext(use[2]); }
      if (/^\s*(CREATE|DROP|ALTER)\b/i.test(statement.sql)) refreshCatalog();
    }
  }

  function setContext(schema) {
    if (![...context.options].some((o) => o.value === schema)) context.append(h('option', { value: schema }, schema));
    context.value = schema;
    editor.setDefaultSchema(schema);
  }

  function showHistory() {
    historyList.hidden = !historyList.hidden;
    fill(historyList, queryHistory.list().map((e) => h('button', { class: 'history-entry', title: when(e.at),
      onclick: () => { editor.insert(e.sql); historyList.hidden = true; } }, e.sql.slice(0, 200))));
  }

  const tree = new CatalogTree({
    insert: (text) => editor.insert(text),
    preview: (sqlText) => results.run(sqlText),
    editorSql: () => editor.target().sql,
    changed: () => refreshCatalog(),
  });
  const toolbar = h('div', { class: 'toolbar' },
    h('button', { class: 'primary', testid: 'run', title: 'Run the statement under the cursor or the selection (Ctrl+Enter)', onclick: () => run(false) }, '▶ Run'),
    h('button', { testid: 'run-all', title: 'Run every statement (Ctrl+Shift+Enter)', onclick: () => run(true) }, 'Run all'),
    h('button', { testid: 'cancel', onclick: () => results.cancel() }, 'Cancel'),
    h('button', { testid: 'format', title: 'Format SQL (Shift+Alt+F)', onclick: () => editor.format() }, 'Format'),
    h('button', { testid: 'history-button', onclick: showHistory }, 'History'),
    h('label', {}, 'Context ', context));
  const element = h('div', { class: 'sql-page' }, tree.element,
    h('div', { class: 'work' }, editor.element, toolbar, historyList, results.element));
  return { element, editor, results, tree, context, run };
}

async function refreshCatalog() {
  if (!sqlPage) return;
  try {
    catalog = await loadCatalog();
  } catch { return; }
  sqlPage.tree.draw(catalog);
  const { context } = sqlPage;
  const chosen = context.value;
  fill(context, h('option', { value: '' }, '(none)'), catalog.schemas.map((s) => h('option', { value: s.name }, s.name)));
  context.value = chosen;
  sqlPage.editor.setCatalog(completionSchema(catalog), await functions());
}

let functionNames = null;
async function functions() {
  if (functionNames) return functionNames;
  try {
    const rows = await api.rows('SELECT DISTINCT routine_name FROM information_schema.routines ORDER BY routine_name');
    functionNames = rows.map((r) => r.routine_name).filter((n) => /^[a-z_][a-z0-9_]*$/.test(n));
  } catch {
    functionNames = [];
  }
  return functionNames;
}

// ---- pages ----
function route() {
  generation += 1;
  const mine = generation;
  const alive = () => mine === generation;
  const [page, arg] = location.hash.replace(/^#\/?/, '').split('/');
  const current = page || 'sql';
  nav.querySelectorAll('a').forEach((a) => a.classList.toggle('on', a.dataset.page === current));
  if (current === 'sql') {
    if (!sqlPage) { sqlPage = buildSqlPage(); refreshCatalog(); }
    fill(main, sqlPage.element);
    return;
  }
  const root = h('div', { class: 'page' });
  fill(main, root);
  if (current === 'jobs' && arg) {
    jobPage(root, decodeURIComponent(arg), alive, { openInEditor: (sqlText) => { location.hash = '#/sql'; setTimeout(() => sqlPage?.editor.setText(sqlText), 0); } });
  } else if (current === 'jobs') {
    jobsPage(root, alive);
  } else if (current === 'reflections') {
    reflectionsPage(root, alive, { datasets: () => catalog.schemas.flatMap((s) => s.datasets.map((d) => `${s.name}.${d.name}`)) });
  } else if (current === 'nodes') {
    nodesPage(root, alive);
  } else if (current === 'admin') {
    adminPage(root);
  } else {
    fill(root, h('p', {}, 'No such page.'));
  }
}

function drawHeader(admin) {
  fill(nav, PAGES.filter(([page]) => admin || page !== 'admin').map(([page, label]) => h('a', { href: `#/${page}`, 'data-page': page, testid: `nav-${page}` }, label)));
  const user = api.session.user;
  fill(who,
    h('button', { class: 'link', testid: 'theme', title: 'Light or dark', onclick: () => applyTheme(document.documentElement.dataset.theme === 'dark' ? 'light' : 'dark') }, '◐ Theme'),
    user ? h('span', { testid: 'user' }, user) : null,
    user ? h('button', { class: 'link', testid: 'logout', onclick: logout }, 'Log out') : null);
}

async function logout() {
  try { await api.json('/api/v1/logout', { method: 'POST' }); } catch { /* the token is gone either way */ }
  api.session.clear();
  sqlPage = null;
  catalog = { sources: [], schemas: [] };
  showLogin();
}

function showLogin(message) {
  sqlPage = null;
  const user = h('input', { testid: 'login-user', 'aria-label': 'User', autocomplete: 'username', placeholder: 'user' });
  const password = h('input', { testid: 'login-password', 'aria-label': 'Password', type: 'password', autocomplete: 'current-password', placeholder: 'password' });
  const error = h('div', { class: 'error', role: 'alert' }, message || '');
  fill(nav);
  fill(who);
  fill(main, h('form', { class: 'login', onsubmit: async (e) => {
    e.preventDefault();
    try {
      const answer = await api.json('/api/v1/login', { method: 'POST', body: { user: user.value, password: password.value } });
      api.session.set(answer.token, answer.user);
      start();
    } catch (err) {
      fill(error, h('span', { testid: 'error' }, err.message));
    }
  } }, h('h2', {}, 'Log in to Quarry'), user, password, h('button', { class: 'primary', testid: 'login-submit' }, 'Log in'), error));
  user.focus();
}

async function start() {
  try {
    await api.json('/api/v1/catalog');
  } catch (e) {
    if (e.status === 401) return; // the login form is shown
    fill(main, h('div', { class: 'error', testid: 'error' }, e.message));
    return;
  }
  // The admin page is offered to those the server lets list users.
  const me = api.session.user;
  const admin = await api.json('/api/v1/users').then(
    ({ users }) => !me || users.some((u) => u.name === me && u.admin), () => false);
  drawHeader(admin);
  route();
}

window.addEventListener('hashchange', () => { if (nav.childElementCount) route(); });
document.body.append(header, banner, main);
start();
