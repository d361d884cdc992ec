// Saves a 1280×800 screenshot of each page of the console into ../docs/console/ (the
// README shows them). Run against a `quarry up` with demo data:
//   node screenshots.mjs http://127.0.0.1:9047
// Refresh them whenever the pages change.
import { mkdirSync } from 'node:fs';
import { launch } from './tests/browser.mjs';

const base = (process.argv[2] || 'http://127.0.0.1:9047').replace(/\/$/, '');
const out = new URL('../docs/console/', import.meta.url).pathname;
mkdirSync(out, { recursive: true });

const b = await launch();
const { page } = b;
const shot = (name) => page.screenshot({ path: `${out}${name}.png` });

async function run(sql) {
  await page.click('[data-testid=editor] .cm-content');
  await page.keyboard.press('Control+A');
  await page.locator('[data-testid=editor] .cm-content').fill(sql);
  await page.keyboard.press('Escape');
  await page.click('[data-testid=run]');
  await page.locator('[data-testid=row-count]').waitFor({ timeout: 120_000 });
}

try {
  await page.goto(base);
  await page.locator('[data-testid=catalog-tree] [data-dataset="demo.orders"]').waitFor({ timeout: 30_000 });
  await page.click('[data-testid=catalog-tree] [data-dataset="demo.orders"] summary .icon');
  await run('SELECT o.city, o.product_category, count(*) AS orders, round(sum(o.revenue), 2) AS revenue\nFROM demo.orders o\nGROUP BY o.city, o.product_category\nORDER BY revenue DESC');
  await shot('sql');

  await page.click('[data-testid=editor] .cm-content');
  await page.keyboard.press('Control+A');
  await page.keyboard.press('Delete');
  await page.keyboard.type('SELECT * FROM demo.orders o WHERE o.re', { delay: 20 });
  await page.locator('.cm-tooltip-autocomplete').waitFor({ timeout: 5000 }).catch(() => {});
  await shot('completion');
  await page.keyboard.press('Escape');

  await run('SELECT city, round(sum(revenue), 2) AS revenue, count(*) AS orders FROM demo.orders GROUP BY city ORDER BY revenue DESC');
  await page.click('[data-testid=show-chart]');
  await page.locator('[data-testid=chart] canvas').waitFor();
  await shot('chart');
  await page.click('[data-testid=show-grid]');

  await run('SELECT o.city, count(*) AS n, avg(c.revenue) AS avg_revenue FROM demo.orders o JOIN demo.orders_csv c ON o.order_id = c.order_id GROUP BY o.city');
  await page.click('text=Job details');
  await page.locator('[data-testid=job-dag]').waitFor({ timeout: 30_000 });
  await shot('job');

  await page.goto(`${base}/#/jobs`);
  await page.locator('[data-testid=jobs-list] tbody tr').first().waitFor();
  await shot('jobs');

  await page.goto(`${base}/#/reflections`);
  await page.locator('[data-testid=reflections-list]').waitFor();
  await page.click('[data-testid=reflection-new]');
  await page.selectOption('[data-testid=reflection-dataset]', 'demo.orders');
  await page.locator('tr[data-column=city]').waitFor();
  await shot('reflections');

  await page.goto(`${base}/#/nodes`);
  await page.locator('[data-testid=nodes-list] tr[data-executor]').first().waitFor();
  await shot('nodes');

  await page.goto(`${base}/#/sql`);
  await page.click('[data-testid=theme]');
  await page.waitForTimeout(300);
  await shot('sql-dark');
  await page.click('[data-testid=theme]');
} finally {
  await b.close();
}
console.log(`screenshots in ${out}`);
