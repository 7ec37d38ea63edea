// Issue 15, in the call: Alice shares her screen and Bob decodes it as a second, large video
// beside her camera; stopping the share takes it away; Alice switches camera, microphone and
// Bob his speaker during the call, and the call goes on (no rejoin, Bob keeps decoding).
// Chromium's fake devices: one camera, three microphones and three speakers; getDisplayMedia
// returns a fake screen without a picker (--use-fake-ui-for-media-stream). With
// `device-count=2` there is a second fake camera, but the encoder sends nothing of it (another
// pixel format), so the switch here opens a new track of the same camera: what matters is the
// getUserMedia + replaceTrack path, with no leave or rejoin.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, newPerson, signUp, uniqueEmail, eventually, screenshot, dumpLogs, step } from '../lib/browser.js';
import { callState, createRoomAndJoin, joinByLink, remoteStats, waitForMediaFrom } from '../lib/call.js';

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

/** What `person` receives from `other`: `{ video, screen, audio }` inbound stats, or undefined. */
async function from(person, other) {
  return (await remoteStats(person)).find((p) => p.name === other.displayName);
}

/** The sources the last `tracks` message named, as `participant:source` strings. */
async function trackSources(person) {
  const call = await callState(person);
  const tracks = call.history.filter((m) => m.type === 'tracks').at(-1)?.tracks ?? [];
  return tracks.map((t) => `${t.participant_id}:${t.source}`);
}

/** Waits until `person` decodes `other`'s camera (and, with `screen`, screen) and both keep going. */
async function waitDecoding(person, other, { screen }) {
  const ok = (s) => s?.video?.framesDecoded > 0 && (!screen || s?.screen?.framesDecoded > 0);
  const first = await eventually(`${person.name} to decode ${other.name}'s camera${screen ? ' and screen' : ''}`, async () => {
    const s = await from(person, other);
    return ok(s) ? s : null;
  }, { timeout: 60_000 });
  return eventually(`${person.name}'s video from ${other.name} to keep decoding`, async () => {
    const s = await from(person, other);
    const more = (k) => s?.[k]?.framesDecoded >= first[k].framesDecoded + 10;
    return more('video') && (!screen || more('screen')) ? s : null;
  }, { timeout: 45_000 });
}

/** Element sizes on `person`'s page: the stage's video and the largest remote tile. */
function sizes(person) {
  return person.page.evaluate(() => {
    const stage = document.querySelector('#screen-stage');
    const tiles = [...document.querySelectorAll('#grid .tile:not(.self)')];
    return {
      stageHidden: stage.hidden,
      stage: { w: stage.clientWidth, h: stage.clientHeight },
      tile: { w: Math.max(0, ...tiles.map((t) => t.clientWidth)), h: Math.max(0, ...tiles.map((t) => t.clientHeight)) },
    };
  });
}

test('alice shares her screen, bob sees it large beside her camera; devices switch without leaving', async (t) => {
  try {
    let link;
    await step(t, 'both sign up and join a room', async () => {
      await signUp(alice, { name: 'Alice Screen', email: uniqueEmail('alice') });
      await signUp(bob, { name: 'Bob Viewer', email: uniqueEmail('bob') });
      link = await createRoomAndJoin(alice);
      await joinByLink(bob, link);
      await waitForMediaFrom(bob, alice);
      await waitForMediaFrom(alice, bob);
    });
    const aliceId = (await callState(alice)).selfId;
    const bobId = (await callState(bob)).selfId;

    await step(t, 'before sharing, nothing is named a screen and the stage is hidden', async () => {
      assert.ok(!(await trackSources(bob)).some((s) => s.endsWith(':screen')), JSON.stringify(await trackSources(bob)));
      assert.ok((await trackSources(bob)).includes(`${aliceId}:camera`));
      assert.equal((await sizes(bob)).stageHidden, true);
      assert.equal(await alice.page.locator('#share-screen').isEnabled(), true);
    });

    await step(t, 'alice shares; bob decodes her screen as a second, large video and her camera still', async () => {
      await alice.page.getByRole('button', { name: 'Share screen' }).click();
      await alice.page.getByRole('button', { name: 'Stop sharing' }).waitFor();
      await alice.page.locator('#sharing-notice').waitFor();
      await eventually('bob to be told of alice\'s screen', async () => (await trackSources(bob)).includes(`${aliceId}:screen`));
      const s = await waitDecoding(bob, alice, { screen: true });
      t.diagnostic(`bob decodes alice's screen at ${s.screen.frameWidth}x${s.screen.frameHeight} (${s.screen.framesDecoded} frames, layer ${s.screen.layer ?? 'single'}) and her camera at ${s.video.frameWidth}x${s.video.frameHeight}`);
      assert.notEqual(s.screen.mid, s.video.mid, 'two m-lines');
      // The fake screen is 1280x720: a single stream, sent whole (no simulcast for screens).
      assert.ok(s.screen.frameHeight >= 360, `screen height ${s.screen.frameHeight}`);
      const size = await eventually('the stage to show on bob\'s page', async () => {
        const sz = await sizes(bob);
        return !sz.stageHidden && sz.stage.w > 0 ? sz : null;
      });
      t.diagnostic(`bob's stage ${size.stage.w}x${size.stage.h}, alice's tile ${size.tile.w}x${size.tile.h}`);
      assert.ok(size.stage.w > 2 * size.tile.w && size.stage.h > 2 * size.tile.h, JSON.stringify(size));
      const playing = await bob.page.evaluate(() => {
        const v = document.querySelector('#screen-stage video');
        return { w: v.videoWidth, h: v.videoHeight, paused: v.paused };
      });
      assert.ok(playing.w > 0 && !playing.paused, JSON.stringify(playing));
      // Alice's own page does not mirror her screen back to her, and she sends one more stream.
      assert.equal((await sizes(alice)).stageHidden, true);
      const sent = await alice.page.evaluate(() => window.surge.outboundStats());
      assert.deepEqual(sent.map((l) => l.rid).sort(), ['f', 'h', 'q'], 'the camera\'s layers only');
      await screenshot(bob.page, 'call-screen-share-bob');
      await screenshot(alice.page, 'call-screen-share-alice');
    });

    await step(t, 'alice stops sharing; the screen goes from bob\'s page, her camera stays', async () => {
      await alice.page.getByRole('button', { name: 'Stop sharing' }).click();
      await alice.page.getByRole('button', { name: 'Share screen' }).waitFor();
      await eventually('bob to be told the screen is gone', async () => !(await trackSources(bob)).some((s) => s.endsWith(':screen')));
      await eventually('the stage to hide on bob\'s page', async () => (await sizes(bob)).stageHidden);
      const s = await waitDecoding(bob, alice, { screen: false });
      assert.equal(s.screen, null, JSON.stringify(s));
      await screenshot(bob.page, 'call-screen-share-stopped-bob');
    });

    await step(t, 'alice switches camera and microphone during the call; bob keeps decoding', async () => {
      const cameras = await alice.page.locator('#camera-select option').evaluateAll((os) => os.map((o) => ({ id: o.value, label: o.textContent })));
      const mics = await alice.page.locator('#mic-select option').evaluateAll((os) => os.map((o) => o.value));
      t.diagnostic(`alice's cameras: ${cameras.map((c) => c.label).join(', ')}; microphones: ${mics.length}`);
      assert.ok(cameras.length >= 1);
      const current = await alice.page.locator('#camera-select').inputValue();
      const other = cameras.find((c) => c.id !== current) ?? cameras[0];
      const before = await from(bob, alice);
      // Read before the switch, which may be done by the time the next line runs.
      const oldTrack = await alice.page.evaluate(() => document.querySelector('#grid .tile.self video').srcObject.getVideoTracks()[0].id);
      await alice.page.locator('#devices summary').click();
      await alice.page.locator('#camera-select').selectOption(other.id);
      // The same camera again (the only one) fires no `change` by itself: choose it explicitly.
      if (other.id === current) await alice.page.locator('#camera-select').dispatchEvent('change');
      let seen = null;
      await eventually('alice to send a new track from the chosen camera', async () => {
        seen = await alice.page.evaluate(([id, old]) => {
          const v = document.querySelector('#grid .tile.self video');
          const track = v?.srcObject?.getVideoTracks()[0];
          const device = track?.getSettings().deviceId;
          const toast = document.querySelector('#toast')?.textContent;
          return { ok: track?.id !== old && device === id && v.videoWidth > 0, device, id, width: v?.videoWidth, toast };
        }, [other.id, oldTrack]);
        return seen.ok;
      }).catch((err) => {
        err.message += ` (${JSON.stringify(seen)})`;
        throw err;
      });
      if (mics.length > 1) {
        const mic = mics.find((m) => m !== 'default') ?? mics[0];
        await alice.page.locator('#mic-select').selectOption(mic);
      }
      const after = await eventually('bob to keep decoding alice\'s camera after the switch', async () => {
        const s = await from(bob, alice);
        return s?.video?.framesDecoded >= before.video.framesDecoded + 15 ? s : null;
      }, { timeout: 90_000 });
      t.diagnostic(`bob decoded ${after.video.framesDecoded - before.video.framesDecoded} more frames of alice's camera across the switch`);
      await waitForMediaFrom(bob, alice);
      const call = await callState(alice);
      assert.equal(call.selfId, aliceId, 'the same participant: no rejoin');
      assert.deepEqual(call.states, ['connecting', 'connected'], 'no reconnect');
    });

    await step(t, 'bob picks another speaker; every media element of the call plays there', async () => {
      const speakers = await bob.page.locator('#speaker-select option').evaluateAll((os) => os.map((o) => o.value));
      t.diagnostic(`bob's speakers: ${speakers.length}`);
      const speaker = speakers.find((s) => s !== 'default');
      if (!speaker) return;
      await bob.page.locator('#devices summary').click();
      await bob.page.locator('#speaker-select').selectOption(speaker);
      await eventually('bob\'s media elements to use the speaker', async () => bob.page.evaluate((id) => {
        const elements = [...document.querySelectorAll('#view-call video')];
        return elements.length > 0 && elements.every((e) => e.sinkId === id);
      }, speaker));
      assert.equal((await callState(bob)).selfId, bobId);
    });

    await step(t, 'sharing again after the switches works', async () => {
      await alice.page.getByRole('button', { name: 'Share screen' }).click();
      await waitDecoding(bob, alice, { screen: true });
    });
  } catch (err) {
    dumpLogs(alice, bob);
    console.log(`[alice] outbound: ${JSON.stringify(await alice.page.evaluate(() => window.surge.outboundStats()).catch((e) => String(e)))}`);
    console.log(`[bob] stats: ${JSON.stringify(await remoteStats(bob).catch((e) => String(e)))}`);
    for (const person of [alice, bob]) {
      const call = await callState(person).catch(() => null);
      console.log(`[${person.name}] call state: ${JSON.stringify(call)}`);
    }
    throw err;
  }
});
