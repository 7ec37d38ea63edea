// Issue 15 (in the call): two people in a call chat (messages arrive in order, under the
// sender's account name, with an unread count while the panel is collapsed; a refused
// message says why), see each other in the participant list with mute state and a
// connection-quality indicator measured by the shard, and raise a hand the other sees.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, newPerson, signUp, uniqueEmail, eventually, screenshot, dumpLogs, step } from '../lib/browser.js';
import { callState, createRoomAndJoin, joinByLink } from '../lib/call.js';

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

/** The chat log as `person` sees it: seq, sender name and text per message. */
function chatLog(person) {
  return person.page.locator('#chat-log .chat-message').evaluateAll((items) =>
    items.map((li) => ({
      seq: Number(li.dataset.seq),
      name: li.querySelector('.chat-name').textContent,
      text: li.querySelector('.chat-text').textContent,
    })),
  );
}

/** `person`'s participant-list row for `other`. */
function rosterRow(person, other) {
  return person.page.locator('#roster .roster-row', { hasText: other.displayName });
}

async function send(person, text) {
  await person.page.locator('#chat-input').fill(text);
  await person.page.getByRole('button', { name: 'Send' }).click();
}

test('chat in order with account names, participant list with mute and quality, raised hands', async (t) => {
  try {
    await step(t, 'both sign up; alice creates a room and bob joins by its link', async () => {
      await signUp(alice, { name: 'Alice Archer', email: uniqueEmail('alice') });
      await signUp(bob, { name: 'Bob Baker', email: uniqueEmail('bob') });
      const link = await createRoomAndJoin(alice);
      await joinByLink(bob, link);
      await rosterRow(alice, bob).waitFor();
      await rosterRow(bob, alice).waitFor();
    });

    await step(t, 'bob collapses his chat; alice sends five messages; bob sees an unread count', async () => {
      await bob.page.locator('#toggle-chat').click();
      assert.equal(await bob.page.locator('#chat-panel').isHidden(), true);
      for (let n = 1; n <= 5; n += 1) await send(alice, `message ${n} from alice`);
      await eventually('bob\'s unread count to reach 5', async () => (await bob.page.locator('#chat-unread').textContent()) === '5');
      assert.equal(await bob.page.locator('#toggle-chat').getAttribute('aria-label'), 'Chat, 5 unread');
      await screenshot(bob.page, 'call-chat-unread-bob');
    });

    await step(t, 'bob opens the chat: the messages in order, under alice\'s account name', async () => {
      await bob.page.locator('#toggle-chat').click();
      assert.equal(await bob.page.locator('#chat-unread').isHidden(), true);
      const log = await eventually('bob to show five messages', async () => {
        const entries = await chatLog(bob);
        return entries.length === 5 ? entries : null;
      });
      assert.deepEqual(log.map((m) => m.text), [1, 2, 3, 4, 5].map((n) => `message ${n} from alice`));
      assert.ok(log.every((m) => m.name === 'Alice Archer'), JSON.stringify(log));
      assert.deepEqual(log.map((m) => m.seq), [1, 2, 3, 4, 5]);
      // Alice sees her own messages come back in the same order, marked as hers.
      const own = await eventually('alice to show her five messages', async () => {
        const entries = await chatLog(alice);
        return entries.length === 5 ? entries : null;
      });
      assert.deepEqual(own, log.map((m) => ({ ...m, name: 'Alice Archer (you)' })));
      await send(bob, 'hello <b>alice</b>');
      await eventually('alice to get bob\'s reply as text', async () => (await chatLog(alice)).at(-1)?.text === 'hello <b>alice</b>');
      assert.equal((await chatLog(alice)).at(-1).name, 'Bob Baker');
      assert.equal(await alice.page.locator('#chat-log b').count(), 0, 'a message is text, never markup');
    });

    await step(t, 'a message over 2000 characters is refused with a reason and reaches nobody', async () => {
      const before = (await chatLog(bob)).length;
      // The input stops at 2000 characters; a client that sends more anyway is refused.
      await alice.page.evaluate(() => window.surge.sendChat('x'.repeat(2001)));
      await alice.page.locator('#chat-notice', { hasText: 'at most 2000 characters' }).waitFor();
      await send(alice, 'after the long one');
      await eventually('bob to get the next message', async () => (await chatLog(bob)).at(-1)?.text === 'after the long one');
      assert.equal((await chatLog(bob)).length, before + 1, 'the refused message never arrived');
    });

    await step(t, 'the participant list: alice mutes her microphone and bob\'s list shows it', async () => {
      const row = rosterRow(bob, alice);
      assert.equal(await row.getAttribute('data-audio-muted'), 'false');
      await alice.page.getByRole('button', { name: 'Mute', exact: true }).click();
      await eventually('bob\'s list to show alice muted', async () => (await row.getAttribute('data-audio-muted')) === 'true');
      assert.equal(await row.locator('.roster-mic').getAttribute('aria-label'), 'microphone off');
      await alice.page.getByRole('button', { name: 'Stop camera' }).click();
      await eventually('bob\'s list to show alice\'s camera off', async () => (await row.getAttribute('data-video-muted')) === 'true');
    });

    await step(t, 'the participant list shows a connection quality measured by the shard', async () => {
      const started = Date.now();
      for (const [person, other] of [[bob, alice], [alice, bob]]) {
        const level = await eventually(`${person.name}'s list to show ${other.name}'s connection quality`, async () => {
          const value = await rosterRow(person, other).getAttribute('data-quality');
          return value ? value : null;
        }, { timeout: 60_000 });
        // Loopback with fake devices should be good; a busy machine may make it fair, so
        // the level is reported rather than required.
        assert.ok(['good', 'fair', 'poor'].includes(level), level);
        const title = await rosterRow(person, other).locator('.roster-quality').getAttribute('aria-label');
        assert.match(title, new RegExp(`^Connection ${level}`));
        t.diagnostic(`${person.name} sees ${other.name}: ${title}`);
      }
      t.diagnostic(`quality levels shown ${Date.now() - started} ms after the step began`);
      const self = await callState(bob);
      assert.ok(self.quality?.level, 'bob is told his own level too');
    });

    await step(t, 'alice raises her hand, bob sees it; she lowers it', async () => {
      await alice.page.getByRole('button', { name: 'Raise hand' }).click();
      assert.equal(await alice.page.locator('#toggle-hand').getAttribute('aria-pressed'), 'true');
      const row = rosterRow(bob, alice);
      await eventually('bob to see alice\'s hand', async () => (await row.getAttribute('data-hand')) === 'true');
      assert.equal(await row.locator('.roster-hand').isVisible(), true);
      await screenshot(bob.page, 'call-participants-and-chat-bob');
      await alice.page.getByRole('button', { name: 'Lower hand' }).click();
      await eventually('bob to see alice\'s hand down', async () => (await row.getAttribute('data-hand')) === 'false');
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
