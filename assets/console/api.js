// The public API, as the signed-in party: the token lives in this tab's session storage.

const KEY = 'parley.token';

export const session = {
  get token() { return sessionStorage.getItem(KEY); },
  set token(v) { v ? sessionStorage.setItem(KEY, v) : sessionStorage.removeItem(KEY); },
  get admin() { return sessionStorage.getItem('parley.admin') === 'true'; },
  set admin(v) { sessionStorage.setItem('parley.admin', v ? 'true' : 'false'); },
  clear() { sessionStorage.removeItem(KEY); sessionStorage.removeItem('parley.admin'); },
};

/// An RFC 9457 problem the API answered: its `detail` is shown beside the field it concerns.
export class Problem extends Error {
  constructor(status, body) {
    super(body.detail || body.title || `HTTP ${status}`);
    this.status = status;
    this.code = body.code || '';
    this.detail = body.detail || body.title || `HTTP ${status}`;
    this.body = body;
  }
}

async function problem(r) {
  let body = {};
  try { body = await r.json(); } catch { /* not JSON */ }
  return new Problem(r.status, body);
}

export async function request(method, path, body, { raw = false, form = null } = {}) {
  const headers = { Authorization: `Bearer ${session.token}` };
  let payload;
  if (form) {
    payload = form;
  } else if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  const r = await fetch(path, { method, headers, body: payload });
  if (!r.ok) throw await problem(r);
  if (raw) return r;
  if (r.status === 204) return null;
  const text = await r.text();
  return text ? JSON.parse(text) : null;
}

export const get = (path) => request('GET', path);
export const post = (path, body) => request('POST', path, body);
export const put = (path, body) => request('PUT', path, body);
export const patch = (path, body) => request('PATCH', path, body);
export const del = (path) => request('DELETE', path);

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : '';
}

/// Downloads a document with the token (a plain link could not carry it).
export async function download(documentId, fileName) {
  await save(`/api/documents/${encodeURIComponent(documentId)}/download`, fileName || documentId);
}

/// Saves what a GET of `path` answers as the file `fileName`, with the token.
export async function save(path, fileName) {
  const r = await request('GET', path, undefined, { raw: true });
  const url = URL.createObjectURL(await r.blob());
  const a = document.createElement('a');
  a.href = url;
  a.download = fileName;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}
