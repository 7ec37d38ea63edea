// Issue 8: a room link opened before logging in leads through sign-up straight to the
// pre-join screen; a link to a room that does not exist says so instead of joining.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, newPerson, fillSignup, uniqueEmail, GOOD_PASSWORD, screenshot, dumpLogs } from '../lib/browser.js';

let browser;
let carol;

before(async () => {
  browser = await launchBrowser();
  carol = await newPerson(browser, 'carol');
});

after(async () => {
  await browser?.close();
});

test('a link opened while signed out asks to sign up, then shows the pre-join screen', async () => {
  const { page } = carol;
  try {
    await page.goto('/rooms/nosuchroom1');
    await page.getByText('join the call you were invited to').waitFor();
    await fillSignup(page, { name: 'Carol Cho', email: uniqueEmail('carol'), password: GOOD_PASSWORD });
    await page.getByRole('heading', { name: 'Ready to join?' }).waitFor({ timeout: 90_000 });
    await page.getByText('This room does not exist').waitFor();
    assert.equal(await page.getByRole('button', { name: 'Join call' }).isDisabled(), true);
    assert.equal(new URL(page.url()).pathname, '/rooms/nosuchroom1');
    await screenshot(page, 'prejoin-unknown-room');
  } catch (err) {
    dumpLogs(carol);
    throw err;
  }
});
