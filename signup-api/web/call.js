// One call in one room: joins through the API (WHIP-style POST of the offer, which the API
// relays to the room's shard; then the `surge` data channel, see docs/signalling.md),
// publishes the camera as three simulcast layers, tracks who is in the room, restarts ICE on
// the same session when its network changes or drops, and rejoins by itself when the shard is
// lost (or the restart does not work).

import { api, ApiError } from './api.js';

/** Simulcast layers: quarter, half and full resolution, lowest first (what Chrome expects). */
export const SIMULCAST_ENCODINGS = [
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1_500_000 },
];

/**
 * Receive-only audio + video pairs in the join offer: the shard puts the tracks of people
 * already in the room there, so they flow once DTLS is up instead of after a renegotiation
 * over the data channel. Two pairs cover a call of three; more people still come by an offer.
 */
const RECEIVE_AHEAD = 2;
/** How often the first decoded frame of a new remote video track is looked for (join marks). */
const FIRST_FRAME_POLL_MS = 10;
/** A remote video track that decodes nothing for this long is no longer looked at. */
const FIRST_FRAME_WATCH_MS = 15_000;
/** ICE "disconnected" often heals by itself; past this we restart ICE on the same session. */
const DISCONNECTED_GRACE_MS = 1000;
/** An ICE restart that has not connected by then gives way to a full rejoin. */
const RESTART_TIMEOUT_MS = 5000;
/**
 * Nothing received on the connection for this long (media, RTCP feedback on what we send,
 * STUN): ask the API whether the server still has us. ICE itself takes 5 s or more to say
 * "disconnected"; a server that is gone should cost less than that. Audio alone brings 50
 * packets a second, so a second of nothing is no jitter; a false alarm costs one GET.
 */
const STALL_MS = 1000;
const WATCH_INTERVAL_MS = 250;
/** How long ICE + DTLS + the data channel may take before the attempt counts as failed. */
const CONNECT_TIMEOUT_MS = 20_000;
const RECONNECT_BASE_MS = 500;
const RECONNECT_MAX_MS = 10_000;
/** Errors that a new attempt cannot fix: the user must act (log in again, another room). */
const FATAL_CODES = new Set(['room_full', 'not_found', 'room_not_found', 'invalid_session']);

/** Errors a retry cannot fix: an expired session, a room that does not exist, a full room. */
function isFinal(err) {
  if (!(err instanceof ApiError)) return false;
  return FATAL_CODES.has(err.code) || err.status === 401 || err.status === 404;
}

/** Call states the UI shows. */
export const CallState = Object.freeze({
  CONNECTING: 'connecting',
  CONNECTED: 'connected',
  RECONNECTING: 'reconnecting',
  FAILED: 'failed',
  LEFT: 'left',
});

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The page's clock, to a tenth of a millisecond (what the join marks use). */
function now() {
  return Math.round(performance.now() * 10) / 10;
}

/** The marks of a join attempt (see `Call.marks`) from its start. */
function joinMarks(start, attempt) {
  return { start, attempt, firstPacket: {}, firstReceived: {}, firstFrame: {} };
}

/**
 * A peer connection ready to join with: the local tracks added, the `surge` data channel
 * created, and the offer set as the local description. The pre-join screen makes one while
 * the user looks at the preview, so the click only has to send it.
 *
 * The offer goes out without waiting for ICE gathering: the shard is ICE-lite and learns
 * our address from our own connectivity checks (peer-reflexive), so our candidates are of
 * no use to it, and gathering can take a while on a machine with many interfaces. With TURN
 * servers (`iceServers`, from `GET /v1/ice-servers`) relay candidates are gathered from here
 * on too: servers set after the offer would only count at the next ICE restart.
 */
export async function prepareConnection(localStream, muted = { audio: false, video: false }, iceServers = [], screenTrack = null) {
  const pc = new RTCPeerConnection({
    bundlePolicy: 'max-bundle',
    rtcpMuxPolicy: 'require',
    iceServers,
    iceTransportPolicy: iceTransportPolicy(),
  });
  const early = [];
  try {
    const channel = pc.createDataChannel('surge');
    const camera = addLocalTracks(pc, localStream, muted);
    // The screen's transceiver, after the camera's (the shard takes the second sending video
    // m-line for the screen): sharing swaps a track in with replaceTrack, no renegotiation.
    const screen = camera ? pc.addTransceiver(screenTrack ?? 'video', { direction: 'sendonly' }) : null;
    for (let i = 0; i < RECEIVE_AHEAD; i += 1) {
      pc.addTransceiver('audio', { direction: 'recvonly' });
      early.push(earlyVideo(pc.addTransceiver('video', { direction: 'recvonly' })));
    }
    await pc.setLocalDescription(await pc.createOffer());
    return { pc, channel, localStream, screen, early, preparedAt: now() };
  } catch (err) {
    dropEarlyVideo(early);
    pc.close();
    throw err;
  }
}

/**
 * A playing element for a receive-only video m-line of the join offer, made before the join.
 * The shard sends such a subscriber the publisher's last keyframe the moment DTLS completes,
 * and Chromium shows a decoded frame only to an element that was already playing the track
 * then: one attached later (the tile, once the `tracks` message names the owner) waits for
 * the next keyframe. So this element stands in the owner's tile until the tile's own element
 * has a frame. It is video only and muted: the tile's own element plays the sound.
 */
function earlyVideo(transceiver) {
  const video = document.createElement('video');
  video.className = 'early-video';
  video.muted = true;
  video.autoplay = true;
  video.playsInline = true;
  video.srcObject = new MediaStream([transceiver.receiver.track]);
  // In the document (out of sight) so that the browser renders into it before it has a tile.
  document.body.append(video);
  video.play().catch(() => {});
  return { transceiver, video };
}

/** Stops and removes early elements (`earlyVideo`). */
function dropEarlyVideo(early) {
  for (const e of early ?? []) {
    e.video.srcObject = null;
    e.video.remove();
  }
}

/** Closes a prepared connection that will not be used, with its early elements. */
export function closePrepared(prepared) {
  if (!prepared) return;
  dropEarlyVideo(prepared.early);
  prepared.pc.close();
}

/**
 * 'relay' when `localStorage['surge.iceTransportPolicy']` says so (tests, and users behind
 * networks that only let a TURN server through), else 'all'.
 */
function iceTransportPolicy() {
  try {
    return localStorage.getItem('surge.iceTransportPolicy') === 'relay' ? 'relay' : 'all';
  } catch {
    return 'all';
  }
}

/**
 * The server's SDP with only the candidates of one transport, when the test-only setting
 * `localStorage['surge.test.remoteCandidates']` is 'tcp' or 'udp'; unchanged otherwise.
 * Chromium cannot be told to block UDP, so a browser test drops the shard's UDP candidates
 * to make a client that can only reach it over ICE-TCP. The shard is ICE-lite and never
 * checks towards us, so no path is found behind the candidates' back.
 */
export function keepRemoteCandidates(sdp, only = remoteCandidatesSetting()) {
  if (only !== 'tcp' && only !== 'udp') return sdp;
  return sdp
    .split('\r\n')
    .filter((line) => {
      const m = /^a=candidate:\S+ \d+ (\S+) /.exec(line);
      return !m || m[1].toLowerCase() === only;
    })
    .join('\r\n');
}

function remoteCandidatesSetting() {
  try {
    return localStorage.getItem('surge.test.remoteCandidates');
  } catch {
    return null;
  }
}

/**
 * The media path of a connection's selected candidate pair, from `getStats()`: 'udp', 'tcp',
 * or 'relay' (through TURN; `relayProtocol` says how we reach it); null before one is chosen.
 */
export function mediaPath(report) {
  let pairId = null;
  report.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
  });
  const pair = pairId ? report.get(pairId) : null;
  const local = pair ? report.get(pair.localCandidateId) : null;
  if (!local) return null;
  if (local.candidateType === 'relay') return { kind: 'relay', protocol: local.relayProtocol ?? local.protocol ?? null };
  return { kind: local.protocol === 'tcp' ? 'tcp' : 'udp', protocol: local.protocol ?? null };
}

/** Adds the local tracks: audio as is, video as three simulcast layers when possible. Returns the camera's transceiver. */
function addLocalTracks(pc, localStream, muted) {
  const [audio] = localStream.getAudioTracks();
  const [video] = localStream.getVideoTracks();
  if (audio) {
    audio.enabled = !muted.audio;
    pc.addTransceiver(audio, { direction: 'sendonly', streams: [localStream] });
  }
  if (video) {
    video.enabled = !muted.video;
    try {
      return pc.addTransceiver(video, { direction: 'sendonly', streams: [localStream], sendEncodings: SIMULCAST_ENCODINGS });
    } catch {
      // No simulcast in this browser: one layer is still a call.
      return pc.addTransceiver(video, { direction: 'sendonly', streams: [localStream] });
    }
  }
  return null;
}

/** Opens the camera and microphone; a missing device leaves that kind out instead of failing. */
export async function openLocalMedia() {
  const video = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };
  const attempts = [{ audio: true, video }, { audio: true }, { video }];
  for (const constraints of attempts) {
    try {
      return await navigator.mediaDevices.getUserMedia(constraints);
    } catch {
      // Try with fewer devices.
    }
  }
  return new MediaStream();
}

/**
 * A call. `onChange()` is called whenever something the UI shows changes; read the public
 * fields (`state`, `detail`, `participants`, `speaker`, `selfId`, `muted`) to render.
 */
export class Call {
  /**
   * `prepared`: a connection from `prepareConnection` for the same local stream, used by the
   * first attempt (rejoins make their own). `clickedAt`: when the user asked to join, on the
   * page's clock (the join marks start there).
   */
  constructor({ roomId, localStream, onChange, onChat = () => {}, prepared = null, clickedAt = now(), iceServers = [] }) {
    this.roomId = roomId;
    /** TURN/STUN servers for the connections this call makes; each join answer renews them. */
    this.iceServers = iceServers;
    /** The media path in use (`mediaPath`), for the connection indicator. */
    this.path = null;
    this.localStream = localStream;
    this.onChange = onChange;
    /** Gets every `chat` and `chat_refused` message (the chat panel, chat.js). */
    this.onChat = onChat;
    this.prepared = prepared;
    /** The early elements (`earlyVideo`) of the connection in use. */
    this.early = [];
    /**
     * When each step of the current join attempt (`attempt`, from 1) happened (page clock,
     * ms): `start` (the click, or the retry or rejoin), `prepared` (offer ready, maybe before the click), `offerSent`,
     * `answer`, `iceConnected`, `connected` (DTLS done), `channelOpen`, `welcome`,
     * `subscribeOffer`, `subscribeOfferTaken` (its turn in the signalling queue),
     * `subscribeOfferSet` (setRemoteDescription done), `subscribeAnswered` (the server's
     * first renegotiation), `tracks`,
     * and, per remote video track (mid → time), `firstPacket` (its first RTP packet counted),
     * `firstReceived` (its first whole frame) and `firstFrame` (first decoded). Read by the
     * browser tests through `window.surge.state().call.marks`.
     */
    this.marks = joinMarks(clickedAt, 1);
    this.frameWatch = null;
    this.state = CallState.CONNECTING;
    /** A human sentence about the state (why it failed, when it retries). */
    this.detail = '';
    /**
     * Remote participants by id: `{ id, name, stream, muted: {audio, video}, hand, quality }`
     * (`quality`: the shard's last `quality` message for them, or null).
     */
    this.participants = new Map();
    this.selfId = null;
    this.speaker = null;
    this.muted = { audio: false, video: false };
    /** Our own hand (raised), and our connection quality as the shard measures it. */
    this.hand = false;
    this.quality = null;
    /** mid → participant id, from the server's `tracks` messages. */
    this.midOwners = new Map();
    /** mid → kind, from the same messages. */
    this.midKinds = new Map();
    /** mid → source (`audio`, `camera`, `screen`), from the same messages. */
    this.midSources = new Map();
    /** The shared screen's track while we share (see screen.js), and its transceiver. */
    this.screenTrack = null;
    this.screenTransceiver = null;
    /** mid → the layer the server says it forwards. */
    this.layers = new Map();
    this.requestedHeights = new Map();
    this.pc = null;
    this.channel = null;
    this.resource = null;
    this.attempt = 0;
    this.generation = 0;
    this.signalQueue = Promise.resolve();
    this.disconnectTimer = null;
    this.connectTimer = null;
    /** An ICE restart in flight: its fallback timer (see `restartIce`). */
    this.restartTimer = null;
    /** ICE restarts done on this call (tests read it through `window.surge`). */
    this.iceRestarts = 0;
    this.onNetworkChange = () => {
      if (this.pc && this.resource) this.restartIce(this.pc, this.generation, 'the network changed');
    };
    this.watchdog = null;
    /** Participant ids that left this room (cleared on rejoin: the new session starts afresh). */
    this.gone = new Set();
    this.history = [];
    /** Every state this call went through, in order (what tests read to see a rejoin). */
    this.states = [CallState.CONNECTING];
  }

  /** Joins; on failure keeps retrying (with backoff and jitter) unless the error is final. */
  async start() {
    // A new network (Wi-Fi to cellular, a VPN) usually breaks the path before ICE notices.
    window.addEventListener('online', this.onNetworkChange);
    navigator.connection?.addEventListener?.('change', this.onNetworkChange);
    await this.connectWithRetry();
  }

  async connectWithRetry() {
    const generation = ++this.generation;
    for (;;) {
      if (this.state === CallState.LEFT || generation !== this.generation) return;
      try {
        await this.connect(generation);
        this.attempt = 0;
        return;
      } catch (err) {
        if (generation !== this.generation || this.state === CallState.LEFT) return;
        this.teardown();
        if (isFinal(err)) {
          this.setState(CallState.FAILED, describeJoinError(err));
          return;
        }
        this.attempt += 1;
        const backoff = Math.min(RECONNECT_MAX_MS, RECONNECT_BASE_MS * 2 ** (this.attempt - 1));
        const waitMs = err instanceof ApiError && err.retryAfter ? err.retryAfter * 1000 : backoff * (0.5 + Math.random());
        const secs = Math.max(1, Math.round(waitMs / 1000));
        const first = this.state === CallState.CONNECTING;
        this.setState(first ? CallState.CONNECTING : CallState.RECONNECTING, `${describeJoinError(err)} Retrying in ${secs} s…`);
        await sleep(waitMs);
      }
    }
  }

  /** The prepared connection, once, if it is still usable with the current mute state. */
  takePrepared() {
    const prepared = this.prepared;
    this.prepared = null;
    if (!prepared) return null;
    if (prepared.pc.signalingState !== 'have-local-offer' || prepared.localStream !== this.localStream) {
      closePrepared(prepared);
      return null;
    }
    return prepared;
  }

  async connect(generation) {
    // A rejoin is timed from its own start; the first attempt from the click.
    if (this.marks.offerSent !== undefined) this.marks = joinMarks(now(), this.marks.attempt + 1);
    const marks = this.marks;
    let prepared = this.takePrepared();
    if (!prepared) {
      prepared = await prepareConnection(this.localStream, this.muted, this.iceServers, this.screenTrack);
      if (generation !== this.generation) {
        closePrepared(prepared);
        return;
      }
    }
    const { pc, channel } = prepared;
    marks.prepared = prepared.preparedAt;
    // The previous attempt's early elements went with its teardown.
    this.early = prepared.early ?? [];
    for (const { transceiver, video } of this.early) {
      // The media pipeline's own time of the first frame shown, free of main-thread delays.
      video.requestVideoFrameCallback?.((_, meta) => {
        if (this.marks === marks && transceiver.mid != null) {
          marks.firstFrame[transceiver.mid] ??= Math.round(meta.presentationTime * 10) / 10;
        }
      });
    }
    this.pc = pc;
    this.channel = channel;
    this.screenTransceiver = prepared.screen ?? null;
    for (const [kind, tracks] of [['audio', this.localStream.getAudioTracks()], ['video', this.localStream.getVideoTracks()]]) {
      for (const track of tracks) track.enabled = !this.muted[kind];
    }

    pc.addEventListener('track', (event) => this.onTrack(event));
    pc.addEventListener('connectionstatechange', () => this.onConnectionState(pc, generation));
    pc.addEventListener('iceconnectionstatechange', () => {
      if (pc.iceConnectionState === 'connected' && marks.iceConnected === undefined) marks.iceConnected = now();
    });
    channel.addEventListener('message', (event) => this.onMessage(event.data));
    channel.addEventListener('open', () => {
      marks.channelOpen = now();
      this.onChannelOpen();
      this.watch(pc, generation);
    });
    channel.addEventListener('close', () => this.lost('the signalling channel closed', generation));

    // What ICE gathered so far goes along (nothing, usually): see `prepareConnection`.
    marks.offerSent = now();
    const joined = await api.joinCall(this.roomId, pc.localDescription.sdp);
    marks.answer = now();
    if (generation !== this.generation) {
      // Replaced (or left) while the join was on its way: that participant is not wanted.
      if (joined.resource) api.leaveCall(joined.resource, { keepalive: true }).catch(() => {});
      return;
    }
    this.resource = joined.resource;
    if (joined.iceServers?.length) {
      // Fresh credentials for the rejoins and ICE restarts to come; this attempt gathered
      // with the servers it was prepared with.
      this.iceServers = joined.iceServers;
      try {
        pc.setConfiguration({ ...pc.getConfiguration(), iceServers: joined.iceServers });
      } catch (err) {
        console.warn('could not update the ICE servers', err);
      }
    }
    await pc.setRemoteDescription({ type: 'answer', sdp: keepRemoteCandidates(joined.sdp) });
    // ICE that never completes (a blocked UDP port) would otherwise leave us waiting forever.
    clearTimeout(this.connectTimer);
    this.connectTimer = setTimeout(() => {
      if (this.channel !== channel || channel.readyState !== 'open') this.lost('the media server did not answer', generation);
    }, CONNECT_TIMEOUT_MS);
  }

  onChannelOpen() {
    this.setState(CallState.CONNECTED, '');
    // After a rejoin the shard knows nothing of our mute state: tell it again.
    for (const kind of ['audio', 'video']) {
      if (this.muted[kind]) this.send({ type: 'mute', kind, muted: true });
    }
    if (this.hand) this.send({ type: 'raise_hand' });
    this.requestedHeights.clear();
    this.onChange();
  }

  onConnectionState(pc, generation) {
    if (generation !== this.generation || this.state === CallState.LEFT) return;
    clearTimeout(this.disconnectTimer);
    switch (pc.connectionState) {
      case 'connected':
        if (this.marks.connected === undefined) this.marks.connected = now();
        this.restartDone();
        if (this.channel?.readyState === 'open') this.setState(CallState.CONNECTED, '');
        break;
      case 'disconnected':
        this.disconnectTimer = setTimeout(() => this.restartIce(pc, generation, 'the media connection dropped'), DISCONNECTED_GRACE_MS);
        this.setState(this.state, 'Connection unstable…');
        this.checkServer(pc, generation);
        break;
      case 'failed':
        this.restartIce(pc, generation, 'the media connection failed');
        break;
      default:
        this.onChange();
    }
  }

  /** Watches what arrives on the connection; a stall of STALL_MS makes it ask about the server. */
  watch(pc, generation) {
    clearInterval(this.watchdog);
    let lastBytes = -1;
    let since = Date.now();
    let asked = 0;
    this.watchdog = setInterval(async () => {
      if (this.pc !== pc || generation !== this.generation) return;
      let bytes = 0;
      try {
        const report = await pc.getStats();
        report.forEach((s) => {
          if (s.type === 'transport') bytes += s.bytesReceived ?? 0;
        });
        const path = mediaPath(report);
        if (path && (path.kind !== this.path?.kind || path.protocol !== this.path?.protocol)) {
          this.path = path;
          this.onChange();
        }
      } catch {
        return;
      }
      const now = Date.now();
      if (bytes !== lastBytes) {
        lastBytes = bytes;
        since = now;
      } else if (now - since >= STALL_MS && now - asked >= 2 * STALL_MS) {
        asked = now;
        this.checkServer(pc, generation);
      }
    }, WATCH_INTERVAL_MS);
  }

  /**
   * Media stopped: ask the API whether the call server still has us. When it is gone (a
   * crashed or killed shard) rejoin at once; when it is there, or the API cannot be reached
   * (our own network may be down), wait for the connection to recover (or for ICE to give up).
   */
  async checkServer(pc, generation) {
    const resource = this.resource;
    if (!resource) return;
    let response;
    try {
      response = await api.checkCall(resource);
    } catch {
      return;
    }
    if (generation !== this.generation || this.pc !== pc) return;
    if (response.status === 404) this.lost('the media server is gone', generation);
  }

  /**
   * Restarts ICE on the same session (new credentials, PATCH to our resource): we keep our
   * participant id, tiles and subscriptions, and the others see nothing. Falls back to a full
   * rejoin when the server refuses (`session_gone`: it lost us), or when the connection is not
   * back within RESTART_TIMEOUT_MS. Queued behind the renegotiations on the data channel, so
   * the two never cross.
   */
  restartIce(pc, generation, reason) {
    if (this.restartTimer || !this.resource || this.pc !== pc || generation !== this.generation) return;
    if (this.state === CallState.LEFT) return;
    clearTimeout(this.disconnectTimer);
    this.setState(this.state, 'Reconnecting the media…');
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null;
      if (this.pc !== pc || generation !== this.generation) return;
      if (pc.connectionState !== 'connected') this.lost(`${reason}; the ICE restart did not connect`, generation);
    }, RESTART_TIMEOUT_MS);
    const resource = this.resource;
    this.signalQueue = this.signalQueue
      .then(async () => {
        if (this.pc !== pc || generation !== this.generation) return;
        pc.restartIce();
        await pc.setLocalDescription(await pc.createOffer());
        const sdp = await api.restartCall(resource, pc.localDescription.sdp);
        if (this.pc !== pc || generation !== this.generation) return;
        await pc.setRemoteDescription({ type: 'answer', sdp: keepRemoteCandidates(sdp) });
        this.iceRestarts += 1;
        if (pc.connectionState === 'connected') this.restartDone();
      })
      .catch((err) => {
        if (this.pc !== pc || generation !== this.generation) return;
        this.restartDone();
        this.lost(`${reason} (${describeJoinError(err)})`, generation);
      });
  }

  stopWatchingNetwork() {
    window.removeEventListener('online', this.onNetworkChange);
    navigator.connection?.removeEventListener?.('change', this.onNetworkChange);
  }

  /** The restarted connection is up (or given up on): no fallback pending. */
  restartDone() {
    clearTimeout(this.restartTimer);
    this.restartTimer = null;
  }

  /** The shard is gone or unreachable: rejoin through the API (maybe on another shard). */
  lost(reason, generation) {
    // Events from an attempt we already replaced (or a call we left) change nothing.
    if (this.state === CallState.LEFT || generation !== this.generation) return;
    this.teardown();
    // The old session's participants and tracks are gone with it; the rejoin brings them back.
    this.participants.clear();
    this.gone.clear();
    this.speaker = null;
    this.setState(CallState.RECONNECTING, `Reconnecting… (${reason})`);
    this.connectWithRetry();
  }

  onTrack(event) {
    // Tracks are matched to participants by mid once the `tracks` message names them.
    event.track.addEventListener('ended', () => this.assignTracks());
    this.assignTracks();
  }

  onMessage(data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    // A short history of what the shard said, for diagnosing a call (read by the browser tests).
    this.history.push(message.type === 'offer' || message.type === 'answer' ? { type: message.type } : message);
    if (this.history.length > 50) this.history.shift();
    switch (message.type) {
      case 'offer':
        this.marks.subscribeOffer ??= now();
        this.signalQueue = this.signalQueue.then(() => this.answer(message.sdp)).catch((err) => {
          console.warn('renegotiation failed', err);
        });
        break;
      case 'tracks':
        this.midOwners.clear();
        this.midKinds.clear();
        this.midSources.clear();
        for (const track of message.tracks ?? []) {
          this.midOwners.set(String(track.mid), track.participant_id);
          this.midKinds.set(String(track.mid), track.kind);
          this.midSources.set(String(track.mid), track.source ?? track.kind);
        }
        this.marks.tracks ??= now();
        this.assignTracks();
        this.watchFirstFrames();
        break;
      case 'welcome':
        this.marks.welcome ??= now();
        this.selfId = message.participant_id;
        for (const p of message.participants ?? []) this.addParticipant(p);
        // A rejoin while sharing: the new session's screen m-line carries it already.
        if (this.screenTrack) this.announceScreen();
        break;
      case 'joined':
        if (message.participant) this.addParticipant(message.participant);
        break;
      case 'left':
        this.gone.add(message.participant_id);
        this.participants.delete(message.participant_id);
        if (this.speaker === message.participant_id) this.speaker = null;
        break;
      case 'muted': {
        const p = this.participants.get(message.participant_id);
        if (p && (message.kind === 'audio' || message.kind === 'video')) p.muted[message.kind] = Boolean(message.muted);
        break;
      }
      case 'speaker':
        this.speaker = message.participant_id ?? null;
        break;
      case 'layer':
        this.layers.set(String(message.mid), message.layer);
        break;
      case 'hand':
        if (message.participant_id === this.selfId) this.hand = Boolean(message.raised);
        else if (this.participants.has(message.participant_id)) this.participants.get(message.participant_id).hand = Boolean(message.raised);
        break;
      case 'quality': {
        const quality = { level: message.level, lossPct: message.loss_pct, rttMs: message.rtt_ms, jitterMs: message.jitter_ms };
        if (message.participant_id === this.selfId) this.quality = quality;
        else if (this.participants.has(message.participant_id)) this.participants.get(message.participant_id).quality = quality;
        break;
      }
      case 'chat':
      case 'chat_refused':
        this.onChat(message);
        break;
      case 'ended':
        // This session was ended on purpose (the same account joined from elsewhere):
        // rejoining would only end that newer session in turn.
        this.end(message.reason === 'replaced' ? 'You joined this call from another tab or device' : 'The call ended');
        return;
      default:
        return;
    }
    this.onChange();
  }

  async answer(sdp) {
    const pc = this.pc;
    if (!pc || pc.signalingState === 'closed') return;
    const marks = this.marks;
    marks.subscribeOfferTaken ??= now();
    await pc.setRemoteDescription({ type: 'offer', sdp: keepRemoteCandidates(sdp) });
    marks.subscribeOfferSet ??= now();
    await pc.setLocalDescription(await pc.createAnswer());
    this.send({ type: 'answer', sdp: pc.localDescription.sdp });
    marks.subscribeAnswered ??= now();
    this.assignTracks();
  }

  /**
   * Notes when each remote video track named by the server decodes its first frame (the
   * join marks' `firstFrame`). Polls the receivers' stats until every such track has one,
   * and stops after FIRST_FRAME_WATCH_MS.
   */
  watchFirstFrames() {
    if (this.frameWatch) return;
    const pc = this.pc;
    const marks = this.marks;
    const until = now() + FIRST_FRAME_WATCH_MS;
    const look = async () => {
      this.frameWatch = null;
      if (this.pc !== pc || this.marks !== marks) return;
      let waiting = false;
      for (const transceiver of pc.getTransceivers()) {
        const mid = transceiver.mid;
        if (mid == null || this.midKinds.get(mid) !== 'video' || marks.firstFrame[mid] !== undefined) continue;
        waiting = true;
        let decoded = 0;
        let packets = 0;
        let received = 0;
        try {
          (await transceiver.receiver.getStats()).forEach((s) => {
            if (s.type !== 'inbound-rtp') return;
            decoded += s.framesDecoded ?? 0;
            packets += s.packetsReceived ?? 0;
            received += s.framesReceived ?? 0;
          });
        } catch {
          // Closed meanwhile: the next look stops.
        }
        // Where the wait for a first frame goes: the network (packets), reassembly (frames
        // received) or the decoder, which waits for a keyframe it can start from.
        if (packets > 0) marks.firstPacket[mid] ??= now();
        if (received > 0) marks.firstReceived[mid] ??= now();
        if (decoded > 0) marks.firstFrame[mid] ??= now();
      }
      if (waiting && now() < until && this.pc === pc) this.frameWatch = setTimeout(look, FIRST_FRAME_POLL_MS);
    };
    this.frameWatch = setTimeout(look, 0);
  }

  addParticipant(p) {
    // A participant that left stays gone even if a late `tracks` message still names it.
    if (!p || !p.id || p.id === this.selfId || this.gone.has(p.id)) return;
    const existing = this.participants.get(p.id);
    if (existing) {
      existing.name = p.name ?? existing.name;
      return;
    }
    // A `welcome` carries each one's state (see docs/signalling.md); a `joined` none yet.
    this.participants.set(p.id, {
      id: p.id,
      name: p.name || 'Guest',
      stream: new MediaStream(),
      /** Their shared screen (a stream of its own, shown large), or null. */
      screen: null,
      muted: { audio: Boolean(p.audio_muted), video: Boolean(p.video_muted) },
      hand: Boolean(p.hand),
      quality: p.quality ? { level: p.quality } : null,
    });
  }

  /** Puts each received track into its participant's stream (a screen into `screen`), following the mid map. */
  assignTracks() {
    if (!this.pc) return;
    const wanted = new Map();
    const screens = new Map();
    for (const transceiver of this.pc.getTransceivers()) {
      const mid = transceiver.mid;
      if (mid == null || transceiver.stopped || transceiver.currentDirection === 'inactive') continue;
      const owner = this.midOwners.get(mid);
      const track = transceiver.receiver.track;
      if (!owner || !track || track.readyState === 'ended') continue;
      if (!this.participants.has(owner)) this.addParticipant({ id: owner, name: 'Guest' });
      if (!this.participants.has(owner)) continue;
      if (this.midSources.get(mid) === 'screen') {
        screens.set(owner, track);
        continue;
      }
      if (!wanted.has(owner)) wanted.set(owner, []);
      wanted.get(owner).push(track);
    }
    for (const p of this.participants.values()) {
      const tracks = wanted.get(p.id) ?? [];
      const current = p.stream.getTracks();
      const same = current.length === tracks.length && tracks.every((t) => current.includes(t));
      // A fresh MediaStream (rather than add/removeTrack) makes every browser's <video> pick it up.
      if (!same) p.stream = new MediaStream(tracks);
      const screen = screens.get(p.id) ?? null;
      if (screen !== (p.screen?.getVideoTracks()[0] ?? null)) p.screen = screen ? new MediaStream([screen]) : null;
    }
    this.onChange();
  }

  /**
   * The early element (see `earlyVideo`) that receives `participantId`'s camera, if its
   * track came in a receive-only m-line of the join offer.
   */
  earlyVideoFor(participantId) {
    const mids = this.videoMids(participantId);
    return this.early.find((e) => mids.includes(e.transceiver.mid))?.video ?? null;
  }

  /** The mids carrying video from `participantId`: its camera, or its shared screen. */
  videoMids(participantId, source = 'camera') {
    const mids = [];
    for (const [mid, owner] of this.midOwners) {
      const isScreen = this.midSources.get(mid) === 'screen';
      if (owner === participantId && this.midKinds.get(mid) === 'video' && isScreen === (source === 'screen')) mids.push(mid);
    }
    return mids;
  }

  /** Tells the shard the largest video height worth sending for a participant's camera or screen (0 pauses). */
  requestHeight(participantId, height, source = 'camera') {
    for (const mid of this.videoMids(participantId, source)) {
      if (this.requestedHeights.get(mid) === height) continue;
      if (this.send({ type: 'max_height', mid, height })) this.requestedHeights.set(mid, height);
    }
  }

  /**
   * Starts sharing `track` (a screen from getDisplayMedia) or stops (null): the screen's
   * transceiver sends it without a renegotiation, and the shard is told, so that others
   * receive it (and nobody pays for it while it is not shared).
   */
  async setScreen(track) {
    this.screenTrack = track;
    await this.screenTransceiver?.sender.replaceTrack(track);
    this.announceScreen();
    this.onChange();
  }

  announceScreen() {
    const mid = this.screenTransceiver?.mid;
    if (mid == null) return;
    this.send({ type: 'screen', mid, sharing: Boolean(this.screenTrack) });
  }

  setMuted(kind, muted) {
    this.muted[kind] = muted;
    for (const track of kind === 'audio' ? this.localStream.getAudioTracks() : this.localStream.getVideoTracks()) {
      track.enabled = !muted;
    }
    this.send({ type: 'mute', kind, muted });
    this.onChange();
  }

  /** Sends a chat message to the room; false when the channel is not open. */
  sendChat(text) {
    return this.send({ type: 'chat', text });
  }

  /** Raises or lowers our hand (again after a rejoin, see `onChannelOpen`). */
  setHand(raised) {
    this.hand = raised;
    if (raised) this.send({ type: 'raise_hand' });
    else this.send({ type: 'lower_hand' });
    this.onChange();
  }

  send(message) {
    if (this.channel?.readyState !== 'open') return false;
    this.channel.send(JSON.stringify(message));
    return true;
  }

  teardown() {
    clearTimeout(this.frameWatch);
    this.frameWatch = null;
    this.restartDone();
    clearTimeout(this.disconnectTimer);
    clearTimeout(this.connectTimer);
    clearInterval(this.watchdog);
    const pc = this.pc;
    this.pc = null;
    this.channel = null;
    closePrepared(this.prepared);
    this.prepared = null;
    dropEarlyVideo(this.early);
    this.early = [];
    this.midOwners.clear();
    this.midKinds.clear();
    this.midSources.clear();
    this.screenTransceiver = null;
    this.layers.clear();
    this.requestedHeights.clear();
    this.signalQueue = Promise.resolve();
    if (pc) pc.close();
    // Tell the old shard we are gone when it can still hear us; it times us out otherwise.
    if (this.resource) api.leaveCall(this.resource, { keepalive: true }).catch(() => {});
    this.resource = null;
  }

  /** Leaves the room for good and releases the camera and microphone. */
  leave() {
    if (this.state === CallState.LEFT) return;
    this.generation += 1;
    this.states.push(CallState.LEFT);
    this.state = CallState.LEFT;
    this.teardown();
    this.stopWatchingNetwork();
    for (const track of this.localStream.getTracks()) track.stop();
    this.screenTrack?.stop();
    this.screenTrack = null;
    this.participants.clear();
    this.onChange();
  }

  /** The server ended this session: stop without rejoining, keep the camera for a new join. */
  end(detail) {
    if (this.state === CallState.LEFT) return;
    this.generation += 1;
    // The server has removed us already: no leave request (the resource is gone with it).
    this.resource = null;
    this.teardown();
    this.stopWatchingNetwork();
    this.participants.clear();
    this.setState(CallState.FAILED, detail);
    this.onChange();
  }

  setState(state, detail) {
    if (this.states.at(-1) !== state) this.states.push(state);
    this.state = state;
    this.detail = detail;
    this.onChange();
  }

  /** Inbound stats per remote participant (what the browser tests read through `window.surge`). */
  async stats() {
    const pc = this.pc;
    if (!pc) return [];
    const byParticipant = new Map();
    for (const transceiver of pc.getTransceivers()) {
      const mid = transceiver.mid;
      const owner = mid == null ? null : this.midOwners.get(mid);
      if (!owner) continue;
      const p = this.participants.get(owner);
      const entry = byParticipant.get(owner) ?? { participant_id: owner, name: p?.name ?? null, video: null, audio: null, screen: null };
      byParticipant.set(owner, entry);
      const report = await transceiver.receiver.getStats();
      report.forEach((s) => {
        if (s.type !== 'inbound-rtp') return;
        if (s.kind === 'video') {
          entry[this.midSources.get(mid) === 'screen' ? 'screen' : 'video'] = {
            mid,
            framesDecoded: s.framesDecoded ?? 0,
            frameWidth: s.frameWidth ?? 0,
            frameHeight: s.frameHeight ?? 0,
            bytesReceived: s.bytesReceived ?? 0,
            framesReceived: s.framesReceived ?? 0,
            keyFramesDecoded: s.keyFramesDecoded ?? 0,
            framesDropped: s.framesDropped ?? 0,
            packetsLost: s.packetsLost ?? 0,
            nackCount: s.nackCount ?? 0,
            pliCount: s.pliCount ?? 0,
            firCount: s.firCount ?? 0,
            decoder: s.decoderImplementation ?? null,
            layer: this.layers.get(mid) ?? null,
          };
        } else if (s.kind === 'audio') {
          entry.audio = {
            mid,
            totalSamplesReceived: s.totalSamplesReceived ?? 0,
            audioLevel: s.audioLevel ?? 0,
            bytesReceived: s.bytesReceived ?? 0,
          };
        }
      });
    }
    return [...byParticipant.values()];
  }

  /** Outbound video stats per simulcast layer (rid, size, frames sent). */
  async outboundStats() {
    const pc = this.pc;
    if (!pc) return [];
    const layers = [];
    const report = await pc.getStats();
    report.forEach((s) => {
      // The camera's layers (a shared screen is one more stream, not a layer).
      if (s.type === 'outbound-rtp' && s.kind === 'video' && (s.mid == null || s.mid !== this.screenTransceiver?.mid)) {
        layers.push({
          rid: s.rid ?? null,
          frameWidth: s.frameWidth ?? 0,
          frameHeight: s.frameHeight ?? 0,
          framesSent: s.framesSent ?? 0,
          active: s.active ?? null,
        });
      }
    });
    return layers.sort((a, b) => String(a.rid).localeCompare(String(b.rid)));
  }
}

/** A sentence for a join or signalling error. */
export function describeJoinError(err) {
  if (!(err instanceof ApiError)) return `Could not connect (${err.message}).`;
  switch (err.code) {
    case 'room_full':
      return 'This room is full.';
    case 'not_found':
    case 'room_not_found':
      return 'This room does not exist (check the link).';
    case 'shard_full':
    case 'draining':
    case 'no_capacity':
    case 'overloaded':
      return 'The media servers are busy.';
    case 'shard_unavailable':
    case 'registry_unavailable':
      return 'The media server is not answering.';
    case 'rate_limited':
      return 'Too many attempts right now.';
    case 'network':
      return 'Cannot reach the server.';
    default:
      if (err.status === 401) return 'Your session has expired: log in again.';
      return `Could not connect (${err.message}).`;
  }
}
