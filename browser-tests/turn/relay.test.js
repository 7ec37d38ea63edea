// Issue 13 (TURN): run by scripts/test-turn, which starts coturn on loopback with
// use-auth-secret and `surge up --turn-urls … --turn-secret …`. Two people whose browsers may
// only use relay candidates (iceTransportPolicy 'relay') call each other through coturn with
// the credentials the API hands out: both decode the other's video, and the connection
// indicator says "relay". Then coturn itself is asked: the API's credentials allocate, while
// forged and expired ones are refused with 401.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { launchBrowser, newPerson, signUp, uniqueEmail, eventually, screenshot, dumpLogs } from '../lib/browser.js';
import { callState, createRoomAndJoin, joinByLink, waitForMediaFrom } from '../lib/call.js';
import { tryAllocate } from '../lib/turn-allocate.js';

const TURN_PORT = Number(process.env.SURGE_TURN_PORT);
const TURN_SECRET = process.env.SURGE_TURN_SECRET;
if (!TURN_PORT || !TURN_SECRET) throw new Error('SURGE_TURN_PORT / SURGE_TURN_SECRET unset: run through scripts/test-turn');

let browser;
let alice;
let bob;

/** A person whose web client may only use TURN relay candidates; records its join answers. */
async function relayOnlyPerson(name) {
  const person = await newPerson(browser, name);
  await person.context.addInitScript(() => localStorage.setItem('surge.iceTransportPolicy', 'relay'));
  person.joinLinks = [];
  person.iceServers = [];
  person.page.on('response', async (response) => {
    const url = new URL(response.url());
    if (response.request().method() === 'POST' && /\/v1\/rooms\/[^/]+\/participants$/.test(url.pathname) && response.status() === 201) {
      person.joinLinks.push(response.headers().link ?? '');
    }
    if (url.pathname === '/v1/ice-servers' && response.ok()) {
      person.iceServers.push(...((await response.json().catch(() => null))?.ice_servers ?? []));
    }
  });
  return person;
}

function credentialFor(secret, username) {
  return createHmac('sha1', secret).update(username).digest('base64');
}

before(async () => {
  browser = await launchBrowser();
  alice = await relayOnlyPerson('alice');
  bob = await relayOnlyPerson('bob');
});

after(async () => {
  await browser?.close();
});

test('a relay-only call goes through TURN with the credentials of the join answer', async (t) => {
  try {
    await signUp(alice, { name: 'Alice Relay', email: uniqueEmail('alice') });
    await signUp(bob, { name: 'Bob Relay', email: uniqueEmail('bob') });
    const link = await createRoomAndJoin(alice);
    await joinByLink(bob, link);
    await waitForMediaFrom(alice, bob);
    await waitForMediaFrom(bob, alice);

    for (const person of [alice, bob]) {
      // The indicator shows the path; the selected pair's local candidate is a relay one.
      await eventually(`${person.name}'s indicator to say relay`, async () => {
        const conn = person.page.locator('#conn-state');
        return (await conn.getAttribute('data-path')) === 'relay' && /relay/.test(await conn.textContent());
      });
      const call = await callState(person);
      assert.equal(call.path.kind, 'relay');
      assert.ok(['udp', 'tcp'].includes(call.path.protocol), call.path.protocol);
      t.diagnostic(`${person.name}: relayed over TURN/${call.path.protocol}`);
      // The join answer carried the TURN server beside the SDP (WHIP Link headers)...
      assert.ok(person.joinLinks.length > 0, 'a join answer was seen');
      for (const links of person.joinLinks) {
        assert.match(links, new RegExp(`<turn:127\\.0\\.0\\.1:${TURN_PORT}\\?transport=udp>; rel="ice-server"; username="\\d+:[0-9a-f]{16}"; credential="[A-Za-z0-9+/=]+"; credential-type="password"`));
      }
      // ...and the pre-join screen had the same servers before the click.
      const turn = person.iceServers.find((s) => s.urls.some((u) => u.startsWith('turn:')));
      assert.ok(turn, `${person.name} fetched TURN servers before joining`);
      const marks = call.marks;
      t.diagnostic(`${person.name}: click -> ICE connected ${Math.round(marks.iceConnected - marks.start)} ms, -> DTLS ${Math.round(marks.connected - marks.start)} ms, -> channel ${Math.round(marks.channelOpen - marks.start)} ms (relayed)`);
    }
    await screenshot(bob.page, 'turn-relay-call-bob');
  } catch (err) {
    dumpLogs(alice, bob);
    throw err;
  }
});

test('coturn takes the issued credentials and refuses forged and expired ones', async () => {
  const issued = alice.iceServers.find((s) => s.urls.some((u) => u.startsWith('turn:')));
  assert.ok(issued?.username && issued.credential);
  const [expiry, user] = issued.username.split(':');
  assert.ok(Number(expiry) > Date.now() / 1000, 'the credentials expire in the future');
  assert.equal(user.length, 16, 'an opaque id, not the account');

  const allocate = (username, password) => tryAllocate({ port: TURN_PORT, username, password });
  assert.deepEqual(await allocate(issued.username, issued.credential), { ok: true });

  // A credential made with another secret.
  const forged = credentialFor('not-the-secret', issued.username);
  assert.deepEqual(await allocate(issued.username, forged), { ok: false, error: 401 });
  // The issued credential with a later expiry written into the username.
  const stretched = `${Number(expiry) + 86_400}:${user}`;
  assert.deepEqual(await allocate(stretched, issued.credential), { ok: false, error: 401 });
  // Correctly signed, but expired a minute ago.
  const expired = `${Math.floor(Date.now() / 1000) - 60}:${user}`;
  assert.deepEqual(await allocate(expired, credentialFor(TURN_SECRET, expired)), { ok: false, error: 401 });
});
