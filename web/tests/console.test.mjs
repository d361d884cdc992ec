// The console end to end, in a real headless Chromium against real quarry processes:
// QUARRY_URL (authentication off, demo data) and QUARRY_SECURE_URL (logins on, admin/pw).
// Run by coordinator/tests/it/console.rs, which starts both.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { launch } from './browser.mjs';

const URL_OPEN = process.env.QUARRY_URL;
const URL_SECURE = process.env.QUARRY_SECURE_URL;
const downloads = mkdtempSync(join(tmpdir(), 'quarry-downloads-'));
let b;
let page;

const rest = async (base, path, body, token) => {
  const headers = { 'content-type': 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  const r = await fetch(`${base}${path}`, { method: body ? 'POST' : 'GET', headers, body: body ? JSON.stringify(body) : undefined });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : null };
};
const sql = async (text) => (await rest(URL_OPEN, '/api/v1/sql', { sql: text })).body;

/** Put `text` in the editor (replacing what is there) and run it. */
/** Run `text`: the statement under the cursor, or with `whole` all of it as one script. */
async function runSql(text, { whole = false } = {}) {
  await page.click('[data-testid=editor] .cm-content');
  await page.keyboard.press('Control+A');
  await page.keyboard.press('Delete');
  await page.locator('[data-testid=editor] .cm-content').fill(text);
  if (whole) await page.keyboard.press('Control+A');
  await page.click('[data-testid=run]');
}

async function rowCount() {
  const el = page.locator('[data-testid=row-count]');
  await el.waitFor({ timeout: 60_000 });
  return Number(await el.getAttribute('data-rows'));
}

/** The text of the cells of grid row `index` (0-based), once its page has arrived. */
async function rowValues(index) {
  const row = page.locator(`[data-testid=results-grid] .grid-row[data-row="${index}"]`);
  await row.waitFor({ timeout: 30_000 });
  await page.waitForFunction((i) => {
    const r = document.querySelector(`.grid-row[data-row="${i}"]`);
    return r && !r.querySelector('.cell.loading');
  }, index, { timeout: 30_000 });
  return row.locator('.cell').allTextContents();
}

before(async () => {
  assert.ok(URL_OPEN, 'QUARRY_URL names a running quarry');
  b = await launch({ downloads });
  page = b.page;
  await page.goto(URL_OPEN);
  await page.locator('[data-testid=catalog-tree] [data-dataset="demo.orders"]').waitFor({ timeout: 30_000 });
});

after(async () => {
  await b?.close();
});

test('completion offers tables of the catalog and, after an alias, its columns', async () => {
  await page.click('[data-testid=editor] .cm-content');
  await page.keyboard.press('Control+A');
  await page.keyboard.press('Delete');
  await page.keyboard.type('SELECT * FROM demo.ord', { delay: 20 });
  const options = page.locator('.cm-tooltip-autocomplete li');
  await options.first().waitFor({ timeout: 10_000 });
  assert.ok((await options.allTextContents()).some((t) => t.startsWith('orders')), 'orders is offered');
  await page.keyboard.press('Escape');
  await page.keyboard.type('ers o WHERE o.', { delay: 20 });
  await page.waitForFunction(() => [...document.querySelectorAll('.cm-tooltip-autocomplete li')].some((li) => li.textContent.startsWith('city')), null, { timeout: 10_000 });
  const columns = await options.allTextContents();
  assert.ok(columns.some((t) => t.startsWith('revenue')), `columns are offered: ${columns}`);
  await page.keyboard.press('Escape');
});

test('a query over the demo orders shows its row count; errors show the message and position', async () => {
  const expected = (await sql("SELECT count(*) AS n FROM demo.orders WHERE city = 'Pune'")).rows[0].n;
  await runSql("SELECT * FROM demo.orders WHERE city = 'Pune'");
  await page.waitForFunction((n) => document.querySelector('[data-testid=row-count]')?.dataset.rows === String(n), expected, { timeout: 60_000 });
  assert.equal(await rowCount(), expected);
  const first = await rowValues(0);
  assert.ok(first.includes('Pune'), `the first row is from Pune: ${first}`);

  await runSql('SELECT city FROM demo.orders WHERE city = = 1');
  const error = page.locator('[data-testid=error]');
  await error.waitFor();
  assert.match(await error.textContent(), /Expected: an expression/);
  await page.locator('.cm-sql-error').waitFor();
  assert.equal(await page.locator('.cm-sql-error').first().textContent(), '=');

  // A name the planner cannot resolve is underlined where it is written.
  await runSql('SELECT city,\n  nosuch FROM demo.orders');
  await page.locator('[data-testid=error]').waitFor();
  await page.locator('.cm-sql-error').waitFor();
  assert.equal(await page.locator('.cm-sql-error').first().textContent(), 'nosuch');
});

test('tabs and their text are kept across a reload; run all runs every statement', async () => {
  await page.click('[data-testid=new-tab]');
  await page.locator('[data-testid=editor] .cm-content').fill("SELECT 1 AS a;\nSELECT 'second' AS b");
  await page.waitForTimeout(200);
  await page.reload();
  await page.locator('[data-testid=editor] .cm-content').waitFor();
  assert.equal(await page.locator('.tab').count(), 2);
  assert.match(await page.locator('[data-testid=editor] .cm-content').textContent(), /second/);
  await page.click('[data-testid=run-all]');
  await page.waitForFunction(() => [...document.querySelectorAll('.grid-row .cell')].some((c) => c.textContent === 'second'), null, { timeout: 30_000 });
  await page.locator('[data-testid=editor] .cm-content').fill('select city,count(*) from demo.orders group by city');
  await page.click('[data-testid=format]');
  assert.ok(await page.locator('[data-testid=editor] .cm-line').count() >= 4, 'formatted over several lines');
  assert.match(await page.locator('[data-testid=editor] .cm-content').textContent(), /SELECT.*FROM.*GROUP BY/);
  await page.click('.tab:nth-child(2) .tab-close');
  assert.equal(await page.locator('.tab').count(), 1);
});

test('a million-row result scrolls to any row, exports every row as CSV', async () => {
  await runSql('SELECT value AS n, value * 2 AS twice FROM generate_series(1, 1000000) ORDER BY n');
  await page.waitForFunction(() => document.querySelector('[data-testid=row-count]')?.dataset.rows === '1000000', null, { timeout: 120_000 });
  // Only the rows on screen are in the DOM.
  assert.ok(await page.locator('.grid-row').count() < 100, 'the grid renders a window of rows');
  await page.fill('[data-testid=goto-row]', '100000');
  await page.press('[data-testid=goto-row]', 'Enter');
  assert.deepEqual((await rowValues(99_999)).slice(0, 3), ['100000', '100000', '200000']);
  // Scrolled to the very end by the scrollbar, the last row is there.
  await page.$eval('.grid-body', (el) => { el.scrollTop = el.scrollHeight; });
  assert.deepEqual((await rowValues(999_999)).slice(0, 3), ['1000000', '1000000', '2000000']);

  await page.selectOption('[data-testid=export-format]', 'csv');
  const [download] = await Promise.all([page.waitForEvent('download', { timeout: 120_000 }), page.click('[data-testid=export]')]);
  const file = join(downloads, 'all.csv');
  await download.saveAs(file);
  const lines = readFileSync(file, 'utf8').trimEnd().split('\n');
  assert.equal(lines[0], 'n,twice');
  assert.equal(lines.length, 1_000_001);
  assert.equal(lines[1_000_000], '1000000,2000000');
});

test('a chart renders for a GROUP BY result', async () => {
  await runSql('SELECT city, sum(revenue) AS revenue FROM demo.orders GROUP BY city ORDER BY city');
  await rowCount();
  await page.click('[data-testid=show-chart]');
  await page.locator('[data-testid=chart] canvas').waitFor();
  const painted = await page.$eval('[data-testid=chart] canvas', (c) => {
    const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 3; i < data.length; i += 4) if (data[i] > 0) n += 1;
    return n;
  });
  assert.ok(painted > 1000, `the chart paints pixels (${painted})`);
  const [png] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid=chart-png]')]);
  assert.match(png.suggestedFilename(), /\.png$/);
  await page.click('[data-testid=show-grid]');
});

test('a join job shows its stage DAG; the profile downloads and opens offline', async () => {
  // The demo data is small enough to run whole on one executor: spread it as stages.
  await runSql('SET quarry.one_executor_max_bytes = 0;\nSELECT o.city, count(*) AS n FROM demo.orders o JOIN demo.orders_csv c ON o.order_id = c.order_id GROUP BY o.city', { whole: true });
  await rowCount();
  await page.click('text=Job details');
  const dag = page.locator('svg[data-testid=job-dag]');
  await dag.waitFor({ timeout: 30_000 });
  const stages = Number(await dag.getAttribute('data-stages'));
  assert.ok(stages >= 2, `at least two stages (${stages})`);
  const ids = await page.$$eval('svg[data-testid=job-dag] g.stage[data-stage]', (gs) => gs.map((g) => g.dataset.stage));
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid=download-profile]')]);
  const file = join(downloads, 'profile.html');
  await download.saveAs(file);
  // Opened from disk with the network cut, it draws the same stages and asks for nothing.
  const offline = await b.context.newPage();
  const asked = [];
  offline.on('request', (r) => asked.push(r.url()));
  await b.context.setOffline(true);
  await offline.goto(`file://${file}`);
  const drawn = await offline.$$eval('svg g.stage[data-stage]', (gs) => gs.map((g) => g.dataset.stage));
  await b.context.setOffline(false);
  assert.deepEqual(drawn.sort(), ids.sort());
  assert.deepEqual(asked, [`file://${file}`]);
  await offline.close();
});

test('a slow job shows moving progress and stops when cancelled', async () => {
  // Billions of joined rows: it runs until cancelled.
  const slow = 'SELECT a.city, count(*) AS n FROM demo.orders a JOIN demo.orders b ON a.city = b.city GROUP BY a.city';
  const { body } = await rest(URL_OPEN, '/api/v1/sql', { sql: slow, async: true });
  await page.goto(`${URL_OPEN}/#/jobs/${body.id}`);
  const bar = page.locator('[data-testid=job-progress]');
  await bar.waitFor({ timeout: 20_000 });
  const seen = new Set();
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline && seen.size < 2) {
    const text = await bar.textContent().catch(() => null);
    if (text) seen.add(text.replace(/·[^·]*left$/, ''));
    await page.waitForTimeout(200);
  }
  assert.ok(seen.size >= 2, `the progress line changed while running: ${[...seen]}`);
  assert.ok(Number(await bar.getAttribute('data-total')) > 0, 'the bar counts tasks');
  await page.click('[data-testid=cancel]');
  await page.waitForFunction(() => document.querySelector('[data-testid=job-state]')?.textContent === 'CANCELED', null, { timeout: 20_000 });
  assert.equal((await rest(URL_OPEN, `/api/v1/jobs/${body.id}`)).body.state, 'CANCELED');
  // Its tasks stop too, leaving the executors' slots to the next jobs.
  const deadline2 = Date.now() + 20_000;
  let busy = 1;
  while (busy > 0 && Date.now() < deadline2) {
    busy = (await sql('SELECT sum(running_tasks) AS n FROM sys.nodes')).rows[0].n;
    if (busy > 0) await new Promise((r) => setTimeout(r, 200));
  }
  assert.equal(busy, 0, 'no task of the cancelled job still runs');
});

test('a reflection created on the reflections page is chosen for the next matching query', async () => {
  await page.goto(`${URL_OPEN}/#/reflections`);
  await page.click('[data-testid=reflection-new]');
  await page.fill('[data-testid=reflection-name]', 'city_revenue');
  await page.selectOption('[data-testid=reflection-dataset]', 'demo.orders');
  await page.selectOption('[data-testid=reflection-type]', 'aggregate');
  await page.locator('tr[data-column=city] input.dim').check();
  await page.locator('tr[data-column=revenue] input.measure[value=SUM]').check();
  await page.click('[data-testid=reflection-save]');
  const row = page.locator('[data-testid=reflections-list] tr[data-reflection=city_revenue]');
  await row.waitFor({ timeout: 20_000 });
  await page.waitForFunction(() => {
    const r = document.querySelector('tr[data-reflection=city_revenue]');
    return r && r.children[5].textContent !== '';
  }, null, { timeout: 90_000 });
  await page.goto(`${URL_OPEN}/#/sql`);
  await runSql('SELECT city, sum(revenue) AS revenue FROM demo.orders GROUP BY city');
  await rowCount();
  await page.locator('[data-testid=data-as-of]').waitFor();
  await page.click('text=Job details');
  const panel = page.locator('[data-testid=acceleration]');
  await panel.locator('li').first().waitFor();
  assert.match(await panel.textContent(), /city_revenue: chosen/);
});

test('HTML and script in data and in names are shown as text', async () => {
  await sql(`CREATE VIEW public."<img src=x onerror=alert(1)>" AS SELECT '<script>alert(2)</script>' AS "<img src=y onerror=alert(3)>", '<img src=z onerror=alert(4)>' AS plain`);
  await page.goto(`${URL_OPEN}/#/sql`);
  await page.click('[data-testid=catalog-reload]');
  await page.locator('[data-testid=catalog-tree] [data-dataset^="public.<img"]').waitFor({ timeout: 20_000 });
  await runSql('SELECT * FROM public."<img src=x onerror=alert(1)>"');
  assert.equal(await rowCount(), 1);
  const values = await rowValues(0);
  assert.deepEqual(values.slice(1), ['<script>alert(2)</script>', '<img src=z onerror=alert(4)>']);
  assert.equal(await page.locator('main img, main script, header img').count(), 0, 'no element came from the data');
  assert.ok(!b.problems.some((p) => p.startsWith('dialog')), `no dialog opened: ${b.problems}`);
});

test('a lost connection shows a banner that goes when it returns', async () => {
  // On the SQL page nothing polls: the console itself must notice the server is back.
  await page.goto(`${URL_OPEN}/#/sql`);
  await page.locator('[data-testid=catalog-tree] [data-dataset="demo.orders"]').waitFor({ timeout: 20_000 });
  await b.context.setOffline(true);
  await page.click('[data-testid=catalog-reload]');
  await page.locator('[data-testid=banner]').waitFor({ state: 'visible', timeout: 15_000 });
  await b.context.setOffline(false);
  await page.locator('[data-testid=banner]').waitFor({ state: 'hidden', timeout: 15_000 });
  // and so does a page that polls.
  await page.goto(`${URL_OPEN}/#/nodes`);
  await page.locator('[data-testid=nodes-list] tr[data-executor]').first().waitFor({ timeout: 20_000 });
  await b.context.setOffline(true);
  await page.locator('[data-testid=banner]').waitFor({ state: 'visible', timeout: 15_000 });
  await b.context.setOffline(false);
  await page.locator('[data-testid=banner]').waitFor({ state: 'hidden', timeout: 15_000 });
});

test('the page asks nothing of any server but its own', () => {
  const origin = new URL(URL_OPEN).origin;
  const foreign = b.requests.filter((u) => !u.startsWith(`${origin}/`) && !u.startsWith('blob:') && !u.startsWith('data:') && !u.startsWith('file:'));
  assert.deepEqual(foreign, []);
  assert.ok(b.requests.length > 50, 'requests were recorded');
  assert.deepEqual(b.problems.filter((p) => p.startsWith('page error')), []);
});

test('with logins on: login, a user sees only what is granted, logout ends the session', async () => {
  assert.ok(URL_SECURE, 'QUARRY_SECURE_URL names a quarry with logins on');
  const admin = (await rest(URL_SECURE, '/api/v1/login', { user: 'admin', password: 'pw' })).body.token;
  const created = await rest(URL_SECURE, '/api/v1/users', { name: 'viewer', password: 'viewer-pw' }, admin);
  assert.ok(created.status < 300, JSON.stringify(created.body));

  const s = await launch();
  try {
    await s.page.goto(URL_SECURE);
    await s.page.fill('[data-testid=login-user]', 'viewer');
    await s.page.fill('[data-testid=login-password]', 'wrong');
    await s.page.click('[data-testid=login-submit]');
    await s.page.locator('[data-testid=error]').waitFor();
    await s.page.fill('[data-testid=login-password]', 'viewer-pw');
    await s.page.click('[data-testid=login-submit]');
    await s.page.locator('[data-testid=catalog-tree]').waitFor();
    await s.page.locator('[data-testid=user]').waitFor();
    await s.page.waitForTimeout(500);
    assert.equal(await s.page.locator('[data-testid=catalog-tree] [data-dataset="demo.orders"]').count(), 0, 'no grant, no table');
    assert.equal(await s.page.locator('[data-testid=nav-admin]').count(), 0, 'no admin page for a user');
    const token = await s.page.evaluate(() => sessionStorage.getItem('quarry-token'));
    assert.ok(token);

    // Granted, the table appears.
    await rest(URL_SECURE, '/api/v1/grants', { privileges: ['SELECT'], on: { type: 'table', name: 'demo.orders' }, to: { type: 'user', name: 'viewer' } }, admin);
    await s.page.click('[data-testid=catalog-reload]');
    await s.page.locator('[data-testid=catalog-tree] [data-dataset="demo.orders"]').waitFor({ timeout: 10_000 });

    await s.page.click('[data-testid=logout]');
    await s.page.locator('[data-testid=login-user]').waitFor();
    assert.equal((await rest(URL_SECURE, '/api/v1/catalog', undefined, token)).status, 401, 'the token no longer works');
    assert.equal(await s.page.evaluate(() => sessionStorage.getItem('quarry-token')), null);
  } finally {
    await s.close();
  }
});

test('an admin logs in and sees the admin page', async () => {
  const s = await launch();
  try {
    await s.page.goto(URL_SECURE);
    await s.page.fill('[data-testid=login-user]', 'admin');
    await s.page.fill('[data-testid=login-password]', 'pw');
    await s.page.click('[data-testid=login-submit]');
    await s.page.click('[data-testid=nav-admin]');
    await s.page.locator('[data-testid=users-list]').waitFor();
    assert.match(await s.page.locator('[data-testid=users-list]').textContent(), /viewer/);
  } finally {
    await s.close();
  }
  writeFileSync(join(downloads, 'done'), '');
});
