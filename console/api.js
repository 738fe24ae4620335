// The API client: the token lives in this tab's sessionStorage only and goes out as
// `Authorization: Bearer …`, exactly as any other API client sends it.

const KEY = 'casegraph.session';

export const session = load();

function load() {
  try {
    return JSON.parse(sessionStorage.getItem(KEY)) || { token: null, me: null };
  } catch {
    return { token: null, me: null };
  }
}

export function saveSession(token, me) {
  session.token = token;
  session.me = me;
  sessionStorage.setItem(KEY, JSON.stringify(session));
}

export function clearSession() {
  session.token = null;
  session.me = null;
  sessionStorage.removeItem(KEY);
}

/** An error answer of the API: `{error: {code, message, details}}`. */
export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

export async function api(method, path, body, token = session.token) {
  return (await exchange(method, path, body, token)).data;
}

/** A listing's page and the path of the next one (its `Link: <…>; rel="next"`), if any. */
export async function getPage(path) {
  const { data, resp } = await exchange('GET', path, undefined, session.token);
  const link = /<(\/v1\/[^>]*)>;\s*rel="next"/.exec(resp.headers.get('link') || '');
  return { data, next: link ? link[1] : null };
}

async function exchange(method, path, body, token) {
  const headers = { Accept: 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let resp;
  try {
    resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiError(0, 'network', String(e && e.message || e), null);
  }
  const type = resp.headers.get('content-type') || '';
  const data = type.includes('json') ? await resp.json().catch(() => null) : await resp.text();
  if (!resp.ok) {
    const err = data && data.error ? data.error : {};
    throw new ApiError(resp.status, err.code || `http_${resp.status}`, err.message || String(data || resp.statusText), err.details ?? null);
  }
  return { data, resp };
}

export const get = (path) => api('GET', path);
export const post = (path, body) => api('POST', path, body ?? {});
