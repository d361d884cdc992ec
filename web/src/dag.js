// A job's profile drawn as its stage DAG: one box per stage (tasks, rows, bytes, time,
// skew, spill, retries), arrows from the stages it reads, laid out by dagre. The same
// drawing goes into the downloadable profile.
import dagre from '@dagrejs/dagre';
import { svg, count, bytes, duration } from './dom.js';

const WIDTH = 230;
const HEIGHT = 118;

/** Per-stage totals of a profile (`{stages: [{stage_id, inputs, tasks: [...]}], root}`). */
export function summarize(profile) {
  const stages = (profile?.stages || []).map((s) => {
    const tasks = s.tasks || [];
    const elapsed = tasks.map((t) => t.elapsed_ms || 0);
    const rows = tasks.reduce((a, t) => a + (t.output_rows || 0), 0);
    const sizes = tasks.reduce((a, t) => a + (t.output_bytes || 0), 0);
    const spilled = tasks.reduce((a, t) => a + (t.operators || []).reduce((b, o) => b + (o.spilled_bytes || 0), 0), 0);
    const retries = tasks.reduce((a, t) => a + (t.failed_attempts || []).length, 0);
    const max = elapsed.length ? Math.max(...elapsed) : 0;
    const mean = elapsed.length ? elapsed.reduce((a, b) => a + b, 0) / elapsed.length : 0;
    return {
      id: s.stage_id,
      inputs: s.inputs || [],
      output: s.output,
      plan: s.plan,
      tasks: tasks.length,
      rows,
      bytes: sizes,
      time: max,
      // How much longer the slowest task ran than the average one (1.0 = even).
      skew: mean > 0 ? max / mean : 1,
      spilled,
      retries,
      failures: tasks.flatMap((t) => (t.failed_attempts || []).map((f) => `partition ${t.partition}: ${f}`)),
      executors: [...new Set(tasks.map((t) => t.executor_id))],
    };
  });
  return stages;
}

/** The DAG as an `<svg>` element (or null when the job ran no stages). */
export function drawDag(profile) {
  const stages = summarize(profile);
  if (!stages.length) return null;
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: 'LR', nodesep: 24, ranksep: 40, marginx: 12, marginy: 12 });
  g.setDefaultEdgeLabel(() => ({}));
  const consumed = new Set(stages.flatMap((s) => s.inputs));
  for (const s of stages) g.setNode(`s${s.id}`, { width: WIDTH, height: HEIGHT, stage: s });
  g.setNode('root', { width: WIDTH, height: 44, root: true });
  for (const s of stages) {
    for (const input of s.inputs) g.setEdge(`s${input}`, `s${s.id}`);
    if (!consumed.has(s.id)) g.setEdge(`s${s.id}`, 'root');
  }
  dagre.layout(g);
  const { width, height } = g.graph();
  const out = svg('svg', {
    class: 'dag', 'data-testid': 'job-dag', 'data-stages': stages.length, xmlns: 'http://www.w3.org/2000/svg',
    viewBox: `0 0 ${Math.ceil(width)} ${Math.ceil(height)}`, width: Math.ceil(width), height: Math.ceil(height),
    role: 'img', 'aria-label': `Stage DAG with ${stages.length} stages`,
  });
  out.append(svg('defs', {}, svg('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' },
    svg('path', { d: 'M 0 0 L 10 5 L 0 10 z', fill: '#888' }))));
  for (const e of g.edges()) {
    const points = g.edge(e).points.map((p) => `${p.x},${p.y}`).join(' ');
    out.append(svg('polyline', { points, fill: 'none', stroke: '#888', 'stroke-width': 1.5, 'marker-end': 'url(#arrow)' }));
  }
  for (const name of g.nodes()) {
    const node = g.node(name);
    const x = node.x - node.width / 2;
    const y = node.y - node.height / 2;
    if (node.root) {
      out.append(svg('g', { class: 'stage root', transform: `translate(${x},${y})` },
        svg('rect', { width: node.width, height: node.height, rx: 6, fill: '#e5e7eb', stroke: '#6b7280' }),
        svg('text', { x: 10, y: 27, 'font-weight': 600, fill: '#111' }, 'Coordinator: result')));
      continue;
    }
    const s = node.stage;
    const warn = s.retries > 0 || s.spilled > 0 || s.skew >= 2;
    const lines = [
      `${s.tasks} task${s.tasks === 1 ? '' : 's'} · ${duration(s.time)}`,
      `${count(s.rows)} rows · ${bytes(s.bytes)}`,
      `skew ${s.skew.toFixed(1)}× · spill ${bytes(s.spilled)}`,
      `retries ${s.retries} · out ${String(s.output || 'none').slice(0, 24)}`,
    ];
    out.append(svg('g', { class: 'stage', 'data-stage': s.id, transform: `translate(${x},${y})` },
      svg('title', {}, `${s.plan || ''}${s.failures.length ? `\nretried:\n${s.failures.join('\n')}` : ''}`),
      svg('rect', { width: node.width, height: node.height, rx: 6, fill: warn ? '#fef3c7' : '#dbeafe', stroke: warn ? '#d97706' : '#2563eb' }),
      svg('text', { x: 10, y: 20, 'font-weight': 600, fill: '#111' }, `Stage ${s.id}`),
      lines.map((line, i) => svg('text', { x: 10, y: 42 + i * 19, fill: '#222', 'font-size': 12 }, line))));
  }
  return out;
}
