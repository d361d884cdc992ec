// Nodes: the executors with their state, slots, running tasks, memory, spill files and
// last heartbeat (`sys.nodes`), refreshed every two seconds.
import * as api from './api.js';
import { h, fill, bytes, when } from './dom.js';

export function nodesPage(root, alive) {
  const list = h('tbody');
  const message = h('div');
  fill(root, h('h2', {}, 'Nodes'), message, h('table', { class: 'list', testid: 'nodes-list' },
    h('thead', {}, h('tr', {}, ['Executor', 'Endpoint', 'State', 'Slots', 'Running tasks', 'Memory', 'Spill files', 'Exchange', 'Registered', 'Last heartbeat'].map((c) => h('th', {}, c)))),
    list));
  async function refresh() {
    try {
      const rows = await api.rows('SELECT * FROM sys.nodes ORDER BY executor_id');
      fill(message);
      fill(list, rows.map((n) => h('tr', { 'data-executor': n.executor_id },
        h('td', {}, n.executor_id), h('td', {}, n.endpoint), h('td', {}, h('span', { class: `state ${String(n.state).toLowerCase()}` }, n.state)),
        h('td', { class: 'num' }, n.slots), h('td', { class: 'num' }, n.running_tasks), h('td', { class: 'num' }, bytes(n.memory_used_bytes)),
        h('td', { class: 'num' }, n.spill_files), h('td', { class: 'num' }, `${n.exchange_outputs} outputs · ${bytes(n.exchange_bytes)}`),
        h('td', {}, when(n.registered)), h('td', {}, when(n.last_heartbeat)))));
    } catch (e) {
      fill(message, h('div', { class: 'error', testid: 'error' }, e.message));
    }
  }
  refresh();
  const timer = setInterval(() => { if (alive()) refresh(); else clearInterval(timer); }, 2000);
}
