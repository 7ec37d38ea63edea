// The call's participant list: who is in the call (us first), their microphone and camera
// mute state, raised hands, and the connection quality the shard measures for each (three
// bars: good, fair, poor; see docs/signalling.md, "Connection quality").

const QUALITY_TEXT = { good: 'good', fair: 'fair', poor: 'poor' };

function qualityTitle(quality) {
  if (!quality?.level) return 'Connection: not measured yet';
  const figures = [];
  if (quality.lossPct != null) figures.push(`loss ${quality.lossPct} %`);
  if (quality.rttMs != null) figures.push(`round trip ${quality.rttMs} ms`);
  if (quality.jitterMs != null) figures.push(`jitter ${quality.jitterMs} ms`);
  return `Connection ${QUALITY_TEXT[quality.level] ?? quality.level}${figures.length ? ` (${figures.join(', ')})` : ''}`;
}

function rowFor(list, id) {
  let row = list.querySelector(`[data-participant="${CSS.escape(id)}"]`);
  if (row) return row;
  row = document.createElement('li');
  row.className = 'roster-row';
  row.dataset.participant = id;
  const name = document.createElement('span');
  name.className = 'roster-name';
  const hand = document.createElement('span');
  hand.className = 'roster-hand';
  hand.textContent = '✋';
  const mic = document.createElement('span');
  mic.className = 'roster-icon roster-mic';
  const cam = document.createElement('span');
  cam.className = 'roster-icon roster-cam';
  const bars = document.createElement('span');
  bars.className = 'roster-quality';
  bars.setAttribute('role', 'img');
  for (let i = 0; i < 3; i += 1) bars.append(document.createElement('i'));
  row.append(name, hand, mic, cam, bars);
  list.append(row);
  return row;
}

function fillRow(row, { name, micOff, camOff, hand, quality }) {
  row.dataset.audioMuted = String(micOff);
  row.dataset.videoMuted = String(camOff);
  row.dataset.hand = String(hand);
  row.dataset.quality = quality?.level ?? '';
  row.querySelector('.roster-name').textContent = name;
  const handIcon = row.querySelector('.roster-hand');
  handIcon.hidden = !hand;
  handIcon.setAttribute('aria-label', 'hand raised');
  const mic = row.querySelector('.roster-mic');
  mic.textContent = micOff ? '🔇' : '🎤';
  mic.setAttribute('aria-label', micOff ? 'microphone off' : 'microphone on');
  const cam = row.querySelector('.roster-cam');
  cam.textContent = camOff ? '🚫' : '📷';
  cam.setAttribute('aria-label', camOff ? 'camera off' : 'camera on');
  const bars = row.querySelector('.roster-quality');
  bars.dataset.level = quality?.level ?? '';
  bars.title = qualityTitle(quality);
  bars.setAttribute('aria-label', bars.title);
  const parts = [name, micOff ? 'microphone off' : null, camOff ? 'camera off' : null, hand ? 'hand raised' : null, quality?.level ? `connection ${quality.level}` : null];
  row.setAttribute('aria-label', parts.filter(Boolean).join(', '));
}

/**
 * Draws `call`'s participants into `list` (an <ul>): us (as `selfName`) first, then the
 * others in the order they came, raised hands first among them.
 */
export function renderRoster(list, call, selfName) {
  const selfId = call.selfId ?? 'self';
  const rows = [
    {
      id: selfId,
      name: `${selfName} (you)`,
      micOff: call.muted.audio || call.localStream.getAudioTracks().length === 0,
      camOff: call.muted.video || call.localStream.getVideoTracks().length === 0,
      hand: call.hand,
      quality: call.quality,
    },
  ];
  const others = [...call.participants.values()].map((p) => ({
    id: p.id,
    name: p.name,
    micOff: p.muted.audio,
    camOff: p.muted.video,
    hand: Boolean(p.hand),
    quality: p.quality,
  }));
  // Stable: among the raised hands and the others, the order they came in stays.
  others.sort((a, b) => Number(b.hand) - Number(a.hand));
  rows.push(...others);
  const seen = new Set();
  for (const entry of rows) {
    seen.add(entry.id);
    const row = rowFor(list, entry.id);
    fillRow(row, entry);
    list.append(row);
  }
  for (const row of [...list.children]) {
    if (!seen.has(row.dataset.participant)) row.remove();
  }
}
