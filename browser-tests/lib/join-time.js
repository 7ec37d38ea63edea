// Join time in the browser (issue 19): the web client's join marks (`window.surge.state()
// .call.marks`, page clock in ms) turned into phases, and percentiles over several joins.
// Figures are printed, never asserted: the machine is shared and timing is noisy.

/**
 * The phases of a join, in order: [name, from mark, to mark]. `firstFrame` is the slowest
 * remote video track. The renegotiation phases are absent when the tracks came in the join's
 * own answer (its receive-only m-lines). Chromium may report `connected` a little after the
 * data channel opened.
 */
export const PHASES = [
  ['click -> offer sent', 'start', 'offerSent'],
  ['offer sent -> answer (API + shard)', 'offerSent', 'answer'],
  ['answer -> ICE connected', 'answer', 'iceConnected'],
  ['ICE connected -> DTLS connected', 'iceConnected', 'connected'],
  ['DTLS connected -> data channel open', 'connected', 'channelOpen'],
  ['channel open -> shard offers the tracks', 'channelOpen', 'subscribeOffer'],
  ['shard offer -> answer sent', 'subscribeOffer', 'subscribeAnswered'],
  ['  of which setRemoteDescription', 'subscribeOfferTaken', 'subscribeOfferSet'],
  ['  of which createAnswer + setLocalDescription', 'subscribeOfferSet', 'subscribeAnswered'],
  ['answer sent -> first decoded frame', 'subscribeAnswered', 'firstFrame'],
  ['ICE connected -> data channel open', 'iceConnected', 'channelOpen'],
  ['channel open -> first video packet', 'channelOpen', 'firstPacket'],
  ['first video packet -> first whole frame', 'firstPacket', 'firstReceived'],
  ['first whole frame -> first decoded frame', 'firstReceived', 'firstFrame'],
  ['DTLS connected -> first decoded frame', 'connected', 'firstFrame'],
  ['click -> first decoded frame', 'start', 'firstFrame'],
];

/** The phases of a call between two peer connections in one page (no server, no renegotiation). */
export const FLOOR_PHASES = [
  ['createOffer -> offer set', 'start', 'offerSent'],
  ['offer set -> answer set', 'offerSent', 'answer'],
  ['answer -> ICE connected', 'answer', 'iceConnected'],
  ['ICE connected -> DTLS connected', 'iceConnected', 'connected'],
  ['DTLS connected -> first decoded frame', 'connected', 'firstFrame'],
  ['createOffer -> first decoded frame', 'start', 'firstFrame'],
];

/** The last of a per-track mark (mid -> time), or undefined when no track has it. */
function last(perTrack) {
  const times = Object.values(perTrack ?? {});
  return times.length ? Math.max(...times) : undefined;
}

/**
 * Marks with the per-track marks (`firstPacket`, `firstReceived`, `firstFrame`) reduced to the
 * last remote video track's (or undefined).
 */
export function flatten(marks) {
  return {
    ...marks,
    firstPacket: last(marks.firstPacket),
    firstReceived: last(marks.firstReceived),
    firstFrame: last(marks.firstFrame),
  };
}

/** Nearest-rank percentile (p in 0..100) of numbers; NaN for none. */
export function percentile(values, p) {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[rank - 1];
}

/** Each phase's duration per sample (ms; undefined where a mark is missing). */
export function phases(samples, list = PHASES) {
  return list.map(([name, from, to]) => ({
    name,
    values: samples.map((m) => (m[from] !== undefined && m[to] !== undefined ? m[to] - m[from] : undefined)),
  }));
}

/** A table of p50 / p99 / max per phase, one line each. */
export function report(title, samples, list = PHASES) {
  const lines = [`${title} (${samples.length} samples; p50 / p99 / max, ms)`];
  for (const { name, values } of phases(samples, list)) {
    const known = values.filter((v) => v !== undefined);
    if (known.length === 0) continue;
    const fmt = (v) => v.toFixed(0).padStart(5);
    lines.push(`  ${name.padEnd(42)} ${fmt(percentile(known, 50))} ${fmt(percentile(known, 99))} ${fmt(Math.max(...known))}`);
  }
  return lines.join('\n');
}
