// Driving the web client through a call, shared by the browser tests and the topology test:
// create a room and join it, join by link, read the call's state and statistics, and wait
// until one person decodes another's video and receives their audio.

import { eventually } from './browser.js';

/** The remote participants' receive stats as the web client reports them. */
export function remoteStats(person) {
  return person.page.evaluate(() => window.surge.stats());
}

/** The call as the web client sees it (state, states so far, participants, self id). */
export function callState(person) {
  return person.page.evaluate(() => window.surge.state().call);
}

/** Waits until `person`'s call is connected. */
export async function waitConnected(person, { timeout = 60_000 } = {}) {
  await eventually(`${person.name} to connect`, async () => (await callState(person))?.state === 'connected', { timeout });
}

/** `person` (signed in, on the home view) creates a room, joins it and returns its link. */
export async function createRoomAndJoin(person) {
  const { page } = person;
  await page.getByRole('button', { name: 'Create room' }).click();
  await page.locator('#room-created').waitFor();
  const link = await page.locator('#room-link').inputValue();
  await page.getByRole('link', { name: 'Join the call' }).click();
  await page.getByRole('button', { name: 'Join call' }).click();
  await waitConnected(person);
  return link;
}

/** `person` opens a room link and joins the call; `beforeJoin` runs on the pre-join screen. */
export async function joinByLink(person, link, { beforeJoin } = {}) {
  await person.page.goto(link);
  const join = person.page.getByRole('button', { name: 'Join call' });
  await join.waitFor();
  if (beforeJoin) await beforeJoin();
  await join.click();
  await waitConnected(person);
}

/**
 * Waits until `person` decodes video and receives audio from `other` (`{ video: false }` for
 * someone without a camera), and both keep arriving: the counts rise between two looks (a
 * frozen picture after the first keyframe would not).
 */
export async function waitForMediaFrom(person, other, { video = true, timeout = 90_000 } = {}) {
  const from = (stats) => stats.find((p) => p.name === other.displayName);
  const flowing = (s) => s && s.audio?.totalSamplesReceived > 0 && (!video || s.video?.framesDecoded > 0);
  const first = await eventually(
    `${person.name} to decode ${other.name}'s ${video ? 'video and ' : ''}audio`,
    async () => {
      const s = from(await remoteStats(person));
      return flowing(s) ? s : null;
    },
    { timeout },
  );
  let latest = null;
  try {
    await eventually(`${person.name}'s media from ${other.name} to keep arriving`, async () => {
      const stats = await remoteStats(person);
      latest = from(stats) ?? stats;
      return (
        latest.audio?.totalSamplesReceived > first.audio.totalSamplesReceived &&
        (!video || latest.video?.framesDecoded >= first.video.framesDecoded + 10)
      );
    }, { timeout: 45_000 });
  } catch (err) {
    err.message += ` (first ${JSON.stringify(first)}, latest ${JSON.stringify(latest)})`;
    throw err;
  }
  return first;
}
