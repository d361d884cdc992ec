// Charts of a result: bar, line, area and scatter with uPlot, the axes chosen from the
// columns (by default a text or time column across, the numeric ones up), PNG download.
import uPlot from 'uplot';
import { DataType } from 'apache-arrow';
import { h, fill, save } from './dom.js';
import { cellText } from './grid.js';

const ROWS = 10_000;
const COLORS = ['#3b82f6', '#f59e0b', '#10b981', '#ef4444', '#8b5cf6', '#14b8a6', '#ec4899'];
const isNumber = (t) => DataType.isInt(t) || DataType.isFloat(t) || DataType.isDecimal(t);
const isTime = (t) => DataType.isTimestamp(t) || DataType.isDate(t);

/** The default axes: a text or time column across, else the first column; numbers up. */
export function defaultAxes(columns) {
  const numbers = columns.map((c, i) => (isNumber(c.type) ? i : -1)).filter((i) => i >= 0);
  let x = columns.findIndex((c) => !isNumber(c.type));
  if (x < 0) x = 0;
  const ys = numbers.filter((i) => i !== x);
  const kind = isTime(columns[x]?.type) ? 'line' : isNumber(columns[x]?.type) ? 'scatter' : 'bar';
  return { x, ys: ys.length ? ys : numbers.slice(0, 1), kind };
}

export class Chart {
  constructor({ columns, load }) {
    this.columns = columns;
    this.load = load;
    const axes = defaultAxes(columns);
    this.kind = h('select', { 'aria-label': 'Chart type', testid: 'chart-type', onchange: () => this.draw() },
      ['bar', 'line', 'area', 'scatter'].map((k) => h('option', { value: k, selected: k === axes.kind }, k)));
    this.x = h('select', { 'aria-label': 'X axis', testid: 'chart-x', onchange: () => this.draw() },
      columns.map((c, i) => h('option', { value: i, selected: i === axes.x }, c.name)));
    this.y = h('select', { 'aria-label': 'Y axis', testid: 'chart-y', multiple: true, size: Math.min(4, columns.length), onchange: () => this.draw() },
      columns.map((c, i) => h('option', { value: i, selected: axes.ys.includes(i), disabled: !isNumber(c.type) }, c.name)));
    this.canvas = h('div', { class: 'chart-canvas', testid: 'chart' });
    this.note = h('span', { class: 'muted' });
    this.element = h('div', { class: 'chart-pane' },
      h('div', { class: 'toolbar' }, h('label', {}, 'Type ', this.kind), h('label', {}, 'X ', this.x), h('label', {}, 'Y ', this.y),
        h('button', { testid: 'chart-png', onclick: () => this.png() }, 'Download PNG'), this.note),
      this.canvas);
    this.ready = this.load(ROWS).then((table) => { this.table = table; this.draw(); }, (e) => fill(this.canvas, h('div', { class: 'error' }, e.message)));
  }

  draw() {
    if (!this.table) return;
    const xi = Number(this.x.value);
    const ys = [...this.y.selectedOptions].map((o) => Number(o.value));
    const kind = this.kind.value;
    const n = this.table.numRows;
    const xType = this.columns[xi].type;
    const xCol = this.table.getChildAt(xi);
    const categorical = !isNumber(xType) && !isTime(xType);
    const labels = [];
    const xs = new Float64Array(n);
    for (let i = 0; i < n; i += 1) {
      const v = xCol.get(i);
      if (categorical) { labels.push(cellText(v, xType) ?? 'NULL'); xs[i] = i; }
      else xs[i] = isTime(xType) ? Number(v) / 1000 : Number(v);
    }
    const series = ys.map((yi) => {
      const col = this.table.getChildAt(yi);
      const values = new Array(n);
      for (let i = 0; i < n; i += 1) { const v = col.get(i); values[i] = v === null ? null : Number(cellText(v, this.columns[yi].type)); }
      return values;
    });
    this.note.textContent = n >= ROWS ? `first ${ROWS.toLocaleString()} rows` : '';
    const paths = kind === 'bar' ? uPlot.paths.bars({ size: [0.8 / Math.max(1, ys.length), 80] })
      : kind === 'scatter' ? () => null : undefined;
    const opts = {
      width: Math.max(400, this.canvas.clientWidth || 900),
      height: Math.max(240, Math.min(420, (this.canvas.parentElement?.clientHeight || 480) - 120)),
      scales: { x: { time: isTime(xType), distr: categorical ? 2 : 1 } },
      axes: [
        { values: categorical ? (u, splits) => splits.map((s) => labels[s] ?? '') : undefined, stroke: 'currentColor' },
        { stroke: 'currentColor', size: 90, values: (u, splits) => splits.map((v) => (v === null ? '' : Number(v).toLocaleString('en-US', { maximumFractionDigits: 2, notation: Math.abs(v) >= 1e7 ? 'compact' : 'standard' }))) },
      ],
      series: [
        { label: this.columns[xi].name },
        ...ys.map((yi, k) => ({
          label: this.columns[yi].name,
          stroke: COLORS[k % COLORS.length],
          fill: kind === 'area' || kind === 'bar' ? `${COLORS[k % COLORS.length]}88` : undefined,
          paths,
          points: { show: kind === 'scatter', size: 5 },
          width: kind === 'scatter' ? 0 : 2,
        })),
      ],
    };
    this.plot?.destroy();
    fill(this.canvas);
    this.plot = new uPlot(opts, [Array.from(xs), ...series], this.canvas);
    this.canvas.dataset.series = String(ys.length);
    this.canvas.dataset.points = String(n);
  }

  png() {
    const source = this.canvas.querySelector('canvas');
    if (!source) return;
    // The plot's own canvas on a background, so the picture reads outside the page.
    const out = document.createElement('canvas');
    out.width = source.width;
    out.height = source.height;
    const ctx = out.getContext('2d');
    ctx.fillStyle = getComputedStyle(document.body).backgroundColor || '#fff';
    ctx.fillRect(0, 0, out.width, out.height);
    ctx.drawImage(source, 0, 0);
    out.toBlob((blob) => blob && save(blob, 'quarry-chart.png'), 'image/png');
  }
}
