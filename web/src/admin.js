// Administration: users, roles and their members, and grants. Each action is the REST
// call of the same meaning, so the server refuses what the user may not do.
import * as api from './api.js';
import { h, fill, when } from './dom.js';

const enc = encodeURIComponent;

/** A table of rows with the keys of the first row as columns, and an action per row. */
function rowsTable(rows, action, testid) {
  if (!rows.length) return h('p', { class: 'muted' }, 'None.');
  const keys = Object.keys(rows[0]);
  return h('table', { class: 'list', testid },
    h('thead', {}, h('tr', {}, keys.map((k) => h('th', {}, k)), h('th', {}))),
    h('tbody', {}, rows.map((r) => h('tr', {}, keys.map((k) => h('td', {}, /_ms$|created|changed|expires/.test(k) ? when(r[k]) : (typeof r[k] === 'object' && r[k] !== null ? JSON.stringify(r[k]) : r[k]))),
      h('td', {}, action ? action(r) : null)))));
}

export function adminPage(root) {
  const message = h('div', { role: 'status' });
  const users = h('div');
  const roles = h('div');
  const grants = h('div');
  const say = (text, error) => fill(message, h('span', { class: error ? 'error' : 'ok', testid: error ? 'error' : null }, text));
  const act = async (fn, done) => {
    try { await fn(); say(done); load(); } catch (e) { say(e.message, true); }
  };

  const userName = h('input', { placeholder: 'user', 'aria-label': 'New user name', testid: 'user-name' });
  const userPassword = h('input', { type: 'password', placeholder: 'password', 'aria-label': 'New user password', testid: 'user-password' });
  const roleName = h('input', { placeholder: 'role', 'aria-label': 'New role name' });
  const memberRole = h('input', { placeholder: 'role', 'aria-label': 'Role' });
  const memberUser = h('input', { placeholder: 'user', 'aria-label': 'Member' });
  const privilege = h('select', { 'aria-label': 'Privilege', testid: 'grant-privilege' }, ['SELECT', 'INSERT', 'ALTER', 'CREATE TABLE', 'MANAGE GRANTS', 'ALL'].map((p) => h('option', { value: p }, p)));
  const objectType = h('select', { 'aria-label': 'Object type', testid: 'grant-object-type' }, ['table', 'view', 'schema', 'source', 'system'].map((p) => h('option', { value: p }, p)));
  const objectName = h('input', { placeholder: 'schema.table', 'aria-label': 'Object name', testid: 'grant-object' });
  const granteeType = h('select', { 'aria-label': 'Grantee type' }, ['user', 'role'].map((p) => h('option', { value: p }, p)));
  const grantee = h('input', { placeholder: 'grantee', 'aria-label': 'Grantee', testid: 'grant-to' });
  const grantBody = () => ({ privileges: [privilege.value], on: { type: objectType.value, name: objectName.value || undefined }, to: { type: granteeType.value, name: grantee.value } });

  fill(root, h('h2', {}, 'Administration'), message,
    h('h3', {}, 'Users'),
    h('form', { class: 'toolbar', onsubmit: (e) => { e.preventDefault(); act(() => api.json('/api/v1/users', { method: 'POST', body: { name: userName.value, password: userPassword.value } }), `Created user ${userName.value}`); } },
      userName, userPassword, h('button', { testid: 'user-create' }, 'Create user')),
    users,
    h('h3', {}, 'Roles'),
    h('form', { class: 'toolbar', onsubmit: (e) => { e.preventDefault(); act(() => api.json('/api/v1/roles', { method: 'POST', body: { name: roleName.value } }), `Created role ${roleName.value}`); } },
      roleName, h('button', {}, 'Create role')),
    h('form', { class: 'toolbar', onsubmit: (e) => { e.preventDefault(); act(() => api.json(`/api/v1/roles/${enc(memberRole.value)}/members`, { method: 'POST', body: { user: memberUser.value } }), `Added ${memberUser.value} to ${memberRole.value}`); } },
      memberRole, memberUser, h('button', {}, 'Add member')),
    roles,
    h('h3', {}, 'Grants'),
    h('form', { class: 'toolbar', onsubmit: (e) => { e.preventDefault(); act(() => api.json('/api/v1/grants', { method: 'POST', body: grantBody() }), 'Granted.'); } },
      privilege, h('span', {}, 'on'), objectType, objectName, h('span', {}, 'to'), granteeType, grantee,
      h('button', { testid: 'grant' }, 'Grant'),
      h('button', { type: 'button', onclick: () => act(() => api.json('/api/v1/grants/revoke', { method: 'POST', body: grantBody() }), 'Revoked.') }, 'Revoke')),
    grants);

  async function load() {
    try {
      const [u, r, g] = await Promise.all([api.json('/api/v1/users'), api.json('/api/v1/roles'), api.json('/api/v1/grants')]);
      fill(users, rowsTable(u.users, (row) => h('button', { class: 'link danger', onclick: () => confirm(`Drop user ${row.name}?`) && act(() => api.json(`/api/v1/users/${enc(row.name)}`, { method: 'DELETE' }), `Dropped ${row.name}`) }, 'drop'), 'users-list'));
      fill(roles, rowsTable(r.roles, (row) => h('button', { class: 'link danger', onclick: () => confirm(`Drop role ${row.name}?`) && act(() => api.json(`/api/v1/roles/${enc(row.name)}`, { method: 'DELETE' }), `Dropped ${row.name}`) }, 'drop'), 'roles-list'));
      fill(grants, rowsTable(g.grants, null, 'grants-list'));
    } catch (e) { say(e.message, true); }
  }
  load();
}
