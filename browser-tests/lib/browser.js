// Shared set-up for the browser tests: the server under test, Chromium with a fake camera and
// microphone, users that sign up through the web client, polling helpers and screenshots.

import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { chromium } from 'playwright-core';

/** The `surge up` under test (scripts/test-browser starts it and sets this). */
export const BASE_URL = (process.env.SURGE_URL ?? '').replace(/\/$/, '');
if (!BASE_URL) {
  throw new Error('SURGE_URL is not set: run the browser tests through scripts/test-browser');
}

export const OUTPUT_DIR = process.env.SURGE_BROWSER_OUTPUT ?? join(process.cwd(), '..', 'test-output', 'browser');
mkdirSync(OUTPUT_DIR, { recursive: true });

const CHROMIUM = process.env.SURGE_CHROMIUM ?? '/usr/bin/chromium';

// The flags the project's tests agree on (see shared notes): fake devices without a prompt,
// loopback ICE candidates, nothing that phones home. playwright gives each launch a fresh,
// empty --user-data-dir of its own.
const CHROMIUM_ARGS = [
  '--headless=new',
  '--no-sandbox',
  '--disable-gpu',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--allow-loopback-in-peer-connection',
  '--disable-quic',
  // Tests click "Join" (a user gesture) anyway; this keeps a slow box from tripping autoplay rules.
  '--autoplay-policy=no-user-gesture-required',
];

/** Chromium with the agreed flags, plus `args` (e.g. host-resolver rules for a named origin). */
export async function launchBrowser({ args = [] } = {}) {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: [...CHROMIUM_ARGS, ...args] });
}

/** A browser context (its own cookies and storage: a separate person) with a page open on the app. */
export async function newPerson(browser, name) {
  const context = await browser.newContext({
    baseURL: BASE_URL,
    viewport: { width: 1280, height: 800 },
    permissions: ['camera', 'microphone', 'clipboard-read', 'clipboard-write'],
  });
  if (process.env.SURGE_WEB_FROM_DISK) await serveWebFromDisk(context);
  const page = await context.newPage();
  page.setDefaultTimeout(30_000);
  const logs = [];
  page.on('console', (msg) => logs.push(`[${name}] ${msg.type()}: ${msg.text()}`));
  page.on('pageerror', (err) => logs.push(`[${name}] pageerror: ${err.message}`));
  return { name, context, page, logs };
}

const WEB_DIR = new URL('../../signup-api/web/', import.meta.url);
const TYPES = { html: 'text/html', js: 'text/javascript', css: 'text/css' };

/**
 * Development aid (SURGE_WEB_FROM_DISK=1): serve the web client from signup-api/web/ instead of
 * the copy embedded in the binary, so editing it needs no rebuild. Never set in scripts/test.
 */
async function serveWebFromDisk(context) {
  await context.route(/\/(static\/[\w.-]+|rooms\/[^/]+)?$/, async (route) => {
    const path = new URL(route.request().url()).pathname;
    const name = path.startsWith('/static/') ? path.slice('/static/'.length) : 'index.html';
    try {
      const body = readFileSync(new URL(name, WEB_DIR));
      await route.fulfill({ status: 200, body, contentType: TYPES[name.split('.').pop()] ?? 'application/octet-stream' });
    } catch {
      await route.continue();
    }
  });
}

/** An email no earlier run used. */
export function uniqueEmail(prefix) {
  return `${prefix}-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}@example.com`;
}

/** A password any sensible policy accepts: long, mixed, not in a breach list. */
export const GOOD_PASSWORD = 'violet-Harbor-47-quietly-Tunes!';

/** Fills the sign-up form of the web client and submits it. */
export async function fillSignup(page, { name, email, password }) {
  await page.getByRole('tab', { name: 'Sign up' }).click();
  await page.getByLabel('Your name').fill(name);
  await page.locator('#signup-email').fill(email);
  await page.locator('#signup-password').fill(password);
  await page.getByRole('button', { name: 'Create account' }).click();
}

/** Signs a new person up through the UI and waits for the signed-in home view. */
export async function signUp(person, { name, email, password = GOOD_PASSWORD }) {
  const { page } = person;
  await page.goto('/');
  await fillSignup(page, { name, email, password });
  // Generous: an automatic retry after a 429 may wait several seconds.
  await page.getByRole('heading', { name: 'Contacts' }).waitFor({ timeout: 90_000 });
  person.email = email;
  person.displayName = name;
}

/**
 * Polls `fn` (async, in node) until it returns a truthy value, or fails with the last value
 * and `what`. Bounds are generous: the box has two cores shared with other work.
 */
export async function eventually(what, fn, { timeout = 60_000, interval = 250 } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      const detail = last instanceof Error ? last.message : JSON.stringify(last);
      throw new Error(`timed out after ${timeout} ms waiting for ${what}; last: ${detail}`);
    }
    await new Promise((resolve) => setTimeout(resolve, interval));
  }
}

export async function screenshot(page, name) {
  const path = join(OUTPUT_DIR, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

/** Prints what the pages logged, for a failing test's output. */
export function dumpLogs(...people) {
  for (const person of people) {
    for (const line of person.logs.slice(-40)) console.log(line);
  }
}

/** Runs one named step of a test: the step's name goes to the test's diagnostics and into
 * the message of an error it throws, so a failure says where it happened. */
export async function step(t, name, fn) {
  t.diagnostic(`step: ${name}`);
  try {
    return await fn();
  } catch (err) {
    err.message = `[${name}] ${err.message}`;
    throw err;
  }
}
