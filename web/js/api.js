// The API client: every request carries the account's bearer token; answers that are
// RFC 9457 problems become ApiError; each answer from the server is reported to the
// listeners (the "last heard from the server" line).

const TOKEN_KEY = 'yujing.token';
const heardListeners = [];

/** A refusal or failure of the API, with its problem detail when it sent one. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || null;
  }
}

/** The stored token (this browser tab only), or null. */
export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

/** Stores the token for this tab. */
export function setToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
}

/** Forgets the token. */
export function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** `listener(date, ok)` after every answer (ok) or failed request (not ok). */
export function onHeard(listener) {
  heardListeners.push(listener);
}

function heard(ok) {
  const now = new Date();
  for (const listener of heardListeners) listener(now, ok);
}

async function request(method, path, body) {
  const headers = { Accept: 'application/json' };
  const t = token();
  // Signed out meanwhile (a view still loading): no request the server would refuse.
  if (!t && path.startsWith('/api/')) throw new ApiError(401, { detail: 'signed out' });
  if (t) headers.Authorization = `Bearer ${t}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
  } catch (error) {
    heard(false);
    throw new ApiError(0, { detail: String(error) });
  }
  heard(true);
  const text = await response.text();
  let parsed = null;
  if (text) {
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = null;
    }
  }
  if (!response.ok) throw new ApiError(response.status, parsed);
  return parsed;
}

/** GET `path` (with `query` as URL parameters, nulls left out). */
export function get(path, query) {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== null && v !== undefined && v !== '') params.set(k, v);
  }
  const qs = params.toString();
  return request('GET', qs ? `${path}?${qs}` : path);
}

/** POST `body` as JSON to `path`. */
export function post(path, body) {
  return request('POST', path, body);
}

/** Every page of a list (`items`, `next`), up to `max` items. */
export async function all(path, query, max = 2000) {
  const items = [];
  let cursor = null;
  do {
    const page = await get(path, { ...query, limit: 500, cursor });
    items.push(...page.items);
    cursor = page.next;
  } while (cursor && items.length < max);
  return items;
}
