// Calling your contacts (issue 15): a Call button on each online contact (and a selection
// for a group call), the ringing dialog with a ringtone made by WebAudio, the caller's view
// of each callee's answer, "Add people" inside a call, and the recent calls with Call back.
// Ringing arrives over the presence stream (`incoming_call`, `call_update`); the app hands
// those events here. The DOM this module needs it builds itself, beside the app's views.

import { request, session, ApiError } from './api.js';

const calls = {
  start: (callees) => request('POST', '/v1/calls', { body: { callees } }),
  accept: (id) => request('POST', `/v1/calls/${encodeURIComponent(id)}/accept`),
  decline: (id) => request('POST', `/v1/calls/${encodeURIComponent(id)}/decline`),
  add: (id, callees) => request('POST', `/v1/calls/${encodeURIComponent(id)}/members`, { body: { callees } }),
  recent: () => request('GET', '/v1/calls/recent'),
  /** Leaving must outlive a closing page: a keepalive fetch, not `request`. */
  hangup: (id) =>
    fetch(`/v1/calls/${encodeURIComponent(id)}/hangup`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${session.token()}` },
      keepalive: true,
    }).catch(() => {}),
};

/** What the caller reads for each state of a callee's ring. */
const STATE_TEXT = {
  ringing: (name) => `Ringing ${name}…`,
  accepted: (name) => `${name} answered`,
  declined: (name) => `${name} declined`,
  busy: (name) => `${name} is busy`,
  no_answer: (name) => `No answer from ${name}`,
  cancelled: (name) => `Stopped ringing ${name}`,
  ended: (name) => `${name} left`,
};

/** A recent-calls line's words. */
const OUTCOME_TEXT = {
  answered: (dir) => (dir === 'incoming' ? 'Incoming call' : 'Outgoing call'),
  missed: () => 'Missed call',
  declined: (dir) => (dir === 'incoming' ? 'You declined' : 'Declined'),
  busy: () => 'Busy',
  no_answer: () => 'No answer',
  cancelled: () => 'Cancelled',
  ringing: () => 'Ringing',
};

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

function errorText(err) {
  if (!(err instanceof ApiError)) return 'Something went wrong; try again.';
  if (err.code === 'not_a_contact') return 'You can only call your contacts.';
  if (err.code === 'callee_busy') return 'They are in another call. Try again later.';
  if (err.code === 'rate_limited') return `Too many calls; try again in ${err.retryAfter ?? 60} s.`;
  if (err.code === 'call_not_ringing') return 'That call was answered elsewhere or has ended.';
  if (err.code === 'already_in_call') return 'They are already in this call.';
  if (err.code === 'not_in_call') return 'You are no longer in that call.';
  if (err.code === 'too_many_rooms') return 'You have too many rooms open; old ones expire when unused.';
  if (err.code === 'network') return 'Cannot reach Surge. Check your connection.';
  return err.message || 'Something went wrong; try again.';
}

/**
 * A phone-like ring made by WebAudio, so no media file is needed: two tones (440 and
 * 480 Hz) together, 2 s on, 4 s off. The audio context is created on first use; a page
 * that the browser keeps silent (no user gesture yet) still shows the dialog.
 */
class Ringtone {
  constructor() {
    this.context = null;
    this.timer = null;
    this.nodes = [];
  }

  start() {
    if (this.timer) return;
    try {
      this.context ??= new AudioContext();
      this.context.resume?.().catch(() => {});
    } catch {
      return;
    }
    const ring = () => {
      const ctx = this.context;
      const gain = ctx.createGain();
      gain.gain.setValueAtTime(0, ctx.currentTime);
      gain.gain.linearRampToValueAtTime(0.12, ctx.currentTime + 0.05);
      gain.gain.setValueAtTime(0.12, ctx.currentTime + 1.95);
      gain.gain.linearRampToValueAtTime(0, ctx.currentTime + 2);
      gain.connect(ctx.destination);
      for (const hz of [440, 480]) {
        const osc = ctx.createOscillator();
        osc.frequency.value = hz;
        osc.connect(gain);
        osc.start();
        osc.stop(ctx.currentTime + 2);
        this.nodes.push(osc);
      }
      this.nodes.push(gain);
    };
    ring();
    this.timer = setInterval(ring, 6000);
  }

  get playing() {
    return this.timer !== null;
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
    for (const node of this.nodes) {
      try {
        node.stop?.();
        node.disconnect();
      } catch {
        // Already stopped.
      }
    }
    this.nodes = [];
  }
}

/**
 * The calling part of the app. `hooks`: `me()` is the user's id, `enterRoom(roomId)` joins a room's call,
 * `currentRoom()` names the room of the call the page is in (or null), `contacts()` the
 * accepted contacts (a Map of user_id → contact), `toast(text)`.
 */
export class Calling {
  constructor(hooks) {
    this.hooks = hooks;
    /** The call this page is in, when it came through here: `{ callId, roomId, callees: Map }`. */
    this.active = null;
    /** Calls ringing on this page: call_id → `{ callId, caller, room }`. */
    this.ringing = new Map();
    /** Contacts ticked for a group call. */
    this.selected = new Set();
    this.recentCalls = [];
    this.ringtone = new Ringtone();
    this.build();
  }

  // ------------------------------------------------------------------ DOM

  build() {
    // The ringing dialog.
    this.dialog = el('div', { id: 'ring-dialog', className: 'ring-dialog', role: 'alertdialog', hidden: true });
    this.dialog.setAttribute('aria-labelledby', 'ring-title');
    this.dialog.setAttribute('aria-describedby', 'ring-text');
    this.ringTitle = el('h2', { id: 'ring-title' }, 'Incoming call');
    this.ringText = el('p', { id: 'ring-text' });
    this.acceptButton = el('button', { type: 'button', className: 'btn btn-primary', id: 'ring-accept' }, 'Accept');
    this.declineButton = el('button', { type: 'button', className: 'btn btn-danger', id: 'ring-decline' }, 'Decline');
    this.acceptButton.addEventListener('click', () => this.answer(true));
    this.declineButton.addEventListener('click', () => this.answer(false));
    this.dialog.append(
      el('div', { className: 'ring-pulse', 'aria-hidden': 'true' }, '☎'),
      this.ringTitle,
      this.ringText,
      el('div', { className: 'actions' }, this.acceptButton, this.declineButton),
    );
    document.body.append(this.dialog);

    // Group call: appears when contacts are ticked.
    this.groupBar = el('div', { className: 'group-call', id: 'group-call', hidden: true });
    this.groupButton = el('button', { type: 'button', className: 'btn btn-primary', id: 'call-selected' }, 'Call selected');
    this.groupButton.addEventListener('click', () => this.call([...this.selected]));
    this.groupBar.append(this.groupButton);
    document.getElementById('contact-list')?.after(this.groupBar);

    // Recent calls, in the home view.
    this.recentCard = el('section', { className: 'card recent-calls', id: 'recent-calls' });
    this.recentCard.setAttribute('aria-labelledby', 'recent-title');
    this.recentList = el('ul', { className: 'contact-list', id: 'recent-list' });
    this.recentList.setAttribute('aria-label', 'Recent calls');
    this.recentEmpty = el('p', { className: 'empty', id: 'recent-empty' }, 'No calls yet.');
    this.recentCard.append(el('h2', { id: 'recent-title' }, 'Recent calls'), this.recentList, this.recentEmpty);
    document.getElementById('view-home')?.append(this.recentCard);

    // The caller's view of the callees, and "Add people", in the call view.
    this.statusList = el('ul', { className: 'call-ringing', id: 'call-ringing', hidden: true });
    this.statusList.setAttribute('aria-label', 'People you called');
    this.statusList.setAttribute('aria-live', 'polite');
    document.getElementById('grid')?.before(this.statusList);
    this.addButton = el('button', { type: 'button', className: 'btn control', id: 'add-people', hidden: true }, 'Add people');
    this.addButton.addEventListener('click', () => this.togglePicker());
    document.getElementById('leave')?.before(this.addButton);
    this.picker = el('div', { className: 'add-people card', id: 'add-people-panel', hidden: true });
    this.picker.setAttribute('role', 'group');
    this.picker.setAttribute('aria-label', 'Add people to the call');
    document.getElementById('grid')?.after(this.picker);
  }

  /** Adds the Call button and the group-call tick box to a contact's list item. */
  decorateContact(item, contact, status) {
    const actions = item.querySelector('.contact-actions');
    if (!actions) return;
    const name = contact.display_name || contact.email;
    const reachable = status !== 'offline';
    if (!reachable) this.selected.delete(contact.user_id);
    const tick = el('input', { type: 'checkbox', className: 'call-pick', disabled: !reachable, checked: this.selected.has(contact.user_id) });
    tick.setAttribute('aria-label', `Select ${name} for a group call`);
    tick.addEventListener('change', () => {
      if (tick.checked) this.selected.add(contact.user_id);
      else this.selected.delete(contact.user_id);
      this.renderGroupBar();
    });
    const button = el('button', { type: 'button', className: 'btn btn-primary call-button', disabled: !reachable }, 'Call');
    button.setAttribute('aria-label', `Call ${name}`);
    button.addEventListener('click', () => this.call([contact.user_id]));
    actions.prepend(tick, button);
  }

  /** After the contacts were drawn again. */
  contactsRendered() {
    const contacts = this.hooks.contacts();
    for (const id of [...this.selected]) if (!contacts.has(id)) this.selected.delete(id);
    this.renderGroupBar();
    if (!this.picker.hidden) this.renderPicker();
  }

  renderGroupBar() {
    this.groupBar.hidden = this.selected.size < 2;
    this.groupButton.textContent = `Call ${this.selected.size} selected`;
  }

  nameOf(userId, fallback = 'Someone') {
    const c = this.hooks.contacts().get(userId);
    return c?.display_name || c?.email || fallback;
  }

  // ------------------------------------------------------------------ calling out

  /** Rings `userIds` into a new room and joins it. */
  async call(userIds) {
    if (userIds.length === 0) return;
    let placed;
    try {
      placed = await calls.start(userIds);
    } catch (err) {
      this.hooks.toast(errorText(err));
      return;
    }
    this.selected.clear();
    this.renderGroupBar();
    for (const box of document.querySelectorAll('.call-pick')) box.checked = false;
    this.active = { callId: placed.call_id, roomId: placed.room.id, callees: new Map() };
    for (const c of placed.callees) this.active.callees.set(c.user_id, { name: c.display_name, state: c.state });
    await this.hooks.enterRoom(placed.room.id);
    this.renderStatus();
    this.loadRecent();
  }

  renderStatus() {
    const call = this.active;
    const inThisCall = call && this.hooks.currentRoom() === call.roomId;
    this.addButton.hidden = !inThisCall;
    if (!inThisCall) this.picker.hidden = true;
    const callees = inThisCall ? [...call.callees.entries()] : [];
    this.statusList.hidden = callees.length === 0;
    this.statusList.replaceChildren(
      ...callees.map(([id, c]) => {
        const text = (STATE_TEXT[c.state] ?? STATE_TEXT.ringing)(this.nameOf(id, c.name));
        return el('li', { dataset: { userId: id, state: c.state } }, text);
      }),
    );
  }

  togglePicker() {
    this.picker.hidden = !this.picker.hidden;
    this.addButton.setAttribute('aria-expanded', String(!this.picker.hidden));
    if (!this.picker.hidden) this.renderPicker();
  }

  renderPicker() {
    const call = this.active;
    const inCall = new Set(
      [...(call?.callees ?? new Map()).entries()].filter(([, c]) => c.state === 'ringing' || c.state === 'accepted').map(([id]) => id),
    );
    const people = [...this.hooks.contacts().values()].filter((c) => c.status !== 'offline' && !inCall.has(c.user_id));
    const rows = people.map((c) => {
      const name = c.display_name || c.email;
      const button = el('button', { type: 'button', className: 'btn' }, `Ring ${name}`);
      button.addEventListener('click', () => this.addPeople([c.user_id], button));
      return button;
    });
    this.picker.replaceChildren(
      el('p', { className: 'subhead' }, 'Ring a contact into this call'),
      ...(rows.length ? rows : [el('p', { className: 'empty' }, 'None of your contacts is online.')]),
    );
  }

  async addPeople(userIds, button) {
    const call = this.active;
    if (!call) return;
    if (button) button.disabled = true;
    try {
      const added = await calls.add(call.callId, userIds);
      for (const c of added.callees) call.callees.set(c.user_id, { name: c.display_name, state: c.state });
      this.picker.hidden = true;
      this.renderStatus();
      this.loadRecent();
    } catch (err) {
      this.hooks.toast(errorText(err));
      if (button) button.disabled = false;
    }
  }

  // ------------------------------------------------------------------ ringing

  /** A presence-stream event: `incoming_call` or `call_update`. */
  onEvent(name, data) {
    if (name === 'incoming_call') this.incoming(data);
    else if (name === 'call_update') this.update(data);
  }

  incoming(ring) {
    if (!ring?.call_id || this.ringing.has(ring.call_id)) return;
    this.ringing.set(ring.call_id, ring);
    this.renderRinging();
  }

  update({ call_id: callId, state, by }) {
    // Our own tab (or another of ours) answered, or the ring ended: stop ringing.
    if (this.ringing.has(callId) && state !== 'busy') {
      this.ringing.delete(callId);
      this.renderRinging();
      if (state === 'no_answer' || state === 'cancelled') this.loadRecent();
    }
    const call = this.active;
    if (by === this.hooks.me()) return;
    if (call?.callId === callId && by && (call.callees.has(by) || state === 'accepted' || state === 'ended')) {
      const known = call.callees.get(by);
      if (known || state !== 'ended') call.callees.set(by, { name: known?.name ?? this.nameOf(by), state });
      this.renderStatus();
      if (state !== 'accepted') this.loadRecent();
    }
  }

  renderRinging() {
    const ring = [...this.ringing.values()][0];
    if (!ring) {
      this.dialog.hidden = true;
      this.ringtone.stop();
      return;
    }
    const name = ring.caller?.name || 'Someone';
    this.ringTitle.textContent = `${name} is calling`;
    this.ringText.textContent = this.ringing.size > 1 ? `and ${this.ringing.size - 1} more call(s)` : 'Video call';
    this.acceptButton.setAttribute('aria-label', `Accept the call from ${name}`);
    this.declineButton.setAttribute('aria-label', `Decline the call from ${name}`);
    this.acceptButton.disabled = false;
    this.declineButton.disabled = false;
    this.dialog.dataset.callId = ring.call_id;
    const wasHidden = this.dialog.hidden;
    this.dialog.hidden = false;
    if (wasHidden) this.acceptButton.focus();
    this.ringtone.start();
  }

  async answer(accept) {
    const ring = this.ringing.get(this.dialog.dataset.callId);
    if (!ring) return;
    this.acceptButton.disabled = true;
    this.declineButton.disabled = true;
    this.ringing.delete(ring.call_id);
    this.renderRinging();
    try {
      if (!accept) {
        await calls.decline(ring.call_id);
        this.loadRecent();
        return;
      }
      const answered = await calls.accept(ring.call_id);
      this.active = { callId: ring.call_id, roomId: answered.room.id, callees: new Map() };
      await this.hooks.enterRoom(answered.room.id);
      this.renderStatus();
      this.loadRecent();
    } catch (err) {
      this.hooks.toast(errorText(err));
    }
  }

  /** The page left the call in `roomId`: hang up (the API then knows we are free). */
  left(roomId) {
    const call = this.active;
    if (!call || call.roomId !== roomId) return;
    this.active = null;
    calls.hangup(call.callId);
    this.renderStatus();
  }

  // ------------------------------------------------------------------ recent calls

  async loadRecent() {
    try {
      this.recentCalls = (await calls.recent())?.calls ?? [];
    } catch {
      // Shown again at the next event; the list is a convenience.
      return;
    }
    this.renderRecent();
  }

  renderRecent() {
    this.recentEmpty.hidden = this.recentCalls.length > 0;
    this.recentList.replaceChildren(
      ...this.recentCalls.slice(0, 20).map((c) => {
        const what = (OUTCOME_TEXT[c.outcome] ?? OUTCOME_TEXT.answered)(c.direction);
        const when = new Date(c.at * 1000).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
        const item = el(
          'li',
          { className: 'contact recent', dataset: { outcome: c.outcome, direction: c.direction, callId: c.call_id } },
          el('span', { className: 'recent-arrow', 'aria-hidden': 'true' }, c.direction === 'incoming' ? '↙' : '↗'),
          el('span', { className: 'contact-text' }, el('span', { className: 'contact-name' }, c.peer.name), el('br'), el('span', { className: 'contact-email' }, `${what} · ${when}`)),
        );
        if (this.hooks.contacts().has(c.peer.id)) {
          const back = el('button', { type: 'button', className: 'btn' }, 'Call back');
          back.setAttribute('aria-label', `Call ${c.peer.name} back`);
          back.addEventListener('click', () => this.call([c.peer.id]));
          item.append(el('span', { className: 'contact-actions' }, back));
        }
        return item;
      }),
    );
  }

  /** What the browser tests read. */
  snapshot() {
    return {
      active: this.active && { ...this.active, callees: Object.fromEntries(this.active.callees) },
      ringing: [...this.ringing.values()],
      ringtone: this.ringtone.playing,
      recent: this.recentCalls,
    };
  }

  /** Logged out: forget everything. */
  reset() {
    this.ringing.clear();
    this.renderRinging();
    this.active = null;
    this.selected.clear();
    this.recentCalls = [];
    this.renderRecent();
    this.renderStatus();
    this.renderGroupBar();
  }
}
