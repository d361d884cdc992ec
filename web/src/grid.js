// The results grid: a window of rows over a result of any size. Only the rows on screen
// are in the DOM; their values come from pages of the job's results (Arrow IPC), fetched
// as the grid scrolls and kept in a small cache, so the tab holds a few thousand rows at
// most whatever the result's size.
//
// Written here rather than with a virtual-list library: rows have one fixed height, so
// which rows are visible is one division, while the libraries keep a measurement object
// per row (a gigabyte for ten million rows). Past the browser's largest element height
// (about 33 million pixels) the scrollbar is scaled, so every row stays reachable.
import { DataType } from 'apache-arrow';
import { h, fill, copy } from './dom.js';

export const ROW = 24;
export const PAGE = 500;
const CACHED_PAGES = 24;
const MAX_HEIGHT = 8_000_000;
const OVERSCAN = 6;

/** A cell's value as text. */
export function cellText(value, type) {
  if (value === null || value === undefined) return null;
  if (DataType.isTimestamp(type) || DataType.isDate(type)) {
    const d = new Date(Number(value));
    if (Number.isNaN(d.getTime())) return String(value);
    const iso = d.toISOString();
    return DataType.isDate(type) ? iso.slice(0, 10) : iso.replace('T', ' ').replace('Z', '');
  }
  if (DataType.isDecimal(type)) {
    const raw = String(value);
    const scale = type.scale;
    if (!scale || !/^-?\d+$/.test(raw)) return raw;
    const negative = raw.startsWith('-');
    const digits = (negative ? raw.slice(1) : raw).padStart(scale + 1, '0');
    return `${negative ? '-' : ''}${digits.slice(0, -scale)}.${digits.slice(-scale)}`;
  }
  if (typeof value === 'object') {
    try {
      return JSON.stringify(typeof value.toJSON === 'function' ? value.toJSON() : value,
        (_, v) => (typeof v === 'bigint' ? v.toString() : v));
    } catch { return String(value); }
  }
  return String(value);
}

const numeric = (type) => DataType.isInt(type) || DataType.isFloat(type) || DataType.isDecimal(type);

export class Grid {
  /**
   * `fetchPage(offset, limit, signal)` answers an Arrow table of those rows; `columns` are
   * `{name, type}` with Arrow types; `onSort(column)` asks for the result ordered by it.
   */
  constructor({ columns, rowCount, fetchPage, firstPage, onSort, sorted, onRowsShown }) {
    this.onRowsShown = onRowsShown;
    this.columns = columns;
    this.rowCount = rowCount;
    this.fetchPage = fetchPage;
    this.pages = new Map();
    if (firstPage) this.pages.set(0, { offset: 0, table: firstPage });
    this.pending = new Map();
    this.selected = null;
    this.widths = columns.map((c) => Math.min(360, Math.max(90, 9 * Math.max(c.name.length, 10) + 24)));
    const template = `72px ${this.widths.map((w) => `${w}px`).join(' ')}`;
    this.template = template;
    this.header = h('div', { class: 'grid-header', style: { gridTemplateColumns: template } },
      h('div', { class: 'cell rownum' }, '#'),
      columns.map((c, i) => h('button', {
        class: 'cell head', title: `${c.name} (${c.type}) — sort`,
        onclick: () => onSort && onSort(c.name),
        'data-col': i,
      },
      h('span', { class: 'col-name' }, c.name),
      sorted && sorted.column === c.name ? h('span', { class: 'sort' }, sorted.descending ? ' ▼' : ' ▲') : null,
      h('span', { class: 'col-type' }, String(c.type)))));
    this.spacer = h('div', { class: 'grid-spacer' });
    this.body = h('div', { class: 'grid-body', tabindex: '0', role: 'grid', 'aria-rowcount': rowCount,
      onscroll: () => this.schedule(), onkeydown: (e) => this.key(e) }, this.spacer);
    this.element = h('div', { class: 'grid', testid: 'results-grid' }, h('div', { class: 'grid-head-wrap' }, this.header), this.body);
    this.body.addEventListener('click', (e) => this.click(e));
    this.resize = new ResizeObserver(() => this.schedule());
    this.resize.observe(this.body);
    this.layout();
  }

  layout() {
    const total = this.rowCount * ROW;
    this.height = Math.min(total, MAX_HEIGHT);
    this.spacer.style.height = `${this.height}px`;
    this.spacer.style.width = `${72 + this.widths.reduce((a, b) => a + b, 0)}px`;
    this.schedule();
  }

  /** Rows grow as a running result does. */
  setRowCount(n) {
    if (n === this.rowCount) return;
    this.rowCount = n;
    this.body.setAttribute('aria-rowcount', n);
    this.layout();
  }

  scale() {
    const view = this.body.clientHeight;
    const total = this.rowCount * ROW;
    if (total <= MAX_HEIGHT || this.height <= view) return 1;
    return (total - view) / (this.height - view);
  }

  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => { this.frame = null; this.draw(); });
  }

  /** Show row `index` (0-based) at the top. */
  goto(index) {
    const row = Math.max(0, Math.min(index, this.rowCount - 1));
    this.body.scrollTop = (row * ROW) / this.scale();
    this.selected = { row, col: null };
    this.draw();
  }

  draw() {
    this.header.style.transform = `translateX(${-this.body.scrollLeft}px)`;
    const view = this.body.clientHeight || 400;
    const scrollTop = this.body.scrollTop;
    const virtualTop = scrollTop * this.scale();
    const first = Math.max(0, Math.floor(virtualTop / ROW) - OVERSCAN);
    const last = Math.min(this.rowCount, Math.ceil((virtualTop + view) / ROW) + OVERSCAN);
    const wanted = new Set();
    const rows = [];
    for (let i = first; i < last; i += 1) {
      const pageNo = Math.floor(i / PAGE);
      wanted.add(pageNo);
      const top = scrollTop + (i * ROW - virtualTop);
      rows.push(this.row(i, top, this.pages.get(pageNo)));
    }
    fill(this.spacer, rows);
    if (this.onRowsShown && this.pages.has(Math.floor(first / PAGE))) {
      this.onRowsShown();
      this.onRowsShown = null;
    }
    this.load(wanted);
  }

  row(i, top, page) {
    const selectedRow = this.selected && this.selected.row === i;
    const cells = [h('div', { class: 'cell rownum' }, String(i + 1))];
    this.columns.forEach((c, j) => {
      let text = '…';
      let cls = 'cell loading';
      if (page) {
        const value = page.table.getChildAt(j)?.get(i - page.offset);
        text = cellText(value, c.type);
        cls = text === null ? 'cell null' : `cell${numeric(c.type) ? ' num' : ''}`;
        if (text === null) text = 'NULL';
      }
      if (selectedRow && this.selected.col === j) cls += ' selected';
      cells.push(h('div', { class: cls, 'data-col': j }, text));
    });
    return h('div', {
      class: `grid-row${selectedRow ? ' selected-row' : ''}`, role: 'row', 'data-row': i,
      style: { top: `${top}px`, gridTemplateColumns: this.template },
    }, cells);
  }

  async load(wanted) {
    for (const [pageNo, controller] of this.pending) {
      if (!wanted.has(pageNo)) { controller.abort(); this.pending.delete(pageNo); }
    }
    for (const pageNo of wanted) {
      if (this.pages.has(pageNo) || this.pending.has(pageNo)) {
        const hit = this.pages.get(pageNo);
        if (hit) { this.pages.delete(pageNo); this.pages.set(pageNo, hit); }
        continue;
      }
      const controller = new AbortController();
      this.pending.set(pageNo, controller);
      const offset = pageNo * PAGE;
      this.fetchPage(offset, PAGE, controller.signal).then((table) => {
        this.pending.delete(pageNo);
        this.pages.set(pageNo, { offset, table });
        while (this.pages.size > CACHED_PAGES) this.pages.delete(this.pages.keys().next().value);
        this.schedule();
      }, () => { this.pending.delete(pageNo); });
    }
  }

  /** The value of a loaded cell as text (for copying). */
  value(row, col) {
    const page = this.pages.get(Math.floor(row / PAGE));
    if (!page) return '';
    const text = cellText(page.table.getChildAt(col)?.get(row - page.offset), this.columns[col].type);
    return text === null ? '' : text;
  }

  rowText(row) {
    return this.columns.map((_, j) => this.value(row, j)).join('\t');
  }

  click(e) {
    const rowEl = e.target.closest('.grid-row');
    if (!rowEl) return;
    const cell = e.target.closest('.cell');
    const col = cell && cell.dataset.col !== undefined ? Number(cell.dataset.col) : null;
    this.selected = { row: Number(rowEl.dataset.row), col };
    this.draw();
  }

  key(e) {
    if (!this.selected) return;
    if ((e.ctrlKey || e.metaKey) && e.key === 'c') {
      const { row, col } = this.selected;
      copy(col === null ? this.rowText(row) : this.value(row, col));
      e.preventDefault();
    } else if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      const row = Math.max(0, Math.min(this.rowCount - 1, this.selected.row + (e.key === 'ArrowDown' ? 1 : -1)));
      this.selected = { ...this.selected, row };
      const top = (row * ROW) / this.scale();
      if (top < this.body.scrollTop || top > this.body.scrollTop + this.body.clientHeight - ROW) this.body.scrollTop = top;
      this.draw();
      e.preventDefault();
    }
  }

  destroy() {
    this.resize.disconnect();
    for (const controller of this.pending.values()) controller.abort();
    this.pages.clear();
  }
}
