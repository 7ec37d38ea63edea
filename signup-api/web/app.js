// The Surge web client: wires the views (sign up / log in, contacts and rooms, call) to the
// API, presence and call modules. No framework: the DOM in index.html is the template.

import { api, session, ApiError } from './api.js';
import { Presence } from './presence.js';
import { Call, CallState, closePrepared, openLocalMedia, prepareConnection } from './call.js';
import { Calling } from './calls.js';
import { renderScreen, setupScreenShare } from './screen.js';
import { renderDevices, setupDevices } from './devices.js';
import { ChatPanel } from './chat.js';
import { renderRoster } from './roster.js';
import { signupMessage, loginMessage, contactMessage, roomMessage, statusLabel, countdown } from './messages.js';

const $ = (id) => document.getElementById(id);

const state = {
  user: null,
  presence: null,
  /** user_id → accepted contact `{user_id, email, display_name, status}` */
  contacts: new Map(),
  /** Requests to this user: `{user_id, email, display_name}` */
  incoming: [],
  /** This user's requests not yet accepted: `{email}` */
  outgoing: [],
  call: null,
  /**
   * Camera + microphone (a promise) opened on the pre-join screen and handed to the call:
   * the preview and a quick click share one getUserMedia.
   */
  localMedia: null,
  /** A connection with its offer made on the pre-join screen (a promise; null if it failed). */
  prepared: null,
  lastRoom: null,
  /** The name of the room on the pre-join screen, when it has one. */
  roomName: null,
};

// ---------------------------------------------------------------- routing

function roomIdFromPath(pathname = location.pathname) {
  const match = /^\/rooms\/([^/?#]+)\/?$/.exec(pathname);
  return match ? decodeURIComponent(match[1]) : null;
}

function roomUrl(id) {
  return `${location.origin}/rooms/${encodeURIComponent(id)}`;
}

function navigate(path) {
  if (path !== location.pathname) history.pushState(null, '', path);
  route();
}

function show(view) {
  for (const name of ['auth', 'home', 'prejoin', 'call']) $(`view-${name}`).hidden = name !== view;
  document.body.dataset.view = view;
  const titles = { auth: 'Sign up or log in', home: 'Contacts and calls', prejoin: 'Join a call', call: 'In a call' };
  document.title = `${titles[view]} · Surge`;
}

function route() {
  const roomId = roomIdFromPath();
  if (state.call && state.call.roomId !== roomId) leaveCall();
  if (!state.user) {
    $('auth-lede').textContent = roomId
      ? 'Log in or create an account to join the call you were invited to.'
      : 'Create an account or log in to call your contacts.';
    show('auth');
    return;
  }
  if (roomId) {
    if (state.call) show('call');
    else showPrejoin(roomId);
    return;
  }
  stopPreview();
  show('home');
}

// ---------------------------------------------------------------- helpers

function setMessage(id, text, kind = 'error') {
  const node = $(id);
  node.textContent = text;
  node.dataset.kind = kind;
}

function setFieldError(input, errorNode, text) {
  errorNode.textContent = text;
  if (text) input.setAttribute('aria-invalid', 'true');
  else input.removeAttribute('aria-invalid');
}

let toastTimer = null;
function toast(text) {
  const node = $('toast');
  node.textContent = text;
  node.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    node.hidden = true;
  }, 3000);
}

function initials(name) {
  return (name || '?').trim().split(/\s+/).slice(0, 2).map((w) => w[0]?.toUpperCase() ?? '').join('') || '?';
}

async function copyText(text, input) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // Clipboard API refused (no permission, insecure origin): select the text for the user.
    input?.select();
    document.execCommand?.('copy');
  }
  toast('Link copied');
}

/**
 * Runs `action`; while the server answers 429/503 with Retry-After, shows a countdown through
 * `onWait(secondsLeft, error)` and tries again by itself.
 */
async function withAutoRetry(action, onWait) {
  for (;;) {
    try {
      return await action();
    } catch (err) {
      const retryable = err instanceof ApiError && (err.status === 429 || err.status === 503);
      if (!retryable) throw err;
      // Jitter so a crowd of refused clients does not come back in the same second.
      const secs = Math.max(1, err.retryAfter ?? 5) + Math.random();
      await countdown(secs, (left) => onWait(left, err));
    }
  }
}

// ---------------------------------------------------------------- sign up / log in

function selectTab(which) {
  const signup = which === 'signup';
  $('tab-signup').setAttribute('aria-selected', String(signup));
  $('tab-login').setAttribute('aria-selected', String(!signup));
  $('tab-signup').tabIndex = signup ? 0 : -1;
  $('tab-login').tabIndex = signup ? -1 : 0;
  $('form-signup').hidden = !signup;
  $('form-login').hidden = signup;
}

function setupAuth() {
  $('tab-signup').addEventListener('click', () => selectTab('signup'));
  $('tab-login').addEventListener('click', () => selectTab('login'));
  for (const tab of [$('tab-signup'), $('tab-login')]) {
    tab.addEventListener('keydown', (event) => {
      if (event.key !== 'ArrowLeft' && event.key !== 'ArrowRight') return;
      const next = tab.id === 'tab-signup' ? 'login' : 'signup';
      selectTab(next);
      $(`tab-${next}`).focus();
    });
  }

  const fields = {
    display_name: [$('signup-name'), $('signup-name-error')],
    email: [$('signup-email'), $('signup-email-error')],
    password: [$('signup-password'), $('signup-password-error')],
  };

  $('form-signup').addEventListener('submit', async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const button = form.querySelector('button[type=submit]');
    for (const [input, error] of Object.values(fields)) setFieldError(input, error, '');
    const account = {
      display_name: $('signup-name').value.trim(),
      email: $('signup-email').value.trim(),
      password: $('signup-password').value,
    };
    // One key for this submission and all its automatic retries: a retry never makes two accounts.
    const idempotencyKey = crypto.randomUUID();
    button.disabled = true;
    setMessage('signup-message', 'Creating your account…', 'wait');
    try {
      await withAutoRetry(
        () => api.signUp(account, idempotencyKey),
        (left) => setMessage('signup-message', `Too many sign-ups right now, retrying in ${left} s…`, 'wait'),
      );
      setMessage('signup-message', 'Account created. Logging you in…', 'ok');
      await logIn(account.email, account.password, 'signup-message');
    } catch (err) {
      const { field, text } = signupMessage(err);
      if (field && fields[field]) {
        setFieldError(fields[field][0], fields[field][1], text);
        setMessage('signup-message', 'Please fix the highlighted field.', 'error');
        fields[field][0].focus();
      } else {
        setMessage('signup-message', text, 'error');
      }
    } finally {
      button.disabled = false;
    }
  });

  $('form-login').addEventListener('submit', async (event) => {
    event.preventDefault();
    const button = event.currentTarget.querySelector('button[type=submit]');
    button.disabled = true;
    setMessage('login-message', 'Logging in…', 'wait');
    try {
      await logIn($('login-email').value.trim(), $('login-password').value, 'login-message');
    } catch (err) {
      setMessage('login-message', loginMessage(err), 'error');
    } finally {
      button.disabled = false;
    }
  });
}

async function logIn(email, password, messageId) {
  const created = await withAutoRetry(
    () => api.logIn(email, password),
    (left) => setMessage(messageId, `Too many log-ins right now, retrying in ${left} s…`, 'wait'),
  );
  session.set(created);
  setMessage(messageId, '', 'ok');
  $('form-signup').reset();
  $('form-login').reset();
  await signedIn(created.user);
}

async function signedIn(user) {
  state.user = user;
  $('me-name').textContent = user.display_name;
  $('account').hidden = false;
  $('my-status').value = 'online';
  $('my-status-dot').dataset.status = 'online';
  state.presence?.stop();
  state.presence = new Presence({
    onUpdate: onPresence,
    onContacts: () => scheduleContactsReload(),
    onCall: (name, data) => calling?.onEvent(name, data),
    onStream: (s) => {
      $('presence-live').textContent = s === 'live' ? 'Live' : 'Reconnecting…';
    },
    onError: (err) => {
      if (err instanceof ApiError && err.status === 401) signedOut('Your session has expired. Please log in again.');
    },
  });
  state.presence.start('online');
  route();
  await loadContacts();
  calling?.loadRecent();
}

function signedOut(reason = '') {
  leaveCall();
  calling?.reset();
  state.presence?.stop();
  state.presence = null;
  state.user = null;
  state.contacts.clear();
  state.incoming = [];
  state.outgoing = [];
  renderContacts();
  session.clear();
  $('account').hidden = true;
  selectTab('login');
  setMessage('login-message', reason, 'error');
  route();
}

// ---------------------------------------------------------------- contacts and presence

async function loadContacts() {
  try {
    const answer = await api.contacts();
    state.contacts.clear();
    for (const c of answer?.contacts ?? []) state.contacts.set(c.user_id, c);
    state.incoming = answer?.incoming ?? [];
    state.outgoing = answer?.outgoing ?? [];
    renderContacts();
  } catch (err) {
    setMessage('contact-message', contactMessage(err), 'error');
  }
}

let reloadTimer = null;

/** The stream said the contacts or requests changed: read them again (once for a burst). */
function scheduleContactsReload() {
  clearTimeout(reloadTimer);
  reloadTimer = setTimeout(() => {
    if (state.user) loadContacts();
  }, 200);
}

/** Runs a contact action from a button, showing its error, then re-reads the list. */
async function contactAction(button, action, done) {
  button.disabled = true;
  try {
    await action();
    if (done) setMessage('contact-message', done, 'ok');
  } catch (err) {
    setMessage('contact-message', contactMessage(err), 'error');
  }
  await loadContacts();
}

function actionButton(label, name, onClick, kind = '') {
  const button = document.createElement('button');
  button.type = 'button';
  button.className = `btn ${kind}`.trim();
  button.textContent = label;
  button.setAttribute('aria-label', name);
  button.addEventListener('click', () => onClick(button));
  return button;
}

function onPresence(update) {
  const contact = state.contacts.get(update.user_id);
  if (!contact || contact.status === update.status) return;
  contact.status = update.status;
  renderContacts();
}

const KNOWN_STATUSES = new Set(['online', 'away', 'busy', 'offline']);

function renderContacts() {
  const list = $('contact-list');
  const contacts = [...state.contacts.values()].sort((a, b) =>
    (a.display_name || a.email).localeCompare(b.display_name || b.email),
  );
  list.replaceChildren(
    ...contacts.map((c) => {
      // Only known statuses reach the markup (the template below is HTML).
      const status = KNOWN_STATUSES.has(c.status) ? c.status : 'offline';
      const item = document.createElement('li');
      item.className = 'contact';
      item.dataset.userId = c.user_id;
      item.dataset.status = status;
      item.innerHTML = `
        <span class="avatar" aria-hidden="true"><span class="initials"></span><span class="dot" data-status="${status}"></span></span>
        <span class="contact-text"><span class="contact-name"></span><br><span class="contact-email"></span></span>
        <span class="contact-status"></span>`;
      item.querySelector('.initials').textContent = initials(c.display_name);
      item.querySelector('.contact-name').textContent = c.display_name || c.email;
      item.querySelector('.contact-email').textContent = c.email;
      item.querySelector('.contact-status').textContent = statusLabel(status);
      item.setAttribute('aria-label', `${c.display_name || c.email}: ${statusLabel(status)}`);
      const name = c.display_name || c.email;
      const actions = document.createElement('span');
      actions.className = 'contact-actions';
      actions.append(
        actionButton('Remove', `Remove ${name}`, (button) =>
          contactAction(button, () => api.removeContact(c.user_id), `${name} removed.`), 'btn-quiet'),
      );
      item.append(actions);
      calling?.decorateContact(item, c, status);
      return item;
    }),
  );
  calling?.contactsRendered();
  $('contacts-empty').hidden = contacts.length > 0;
  renderRequests();
}

function renderRequests() {
  $('requests').hidden = state.incoming.length === 0;
  $('request-list').replaceChildren(
    ...state.incoming.map((r) => {
      const name = r.display_name || r.email;
      const item = document.createElement('li');
      item.className = 'contact request';
      item.dataset.userId = r.user_id;
      item.innerHTML = `
        <span class="avatar" aria-hidden="true"><span class="initials"></span></span>
        <span class="contact-text"><span class="contact-name"></span><br><span class="contact-email"></span></span>
        <span class="contact-actions"></span>`;
      item.querySelector('.initials').textContent = initials(r.display_name);
      item.querySelector('.contact-name').textContent = name;
      item.querySelector('.contact-email').textContent = r.email;
      item.querySelector('.contact-actions').append(
        actionButton('Accept', `Accept ${name}`, (button) =>
          contactAction(button, () => api.acceptContact(r.user_id), `${name} is now a contact.`), 'btn-primary'),
        actionButton('Decline', `Decline ${name}`, (button) =>
          contactAction(button, () => api.declineContact(r.user_id), '')),
      );
      return item;
    }),
  );
  $('outgoing').hidden = state.outgoing.length === 0;
  $('outgoing-list').replaceChildren(
    ...state.outgoing.map((r) => {
      const item = document.createElement('li');
      item.className = 'contact outgoing';
      item.innerHTML = '<span class="contact-text"><span class="contact-email"></span></span><span class="contact-actions"></span>';
      item.querySelector('.contact-email').textContent = r.email;
      item.querySelector('.contact-actions').append(
        actionButton('Withdraw', `Withdraw the request to ${r.email}`, (button) =>
          contactAction(button, () => api.withdrawContact(r.email), ''), 'btn-quiet'),
      );
      return item;
    }),
  );
}

function setupContacts() {
  $('form-contact').addEventListener('submit', async (event) => {
    event.preventDefault();
    const input = $('contact-email');
    const email = input.value.trim();
    if (!email) {
      setMessage('contact-message', 'Enter the email address your contact signed up with.');
      return;
    }
    try {
      // The answer is the same whether or not the email has an account.
      const answer = await api.requestContact(email);
      input.value = '';
      setMessage(
        'contact-message',
        `Request sent to ${answer?.email ?? email}. They appear in your contacts once they accept.`,
        'ok',
      );
      await loadContacts();
    } catch (err) {
      setMessage('contact-message', contactMessage(err), 'error');
    }
  });

  $('my-status').addEventListener('change', async (event) => {
    const status = event.target.value;
    $('my-status-dot').dataset.status = status;
    try {
      await state.presence?.setStatus(status);
    } catch {
      toast('Could not update your status; retrying.');
    }
  });

  $('logout').addEventListener('click', async () => {
    try {
      await api.logOut();
    } catch {
      // The session ends locally whatever the server says.
    }
    signedOut('');
  });
}

// ---------------------------------------------------------------- rooms

function setupRooms() {
  $('form-room').addEventListener('submit', async (event) => {
    event.preventDefault();
    const button = event.currentTarget.querySelector('button[type=submit]');
    button.disabled = true;
    setMessage('room-message', '', 'ok');
    try {
      const room = await api.createRoom($('room-name').value.trim());
      state.lastRoom = room;
      $('room-link').value = roomUrl(room.id);
      $('enter-room').href = `/rooms/${encodeURIComponent(room.id)}`;
      $('room-created').hidden = false;
      setMessage('room-message', `Room “${room.name || room.id}” is ready.`, 'ok');
    } catch (err) {
      setMessage('room-message', roomMessage(err), 'error');
    } finally {
      button.disabled = false;
    }
  });

  $('copy-link').addEventListener('click', () => copyText($('room-link').value, $('room-link')));
  $('call-copy-link').addEventListener('click', () => copyText(roomUrl(state.call?.roomId ?? ''), null));
  $('alone-copy-link').addEventListener('click', () => copyText(roomUrl(state.call?.roomId ?? ''), null));

  $('form-join').addEventListener('submit', (event) => {
    event.preventDefault();
    const raw = $('join-link').value.trim();
    let id = null;
    try {
      id = roomIdFromPath(new URL(raw, location.origin).pathname);
    } catch {
      id = null;
    }
    if (!id && /^[\w-]+$/.test(raw)) id = raw;
    if (!id) {
      setMessage('join-message', 'That is not a room link. It looks like https://…/rooms/abc123.');
      return;
    }
    setMessage('join-message', '', 'ok');
    navigate(`/rooms/${encodeURIComponent(id)}`);
  });
}

// ---------------------------------------------------------------- pre-join and call

async function showPrejoin(roomId) {
  show('prejoin');
  state.roomName = null;
  $('prejoin-room').textContent = `Room ${roomId}`;
  $('join-call').disabled = false;
  api.room(roomId).then(
    (room) => {
      if (roomIdFromPath() !== roomId) return;
      state.roomName = room.name || null;
      $('prejoin-room').textContent = room.name ? `“${room.name}”` : `Room ${roomId}`;
    },
    (err) => {
      if (err instanceof ApiError && err.status === 404 && roomIdFromPath() === roomId) {
        $('prejoin-room').textContent = 'This room does not exist. Check the link you were sent.';
        $('join-call').disabled = true;
      }
    },
  );
  // Asked for while the camera opens (which takes longer): the prepared connection gathers
  // its TURN candidates with them before the click, so a relayed join costs no extra trip.
  const iceServers = loadIceServers();
  const opening = localMedia();
  const localStream = await opening;
  if (roomIdFromPath() !== roomId || state.call || state.localMedia !== opening) return;
  const preview = $('preview');
  if (preview.srcObject !== localStream) preview.srcObject = localStream;
  // The connection and its offer, ready before the click (see prepareConnection).
  state.prepared ??= iceServers.then((servers) => prepareConnection(localStream, undefined, servers)).catch(() => null);
}

/** The TURN/STUN servers with fresh credentials (none when the API has none or fails). */
function loadIceServers() {
  state.iceServers = api.iceServers().catch(() => []);
  return state.iceServers;
}

/** The camera and microphone, opened once for the preview and the call. */
function localMedia() {
  state.localMedia ??= openLocalMedia();
  return state.localMedia;
}

/** Closes the connection prepared on the pre-join screen, if any. */
function dropPrepared() {
  state.prepared?.then((prepared) => closePrepared(prepared));
  state.prepared = null;
}

function stopPreview() {
  $('preview').srcObject = null;
  dropPrepared();
  if (!state.call && state.localMedia) {
    const opening = state.localMedia;
    state.localMedia = null;
    opening.then((stream) => {
      for (const track of stream.getTracks()) track.stop();
    });
  }
}

let joining = false;

async function joinCall(clickedAt) {
  const roomId = roomIdFromPath();
  if (!roomId || state.call || joining) return;
  joining = true;
  let call;
  try {
    const localStream = await localMedia();
    // Prepared on the pre-join screen; if the click came first, the call prepares its own.
    const prepared = state.prepared ? await state.prepared : null;
    state.prepared = null;
    if (roomIdFromPath() !== roomId || state.call) {
      // The user went elsewhere meanwhile.
      closePrepared(prepared);
      return;
    }
    state.localMedia = null;
    $('preview').srcObject = null;
    const iceServers = await (state.iceServers ?? loadIceServers());
    call = new Call({ roomId, localStream, prepared, clickedAt, iceServers, onChange: () => renderCall(call), onChat: (message) => chatPanel?.receive(message) });
    chatPanel?.attach(call);
    state.call = call;
  } finally {
    joining = false;
  }
  // The join request goes out first; drawing the call view overlaps its round trip.
  const started = call.start();
  knownParticipants.clear();
  $('grid').replaceChildren();
  $('call-title').textContent = state.roomName ?? `Room ${roomId}`;
  $('toggle-mic').disabled = call.localStream.getAudioTracks().length === 0;
  $('toggle-cam').disabled = call.localStream.getVideoTracks().length === 0;
  show('call');
  renderCall(call);
  renderDevices(call).catch(() => {});
  await started;
}

function leaveCall() {
  const call = state.call;
  if (!call) return;
  state.call = null;
  call.leave();
  calling?.left(call.roomId);
  $('grid').replaceChildren();
}

const STATE_TEXT = {
  [CallState.CONNECTING]: 'Connecting…',
  [CallState.CONNECTED]: 'Connected',
  [CallState.RECONNECTING]: 'Reconnecting…',
  [CallState.FAILED]: 'Disconnected',
  [CallState.LEFT]: 'Left',
};

/** The media path beside "Connected": straight over UDP or TCP, or relayed through TURN. */
const PATH_TEXT = { udp: 'UDP', tcp: 'TCP', relay: 'relay' };

/** Participants seen so far in this call, to announce joins and leaves once. */
const knownParticipants = new Map();

function tileFor(grid, id, self) {
  let tile = grid.querySelector(`[data-participant="${CSS.escape(id)}"]`);
  if (tile) return tile;
  tile = document.createElement('li');
  tile.className = self ? 'tile self' : 'tile';
  tile.dataset.participant = id;
  const video = document.createElement('video');
  video.autoplay = true;
  video.playsInline = true;
  // Our own tile must not play our microphone back to us.
  video.muted = self;
  const placeholder = document.createElement('div');
  placeholder.className = 'tile-placeholder';
  placeholder.setAttribute('aria-hidden', 'true');
  const label = document.createElement('span');
  label.className = 'tile-label';
  tile.append(video, placeholder, label);
  grid.append(tile);
  return tile;
}

function attach(video, stream) {
  if (video.srcObject === stream) return;
  video.srcObject = stream;
  video.play().catch(() => {
    toast('Click anywhere to hear the call.');
    document.addEventListener('click', () => video.play().catch(() => {}), { once: true });
  });
}

/**
 * Lays the early element of a participant's camera (`earlyVideo` in call.js), which may
 * already show the frame the shard sent at connect time, over the tile's own element until
 * that one has a frame of its own, then lets it go.
 */
function showEarlyVideo(tile, own, early) {
  if (!early || tile.dataset.live === 'true') return;
  const done = () => {
    tile.dataset.live = 'true';
    early.srcObject = null;
    early.remove();
  };
  if (own.readyState >= HTMLMediaElement.HAVE_CURRENT_DATA && own.videoWidth > 0) {
    done();
    return;
  }
  if (early.parentElement === tile) return;
  own.after(early);
  own.addEventListener('resize', done, { once: true });
}

function heightBucket(tile) {
  const px = tile.clientHeight * (window.devicePixelRatio || 1);
  if (px <= 200) return 180;
  if (px <= 400) return 360;
  return 720;
}

function renderCall(call) {
  if (state.call !== call) return;
  const conn = $('conn-state');
  conn.dataset.state = call.state;
  conn.dataset.path = call.path?.kind ?? '';
  const path = call.state === CallState.CONNECTED && call.path ? ` · ${PATH_TEXT[call.path.kind]}${call.path.kind === 'relay' && call.path.protocol ? `/${call.path.protocol.toUpperCase()}` : ''}` : '';
  conn.textContent = (call.detail || STATE_TEXT[call.state]) + path;

  const grid = $('grid');
  const seen = new Set();
  const selfId = call.selfId ?? 'self';
  const selfTile = tileFor(grid, selfId, true);
  seen.add(selfId);
  attach(selfTile.querySelector('video'), call.localStream);
  const camOff = call.muted.video || call.localStream.getVideoTracks().length === 0;
  fillTile(selfTile, `${state.user?.display_name ?? 'You'} (you)`, call.muted.audio, camOff, call.speaker === selfId);

  for (const p of call.participants.values()) {
    seen.add(p.id);
    if (!knownParticipants.has(p.id)) {
      knownParticipants.set(p.id, p.name);
      announce(`${p.name} joined the call`);
    }
    const tile = tileFor(grid, p.id, false);
    const own = tile.querySelector('video');
    attach(own, p.stream);
    showEarlyVideo(tile, own, call.earlyVideoFor(p.id));
    const noVideo = p.muted.video || p.stream.getVideoTracks().length === 0;
    fillTile(tile, p.name, p.muted.audio, noVideo, call.speaker === p.id);
    call.requestHeight(p.id, heightBucket(tile));
  }
  for (const tile of [...grid.children]) {
    if (!seen.has(tile.dataset.participant)) tile.remove();
  }
  for (const [id, name] of knownParticipants) {
    if (!call.participants.has(id) && call.state === CallState.CONNECTED) {
      knownParticipants.delete(id);
      announce(`${name} left the call`);
    }
  }

  $('call-alone').hidden = call.participants.size > 0 || call.state !== CallState.CONNECTED;
  renderScreen(call);

  $('toggle-mic').setAttribute('aria-pressed', String(call.muted.audio));
  $('toggle-mic').textContent = call.muted.audio ? 'Unmute' : 'Mute';
  $('toggle-cam').setAttribute('aria-pressed', String(call.muted.video));
  $('toggle-cam').textContent = call.muted.video ? 'Start camera' : 'Stop camera';
  $('toggle-hand').setAttribute('aria-pressed', String(call.hand));
  $('toggle-hand').textContent = call.hand ? 'Lower hand' : 'Raise hand';
  renderRoster($('roster'), call, state.user?.display_name ?? 'You');
}

function fillTile(tile, name, micOff, camOff, speaking) {
  tile.dataset.speaking = String(speaking);
  tile.dataset.muted = String(micOff);
  for (const video of tile.querySelectorAll('video')) video.style.visibility = camOff ? 'hidden' : 'visible';
  tile.querySelector('.tile-placeholder').textContent = camOff ? initials(name) : '';
  tile.querySelector('.tile-label').textContent = micOff ? `${name} · muted` : name;
  tile.setAttribute('aria-label', `${name}${micOff ? ', muted' : ''}${speaking ? ', speaking' : ''}`);
}

function announce(text) {
  $('call-events').textContent = text;
  toast(text);
}

/** The chat beside the video (one panel, handed each new call). */
let chatPanel = null;

function setupCall() {
  // The event's time stamp is the click itself, before any queueing on a busy page.
  $('join-call').addEventListener('click', (event) => joinCall(event.timeStamp));
  $('toggle-mic').addEventListener('click', () => state.call?.setMuted('audio', !state.call.muted.audio));
  $('toggle-cam').addEventListener('click', () => state.call?.setMuted('video', !state.call.muted.video));
  setupScreenShare(() => state.call, toast);
  setupDevices(() => state.call, toast);
  $('toggle-hand').addEventListener('click', () => state.call?.setHand(!state.call.hand));
  chatPanel = new ChatPanel({
    panel: $('chat-panel'),
    log: $('chat-log'),
    form: $('chat-form'),
    input: $('chat-input'),
    toggle: $('toggle-chat'),
    badge: $('chat-unread'),
    notice: $('chat-notice'),
  });
  $('leave').addEventListener('click', () => {
    leaveCall();
    navigate('/');
    toast('You left the call');
  });
  // A bigger or smaller tile asks the shard for a bigger or smaller layer.
  new ResizeObserver(() => {
    if (state.call) renderCall(state.call);
  }).observe($('grid'));
  // Closing the tab leaves the room at once instead of waiting for the shard's timeout.
  window.addEventListener('pagehide', () => leaveCall());
}

// ---------------------------------------------------------------- start

function setupLinks() {
  document.addEventListener('click', (event) => {
    const link = event.target.closest?.('a[data-link]');
    if (!link || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
    const url = new URL(link.href, location.origin);
    if (url.origin !== location.origin) return;
    event.preventDefault();
    navigate(url.pathname);
  });
  window.addEventListener('popstate', route);
}

/** What the browser tests read: call state and receive/send statistics. */
window.surge = {
  state: () => ({
    view: document.body.dataset.view,
    user: state.user,
    call: state.call && {
      roomId: state.call.roomId,
      state: state.call.state,
      selfId: state.call.selfId,
      speaker: state.call.speaker,
      participants: [...state.call.participants.values()].map((p) => ({ id: p.id, name: p.name, muted: p.muted, hand: p.hand, quality: p.quality })),
      hand: state.call.hand,
      quality: state.call.quality,
      layers: Object.fromEntries(state.call.layers),
      history: state.call.history,
      states: state.call.states,
      marks: state.call.marks,
      path: state.call.path,
      iceRestarts: state.call.iceRestarts,
    },
    contacts: [...state.contacts.values()],
    incoming: state.incoming,
    outgoing: state.outgoing,
  }),
  /** Whether the pre-join screen has its connection and offer ready (waits while it is being made). */
  prepared: async () => Boolean(state.prepared && (await state.prepared)),
  stats: async () => (state.call ? state.call.stats() : []),
  outboundStats: async () => (state.call ? state.call.outboundStats() : []),
  /**
   * Makes the shard forget this participant (DELETE of its resource) while the page keeps its
   * connection: the page must notice on its own and rejoin, as when a shard dies.
   */
  /** Restarts ICE on the current call as a network change would (the test of the restart). */
  /** Calling (calls.js): the call placed or answered here, calls ringing, recent calls. */
  calling: () => calling?.snapshot(),
  restartIce: () => {
    const call = state.call;
    if (!call?.pc) return false;
    call.restartIce(call.pc, call.generation, 'a test asked');
    return true;
  },
  /** Sends a chat message as is (past the input's limits: the shard's checks are tested). */
  sendChat: (text) => Boolean(state.call?.sendChat(text)),
  forgetOnShard: async () => {
    const call = state.call;
    if (!call?.resource) return null;
    const response = await api.leaveCall(call.resource);
    return response.status;
  },
};

/** Calling contacts (calls.js); made at start, once the DOM it extends is there. */
let calling = null;

/** Opens a room's call at once (placing or answering a call skips the pre-join screen). */
async function enterRoom(roomId) {
  navigate(`/rooms/${encodeURIComponent(roomId)}`);
  await joinCall(performance.now());
}

async function start() {
  calling = new Calling({
    me: () => state.user?.id,
    enterRoom,
    currentRoom: () => state.call?.roomId ?? null,
    contacts: () => state.contacts,
    toast,
  });
  setupAuth();
  setupContacts();
  setupRooms();
  setupCall();
  setupLinks();
  const stored = session.get();
  if (stored?.token) {
    try {
      const me = await api.me();
      await signedIn(me.user ?? me);
      return;
    } catch (err) {
      if (!(err instanceof ApiError) || err.status === 401) session.clear();
      else {
        // The server is down or busy: keep the session and let the user try again.
        await signedIn(stored.user);
        return;
      }
    }
  }
  route();
}

start();
