// The Surge HTTP API as the web client sees it: JSON in and out, Bearer auth, and errors
// turned into `ApiError`s that carry the server's stable `code`.

const SESSION_KEY = 'surge.session';

/** An HTTP error answered by the API (`{"error":{"code","message"}}`) or a network failure. */
export class ApiError extends Error {
  /**
   * @param {number} status HTTP status, 0 when the server could not be reached
   * @param {string} code the server's machine-readable code (or `network` / `http_<status>`)
   * @param {string} message the server's human-readable message
   * @param {number|null} retryAfter seconds from `Retry-After`, when the server sent one
   */
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

/** Parses `Retry-After` (seconds or an HTTP date) into whole seconds, at least 1. */
export function parseRetryAfter(value) {
  if (!value) return null;
  const secs = Number(value);
  if (Number.isFinite(secs)) return Math.max(1, Math.ceil(secs));
  const when = Date.parse(value);
  if (Number.isNaN(when)) return null;
  return Math.max(1, Math.ceil((when - Date.now()) / 1000));
}

/** Builds an `ApiError` from a non-2xx response, tolerating bodies that are not our JSON shape. */
export async function errorFrom(response) {
  let code = `http_${response.status}`;
  let message = response.statusText || 'Request failed';
  try {
    const body = await response.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch {
    // Not JSON (a proxy's error page, for instance): keep the status-based code.
  }
  return new ApiError(response.status, code, message, parseRetryAfter(response.headers.get('Retry-After')));
}

/** The stored login, shared by every tab of this browser profile. */
export const session = {
  get() {
    try {
      const raw = localStorage.getItem(SESSION_KEY);
      return raw ? JSON.parse(raw) : null;
    } catch {
      return null;
    }
  },
  set(value) {
    localStorage.setItem(SESSION_KEY, JSON.stringify(value));
  },
  clear() {
    localStorage.removeItem(SESSION_KEY);
  },
  token() {
    return this.get()?.token ?? null;
  },
};

/**
 * Calls the API. `body` is sent as JSON; the session token is attached when there is one.
 * Resolves to the parsed JSON (or null for an empty body); rejects with an `ApiError`.
 */
export async function request(method, path, { body, headers = {}, token = session.token() } = {}) {
  const init = { method, headers: { Accept: 'application/json', ...headers } };
  if (token) init.headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, 'network', `Cannot reach the server (${err.message})`);
  }
  if (!response.ok) throw await errorFrom(response);
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

/**
 * Joins a call: the SDP offer goes to the API, which relays it to the room's media server
 * (one origin for everything; media then flows straight to that server). Resolves to
 * `{ sdp, resource, iceServers }`: the SDP answer, the URL that represents this participant
 * and the TURN/STUN servers (with fresh credentials) sent beside the answer.
 */
export async function joinCall(roomId, offerSdp, token = session.token()) {
  let response;
  try {
    response = await fetch(`/v1/rooms/${encodeURIComponent(roomId)}/participants`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/sdp' },
      body: offerSdp,
    });
  } catch (err) {
    throw new ApiError(0, 'network', `Cannot reach the server (${err.message})`);
  }
  if (response.status !== 201) throw await errorFrom(response);
  const location = response.headers.get('Location');
  return {
    sdp: await response.text(),
    resource: location ? new URL(location, window.location.href).href : null,
    iceServers: iceServersFromLinks(response.headers.get('Link')),
  };
}

/**
 * The TURN/STUN servers of WHIP `Link: <url>; rel="ice-server"; username=…; credential=…`
 * headers (RFC 9725), as `RTCIceServer`s: one per username/credential pair.
 */
export function iceServersFromLinks(links) {
  const servers = new Map();
  for (const [, url, rest] of (links ?? '').matchAll(/<([^>]*)>([^<]*)/g)) {
    const params = Object.fromEntries([...rest.matchAll(/;\s*([\w-]+)="([^"]*)"/g)].map(([, k, v]) => [k, v]));
    if (params.rel !== 'ice-server') continue;
    const key = `${params.username ?? ''}\n${params.credential ?? ''}`;
    if (!servers.has(key)) {
      const server = { urls: [] };
      if (params.username !== undefined) server.username = params.username;
      if (params.credential !== undefined) server.credential = params.credential;
      servers.set(key, server);
    }
    servers.get(key).urls.push(url);
  }
  return [...servers.values()];
}

/** The TURN/STUN servers for the logged-in user (none when the service has none). */
export async function iceServers(token = session.token()) {
  const body = await request('GET', '/v1/ice-servers', { token });
  return body?.ice_servers ?? [];
}

/** Leaves a call: DELETE of its participant resource. `keepalive` lets it outlive the page. */
export function leaveCall(resource, { keepalive = false, token = session.token() } = {}) {
  return fetch(resource, { method: 'DELETE', headers: { Authorization: `Bearer ${token}` }, keepalive });
}

/** Whether the call server still has this participant: resolves to the response (200 or 404). */
export function checkCall(resource, token = session.token()) {
  return fetch(resource, { headers: { Authorization: `Bearer ${token}` } });
}

/**
 * ICE restart on the same participant (as WHIP does): PATCH of its resource with an offer
 * carrying new ICE credentials; resolves to the SDP answer. `404 session_gone` means rejoin.
 */
export async function restartCall(resource, offerSdp, token = session.token()) {
  let response;
  try {
    response = await fetch(resource, {
      method: 'PATCH',
      headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/sdp' },
      body: offerSdp,
    });
  } catch (err) {
    throw new ApiError(0, 'network', `Cannot reach the server (${err.message})`);
  }
  if (response.status !== 200) throw await errorFrom(response);
  return response.text();
}

/** The API's endpoints, one function each. */
export const api = {
  signUp: (account, idempotencyKey) =>
    request('POST', '/v1/accounts', {
      body: account,
      headers: idempotencyKey ? { 'Idempotency-Key': idempotencyKey } : {},
      token: null,
    }),
  logIn: (email, password) => request('POST', '/v1/sessions', { body: { email, password }, token: null }),
  logOut: () => request('DELETE', '/v1/sessions/current'),
  me: () => request('GET', '/v1/me'),
  setPresence: (status) => request('PUT', '/v1/presence', { body: { status } }),
  presence: (ids) => request('GET', `/v1/presence?ids=${ids.map(encodeURIComponent).join(',')}`),
  streamTicket: () => request('POST', '/v1/presence/tickets'),
  contacts: () => request('GET', '/v1/contacts'),
  requestContact: (email) => request('POST', '/v1/contacts', { body: { email } }),
  acceptContact: (userId) => request('POST', `/v1/contacts/requests/${encodeURIComponent(userId)}/accept`),
  declineContact: (userId) => request('DELETE', `/v1/contacts/requests/${encodeURIComponent(userId)}`),
  withdrawContact: (email) => request('DELETE', `/v1/contacts/outgoing/${encodeURIComponent(email)}`),
  removeContact: (userId) => request('DELETE', `/v1/contacts/${encodeURIComponent(userId)}`),
  createRoom: (name) => request('POST', '/v1/rooms', { body: name ? { name } : {} }),
  room: (roomId) => request('GET', `/v1/rooms/${encodeURIComponent(roomId)}`),
  joinCall,
  iceServers,
  leaveCall,
  checkCall,
  restartCall,
};
