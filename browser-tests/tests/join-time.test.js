// Issue 19, in the browser: how long a join takes from the click on "Join call" to the first
// decoded frame of every remote video track, over SURGE_JOIN_SAMPLES joins (default 5, so CI
// stays quick; 20 or more for figures worth writing down), with the web client's join marks
// broken down into phases. For comparison, the same for Chromium alone: two peer connections
// in one page, no server. Figures are printed, not asserted (a shared two-core machine).
// SURGE_JOIN_TRACE=1 also prints a JOINTRACE line per join: the marks with the page's time
// origin (to line them up with the shard's log), the join POST's resource timing and, from
// hidden elements playing each remote video track, the media pipeline's first-frame times
// and the receiver's stats as they change.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, newPerson, signUp, uniqueEmail, eventually, dumpLogs } from '../lib/browser.js';
import { callState, createRoomAndJoin } from '../lib/call.js';
import { FLOOR_PHASES, flatten, percentile, report } from '../lib/join-time.js';

const SAMPLES = Math.max(1, Number(process.env.SURGE_JOIN_SAMPLES ?? 5) || 5);
/** What a user spends on the pre-join screen at least (the preview is playing meanwhile). */
const PREJOIN_PAUSE_MS = 300;

let browser;
let alice;
let bob;

before(async () => {
  browser = await launchBrowser();
  alice = await newPerson(browser, 'alice');
  bob = await newPerson(browser, 'bob');
  if (process.env.SURGE_JOIN_TRACE) {
    // Each remote video track also plays in a hidden element whose first frame callback
    // gives the media pipeline's own times (receive, presentation), free of the page's
    // main-thread delays that the stats polling sees; its stats are polled as they change.
    await bob.page.addInitScript(() => {
      window.__frames = [];
      const STATS = ['packetsReceived', 'framesReceived', 'framesDecoded', 'keyFramesDecoded', 'framesDropped', 'pliCount', 'nackCount', 'lastPacketReceivedTimestamp'];
      const Native = window.RTCPeerConnection;
      window.RTCPeerConnection = class extends Native {
        constructor(...args) {
          super(...args);
          this.addEventListener('track', (event) => {
            if (event.track.kind !== 'video') return;
            const entry = { mid: event.transceiver?.mid, track: performance.now(), stats: [] };
            window.__frames.push(entry);
            event.track.addEventListener('unmute', () => { entry.unmute ??= performance.now(); });
            const video = document.createElement('video');
            video.muted = true;
            video.style.cssText = 'position:fixed;left:0;top:0;width:32px;height:18px;opacity:0.01';
            video.srcObject = new MediaStream([event.track]);
            document.documentElement.appendChild(video);
            video.play().catch(() => {});
            video.requestVideoFrameCallback((now, meta) => {
              Object.assign(entry, { callback: now, receiveTime: meta.receiveTime, presentationTime: meta.presentationTime, rtpTimestamp: meta.rtpTimestamp });
            });
            let last = '';
            const poll = async () => {
              let row = null;
              try {
                (await this.getStats(event.track)).forEach((x) => {
                  if (x.type === 'inbound-rtp') row = STATS.map((k) => x[k] ?? null);
                });
              } catch {
                return;
              }
              // The arrival time changes with every packet: a row is kept when a count changes.
              const key = JSON.stringify(row?.slice(0, -1));
              if (key !== last) {
                last = key;
                entry.stats.push([Math.round(performance.now() - entry.track), row]);
              }
              if (entry.stats.length < 12 && performance.now() - entry.track < 3000) setTimeout(poll, 2);
            };
            poll();
          });
        }
      };
    });
  }
});

after(async () => {
  await browser?.close();
});

function summary(values) {
  return `p50 ${percentile(values, 50).toFixed(0)} ms, p99 ${percentile(values, 99).toFixed(0)} ms, max ${Math.max(...values).toFixed(0)} ms`;
}

/**
 * Bob on the pre-join screen of `link`: waits for the preview to play and the prepared
 * connection (when the client makes one), clicks, and returns the click -> first decoded
 * frame time seen from outside the client (its stats polled every 5 ms from the click),
 * plus the client's own marks.
 */
async function joinOnce(link) {
  const { page } = bob;
  await page.goto(link);
  const join = page.getByRole('button', { name: 'Join call' });
  await join.waitFor();
  await page.waitForFunction(() => document.getElementById('preview')?.readyState >= 2);
  await page.evaluate(() => window.surge.prepared?.());
  await page.waitForTimeout(PREJOIN_PAUSE_MS);
  const polled = page.evaluate(() => new Promise((resolve) => {
    const start = performance.now();
    const look = async () => {
      let stats = [];
      try {
        stats = await window.surge.stats();
      } catch {
        // Not in the call yet.
      }
      if (stats.some((p) => p.video?.framesDecoded > 0)) return resolve(performance.now() - start);
      if (performance.now() - start > 60_000) return resolve(null);
      setTimeout(look, 5);
    };
    look();
  }));
  await join.click();
  const ms = await polled;
  assert.ok(ms !== null, "bob never decoded a frame of alice's video");
  const call = await eventually('bob to note the first frame of every remote video track', async () => {
    const c = await callState(bob);
    // A client without join marks (an older one, measured for comparison) has only the polled figure.
    if (c && !c.marks) return c;
    const mids = Object.keys(c?.marks?.firstFrame ?? {});
    return mids.length >= 1 ? c : null;
  }, { timeout: 30_000 });
  if (process.env.SURGE_JOIN_TRACE) {
    const trace = await page.evaluate(() => {
      const post = performance.getEntriesByType('resource')
        .filter((e) => e.initiatorType === 'fetch' && /\/v1\/rooms\/[^/]+\/participants$/.test(e.name))
        .pop();
      const pick = (e) => e && Object.fromEntries(['startTime', 'connectStart', 'connectEnd', 'requestStart', 'responseStart', 'responseEnd']
        .map((k) => [k, Math.round(e[k] * 10) / 10]));
      return { timeOrigin: performance.timeOrigin, post: pick(post), frames: window.__frames };
    });
    console.log(`JOINTRACE ${JSON.stringify({ ...trace, marks: call.marks })}`);
  }
  return { polled: ms, marks: call.marks ? flatten(call.marks) : null, attempt: call.marks?.attempt };
}

async function leave() {
  await bob.page.getByRole('button', { name: 'Leave' }).click();
  await bob.page.getByRole('heading', { name: 'Contacts' }).waitFor();
  await eventually('alice to see bob gone', async () => (await callState(alice)).participants.length === 0);
}

test(`join time through the web client: click -> first decoded frame, ${SAMPLES} joins`, async (t) => {
  try {
    await signUp(alice, { name: 'Alice Archer', email: uniqueEmail('alice') });
    await signUp(bob, { name: 'Bob Baker', email: uniqueEmail('bob') });
    const link = await createRoomAndJoin(alice);
    const samples = [];
    const polled = [];
    for (let i = 0; i < SAMPLES; i += 1) {
      const sample = await joinOnce(link);
      if (sample.marks) samples.push(sample.marks);
      polled.push(sample.polled);
      const m = sample.marks;
      const marked = m ? `${(m.firstFrame - m.start).toFixed(0)} ms (attempt ${sample.attempt}); ` : '';
      t.diagnostic(`join ${i + 1}: click -> first frame ${marked}polled from outside: ${sample.polled.toFixed(0)} ms`);
      await leave();
    }
    if (samples.length > 0) {
      const marked = samples.map((m) => m.firstFrame - m.start);
      console.log(`join time (browser, web client): click -> first decoded frame of every remote video track: ${summary(marked)}`);
      // A frame decoded before the `tracks` message names its owner is seen once the owner's
      // tile is drawn, right after that message.
      const inTile = samples.filter((m) => m.tracks !== undefined).map((m) => Math.max(m.firstFrame, m.tracks) - m.start);
      if (inTile.length > 0) console.log(`join time (browser, web client): click -> first frame in its participant's tile: ${summary(inTile)}`);
    }
    console.log(`join time (browser, web client): click -> first decoded frame polled from outside the client: ${summary(polled)}`);
    if (samples.length > 0) console.log(report('join time (browser, web client), by phase', samples));
  } catch (err) {
    dumpLogs(alice, bob);
    throw err;
  }
});

/**
 * Chromium alone: two peer connections in one page exchange offer, answer and candidates
 * directly; the sender has the fake camera (opened beforehand) and microphone. Timed from the
 * sender's createOffer to the receiver's first decoded frame.
 */
test(`join time floor: Chromium alone (two peer connections in one page), ${SAMPLES} calls`, async () => {
  const { page } = alice;
  await page.goto('/healthz');
  const samples = await page.evaluate(async (count) => {
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: true,
      video: { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } },
    });
    const once = async () => {
      const marks = { firstFrame: {} };
      const sender = new RTCPeerConnection();
      const receiver = new RTCPeerConnection();
      sender.addEventListener('icecandidate', (e) => e.candidate && receiver.addIceCandidate(e.candidate));
      receiver.addEventListener('icecandidate', (e) => e.candidate && sender.addIceCandidate(e.candidate));
      receiver.addEventListener('iceconnectionstatechange', () => {
        if (receiver.iceConnectionState === 'connected') marks.iceConnected ??= performance.now();
      });
      receiver.addEventListener('connectionstatechange', () => {
        if (receiver.connectionState === 'connected') marks.connected ??= performance.now();
      });
      for (const track of stream.getTracks()) sender.addTrack(track, stream);
      marks.start = performance.now();
      await sender.setLocalDescription(await sender.createOffer());
      marks.offerSent = performance.now();
      await receiver.setRemoteDescription(sender.localDescription);
      await receiver.setLocalDescription(await receiver.createAnswer());
      await sender.setRemoteDescription(receiver.localDescription);
      marks.answer = performance.now();
      const video = receiver.getReceivers().find((r) => r.track.kind === 'video');
      for (;;) {
        let decoded = 0;
        (await video.getStats()).forEach((s) => {
          if (s.type === 'inbound-rtp') decoded += s.framesDecoded ?? 0;
        });
        if (decoded > 0) break;
        if (performance.now() - marks.start > 30_000) return null;
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      marks.firstFrame = performance.now();
      sender.close();
      receiver.close();
      return marks;
    };
    const out = [];
    for (let i = 0; i < count; i += 1) {
      out.push(await once());
      await new Promise((resolve) => setTimeout(resolve, 300));
    }
    for (const track of stream.getTracks()) track.stop();
    return out;
  }, SAMPLES);
  assert.ok(samples.every((s) => s !== null), 'every call decoded a frame');
  const total = samples.map((m) => m.firstFrame - m.start);
  console.log(`join time floor (Chromium alone, no server): createOffer -> first decoded frame: ${summary(total)}`);
  console.log(report('join time floor (Chromium alone), by phase', samples, FLOOR_PHASES));
});
