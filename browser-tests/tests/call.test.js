// Issue 8: two people sign up in two browser contexts, become contacts (one asks, the other
// sees the request arrive live and accepts: issue 14), see each other online, one starts a
// room and the other joins by its link; each decodes the other's video and hears their audio;
// one leaves and the other sees it. Screenshots of the call view are saved.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, newPerson, signUp, uniqueEmail, eventually, screenshot, dumpLogs, step } from '../lib/browser.js';
import { callState, waitForMediaFrom, waitConnected } from '../lib/call.js';

let browser;
let alice;
let bob;

before(async () => {
  browser = await launchBrowser();
  alice = await newPerson(browser, 'alice');
  bob = await newPerson(browser, 'bob');
});

after(async () => {
  await browser?.close();
});

/** Asks for `email` as a contact; the page answers the same whether or not it has an account. */
async function requestContact(person, email) {
  const { page } = person;
  await page.getByLabel("Contact's email").fill(email);
  await page.getByRole('button', { name: 'Add', exact: true }).click();
  await page.locator('#contact-message', { hasText: `Request sent to ${email}` }).waitFor();
}

/** The request from `from` appears on `person`'s page without a reload; they accept it. */
async function acceptRequest(person, from) {
  const { page } = person;
  await page.getByRole('button', { name: `Accept ${from.displayName}` }).click();
  await page.locator('#contact-list li', { hasText: from.displayName }).waitFor();
}

function contactStatus(person, other) {
  return person.page.locator('#contact-list li', { hasText: other.displayName }).getAttribute('data-status');
}

test('two people sign up, see each other online, call by link, and one leaves', async (t) => {
  try {
    await step(t, 'both sign up', async () => {
      await signUp(alice, { name: 'Alice Archer', email: uniqueEmail('alice') });
      await signUp(bob, { name: 'Bob Baker', email: uniqueEmail('bob') });
    });

    await step(t, 'alice asks; the answer does not tell whether an email has an account', async () => {
      await requestContact(alice, uniqueEmail('nobody'));
      await requestContact(alice, bob.email);
      // Not a contact yet: bob only shows among the requests waiting for an answer.
      assert.equal(await alice.page.locator('#contact-list li').count(), 0);
      await alice.page.locator('#outgoing-list li', { hasText: bob.email }).waitFor();
    });

    await step(t, 'bob sees the request live, accepts, and both see each other online', async () => {
      await bob.page.locator('#request-list li', { hasText: alice.displayName }).waitFor();
      await screenshot(bob.page, 'home-contact-request-bob');
      await acceptRequest(bob, alice);
      await alice.page.locator('#contact-list li', { hasText: bob.displayName }).waitFor();
      await eventually('alice to see bob online', async () => (await contactStatus(alice, bob)) === 'online');
      await eventually('bob to see alice online', async () => (await contactStatus(bob, alice)) === 'online');
    });

    await step(t, 'a status change reaches the other side live', async () => {
      await bob.page.getByLabel('Your status').selectOption('busy');
      await eventually('alice to see bob busy', async () => (await contactStatus(alice, bob)) === 'busy');
      await bob.page.getByLabel('Your status').selectOption('online');
      await eventually('alice to see bob online again', async () => (await contactStatus(alice, bob)) === 'online');
      await screenshot(alice.page, 'home-contacts-alice');
    });

    let link;
    await step(t, 'alice creates a room and joins it', async () => {
      await alice.page.getByRole('button', { name: 'Create room' }).click();
      await alice.page.locator('#room-created').waitFor();
      link = await alice.page.locator('#room-link').inputValue();
      assert.match(link, /\/rooms\/[^/]+$/);
      await alice.page.getByRole('link', { name: 'Join the call' }).click();
      await alice.page.getByRole('button', { name: 'Join call' }).click();
      await waitConnected(alice);
    });

    await step(t, 'bob joins by the link', async () => {
      await bob.page.goto(link);
      const join = bob.page.getByRole('button', { name: 'Join call' });
      await join.waitFor();
      await screenshot(bob.page, 'prejoin-bob');
      await join.click();
      await waitConnected(bob);
      // The web client's join marks: the click -> first decoded frame of alice's video (page clock).
      const marks = await eventually('bob to decode a first frame of alice\'s video', async () => {
        const call = await callState(bob);
        const frames = Object.values(call?.marks?.firstFrame ?? {});
        return frames.length > 0 ? { ...call.marks, firstFrame: Math.max(...frames) } : null;
      });
      const ms = marks.firstFrame - marks.start;
      t.diagnostic(`bob: click on "Join call" -> first decoded frame of alice's video: ${ms.toFixed(0)} ms`);
      console.log(`join time (browser): click -> first decoded frame ${ms.toFixed(0)} ms (tests/join-time.test.js breaks it down)`);
    });

    await step(t, 'each decodes the other\'s video and receives their audio', async () => {
      const atAlice = await waitForMediaFrom(alice, bob);
      const atBob = await waitForMediaFrom(bob, alice);
      // The web client publishes its camera as three simulcast layers.
      const sent = await alice.page.evaluate(() => window.surge.outboundStats());
      assert.deepEqual(sent.map((l) => l.rid).sort(), ['f', 'h', 'q'], JSON.stringify(sent));
      t.diagnostic(`alice sees bob at ${atAlice.video.frameWidth}x${atAlice.video.frameHeight}; bob sees alice at ${atBob.video.frameWidth}x${atBob.video.frameHeight}`);
      await eventually('both tiles in alice\'s grid', async () => (await alice.page.locator('#grid .tile').count()) === 2);
      await screenshot(alice.page, 'call-alice');
      await screenshot(bob.page, 'call-bob');
    });

    await step(t, 'alice mutes her microphone and bob sees it', async () => {
      const muteButton = alice.page.getByRole('button', { name: 'Mute', exact: true });
      await muteButton.click();
      assert.equal(await alice.page.locator('#toggle-mic').getAttribute('aria-pressed'), 'true');
      const aliceTile = bob.page.locator('#grid .tile', { hasText: 'Alice Archer' });
      await eventually('bob to see alice muted', async () => (await aliceTile.getAttribute('data-muted')) === 'true');
      await screenshot(bob.page, 'call-bob-alice-muted');
      await alice.page.getByRole('button', { name: 'Unmute', exact: true }).click();
      await eventually('bob to see alice unmuted', async () => (await aliceTile.getAttribute('data-muted')) === 'false');
    });

    await step(t, 'bob restarts ICE: same participant, no left/joined, no tile flicker', async () => {
      const before = await callState(bob);
      const bobTile = alice.page.locator('#grid .tile', { hasText: 'Bob Baker' });
      let flickers = 0;
      const watching = setInterval(async () => {
        if ((await bobTile.count().catch(() => 1)) !== 1) flickers += 1;
      }, 50);
      const started = Date.now();
      try {
        assert.equal(await bob.page.evaluate(() => window.surge.restartIce()), true);
        const after = await eventually('bob\'s ICE restart to complete', async () => {
          const call = await callState(bob);
          return call.iceRestarts >= 1 && call.state === 'connected' ? call : null;
        });
        await waitForMediaFrom(alice, bob);
        t.diagnostic(`ICE restart: media from bob at alice again ${Date.now() - started} ms after the restart began`);
        assert.equal(after.selfId, before.selfId, 'the same participant');
        assert.deepEqual(after.states, before.states, 'no reconnecting, no rejoin');
      } finally {
        clearInterval(watching);
      }
      assert.equal(flickers, 0, 'alice\'s tile of bob never went away');
      assert.doesNotMatch(await alice.page.locator('#call-events').textContent(), /Bob Baker left/);
      await waitForMediaFrom(bob, alice);
    });

    await step(t, 'the shard forgets bob; bob notices, says so, and rejoins through the API', async () => {
      const before = await callState(bob);
      assert.equal(await bob.page.evaluate(() => window.surge.forgetOnShard()), 204);
      await eventually('bob to show that he is reconnecting', async () => (await callState(bob)).states.includes('reconnecting'));
      await screenshot(bob.page, 'call-bob-reconnecting');
      const after = await eventually('bob to be connected again as a new participant', async () => {
        const call = await callState(bob);
        return call.state === 'connected' && call.selfId && call.selfId !== before.selfId ? call : null;
      }, { timeout: 90_000 });
      t.diagnostic(`bob went through ${after.states.join(' → ')}`);
      await waitForMediaFrom(alice, bob);
      await waitForMediaFrom(bob, alice);
    });

    await step(t, 'bob leaves and alice sees it', async () => {
      await bob.page.getByRole('button', { name: 'Leave' }).click();
      await bob.page.getByRole('heading', { name: 'Contacts' }).waitFor();
      await eventually('alice to see bob gone', async () => {
        const call = await callState(alice);
        return call.participants.length === 0 && (await alice.page.locator('#grid .tile').count()) === 1;
      });
      assert.match(await alice.page.locator('#call-events').textContent(), /Bob Baker left the call/);
      await screenshot(alice.page, 'call-alice-after-bob-left');
    });
  } catch (err) {
    dumpLogs(alice, bob);
    for (const person of [alice, bob]) {
      const call = await callState(person).catch(() => null);
      console.log(`[${person.name}] call state: ${JSON.stringify(call)}`);
    }
    throw err;
  }
});
