// Keeps the user's own status alive with heartbeats and follows the contacts' statuses over
// the server-sent event stream.

import { api } from './api.js';

/** Heartbeats run at about a third of the server's TTL, so two can be lost before expiry. */
const HEARTBEAT_FRACTION = 1 / 3;
/** ±20 % jitter keeps a crowd of tabs from beating in lockstep after a mass reconnect. */
const JITTER = 0.2;
const FALLBACK_TTL_SECS = 60;

function jittered(ms) {
  return ms * (1 - JITTER + Math.random() * 2 * JITTER);
}

/**
 * Owns the heartbeat timer and the SSE connection for one login.
 * `onUpdate({user_id, status})` is called for every presence event.
 * `onStream(state)` reports 'live' | 'reconnecting'.
 */
export class Presence {
  constructor({ token, onUpdate, onStream, onError }) {
    this.token = token;
    this.onUpdate = onUpdate;
    this.onStream = onStream ?? (() => {});
    this.onError = onError ?? (() => {});
    this.status = 'online';
    this.timer = null;
    this.events = null;
    this.stopped = false;
  }

  start(status = 'online') {
    this.status = status;
    this.beat();
    this.openStream();
  }

  /** Changes the user's status now (and in every later heartbeat). */
  async setStatus(status) {
    this.status = status;
    await this.beat();
  }

  async beat() {
    clearTimeout(this.timer);
    if (this.stopped) return;
    let ttl = FALLBACK_TTL_SECS;
    try {
      const answer = await api.setPresence(this.status);
      if (answer && Number.isFinite(answer.ttl_secs) && answer.ttl_secs > 0) ttl = answer.ttl_secs;
    } catch (err) {
      this.onError(err);
      // Try again sooner than a normal beat: the status may expire otherwise.
      ttl = Math.min(ttl, 15);
    }
    if (this.stopped) return;
    this.timer = setTimeout(() => this.beat(), jittered(ttl * 1000 * HEARTBEAT_FRACTION));
  }

  openStream() {
    if (this.stopped) return;
    // EventSource cannot send headers, so the stream takes the session token in the query.
    const events = new EventSource(`/v1/presence/stream?token=${encodeURIComponent(this.token)}`);
    this.events = events;
    events.addEventListener('open', () => this.onStream('live'));
    events.addEventListener('presence', (event) => {
      try {
        this.onUpdate(JSON.parse(event.data));
      } catch {
        // A malformed event changes nothing on screen.
      }
    });
    events.addEventListener('error', () => {
      if (this.stopped) return;
      this.onStream('reconnecting');
      if (events.readyState === EventSource.CLOSED) {
        // The browser gave up (e.g. a 401 or 503): retry ourselves, with jitter.
        setTimeout(() => this.openStream(), jittered(5000));
      }
    });
  }

  /** Stops heartbeats and the stream (logout, or the page going away). */
  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.events?.close();
  }
}
