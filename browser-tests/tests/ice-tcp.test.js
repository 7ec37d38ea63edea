// Issue 13 (ICE-TCP): a browser whose UDP path to the shard is unavailable still calls, over
// ICE-TCP to the shard's passive TCP candidate. Chromium cannot be told to block UDP, so
// both web clients drop the shard's UDP candidates before setRemoteDescription (the
// test-only `localStorage['surge.test.remoteCandidates'] = 'tcp'`); the shard is ICE-lite
// and never checks towards them, so TCP is the only path left. Both decode the other's
// video, and the connection indicator (from getStats' selected pair) says TCP.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, newPerson, signUp, uniqueEmail, eventually, screenshot, dumpLogs } from '../lib/browser.js';
import { callState, createRoomAndJoin, joinByLink, waitForMediaFrom } from '../lib/call.js';

let browser;
let alice;
let bob;

/** A person whose web client only sees the shard's TCP candidates; keeps the SDP it got. */
async function tcpOnlyPerson(name) {
  const person = await newPerson(browser, name);
  await person.context.addInitScript(() => localStorage.setItem('surge.test.remoteCandidates', 'tcp'));
  person.answers = [];
  person.page.on('response', async (response) => {
    const url = new URL(response.url());
    if (response.request().method() === 'POST' && /\/v1\/rooms\/[^/]+\/participants$/.test(url.pathname) && response.status() === 201) {
      person.answers.push(await response.text().catch(() => ''));
    }
  });
  return person;
}

before(async () => {
  browser = await launchBrowser();
  alice = await tcpOnlyPerson('alice');
  bob = await tcpOnlyPerson('bob');
});

after(async () => {
  await browser?.close();
});

test('two browsers that can only reach the shard over TCP call each other over ICE-TCP', async (t) => {
  try {
    await signUp(alice, { name: 'Alice Tcp', email: uniqueEmail('alice') });
    await signUp(bob, { name: 'Bob Tcp', email: uniqueEmail('bob') });
    const link = await createRoomAndJoin(alice);
    await joinByLink(bob, link);
    await waitForMediaFrom(alice, bob);
    await waitForMediaFrom(bob, alice);

    // The shard offered both transports; the clients kept only its passive TCP candidate.
    for (const person of [alice, bob]) {
      assert.ok(person.answers.length > 0, `${person.name}: a join answer was seen`);
      const answer = person.answers.at(-1);
      assert.match(answer, /^a=candidate:\S+ \d+ udp /im, 'the shard offers UDP');
      assert.match(answer, /^a=candidate:\S+ \d+ tcp \d+ \S+ \d+ typ host tcptype passive/im, 'and passive TCP');
      const filtered = await person.page.evaluate(async (sdp) => {
        const { keepRemoteCandidates } = await import('/static/call.js');
        return keepRemoteCandidates(sdp);
      }, answer);
      assert.doesNotMatch(filtered, /^a=candidate:\S+ \d+ udp /im);
      assert.match(filtered, /^a=candidate:\S+ \d+ tcp /im);
    }

    for (const person of [alice, bob]) {
      await eventually(`${person.name}'s indicator to say TCP`, async () => {
        const conn = person.page.locator('#conn-state');
        return (await conn.getAttribute('data-path')) === 'tcp' && /TCP/.test(await conn.textContent());
      });
      const call = await callState(person);
      assert.equal(call.path.kind, 'tcp');
      assert.equal(call.path.protocol, 'tcp');
      // The click -> first decoded frame of the other's video, on the web client's clock.
      const frames = Object.values(call.marks?.firstFrame ?? {});
      assert.ok(frames.length > 0, `${person.name} marked a first frame`);
      const m = call.marks;
      // Alice's first frame waited for bob to join; bob's is the click -> picture of a join.
      const waited = person === alice ? ' (waited for bob to join)' : '';
      t.diagnostic(
        `${person.name} over ICE-TCP: click -> ICE connected ${Math.round(m.iceConnected - m.start)} ms, -> DTLS ${Math.round(m.connected - m.start)} ms, -> first decoded frame ${Math.round(Math.max(...frames) - m.start)} ms${waited}`,
      );
    }
    await screenshot(bob.page, 'ice-tcp-call-bob');
  } catch (err) {
    dumpLogs(alice, bob);
    throw err;
  }
});
