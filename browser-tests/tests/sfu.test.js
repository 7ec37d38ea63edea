// Issue 3, the real-browser test of the SFU shard: a page joins a room through the API (which
// relays the offer to the shard), publishes camera video as three simulcast layers and the
// microphone; a second page decodes the video and receives the audio; the subscriber's
// `max_height` picks the layer it gets, and the stream stays decodable across the switch;
// leaving with DELETE tells the others.
// The pages use a minimal WebRTC participant (lib/rawpeer.js), not the web client.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { launchBrowser, newPerson, uniqueEmail, GOOD_PASSWORD, eventually, screenshot, dumpLogs } from '../lib/browser.js';

const RAW_PEER = fileURLToPath(new URL('../lib/rawpeer.js', import.meta.url));

let browser;
let publisher;
let subscriber;

before(async () => {
  browser = await launchBrowser();
  publisher = await newPerson(browser, 'publisher');
  subscriber = await newPerson(browser, 'subscriber');
  for (const person of [publisher, subscriber]) {
    // Any page of the server's origin will do: the test drives WebRTC from script.
    await person.page.goto('/healthz');
    await person.page.addScriptTag({ path: RAW_PEER });
  }
});

after(async () => {
  await browser?.close();
});

const inbound = (person) => person.page.evaluate(() => window.rawPeer.inbound());
const peerState = (person) => person.page.evaluate(() => window.rawPeer.state());

/** Runs a test body, printing both pages' console output when it fails. */
async function withLogs(fn) {
  try {
    await fn();
  } catch (err) {
    dumpLogs(publisher, subscriber);
    throw err;
  }
}

// The tests below share one call and run in order (node:test runs a file's tests serially).
let room;

test('a browser joins through the API, which relays the offer to the shard, and publishes three simulcast layers', () =>
  withLogs(async () => {
    const pubToken = await publisher.page.evaluate(
      ([email, password]) => window.rawPeer.account('Pat Publisher', email, password),
      [uniqueEmail('pub'), GOOD_PASSWORD],
    );
    room = await publisher.page.evaluate((token) => window.rawPeer.createRoom(token, 'sfu browser test'), pubToken);
    assert.ok(room.id, 'the API created a room');

    const joined = await publisher.page.evaluate(([token, id]) => window.rawPeer.join(token, id, true), [pubToken, room.id]);
    assert.match(joined.location, /^\/v1\/rooms\/[^/]+\/participants\/[0-9a-f]{16}$/);
    const answer = await publisher.page.evaluate(() => window.rawPeer.answerSdp);
    // Chrome sends three layers only when the answer asks for them.
    assert.match(answer, /a=simulcast:recv [qhf;]+/);
    for (const rid of ['q', 'h', 'f']) assert.match(answer, new RegExp(`a=rid:${rid} recv`));
    await eventually('the publisher to connect', async () => {
      const p = await peerState(publisher);
      return p.connection === 'connected' && p.channel === 'open';
    });
    // Three encodings, each with its own rid, all flowing (on loopback Chrome's bandwidth
    // estimate allows all three within seconds).
    const layers = await eventually('the publisher to send all three layers', async () => {
      const out = await publisher.page.evaluate(() => window.rawPeer.outbound());
      return ['q', 'h', 'f'].every((rid) => out[rid]?.framesSent > 0) ? out : null;
    });
    assert.deepEqual(Object.keys(layers).sort(), ['f', 'h', 'q']);
  }));

test('a second browser decodes the video and receives the audio', (t) =>
  withLogs(async () => {
    assert.ok(room, 'the publisher test created the room');
    const subToken = await subscriber.page.evaluate(
      ([email, password]) => window.rawPeer.account('Sam Subscriber', email, password),
      [uniqueEmail('sub'), GOOD_PASSWORD],
    );
    await subscriber.page.evaluate(([token, id]) => window.rawPeer.join(token, id, false), [subToken, room.id]);
    await eventually('the subscriber to connect', async () => {
      const s = await peerState(subscriber);
      return s.connection === 'connected' && s.channel === 'open';
    });
    const first = await eventually('the subscriber to decode video and receive audio', async () => {
      const s = await inbound(subscriber);
      return s.framesDecoded > 0 && s.totalSamplesReceived > 0 ? s : null;
    }, { timeout: 90_000 });
    await eventually('audio samples to keep arriving', async () => {
      const s = await inbound(subscriber);
      return s.totalSamplesReceived > first.totalSamplesReceived;
    });
    t.diagnostic(`subscriber decodes ${first.frameWidth}x${first.frameHeight}`);
  }));

test('asking for 180p gets the quarter layer, and it keeps decoding', () =>
  withLogs(async () => {
    await subscriber.page.evaluate(() => window.rawPeer.sendMaxHeight(180));
    await eventually('the subscriber to get the quarter layer after asking for 180p', async () => {
      const [s, st] = await Promise.all([inbound(subscriber), peerState(subscriber)]);
      return s.frameHeight > 0 && s.frameHeight <= 180 && Object.values(st.layers).includes('q');
    });
    const start = await inbound(subscriber);
    await eventually('30 more frames of the quarter layer', async () => (await inbound(subscriber)).framesDecoded >= start.framesDecoded + 30);
    await screenshot(subscriber.page, 'sfu-subscriber');
  }));

test('asking for 720p moves up a layer, on a keyframe, and the video keeps decoding', (t) =>
  withLogs(async () => {
    await subscriber.page.evaluate(() => window.rawPeer.sendMaxHeight(720));
    const upgraded = await eventually('the subscriber to get a larger layer after asking for 720p', async () => {
      const [s, st] = await Promise.all([inbound(subscriber), peerState(subscriber)]);
      const layer = Object.values(st.layers).at(-1);
      return s.frameHeight > 180 && (layer === 'h' || layer === 'f') ? { height: s.frameHeight, layer } : null;
    }, { timeout: 90_000 });
    t.diagnostic(`after asking for 720p the subscriber decodes ${upgraded.height}p (layer ${upgraded.layer})`);
    // A broken rewrite across the switch shows as one decoded frame, then "lost" packets and PLIs.
    const atSwitch = await inbound(subscriber);
    let latest = atSwitch;
    try {
      await eventually('the larger layer to keep decoding (30 more frames)', async () => {
        latest = await inbound(subscriber);
        return latest.framesDecoded >= atSwitch.framesDecoded + 30 && latest.frameHeight > 180;
      }, { timeout: 60_000 });
    } catch (err) {
      const sent = await publisher.page.evaluate(() => window.rawPeer.outbound()).catch(() => null);
      err.message += ` (at the switch ${JSON.stringify(atSwitch)}; latest ${JSON.stringify(latest)}; publisher ${JSON.stringify(sent)})`;
      throw err;
    }
  }));

test('leaving with DELETE answers 204 and the others hear about it', () =>
  withLogs(async () => {
    const status = await subscriber.page.evaluate(() => window.rawPeer.leave());
    assert.equal(status, 204, `DELETE of the participant answered ${status}`);
    await eventually('the publisher to hear that the subscriber left', async () => (await peerState(publisher)).events.includes('left'));
  }));
