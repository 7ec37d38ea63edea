// Issue 3, the real-browser test of the SFU shard: a page joins a room through the signalling
// (join tokens from the API), publishes camera video as three simulcast layers and the
// microphone; a second page decodes the video and receives the audio; the subscriber's
// `max_height` picks the layer it gets; leaving with DELETE tells the others.
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

test('a browser publishes simulcast through the shard and another browser decodes it', async (t) => {
  try {
    const pubToken = await publisher.page.evaluate(
      ([email, password]) => window.rawPeer.account('Pat Publisher', email, password),
      [uniqueEmail('pub'), GOOD_PASSWORD],
    );
    const room = await publisher.page.evaluate((token) => window.rawPeer.createRoom(token, 'sfu browser test'), pubToken);
    assert.ok(room.id, 'the API created a room');

    const joined = await publisher.page.evaluate(([token, id]) => window.rawPeer.join(token, id, true), [pubToken, room.id]);
    assert.match(joined.location, /\/v1\/sfu\/rooms\/[^/]+\/participants\/[^/]+$/);
    const answer = await publisher.page.evaluate(() => window.rawPeer.answerSdp);
    // Chrome sends three layers only when the answer asks for them.
    assert.match(answer, /a=simulcast:recv [qhf;]+/);
    for (const rid of ['q', 'h', 'f']) assert.match(answer, new RegExp(`a=rid:${rid} recv`));

    const subToken = await subscriber.page.evaluate(
      ([email, password]) => window.rawPeer.account('Sam Subscriber', email, password),
      [uniqueEmail('sub'), GOOD_PASSWORD],
    );
    await subscriber.page.evaluate(([token, id]) => window.rawPeer.join(token, id, false), [subToken, room.id]);

    await eventually('both pages connected with an open data channel', async () => {
      const [p, s] = await Promise.all([peerState(publisher), peerState(subscriber)]);
      return p.connection === 'connected' && p.channel === 'open' && s.connection === 'connected' && s.channel === 'open';
    });

    const first = await eventually('the subscriber to decode video and receive audio', async () => {
      const s = await inbound(subscriber);
      return s.framesDecoded > 0 && s.totalSamplesReceived > 0 ? s : null;
    }, { timeout: 90_000 });
    await eventually('video frames and audio samples to keep arriving', async () => {
      const s = await inbound(subscriber);
      return s.framesDecoded > first.framesDecoded && s.totalSamplesReceived > first.totalSamplesReceived;
    });
    t.diagnostic(`subscriber decodes ${first.frameWidth}x${first.frameHeight}`);

    // The publisher really sends simulcast: three encodings, each with its own rid, and the
    // lowest one flowing (the upper ones follow Chrome's bandwidth estimate).
    const layers = await eventually('the publisher to send the q layer', async () => {
      const out = await publisher.page.evaluate(() => window.rawPeer.outbound());
      return out.q?.framesSent > 0 ? out : null;
    });
    assert.deepEqual(Object.keys(layers).sort(), ['f', 'h', 'q']);
    t.diagnostic(`publisher layers: ${JSON.stringify(layers)}`);

    await subscriber.page.evaluate(() => window.rawPeer.sendMaxHeight(180));
    await eventually('the subscriber to get the quarter layer after asking for 180p', async () => {
      const [s, st] = await Promise.all([inbound(subscriber), peerState(subscriber)]);
      return s.frameHeight > 0 && s.frameHeight <= 180 && Object.values(st.layers).includes('q');
    });
    await screenshot(subscriber.page, 'sfu-subscriber');

    const status = await subscriber.page.evaluate(() => window.rawPeer.leave());
    assert.equal(status, 204);
    await eventually('the publisher to hear that the subscriber left', async () => (await peerState(publisher)).events.includes('left'));
  } catch (err) {
    dumpLogs(publisher, subscriber);
    throw err;
  }
});
