// Device choice in a call: camera, microphone and speaker selectors. A new camera or
// microphone replaces the track the call sends (RTCRtpSender.replaceTrack: no renegotiation,
// no rejoin, the others keep decoding); a speaker applies to every media element of the call
// (HTMLMediaElement.setSinkId), including ones added later.

const $ = (id) => document.getElementById(id);

const KINDS = {
  video: { select: 'camera-select', device: 'videoinput', name: 'Camera' },
  audio: { select: 'mic-select', device: 'audioinput', name: 'Microphone' },
};

/** The chosen audio output ('' = the system default). */
let sinkId = '';

/** Fills a selector with `devices`, keeping `currentId` selected. */
function fill(select, devices, currentId, name) {
  const options = devices.map((d, i) => {
    const option = document.createElement('option');
    option.value = d.deviceId;
    option.textContent = d.label || `${name} ${i + 1}`;
    return option;
  });
  select.replaceChildren(...options);
  if (currentId && devices.some((d) => d.deviceId === currentId)) select.value = currentId;
  select.disabled = devices.length === 0;
}

/** Lists the devices into the three selectors (labels need the camera/microphone permission, which the call has). */
export async function renderDevices(call) {
  if (!navigator.mediaDevices?.enumerateDevices) return;
  const devices = await navigator.mediaDevices.enumerateDevices();
  for (const [kind, { select, device, name }] of Object.entries(KINDS)) {
    const [track] = kind === 'audio' ? call.localStream.getAudioTracks() : call.localStream.getVideoTracks();
    const list = devices.filter((d) => d.kind === device && d.deviceId);
    fill($(select), list, track?.getSettings().deviceId, name);
    // Without a track at the join there is no sender to swap into (that would need a renegotiation).
    if (!track) $(select).disabled = true;
  }
  const speakers = devices.filter((d) => d.kind === 'audiooutput' && d.deviceId);
  const canRoute = typeof HTMLMediaElement.prototype.setSinkId === 'function';
  fill($('speaker-select'), speakers, sinkId || 'default', 'Speaker');
  if (!canRoute) $('speaker-select').disabled = true;
}

/**
 * Switches the call's camera (`kind` 'video') or microphone ('audio') to `deviceId`: opens
 * it, swaps it into the sender, and puts it in the local stream (self view, rejoins) in
 * place of the old one, which is released. The mute state carries over.
 */
export async function switchDevice(call, kind, deviceId) {
  const old = (kind === 'audio' ? call.localStream.getAudioTracks() : call.localStream.getVideoTracks())[0];
  if (!old) return;
  const constraints = kind === 'video'
    ? { video: { deviceId: { exact: deviceId }, width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } } }
    : { audio: { deviceId: { exact: deviceId } } };
  const stream = await navigator.mediaDevices.getUserMedia(constraints);
  const [track] = kind === 'audio' ? stream.getAudioTracks() : stream.getVideoTracks();
  if (!track) return;
  track.enabled = !call.muted[kind];
  const sender = call.pc?.getSenders().find((s) => s.track === old);
  if (sender) await sender.replaceTrack(track);
  call.localStream.removeTrack(old);
  call.localStream.addTrack(track);
  old.stop();
  // The self view plays the same stream: give it the new track at once.
  const self = document.querySelector('#grid .tile.self video');
  if (self && self.srcObject === call.localStream) {
    self.srcObject = null;
    self.srcObject = call.localStream;
  }
  call.onChange();
}

/** Routes one media element to the chosen speaker. */
function route(element) {
  if (typeof element.setSinkId !== 'function' || (element.sinkId ?? '') === sinkId) return;
  element.setSinkId(sinkId).catch(() => {});
}

/** Routes every media element of the call view to `id`. */
export async function chooseSpeaker(id) {
  sinkId = id === 'default' ? '' : id;
  for (const element of $('view-call').querySelectorAll('video, audio')) route(element);
}

/** Wires the selectors; `getCall()` is the call in progress (or null). */
export function setupDevices(getCall, onError) {
  for (const [kind, { select }] of Object.entries(KINDS)) {
    $(select).addEventListener('change', async (event) => {
      const call = getCall();
      if (!call) return;
      try {
        await switchDevice(call, kind, event.target.value);
      } catch (err) {
        onError(`Could not switch to that device (${err?.message ?? err}).`);
        renderDevices(call).catch(() => {});
      }
    });
  }
  $('speaker-select').addEventListener('change', (event) => chooseSpeaker(event.target.value));
  // Tiles come and go: each new media element plays on the chosen speaker too.
  new MutationObserver((records) => {
    if (!sinkId) return;
    for (const record of records) {
      for (const node of record.addedNodes) {
        if (node.nodeType !== Node.ELEMENT_NODE) continue;
        if (node.matches('video, audio')) route(node);
        for (const element of node.querySelectorAll('video, audio')) route(element);
      }
    }
  }).observe($('view-call'), { childList: true, subtree: true });
  // A headset plugged in or out: list again.
  navigator.mediaDevices?.addEventListener?.('devicechange', () => {
    const call = getCall();
    if (call) renderDevices(call).catch(() => {});
  });
}
