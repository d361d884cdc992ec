// A job's profile as one self-contained HTML file: the SQL, state, timings, the stage DAG
// (inline SVG), a table of stages and the plan of each, and the reflections planning
// considered. No script and no external asset, so it opens anywhere, offline, later.
import { drawDag, summarize } from './dag.js';
import { count, bytes, duration, when } from './dom.js';

const escape = (text) => String(text ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));

const STYLE = `body{font:14px system-ui,sans-serif;margin:24px;color:#111;background:#fff}
pre{background:#f3f4f6;padding:10px;overflow:auto;white-space:pre-wrap}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef}.dag text{font-family:system-ui,sans-serif;font-size:13px}`;

export function profileHtml(job) {
  const stages = summarize(job.profile);
  const dag = drawDag(job.profile);
  const picture = dag ? new XMLSerializer().serializeToString(dag) : '<p>No stages ran on executors.</p>';
  const rows = stages.map((s) => `<tr data-stage="${s.id}"><td>${s.id}</td><td>${escape(s.inputs.join(', '))}</td><td>${s.tasks}</td>
<td>${count(s.rows)}</td><td>${bytes(s.bytes)}</td><td>${duration(s.time)}</td><td>${s.skew.toFixed(2)}×</td>
<td>${bytes(s.spilled)}</td><td>${s.retries}${s.failures.length ? `<br>${s.failures.map(escape).join('<br>')}` : ''}</td>
<td>${escape(s.executors.join(', '))}</td></tr>`).join('\n');
  const plans = stages.map((s) => `<h3>Stage ${s.id} (output ${escape(s.output)})</h3><pre>${escape(s.plan)}</pre>`).join('\n');
  const elapsed = job.finishedMs && job.startedMs ? duration(job.finishedMs - job.startedMs) : '';
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Quarry job ${escape(job.id)}</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<style>${STYLE}</style></head><body>
<h1>Quarry job ${escape(job.id)}</h1>
<table><tr><th>State</th><td>${escape(job.state)}</td></tr><tr><th>User</th><td>${escape(job.user)}</td></tr>
<tr><th>Submitted</th><td>${escape(when(job.submittedMs))}</td></tr><tr><th>Elapsed</th><td>${escape(elapsed)}</td></tr>
<tr><th>Rows</th><td>${count(job.rowCount)}</td></tr>
${job.error ? `<tr><th>Error</th><td>${escape(job.error.code)}: ${escape(job.error.message)}</td></tr>` : ''}
${job.dataAsOfMs ? `<tr><th>Data as of</th><td>${escape(when(job.dataAsOfMs))}</td></tr>` : ''}</table>
<h2>SQL</h2><pre>${escape(job.sql)}</pre>
<h2>Stages</h2>${picture}
<table class="stages"><tr><th>Stage</th><th>Reads</th><th>Tasks</th><th>Rows</th><th>Bytes</th><th>Time</th><th>Skew</th><th>Spill</th><th>Retries</th><th>Executors</th></tr>
${rows}</table>
<h2>Acceleration</h2><ul>${(job.reflections || []).map((r) => `<li>${escape(r)}</li>`).join('') || '<li>No reflection was considered.</li>'}</ul>
<h2>Plans</h2>${plans}
</body></html>`;
}
