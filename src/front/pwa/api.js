// @ts-check
// The daemon's HTTP API, called by the names of its OpenAPI operations
// (`'GET /api/v1/sessions/{id}'`), so each call's body and answer have the
// document's types and a route the document lacks does not type-check.
import { state } from './store.js';

/** @typedef {import('./types/api').ApiOperations} ApiOperations */
/** @typedef {keyof ApiOperations} Operation */
/** @typedef {import('./types/events').BosunEvent} BosunEvent */

/**
 * @template {Operation} K
 * @typedef {object} CallParts
 * @property {Record<string, string>} [params] the `{name}`s of the path
 * @property {Record<string, string | number>} [query]
 * @property {ApiOperations[K]['request']} [body]
 */

export class HttpError extends Error {
  /** @param {number} status @param {unknown} body */
  constructor(status, body) {
    const err = errorDetail(body);
    super(err ? err.message : 'HTTP ' + status);
    this.status = status;
    this.code = err ? err.code : '';
  }
}

/**
 * What to tell a person about a failed call: the daemon's message, else the network's.
 * @param {unknown} e
 */
export function errorText(e) {
  return e instanceof Error ? e.message : String(e);
}

/** @param {unknown} body @returns {import('./types/api').ErrorDetail | null} */
function errorDetail(body) {
  if (!body || typeof body !== 'object' || !('error' in body)) return null;
  const err = /** @type {import('./types/api').ErrorBody} */ (body).error;
  return err && typeof err.message === 'string' ? err : null;
}

const listeners = {
  /** A request answered 401: this device's token is refused. */
  unauthorized() {},
  /** `state.link.httpDown` changed, or a request failed again. */
  reachability() {},
};

/** @param {Partial<typeof listeners>} wanted */
export function listen(wanted) {
  Object.assign(listeners, wanted);
}

/**
 * @template {Operation} K
 * @param {K} operation
 * @param {CallParts<K>} [parts]
 * @returns {Promise<ApiOperations[K]['response']>}
 */
export async function call(operation, parts = {}) {
  const [method, template] = operation.split(' ');
  const params = parts.params || {};
  let path = template.replace(/\{(\w+)\}/g, (_, name) => encodeURIComponent(params[name]));
  if (parts.query) path += '?' + new URLSearchParams(Object.entries(parts.query).map(([k, v]) => [k, String(v)]));
  return request(method, path, parts.body);
}

/**
 * One request, untyped: what `call` sends once it has filled in the path.
 * @param {string} method
 * @param {string} path with its query
 * @param {unknown} [body]
 * @returns {Promise<any>}
 */
export async function request(method, path, body) {
  // X-Bosun-Client: the daemon refuses state-changing requests that lack it
  // (or a JSON body), which is how it tells us from a cross-site form.
  /** @type {Record<string, string>} */
  const headers = { 'X-Bosun-Client': 'bosun-web' };
  if (state.token) headers.Authorization = 'Bearer ' + state.token;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
  } catch (e) {
    state.link.httpDown = true;
    listeners.reachability();
    throw e;
  }
  if (state.link.httpDown) {
    state.link.httpDown = false;
    listeners.reachability();
  }
  let data = null;
  const text = await res.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch (_) {
      data = null;
    }
  }
  if (res.status === 401 && !path.startsWith('/auth/')) listeners.unauthorized();
  if (!res.ok) throw new HttpError(res.status, data);
  return data;
}

/**
 * A page of the event log: the same envelopes as the WebSocket's, typed by
 * the event schema rather than the document's untyped `data`.
 * @param {{ since: number, limit: number, session?: string }} query
 * @returns {Promise<{ events: BosunEvent[], next: number }>}
 */
export async function eventsPage(query) {
  /** @type {Record<string, string | number>} */
  const q = {};
  if (query.session !== undefined) q.session = query.session;
  q.since = query.since;
  q.limit = query.limit;
  const page = await call('GET /api/v1/events', { query: q });
  return { events: /** @type {BosunEvent[]} */ (page.events), next: page.next };
}
