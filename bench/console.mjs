// The browser console, measured in Debian's Chromium against a `quarry up` it starts:
//
// - Run → first rows on screen (the first row's cells drawn, timed in the page) for a
//   10-row and a 1M-row result, median of 5 runs each, and the 10-row statement over
//   synchronous REST from this script;
// - the tab's JavaScript heap and DOM size after dragging through the 1M-row result from
//   top to bottom (400 jumps, each waiting for its rows), after a garbage collection;
// - a 10M-row result: first rows, the last row after one jump, the heap after;
// - the bundle's size, raw and gzipped.
//
//   node bench/console.mjs [--quarry target/release/quarry]
//
// Needs `npm ci` in web/. Writes bench/results/console.json.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { launch } from '../web/tests/browser.mjs';

const root = new URL('..', import.meta.url).pathname;
const flag = process.argv.indexOf('--quarry');
const quarry = flag > 0 ? process.argv[flag + 1] : join(root, 'target/release/quarry');

function start() {
  const dir = mkdtempSync(join(tmpdir(), 'quarry-console-bench-'));
  const ready = join(dir, 'ready.json');
  const child = spawn(quarry, ['up', '--dir', join(dir, 'data'), '--http', '127.0.0.1:0', '--flight', '127.0.0.1:0',
    '--pg', 'off', '--demo-rows', '100000', '--ready-file', ready], { stdio: 'ignore' });
  return new Promise((resolve, reject) => {
    const deadline = Date.now() + 120_000;
    const timer = setInterval(() => {
      try {
        const { http } = JSON.parse(readFileSync(ready, 'utf8'));
        clearInterval(timer);
        resolve({ child, dir, url: http.includes('://') ? http : `http://${http}` });
      } catch {
        if (Date.now() > deadline) { clearInterval(timer); child.kill('SIGKILL'); reject(new Error('quarry did not start')); }
      }
    }, 100);
  });
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function firstRows(page, sql, rows) {
  await page.click('[data-testid=editor] .cm-content');
  await page.keyboard.press('Control+A');
  await page.locator('[data-testid=editor] .cm-content').fill(sql);
  // The previous answer's grid must not count.
  await page.evaluate(() => document.querySelector('[data-testid=results-grid]')?.remove());
  const started = Date.now();
  await page.click('[data-testid=run]');
  await page.waitForFunction((n) => {
    const count = document.querySelector('[data-testid=row-count]');
    const row = document.querySelector('.grid-row[data-row="0"]');
    return count && count.dataset.rows === String(n) && row && !row.querySelector('.cell.loading');
  }, rows, { polling: 'raf', timeout: 300_000 });
  const outside = Date.now() - started;
  const inside = await page.evaluate(() => ({ drawn: Number(document.body.dataset.firstRowsMs), ...JSON.parse(document.body.dataset.phases || '{}') }));
  return { outside, ...inside };
}

const server = await start();
const b = await launch();
const { page } = b;
const result = { machine: `${process.platform} ${process.arch}`, quarry };
try {
  await page.goto(server.url);
  await page.locator('[data-testid=catalog-tree] [data-dataset="demo.orders"]').waitFor({ timeout: 60_000 });
  const small = [];
  const large = [];
  for (let i = 0; i < 5; i += 1) small.push(await firstRows(page, 'SELECT * FROM demo.orders ORDER BY order_id LIMIT 10', 10));
  for (let i = 0; i < 5; i += 1) large.push(await firstRows(page, `SELECT value AS n, value * 2 AS twice, 'row ' || value AS label FROM generate_series(1, 1000000) -- ${i}`, 1_000_000));
  // `drawn`: from the Run click to the first rows drawn, timed by the page itself;
  // `ended`: until the console saw the job end; `outside`: as this script sees it (adds
  // the browser automation's own round trips).
  const summary = (runs) => ({
    drawn: median(runs.map((r) => r.drawn)), ended: median(runs.map((r) => r.ended)), outside: median(runs.map((r) => r.outside)),
  });
  result.first_rows_ms = { rows_10: summary(small), rows_1m: summary(large), runs_10: small, runs_1m: large };
  // The same 10-row statement over REST from this process, answered in full: what the
  // console adds on top of the engine is the difference.
  const rest = [];
  for (let i = 0; i < 5; i += 1) {
    const started = Date.now();
    const r = await fetch(`${server.url}/api/v1/sql`, { method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ sql: 'SELECT * FROM demo.orders ORDER BY order_id LIMIT 10' }) });
    await r.json();
    rest.push(Date.now() - started);
  }
  result.first_rows_ms.rest_sync_10 = median(rest);

  const cdp = await b.context.newCDPSession(page);
  await cdp.send('Performance.enable');
  const heap = async () => {
    await cdp.send('HeapProfiler.collectGarbage');
    const { metrics } = await cdp.send('Performance.getMetrics');
    const get = (name) => metrics.find((m) => m.name === name)?.value;
    return { js_heap_used_mib: +(get('JSHeapUsedSize') / 2 ** 20).toFixed(1), dom_nodes: get('Nodes') };
  };
  result.before_scroll = await heap();
  const steps = 400;
  const started = Date.now();
  for (let i = 0; i <= steps; i += 1) {
    await page.$eval('.grid-body', (el, f) => { el.scrollTop = (el.scrollHeight - el.clientHeight) * f; }, i / steps);
    await page.waitForFunction(() => {
      const rows = document.querySelectorAll('.grid-row');
      return rows.length > 0 && ![...rows].some((r) => r.querySelector('.cell.loading'));
    }, null, { polling: 'raf', timeout: 60_000 });
  }
  result.scroll_end_to_end = { jumps: steps, seconds: (Date.now() - started) / 1000 };
  result.after_scroll = await heap();
  const last = await page.$eval('.grid-row:last-child', (r) => r.dataset.row);
  result.last_row_shown = Number(last) + 1;

  // Ten million rows: the tab stays small, and the last row is one jump away.
  result.first_rows_ms.rows_10m = await firstRows(page, 'SELECT value AS n FROM generate_series(1, 10000000)', 10_000_000);
  await page.$eval('.grid-body', (el) => { el.scrollTop = el.scrollHeight; });
  await page.waitForFunction(() => document.querySelector('.grid-row[data-row="9999999"] .cell:not(.loading):not(.rownum)'), null, { polling: 'raf', timeout: 60_000 });
  result.after_10m_result = await heap();
} finally {
  await b.close();
  server.child.kill('SIGKILL');
  rmSync(server.dir, { recursive: true, force: true });
}

const dist = join(root, 'web/dist');
result.bundle = Object.fromEntries(readdirSync(dist).map((f) => {
  const bytes = readFileSync(join(dist, f));
  return [f, { bytes: bytes.length, gzip_bytes: gzipSync(bytes, { level: 9 }).length }];
}));
result.bundle_total_gzip_bytes = Object.values(result.bundle).reduce((a, f) => a + f.gzip_bytes, 0);
console.log(JSON.stringify(result, null, 2));
writeFileSync(join(root, 'bench/results/console.json'), `${JSON.stringify(result, null, 2)}\n`);
