// Checks 2-5 of the production-topology test (scripts/test-topology starts the processes and
// runs check 1 itself). Headless Chromium opens the web client at https://surge.test:<port>,
// a real remote HTTPS origin served by nginx in front of two API replicas; the script then
// freezes Redis, drains the call's shard, and kills it, as an outage or `helm upgrade` would.
//
// Prints one line per check, `PASS check N: …` or `FAIL check N: …`, and exits non-zero when
// any failed. Environment (set by scripts/test-topology): SURGE_URL, TOPOLOGY_APIS and
// TOPOLOGY_SHARDS (JSON: direct loopback URLs of the replicas; shards also carry id and pid),
// TOPOLOGY_REDIS_PID, TOPOLOGY_ADMIN_TOKEN, TOPOLOGY_FREEZE_SECS.

import { launchBrowser, newPerson, signUp, uniqueEmail, eventually, screenshot, dumpLogs, GOOD_PASSWORD } from '../lib/browser.js';
import { callState, remoteStats, createRoomAndJoin, joinByLink, waitForMediaFrom } from '../lib/call.js';

const APIS = JSON.parse(process.env.TOPOLOGY_APIS ?? '[]');
const SHARDS = JSON.parse(process.env.TOPOLOGY_SHARDS ?? '[]');
const REDIS_PID = Number(process.env.TOPOLOGY_REDIS_PID);
const ADMIN_TOKEN = process.env.TOPOLOGY_ADMIN_TOKEN ?? '';
const FREEZE_SECS = Number(process.env.TOPOLOGY_FREEZE_SECS ?? 20);
/** How soon a killed shard's participants must have media again. */
const FAILOVER_BOUND_MS = 5_000;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const results = [];

function report(n, ok, detail) {
  results.push(ok);
  console.log(`${ok ? 'PASS' : 'FAIL'} check ${n}: ${detail}`);
}

/** Runs check `n`; a thrown error is its failure. Later checks need earlier ones: on failure the rest are failed too. */
async function check(n, what, fn) {
  try {
    const detail = await fn();
    report(n, true, `${what}${detail ? ` (${detail})` : ''}`);
    return true;
  } catch (err) {
    report(n, false, `${what}: ${err.message.split('\n')[0]}`);
    console.log(err.stack);
    return false;
  }
}

async function status(url) {
  try {
    return (await fetch(url, { signal: AbortSignal.timeout(3000) })).status;
  } catch (err) {
    return `unreachable (${err.cause?.code ?? err.message})`;
  }
}

/** The shards as the cluster sees them (the admin listing of an API replica). */
async function shards() {
  const response = await fetch(`${APIS[0]}/v1/admin/shards`, {
    headers: { Authorization: `Bearer ${ADMIN_TOKEN}` },
    signal: AbortSignal.timeout(5000),
  });
  if (!response.ok) throw new Error(`admin shards: ${response.status}`);
  return (await response.json()).shards;
}

/** Signs up and logs in through the proxy, from `person`'s page (the same origin): both statuses. */
function signupAndLogin(person) {
  const email = uniqueEmail('freeze');
  return person.page.evaluate(async ([email, password]) => {
    const post = (path, body) =>
      fetch(path, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) }).then((r) => r.status);
    const signup = await post('/v1/accounts', { email, password, display_name: 'Freeze' });
    const login = await post('/v1/sessions', { email, password });
    return [signup, login];
  }, [email, GOOD_PASSWORD]);
}

/** Sums of what `person` received from everyone: decoded frames and audio samples. */
async function received(person) {
  const stats = await remoteStats(person);
  return {
    frames: stats.reduce((n, s) => n + (s.video?.framesDecoded ?? 0), 0),
    samples: stats.reduce((n, s) => n + (s.audio?.totalSamplesReceived ?? 0), 0),
  };
}

/** Console lines that show the page breaking the one-origin rule. */
function originProblems(people) {
  return people.flatMap((p) => p.logs).filter((line) => /mixed content|cors|cross-origin|access-control/i.test(line));
}

const browser = await launchBrowser({
  args: ['--host-resolver-rules=MAP surge.test 127.0.0.1', '--ignore-certificate-errors'],
});
const alice = await newPerson(browser, 'alice');
const bob = await newPerson(browser, 'bob');
let carol = null;
const everyone = () => [alice, bob, carol].filter(Boolean);
let link = null;
let callShard = null;

try {
  const called = await check(2, 'two browsers on https://surge.test sign up and decode each other\'s video, no mixed-content or CORS error', async () => {
    await signUp(alice, { name: 'Alice Archer', email: uniqueEmail('alice') });
    await signUp(bob, { name: 'Bob Baker', email: uniqueEmail('bob') });
    link = await createRoomAndJoin(alice);
    if (!link.startsWith(`${process.env.SURGE_URL}/rooms/`)) throw new Error(`the room link ${link} is not on the HTTPS origin`);
    await joinByLink(bob, link);
    const atAlice = await waitForMediaFrom(alice, bob);
    const atBob = await waitForMediaFrom(bob, alice);
    await screenshot(alice.page, 'topology-call-alice');
    const problems = originProblems(everyone());
    if (problems.length) throw new Error(`the console reports: ${problems.join(' | ')}`);
    callShard = (await shards()).find((s) => s.load.participants >= 2)?.id;
    if (!callShard) throw new Error('no shard reports the call');
    return `alice decodes ${atAlice.video.frameWidth}x${atAlice.video.frameHeight}, bob ${atBob.video.frameWidth}x${atBob.video.frameHeight}, on ${callShard}`;
  });

  const froze = called && await check(3, `Redis frozen for ${FREEZE_SECS} s: every /readyz stays 200, signups and logins go on, the call keeps its media`, async () => {
    const before = [await received(alice), await received(bob)];
    const notReady = [];
    const refused = [];
    let rounds = 0;
    process.kill(REDIS_PID, 'SIGSTOP');
    const started = Date.now();
    try {
      while (Date.now() - started < FREEZE_SECS * 1000) {
        rounds += 1;
        for (const url of [...APIS, ...SHARDS.map((s) => s.url)]) {
          const got = await status(`${url}/readyz`);
          if (got !== 200) notReady.push(`${url}: ${got}`);
        }
        const [signup, login] = await signupAndLogin(rounds % 2 ? alice : bob);
        if (signup !== 201 || login !== 201) refused.push(`signup ${signup}, login ${login}`);
        await sleep(2500);
      }
    } finally {
      process.kill(REDIS_PID, 'SIGCONT');
    }
    const after = [await received(alice), await received(bob)];
    if (notReady.length) throw new Error(`not ready while Redis was frozen: ${notReady.join('; ')}`);
    if (refused.length) throw new Error(`refused while Redis was frozen: ${refused.join('; ')}`);
    for (const [i, person] of [alice, bob].entries()) {
      if (after[i].frames <= before[i].frames + 100 || after[i].samples <= before[i].samples) {
        throw new Error(`${person.name}'s media stalled: ${JSON.stringify(before[i])} → ${JSON.stringify(after[i])}`);
      }
    }
    // Back to normal: both shards in the registry again (their entries expired meanwhile).
    await eventually('both shards to be registered again', async () => (await shards()).length === SHARDS.length, { timeout: 30_000 });
    return `${rounds} rounds of readiness probes, signups and logins; alice decoded ${after[0].frames - before[0].frames} frames meanwhile`;
  });

  const drained = froze && await check(4, 'the call\'s shard drains (SIGTERM) mid-call; a third participant joins the room there and sees the other two', async () => {
    const shard = SHARDS.find((s) => s.id === callShard);
    process.kill(shard.pid, 'SIGTERM');
    await eventually(`${callShard} to be draining`, async () => (await shards()).find((s) => s.id === callShard)?.state === 'draining', { timeout: 15_000 });
    carol = await newPerson(browser, 'carol');
    await signUp(carol, { name: 'Carol Clark', email: uniqueEmail('carol') });
    await joinByLink(carol, link);
    await waitForMediaFrom(carol, alice);
    await waitForMediaFrom(carol, bob);
    const listing = await shards();
    const host = listing.find((s) => s.id === callShard);
    if (host?.load.participants !== 3) throw new Error(`the meeting was split: ${JSON.stringify(listing.map((s) => [s.id, s.state, s.load.participants]))}`);
    for (const person of [alice, bob]) {
      const call = await callState(person);
      if (call.state !== 'connected' || call.participants.length !== 2) throw new Error(`${person.name} sees ${JSON.stringify(call.participants)}`);
    }
    await screenshot(carol.page, 'topology-call-carol');
    return `${callShard} hosts all 3 while draining`;
  });

  if (drained) {
    await check(5, `the draining shard is killed (SIGKILL); its participants have media again within ${FAILOVER_BOUND_MS / 1000} s`, async () => {
      const shard = SHARDS.find((s) => s.id === callShard);
      const people = [alice, bob, carol];
      const before = await Promise.all(people.map((p) => callState(p)));
      process.kill(shard.pid, 'SIGKILL');
      const killedAt = Date.now();
      // Media again: a new session (another participant id) receiving audio from the others.
      // When each page noticed (left `connected`) is reported too.
      const noticed = [];
      const back = await Promise.all(people.map(async (person, i) => {
        await eventually(`${person.name} to have media again`, async () => {
          const call = await callState(person);
          if (noticed[i] === undefined && call.states.length > before[i].states.length) noticed[i] = Date.now() - killedAt;
          if (call?.state !== 'connected' || !call.selfId || call.selfId === before[i].selfId) return false;
          const stats = await remoteStats(person);
          return stats.some((s) => s.audio?.totalSamplesReceived > 0);
        }, { timeout: 60_000, interval: 100 });
        return Date.now() - killedAt;
      }));
      const secs = (ms) => (ms === undefined ? '?' : (ms / 1000).toFixed(1));
      const times = people.map((p, i) => `${p.name} ${secs(back[i])} s (noticed at ${secs(noticed[i])} s)`).join(', ');
      if (back.some((ms) => ms > FAILOVER_BOUND_MS)) throw new Error(`media came back after ${times}`);
      // Together again on the surviving shard (its load reaches the registry each second).
      await eventually('the three to be together on the surviving shard', async () => {
        const listing = await shards();
        return listing.length === 1 && listing[0].id !== callShard && listing[0].load.participants === 3;
      }, { timeout: 15_000 });
      for (const person of people) {
        const call = await callState(person);
        if (call.participants.length !== 2) throw new Error(`${person.name} sees ${JSON.stringify(call.participants)}`);
      }
      return `media again after ${times}; together on the other shard`;
    });
  }
} finally {
  const problems = originProblems(everyone());
  if (problems.length) console.log(`console: ${problems.join('\n')}`);
  if (results.includes(false)) {
    dumpLogs(...everyone());
    for (const person of everyone()) {
      const call = await callState(person).catch(() => null);
      console.log(`[${person.name}] call: ${JSON.stringify(call)}`);
    }
  }
  await browser.close();
}
// Checks that never ran (an earlier one failed) count as failed.
for (let n = results.length + 2; n <= 5; n += 1) report(n, false, 'not run: an earlier check failed');
process.exitCode = results.every(Boolean) ? 0 : 1;
