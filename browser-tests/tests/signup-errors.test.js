// Issue 8, second browser test: sign-up with bad inputs shows a clear message next to the
// field at fault; a rate-limited sign-up counts down and retries by itself.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  launchBrowser,
  newPerson,
  signUp,
  fillSignup,
  uniqueEmail,
  GOOD_PASSWORD,
  screenshot,
  dumpLogs,
} from '../lib/browser.js';

let browser;
let person;

before(async () => {
  browser = await launchBrowser();
  person = await newPerson(browser, 'eve');
});

after(async () => {
  await browser?.close();
});

/** Submits the sign-up form and returns the error shown for `field` once it appears. */
async function submitAndReadError(fields, errorSelector) {
  const { page } = person;
  await page.goto('/');
  await fillSignup(page, fields);
  const error = page.locator(errorSelector);
  await error.filter({ hasText: /\S/ }).waitFor({ timeout: 60_000 });
  return (await error.textContent()).trim();
}

const cases = [
  {
    what: 'an invalid email',
    fields: { name: 'Eve', email: 'not-an-email', password: GOOD_PASSWORD },
    error: '#signup-email-error',
    input: '#signup-email',
    expect: /valid email address/i,
  },
  {
    what: 'a weak password',
    fields: { name: 'Eve', email: uniqueEmail('weak'), password: 'abc' },
    error: '#signup-password-error',
    input: '#signup-password',
    expect: /too short: use at least \d+ characters/i,
  },
  {
    what: 'a password that is too long',
    fields: { name: 'Eve', email: uniqueEmail('long'), password: `${GOOD_PASSWORD}x`.repeat(200) },
    error: '#signup-password-error',
    input: '#signup-password',
    expect: /too long/i,
  },
  {
    what: 'an empty display name',
    fields: { name: '   ', email: uniqueEmail('noname'), password: GOOD_PASSWORD },
    error: '#signup-name-error',
    input: '#signup-name',
    expect: /name others will see/i,
  },
];

for (const c of cases) {
  test(`sign-up with ${c.what} shows a message on that field`, async () => {
    try {
      const text = await submitAndReadError(c.fields, c.error);
      assert.match(text, c.expect);
      assert.equal(await person.page.locator(c.input).getAttribute('aria-invalid'), 'true');
      assert.match(await person.page.locator('#signup-message').textContent(), /fix the highlighted field/i);
    } catch (err) {
      dumpLogs(person);
      throw err;
    }
  });
}

test('sign-up with an email that is taken says so, and a wrong password is refused at login', async () => {
  const email = uniqueEmail('taken');
  const first = await newPerson(browser, 'first');
  try {
    await signUp(first, { name: 'First Owner', email });
    const text = await submitAndReadError({ name: 'Second', email, password: GOOD_PASSWORD }, '#signup-email-error');
    assert.match(text, /already exists/i);
    await screenshot(person.page, 'signup-email-taken');

    const { page } = person;
    await page.getByRole('tab', { name: 'Log in' }).click();
    await page.locator('#login-email').fill(email);
    await page.locator('#login-password').fill('wrong-password-123456');
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.locator('#login-message').filter({ hasText: /wrong email or password/i }).waitFor({ timeout: 60_000 });
  } catch (err) {
    dumpLogs(person, first);
    throw err;
  } finally {
    await first.context.close();
  }
});

test('a rate-limited sign-up counts down and retries by itself', async () => {
  const { page } = person;
  let refusals = 0;
  const keys = new Set();
  // The server's limiter is per IP and generous in tests: stand in for a flood by refusing
  // the first attempt exactly as the API does (429, JSON error, Retry-After).
  await page.route('**/v1/accounts', async (route) => {
    keys.add(route.request().headers()['idempotency-key']);
    if (refusals === 0) {
      refusals += 1;
      await route.fulfill({
        status: 429,
        headers: { 'Retry-After': '3', 'Content-Type': 'application/json' },
        body: JSON.stringify({ error: { code: 'rate_limited', message: 'too many sign-ups' } }),
      });
      return;
    }
    await route.continue();
  });
  try {
    await page.goto('/');
    await fillSignup(page, { name: 'Patient Pat', email: uniqueEmail('patient'), password: GOOD_PASSWORD });
    const message = page.locator('#signup-message');
    await message.filter({ hasText: /too many sign-ups right now, retrying in \d+ s/i }).waitFor({ timeout: 10_000 });
    await screenshot(page, 'signup-rate-limited');
    // The retry goes through to the real server and the person lands signed in.
    await page.getByRole('heading', { name: 'Contacts' }).waitFor({ timeout: 60_000 });
    assert.equal(refusals, 1);
    assert.equal(keys.size, 1, 'the retry reuses the Idempotency-Key of the first attempt');
  } catch (err) {
    dumpLogs(person);
    throw err;
  } finally {
    await page.unrouteAll({ behavior: 'ignoreErrors' });
  }
});
