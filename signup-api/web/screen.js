// Screen sharing in a call: the "Share screen" button (getDisplayMedia, then Call.setScreen,
// which swaps the capture into the screen's transceiver and tells the shard), and the stage
// that shows someone's shared screen large above the tiles.

const $ = (id) => document.getElementById(id);

/**
 * What to capture: one stream (no simulcast: a screen is shown large, and text shrunk to a
 * quarter is unreadable), at most 1080 lines and 15 frames a second, which is plenty for
 * slides and code and leaves room for the cameras.
 */
const CAPTURE = { video: { height: { max: 1080 }, frameRate: { ideal: 15, max: 30 } }, audio: false };

/** Whether this browser can share a screen in `call` (it needs the screen's transceiver). */
export function canShare(call) {
  return Boolean(call?.screenTransceiver && navigator.mediaDevices?.getDisplayMedia);
}

/** Asks the user what to share and starts sharing it; a refusal at the picker changes nothing. */
export async function startScreenShare(call) {
  const stream = await navigator.mediaDevices.getDisplayMedia(CAPTURE);
  const [track] = stream.getVideoTracks();
  if (!track) return;
  // Text and lines over motion: the encoder keeps the resolution and lowers the frame rate.
  track.contentHint = 'detail';
  // The browser's own "Stop sharing" ends the track.
  track.addEventListener('ended', () => {
    if (call.screenTrack === track) call.setScreen(null);
  });
  await call.setScreen(track);
}

/** Stops sharing and releases the capture. */
export async function stopScreenShare(call) {
  const track = call.screenTrack;
  await call.setScreen(null);
  track?.stop();
}

/** The lines of the stage's video element worth receiving, rounded to the layer sizes. */
function stageHeight(stage) {
  const px = stage.clientHeight * (window.devicePixelRatio || 1);
  return px <= 400 ? 360 : 1080;
}

/**
 * Shows the first remote participant's shared screen on the stage (large), and pauses any
 * other shared screen (only one is shown). Our own share shows a notice instead of our
 * screen, which would mirror itself.
 */
export function renderScreen(call) {
  const stage = $('screen-stage');
  const video = stage.querySelector('video');
  const sharer = [...call.participants.values()].find((p) => p.screen);
  stage.hidden = !sharer;
  stage.dataset.participant = sharer?.id ?? '';
  if (sharer) {
    if (video.srcObject !== sharer.screen) {
      video.srcObject = sharer.screen;
      // Muted, so autoplay needs no gesture; a play() cut short by the next stream is harmless.
      video.play().catch(() => {});
    }
    stage.querySelector('.tile-label').textContent = `${sharer.name}'s screen`;
    call.requestHeight(sharer.id, stageHeight(stage), 'screen');
  } else if (video.srcObject) {
    video.srcObject = null;
  }
  for (const p of call.participants.values()) {
    if (p !== sharer && p.screen) call.requestHeight(p.id, 0, 'screen');
  }
  $('view-call').classList.toggle('sharing', Boolean(sharer));

  const button = $('share-screen');
  const sharing = Boolean(call.screenTrack);
  button.disabled = !sharing && !canShare(call);
  button.setAttribute('aria-pressed', String(sharing));
  button.textContent = sharing ? 'Stop sharing' : 'Share screen';
  $('sharing-notice').hidden = !sharing;
}

/** Wires the button; `getCall()` is the call in progress (or null). */
export function setupScreenShare(getCall, onError) {
  $('share-screen').addEventListener('click', async () => {
    const call = getCall();
    if (!call) return;
    try {
      if (call.screenTrack) await stopScreenShare(call);
      else await startScreenShare(call);
    } catch (err) {
      // NotAllowedError: the user closed the picker. Anything else is worth saying.
      if (err?.name !== 'NotAllowedError') onError(`Could not share the screen (${err?.message ?? err}).`);
    }
  });
}
