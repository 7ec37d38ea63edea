// Issue 15, calling: three people sign up and become contacts. Ann calls Bob from the
// contact list; Bob's page rings (dialog and ringtone) and he accepts; both decode each
// other's video. Ann adds Cy to the call; Cy's page rings, she accepts and decodes Ann's
// video. Later Bob declines a call, and then lets one ring out: after the ring timeout (30 s)
// Ann reads "No answer" and Bob's recent calls show a missed call with Call back.
// Screenshots of the ringing dialog, the caller's view and the recent calls are saved.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, newPerson, signUp, uniqueEmail, eventually, screenshot, dumpLogs, step } from '../lib/browser.js';
import { waitForMediaFrom, waitConnected } from '../lib/call.js';

let browser;
let ann;
let bob;
let cy;

before(async () => {
  browser = await launchBrowser();
  ann = await newPerson(browser, 'ann');
  bob = await newPerson(browser, 'bob');
  cy = await newPerson(browser, 'cy');
});

after(async () => {
  await browser?.close();
});

/** `from` asks `to` to be a contact and `to` accepts on their page. */
async function befriend(from, to) {
  await from.page.getByLabel("Contact's email").fill(to.email);
  await from.page.getByRole('button', { name: 'Add', exact: true }).click();
  await to.page.getByRole('button', { name: `Accept ${from.displayName}` }).click();
  await from.page.locator('#contact-list li', { hasText: to.displayName }).waitFor();
}

function contactStatus(person, other) {
  return person.page.locator('#contact-list li', { hasText: other.displayName }).getAttribute('data-status');
}

function calling(person) {
  return person.page.evaluate(() => window.surge.calling());
}

/** What `caller`'s call view says about `callee`'s ring. */
function calleeState(caller, callee) {
  return caller.page.locator('#call-ringing li', { hasText: callee.displayName }).getAttribute('data-state');
}

async function ringingDialog(person, caller) {
  const dialog = person.page.getByRole('alertdialog');
  await dialog.waitFor();
  await dialog.getByRole('heading', { name: `${caller.displayName} is calling` }).waitFor();
  return dialog;
}

async function leave(person) {
  await person.page.getByRole('button', { name: 'Leave' }).click();
  await person.page.getByRole('heading', { name: 'Contacts' }).waitFor();
}

test('call a contact: ring, accept, add a third, decline, and a missed call', async (t) => {
  try {
    await step(t, 'three sign up and become contacts', async () => {
      await signUp(ann, { name: 'Ann Abbott', email: uniqueEmail('ann') });
      await signUp(bob, { name: 'Bob Bright', email: uniqueEmail('bob') });
      await signUp(cy, { name: 'Cy Cole', email: uniqueEmail('cy') });
      await befriend(ann, bob);
      await befriend(ann, cy);
      await eventually('ann to see bob and cy online', async () =>
        (await contactStatus(ann, bob)) === 'online' && (await contactStatus(ann, cy)) === 'online');
    });

    await step(t, 'ann calls bob; his page rings; he accepts and both decode video', async () => {
      const started = Date.now();
      await ann.page.getByRole('button', { name: `Call ${bob.displayName}`, exact: true }).click();
      const dialog = await ringingDialog(bob, ann);
      t.diagnostic(`bob's page rang ${Date.now() - started} ms after ann's click`);
      assert.equal((await calling(bob)).ringing.length, 1);
      assert.equal((await calling(bob)).ringtone, true, 'the ringtone plays');
      await screenshot(bob.page, 'calling-ringing-dialog-bob');
      await eventually('ann to see bob ringing', async () => (await calleeState(ann, bob)) === 'ringing');
      await screenshot(ann.page, 'calling-ringing-ann');
      await dialog.getByRole('button', { name: `Accept the call from ${ann.displayName}` }).click();
      await waitConnected(bob);
      await waitConnected(ann);
      assert.equal((await calling(bob)).ringtone, false, 'the ringtone stopped');
      await eventually('ann to see bob answered', async () => (await calleeState(ann, bob)) === 'accepted');
      const atBob = await waitForMediaFrom(bob, ann);
      const atAnn = await waitForMediaFrom(ann, bob);
      t.diagnostic(`bob decodes ann at ${atBob.video.frameWidth}x${atBob.video.frameHeight}; ann decodes bob at ${atAnn.video.frameWidth}x${atAnn.video.frameHeight}`);
    });

    await step(t, 'ann adds cy to the call; cy accepts and decodes ann', async () => {
      await ann.page.getByRole('button', { name: 'Add people' }).click();
      await ann.page.getByRole('button', { name: `Ring ${cy.displayName}` }).click();
      const dialog = await ringingDialog(cy, ann);
      await dialog.getByRole('button', { name: `Accept the call from ${ann.displayName}` }).click();
      await waitConnected(cy);
      const annRoom = (await calling(ann)).active.roomId;
      assert.equal((await calling(cy)).active.roomId, annRoom, 'cy joined the same room');
      await waitForMediaFrom(cy, ann);
      await waitForMediaFrom(ann, cy);
      await eventually('three tiles at ann', async () => (await ann.page.locator('#grid .tile').count()) === 3);
      await screenshot(ann.page, 'calling-three-ann');
      for (const person of [cy, bob, ann]) await leave(person);
    });

    await step(t, 'bob declines; ann reads it', async () => {
      await ann.page.getByRole('button', { name: `Call ${bob.displayName}`, exact: true }).click();
      const dialog = await ringingDialog(bob, ann);
      await dialog.getByRole('button', { name: `Decline the call from ${ann.displayName}` }).click();
      await eventually('ann to see bob declined', async () => (await calleeState(ann, bob)) === 'declined');
      assert.equal(await bob.page.getByRole('alertdialog').isHidden(), true);
      await leave(ann);
    });

    await step(t, 'nobody answers: no answer for ann, a missed call for bob', async () => {
      await ann.page.getByRole('button', { name: `Call ${bob.displayName}`, exact: true }).click();
      await ringingDialog(bob, ann);
      const rang = Date.now();
      // The ring timeout is 30 s (the sweep adds at most 1 s); generous bound for a busy box.
      await eventually('ann to see no answer', async () => (await calleeState(ann, bob)) === 'no_answer', { timeout: 60_000, interval: 500 });
      t.diagnostic(`no answer after ${Date.now() - rang} ms of ringing`);
      await eventually('bob\'s page to stop ringing', async () => bob.page.getByRole('alertdialog').isHidden());
      const missed = bob.page.locator('#recent-list li[data-outcome="missed"]', { hasText: ann.displayName });
      await missed.first().waitFor();
      await missed.first().getByRole('button', { name: `Call ${ann.displayName} back` }).waitFor();
      await screenshot(bob.page, 'calling-missed-call-bob');
      await leave(ann);
    });
  } catch (err) {
    dumpLogs(ann, bob, cy);
    throw err;
  }
});
