// Follows the contacts' statuses over the server-sent event stream, which also keeps the
// user online while it is open (the server refreshes the status of every connected user).
// Heartbeats set a status (away, busy) and keep the user online while the stream is down.
// The stream is opened with a single-use ticket (the session token never goes into a URL),
// so every (re)connection asks for a fresh one.

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
 * `onContacts({user_id, change})` when the contacts or requests changed (read them again).
 * `onStream(state)` reports 'live' | 'reconnecting'.
 * `onCall(name, data)` for the calling events `incoming_call` and `call_update` (calls.js).
 */
export class Presence {
  constructor({ onUpdate, onContacts, onStream, onError, onCall }) {
    this.onUpdate = onUpdate;
    this.onContacts = onContacts ?? (() => {});
    this.onStream = onStream ?? (() => {});
    this.onError = onError ?? (() => {});
    this.onCall = onCall ?? (() => {});
    this.status = 'online';
    this.timer = null;
    this.streamTimer = null;
    this.events = null;
    this.live = false;
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
    // A live stream keeps the status alive: no periodic beats while it is up.
    if (this.stopped || this.live) return;
    this.timer = setTimeout(() => this.beat(), jittered(ttl * 1000 * HEARTBEAT_FRACTION));
  }

  async openStream() {
    if (this.stopped) return;
    // EventSource cannot send headers: the stream takes a single-use ticket, asked for with
    // the session token in the Authorization header.
    let ticket;
    try {
      ticket = (await api.streamTicket()).ticket;
    } catch (err) {
      this.onError(err);
      this.retryStream(err.retryAfter);
      return;
    }
    if (this.stopped) return;
    const events = new EventSource(`/v1/presence/stream?ticket=${encodeURIComponent(ticket)}`);
    this.events = events;
    events.addEventListener('open', () => {
      this.live = true;
      clearTimeout(this.timer);
      this.onStream('live');
    });
    events.addEventListener('presence', (event) => {
      try {
        this.onUpdate(JSON.parse(event.data));
      } catch {
        // A malformed event changes nothing on screen.
      }
    });
    events.addEventListener('contacts', (event) => {
      try {
        this.onContacts(JSON.parse(event.data));
      } catch {
        // A malformed event changes nothing on screen.
      }
    });
    for (const name of ['incoming_call', 'call_update']) {
      events.addEventListener(name, (event) => {
        try {
          this.onCall(name, JSON.parse(event.data));
        } catch {
          // A malformed event changes nothing on screen.
        }
      });
    }
    events.addEventListener('error', () => {
      if (this.stopped || this.events !== events) return;
      // The browser's own reconnect would reuse the spent ticket: close, and reopen with a
      // new one after a jittered pause.
      events.close();
      this.events = null;
      // Beat again until the stream is back, so the status does not lapse meanwhile.
      if (this.live) {
        this.live = false;
        this.beat();
      }
      this.retryStream();
    });
  }

  retryStream(retryAfterSecs) {
    if (this.stopped) return;
    this.onStream('reconnecting');
    const wait = Math.max(jittered(3000), (retryAfterSecs ?? 0) * 1000);
    clearTimeout(this.streamTimer);
    this.streamTimer = setTimeout(() => this.openStream(), wait);
  }

  /** Stops heartbeats and the stream (logout, or the page going away). */
  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.streamTimer);
    this.events?.close();
  }
}
