// The SQL editor: CodeMirror 6 with SQL highlighting, completion of keywords, functions,
// schemas, tables and columns from the catalog (table aliases and the USE'd schema
// included), several tabs kept across reloads, query history and formatting.
import { EditorView, Decoration, keymap, lineNumbers, highlightActiveLine, drawSelection } from '@codemirror/view';
import { EditorState, Compartment, StateEffect, StateField } from '@codemirror/state';
import { defaultKeymap, history, historyKeymap, indentWithTab } from '@codemirror/commands';
import { autocompletion, completionKeymap, closeBrackets } from '@codemirror/autocomplete';
import { bracketMatching, syntaxHighlighting, defaultHighlightStyle } from '@codemirror/language';
import { searchKeymap } from '@codemirror/search';
import { sql, PostgreSQL, SQLDialect } from '@codemirror/lang-sql';
// One dialect only: the package's `format` brings all of them (over 200 KiB more).
import { formatDialect, postgresql } from 'sql-formatter';
import { h, fill } from './dom.js';

const TABS = 'quarry-tabs';
const HISTORY = 'quarry-history';
const FIRST_SQL = 'SELECT city, count(*) AS orders, sum(revenue) AS revenue\nFROM demo.orders\nGROUP BY city\nORDER BY revenue DESC';

// The error underline: a mark over the text the server's message points at.
const setError = StateEffect.define();
const errorField = StateField.define({
  create: () => Decoration.none,
  update(marks, tr) {
    marks = marks.map(tr.changes);
    for (const e of tr.effects) if (e.is(setError)) marks = e.value;
    return tr.docChanged ? Decoration.none : marks;
  },
  provide: (f) => EditorView.decorations.from(f),
});
const errorMark = Decoration.mark({ class: 'cm-sql-error' });

/** Split a script into statements with their offsets (semicolons outside quotes/comments). */
export function statements(text) {
  const out = [];
  let start = 0;
  let i = 0;
  const push = (end) => {
    const piece = text.slice(start, end);
    if (piece.trim()) out.push({ from: start, to: end, sql: piece.trim() });
  };
  while (i < text.length) {
    const c = text[i];
    if (c === "'" || c === '"') {
      const close = text.indexOf(c, i + 1);
      i = close < 0 ? text.length : close + 1;
    } else if (c === '-' && text[i + 1] === '-') {
      const nl = text.indexOf('\n', i);
      i = nl < 0 ? text.length : nl + 1;
    } else if (c === '/' && text[i + 1] === '*') {
      const close = text.indexOf('*/', i + 2);
      i = close < 0 ? text.length : close + 2;
    } else if (c === ';') {
      push(i);
      start = i + 1;
      i += 1;
    } else {
      i += 1;
    }
  }
  push(text.length);
  return out;
}

export class Editor {
  constructor({ onRun, onRunAll }) {
    this.onRun = onRun;
    this.onRunAll = onRunAll;
    this.language = new Compartment();
    const saved = JSON.parse(localStorage.getItem(TABS) || 'null');
    this.tabs = saved?.tabs?.length ? saved.tabs : [{ name: 'Query 1', sql: FIRST_SQL }];
    this.current = Math.min(saved?.current ?? 0, this.tabs.length - 1);
    this.config = { dialect: PostgreSQL, schema: {}, defaultSchema: undefined, functions: [] };
    this.tabBar = h('div', { class: 'tabs', role: 'tablist' });
    this.host = h('div', { class: 'editor', testid: 'editor' });
    this.view = new EditorView({ parent: this.host, state: this.stateFor(this.tabs[this.current].sql) });
    this.element = h('div', { class: 'editor-pane' }, this.tabBar, this.host);
    this.drawTabs();
  }

  stateFor(doc) {
    const run = (all) => () => { (all ? this.onRunAll : this.onRun)(); return true; };
    return EditorState.create({
      doc,
      extensions: [
        lineNumbers(), history(), drawSelection(), highlightActiveLine(), bracketMatching(),
        closeBrackets(), syntaxHighlighting(defaultHighlightStyle, { fallback: true }),
        this.language.of(this.languageSupport()),
        autocompletion({ activateOnTyping: true, maxRenderedOptions: 200 }),
        errorField,
        keymap.of([
          { key: 'Mod-Enter', run: run(false) },
          { key: 'Shift-Mod-Enter', run: run(true) },
          { key: 'Shift-Alt-f', run: () => { this.format(); return true; } },
          ...completionKeymap, ...defaultKeymap, ...historyKeymap, ...searchKeymap, indentWithTab,
        ]),
        EditorView.updateListener.of((u) => { if (u.docChanged) this.save(); }),
        EditorView.contentAttributes.of({ 'aria-label': 'SQL editor' }),
      ],
    });
  }

  languageSupport() {
    const { schema, defaultSchema, functions } = this.config;
    // Functions complete like keywords; DataFusion's are read from the catalog.
    const dialect = SQLDialect.define({
      ...PostgreSQL.spec,
      builtin: `${PostgreSQL.spec.builtin || ''} ${functions.join(' ')}`,
    });
    return sql({ dialect, schema, defaultSchema, upperCaseKeywords: true });
  }

  /** New catalog for completion: `{schema: {table: [columns]}}`, the USE'd schema, functions. */
  setCatalog(schema, functions) {
    this.config.schema = schema;
    this.config.functions = functions;
    this.reconfigure();
  }

  setDefaultSchema(name) {
    this.config.defaultSchema = name || undefined;
    this.reconfigure();
  }

  reconfigure() {
    this.view.dispatch({ effects: this.language.reconfigure(this.languageSupport()) });
  }

  get text() { return this.view.state.doc.toString(); }

  /** What Run runs: the selection, else the statement under the cursor; with its offset. */
  target() {
    const { from, to } = this.view.state.selection.main;
    if (from !== to) return { sql: this.view.state.sliceDoc(from, to), from };
    const all = statements(this.text);
    const here = all.find((s) => from >= s.from && from <= s.to + 1) || all[all.length - 1];
    if (!here) return { sql: '', from: 0 };
    const leading = this.text.slice(here.from).search(/\S/);
    return { sql: here.sql, from: here.from + Math.max(leading, 0) };
  }

  /** Every statement of the tab. */
  all() {
    return statements(this.text).map((s) => ({ sql: s.sql, from: s.from + Math.max(this.text.slice(s.from).search(/\S/), 0) }));
  }

  /** Underline where the server says an error is (1-based line and column of `sql` at `from`). */
  markError(from, position) {
    if (!position) return;
    const doc = this.view.state.doc;
    const startLine = doc.lineAt(Math.min(from, doc.length)).number;
    const lineNo = Math.min(startLine + position.line - 1, doc.lines);
    const line = doc.line(lineNo);
    const offset = position.line === 1 ? from - doc.line(startLine).from : 0;
    const at = Math.min(line.from + offset + position.column - 1, line.to);
    const word = /\w+|\S/.exec(doc.sliceString(at, line.to));
    const end = Math.min(at + (word ? word[0].length : 1), doc.length);
    if (end <= at) return;
    this.view.dispatch({ effects: setError.of(Decoration.set([errorMark.range(at, end)])) });
  }

  clearError() {
    this.view.dispatch({ effects: setError.of(Decoration.none) });
  }

  /** Put `text` at the cursor (a name clicked in the catalog). */
  insert(text) {
    const { from, to } = this.view.state.selection.main;
    this.view.dispatch({ changes: { from, to, insert: text }, selection: { anchor: from + text.length } });
    this.view.focus();
  }

  /** Replace the tab's text. */
  setText(text) {
    this.view.dispatch({ changes: { from: 0, to: this.view.state.doc.length, insert: text } });
  }

  format() {
    try {
      this.setText(formatDialect(this.text, { dialect: postgresql, keywordCase: 'upper' }));
    } catch { /* leave text the formatter cannot read as it is */ }
  }

  save() {
    this.tabs[this.current].sql = this.text;
    localStorage.setItem(TABS, JSON.stringify({ tabs: this.tabs, current: this.current }));
  }

  select(i) {
    this.save();
    this.current = i;
    this.view.setState(this.stateFor(this.tabs[i].sql));
    this.save();
    this.drawTabs();
  }

  add() {
    this.save();
    const n = this.tabs.length + 1;
    this.tabs.push({ name: `Query ${n}`, sql: '' });
    this.select(this.tabs.length - 1);
    this.view.focus();
  }

  close(i) {
    if (this.tabs.length === 1) { this.setText(''); return; }
    this.tabs.splice(i, 1);
    this.current = Math.min(this.current, this.tabs.length - 1);
    this.view.setState(this.stateFor(this.tabs[this.current].sql));
    this.save();
    this.drawTabs();
  }

  drawTabs() {
    fill(this.tabBar,
      this.tabs.map((t, i) => h('span', { class: `tab${i === this.current ? ' active' : ''}`, role: 'tab' },
        h('button', { class: 'tab-name', onclick: () => this.select(i), 'aria-selected': String(i === this.current) }, t.name),
        h('button', { class: 'tab-close', title: 'Close tab', 'aria-label': `Close ${t.name}`, onclick: () => this.close(i) }, '×'))),
      h('button', { class: 'tab-add', title: 'New tab', 'aria-label': 'New tab', testid: 'new-tab', onclick: () => this.add() }, '+'));
  }
}

/** Statements run, newest first, kept across reloads (200 at most). */
export const queryHistory = {
  list() { return JSON.parse(localStorage.getItem(HISTORY) || '[]'); },
  add(sqlText) {
    const list = this.list().filter((e) => e.sql !== sqlText);
    list.unshift({ sql: sqlText, at: Date.now() });
    localStorage.setItem(HISTORY, JSON.stringify(list.slice(0, 200)));
  },
};
