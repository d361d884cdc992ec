// The REST API the console speaks: `/api/v1/...` on the page's own origin. With
// authentication on, the token from POST /api/v1/login is kept for this tab only
// (sessionStorage) and sent as `Authorization: Bearer`.
import { tableFromIPC } from 'apache-arrow';

const TOKEN = 'quarry-token';
const USER = 'quarry-user';
const listeners = { auth: [], connection: [] };

export const session = {
  get token() { return sessionStorage.getItem(TOKEN); },
  get user() { return sessionStorage.getItem(USER); },
  set(token, user) {
    sessionStorage.setItem(TOKEN, token);
    sessionStorage.setItem(USER, user);
  },
  clear() {
    sessionStorage.removeItem(TOKEN);
    sessionStorage.removeItem(USER);
  },
};

/** Be told when the server asks for a login (`auth`) or the connection drops or returns. */
export function on(event, fn) { listeners[event].push(fn); }
const emit = (event, value) => listeners[event].forEach((fn) => fn(value));

/** An error the server answered with: its code, message and HTTP status. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let offline = false;
function connected(ok) {
  if (ok === !offline) return;
  offline = !ok;
  emit('connection', ok);
  if (!ok) watch();
}

// While the server is unreachable, look for it every two seconds.
function watch() {
  const timer = setInterval(async () => {
    try {
      const r = await fetch('/healthz', { cache: 'no-store' });
      if (r.ok) { clearInterval(timer); connected(true); }
    } catch { /* still away */ }
  }, 2000);
}

/** A raw fetch with the token; throws ApiError for answers other than 2xx. */
export async function request(path, { method = 'GET', body, accept, signal } = {}) {
  const headers = {};
  const token = session.token;
  if (token) headers.authorization = `Bearer ${token}`;
  if (accept) headers.accept = accept;
  if (body !== undefined) headers['content-type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, {
      method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    connected(false);
    throw new ApiError(0, 'UNAVAILABLE', 'The Quarry server cannot be reached.');
  }
  connected(true);
  if (response.ok) return response;
  let code = 'UNKNOWN';
  let message = `${response.status} ${response.statusText}`;
  try {
    const error = await response.json();
    code = error.code || code;
    message = error.message || message;
  } catch { /* not JSON */ }
  // Asked to log in (again): with no token the caller is the login form itself.
  if (response.status === 401) {
    const had = session.token;
    session.clear();
    if (had || path !== '/api/v1/login') emit('auth', message);
  }
  throw new ApiError(response.status, code, message);
}

/** JSON in, JSON out. */
export async function json(path, options = {}) {
  const response = await request(path, options);
  if (response.status === 204) return null;
  return response.json();
}

/** Run a statement and wait for its rows (small answers: catalog lookups, sys tables). */
export async function rows(sql) {
  const answer = await json('/api/v1/sql', { method: 'POST', body: { sql } });
  return answer.rows;
}

/** Submit a statement; its job id. */
export async function submit(sql, context) {
  const body = { sql, async: true };
  if (context) body.context = [context];
  const answer = await json('/api/v1/sql', { method: 'POST', body });
  return answer.id;
}

export const job = (id) => json(`/api/v1/jobs/${encodeURIComponent(id)}`);
export const cancel = (id) => json(`/api/v1/jobs/${encodeURIComponent(id)}/cancel`, { method: 'POST' });

/** Rows `offset .. offset + limit` of a job's result, as an Arrow table. */
export async function page(id, offset, limit, signal) {
  const path = `/api/v1/jobs/${encodeURIComponent(id)}/results?offset=${offset}&limit=${limit}&format=arrow`;
  const response = await request(path, { signal });
  return tableFromIPC(new Uint8Array(await response.arrayBuffer()));
}

/** A whole result as a file (streamed by the server). */
export async function exported(id, format) {
  const path = `/api/v1/jobs/${encodeURIComponent(id)}/results?format=${format}&download=true`;
  const response = await request(path);
  return response.blob();
}

/**
 * The position (1-based line, column) in `sql` an error message points at: the parser's
 * own, else where the name the planner could not resolve first appears.
 */
export function position(message, sql = '') {
  const m = /Line: (\d+), Column: (\d+)/i.exec(message) || /line (\d+),? column (\d+)/i.exec(message);
  if (m) return { line: Number(m[1]), column: Number(m[2]) };
  const name = /No field named "?([\w.]+)"?/.exec(message) || /table '([\w.]+)' not found/i.exec(message);
  if (!name || !sql) return null;
  const word = name[1].replace(/\.+$/, '').split('.').pop();
  if (!word) return null;
  const at = sql.search(new RegExp(`\\b${word.replace(/[^\w]/g, '')}\\b`, 'i'));
  if (at < 0) return null;
  const before = sql.slice(0, at).split('\n');
  return { line: before.length, column: before[before.length - 1].length + 1 };
}
