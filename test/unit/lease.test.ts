/** Leases on action keys: taken, waited for, taken over from the dead, released; on a fake clock. */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import path from 'node:path';
import { KeyLeases, STALE_MS, type Holder } from '../../engine/execute/lease.js';
import { FakeClock } from '../helpers.js';

const test = suite('lease');
const KEY = 'a'.repeat(64);
const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

function setup(alive: (pid: number) => boolean = () => true) {
  const dir = mkdtempSync(path.join(tmpdir(), 'graph-lease-'));
  const clock = new FakeClock();
  // The per-key protocol, as every run uses it once another run shares the cache.
  return { dir, clock, leases: new KeyLeases({ dir, clock, alive, assumeShared: true }) };
}

/** Write a lease file as another holder would. */
function held(dir: string, h: Partial<Holder>, mtime?: Date): string {
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, KEY);
  writeFileSync(file, `${JSON.stringify({ pid: 4242, host: hostname(), run: 'other', since: 0, ...h })}\n`);
  if (mtime) utimesSync(file, mtime, mtime);
  return file;
}

test('a free key is taken at once: the file names this process and run; release removes it', async () => {
  const { dir, leases } = setup();
  const { lease, waitedFor } = await leases.acquire(KEY, new AbortController().signal);
  assert.is(waitedFor, undefined);
  const h = JSON.parse(readFileSync(path.join(dir, KEY), 'utf8'));
  assert.equal([h.pid, h.host, h.run], [process.pid, hostname(), leases.me.run]);
  await lease.release();
  assert.not.ok(existsSync(path.join(dir, KEY)));
});

test('a live holder is waited for (told once), then the key is taken with who held it', async () => {
  const { dir, clock, leases } = setup();
  const file = held(dir, {});
  const told: number[] = [];
  let done = false;
  let sleeping = clock.nextSleep();
  const got = leases.acquire(KEY, new AbortController().signal, (h) => told.push(h.pid));
  void got.then(() => (done = true));
  for (let i = 0; i < 5; i++) {
    await sleeping; // it looked, found the holder alive, and sleeps
    sleeping = clock.nextSleep();
    clock.advance(1000);
  }
  await sleeping;
  assert.not.ok(done, 'still waiting while the holder lives');
  assert.equal(told, [4242]);
  rmSync(file);
  clock.advance(1000);
  const { waitedFor } = await got;
  assert.is(waitedFor?.pid, 4242);
  assert.equal(told, [4242]);
});

test('a lease whose holder on this host is gone is taken over at once', async () => {
  const { dir, leases } = setup((pid) => pid !== 4242);
  held(dir, {});
  const { waitedFor } = await leases.acquire(KEY, new AbortController().signal);
  assert.is(waitedFor, undefined);
  assert.is(JSON.parse(readFileSync(path.join(dir, KEY), 'utf8')).run, leases.me.run);
});

test('another host: a lease not refreshed for STALE_MS is taken over; a live one is waited for until an interrupt', async () => {
  const { dir, clock, leases } = setup();
  held(dir, { host: 'node-7' }, new Date(Date.now() - STALE_MS - 5000));
  const { waitedFor } = await leases.acquire(KEY, new AbortController().signal);
  assert.is(waitedFor, undefined);
  const second = new KeyLeases({ dir, clock, alive: () => true, assumeShared: true });
  // The lease is ours now and we live: another run waits for it, until its interrupt.
  const controller = new AbortController();
  const waiting = second.acquire(KEY, controller.signal);
  await settle();
  controller.abort(new Error('interrupted'));
  const why = await waiting.then(
    () => 'acquired',
    (e: Error) => e.message,
  );
  assert.is(why, 'interrupted');
});

test('a torn lease file (a holder died while writing it) is stale once older than a heartbeat', async () => {
  const { dir, leases } = setup();
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, KEY), '{"pid": 12');
  const old = new Date(Date.now() - 60_000);
  utimesSync(path.join(dir, KEY), old, old);
  const { waitedFor } = await leases.acquire(KEY, new AbortController().signal);
  assert.is(waitedFor, undefined);
});

test('a torn lease younger than a heartbeat is waited for (no busy loop), then taken once it is stale', async () => {
  const { dir, clock, leases } = setup();
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, KEY), '{"pid": 12');
  const sleeping = clock.nextSleep();
  let done = false;
  const got = leases.acquire(KEY, new AbortController().signal);
  void got.then(() => (done = true));
  await sleeping; // it looked once and sleeps: no spinning on the torn file
  assert.not.ok(done);
  const old = new Date(Date.now() - 60_000);
  utimesSync(path.join(dir, KEY), old, old);
  clock.advance(1000);
  const { waitedFor } = await got;
  assert.is(waitedFor, undefined, 'a torn file names no holder');
});

test('release leaves a lease alone that is no longer ours (taken over meanwhile)', async () => {
  const { dir, leases } = setup();
  const { lease } = await leases.acquire(KEY, new AbortController().signal);
  held(dir, { run: 'someone-else' });
  await lease.release();
  assert.is(JSON.parse(readFileSync(path.join(dir, KEY), 'utf8')).run, 'someone-else');
});

test('a run alone takes no lease files; a second run announcing itself makes it take them and mark itself shared before the newcomer takes any', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'graph-lease-'));
  const clock = new FakeClock();
  const signal = new AbortController().signal;
  const a = new KeyLeases({ dir, clock });
  const first = await a.acquire(KEY, signal);
  assert.equal(readdirSync(dir), [`run-${a.me.run}`], 'alone: an announcement, no lease file');
  const announcement = (k: KeyLeases) => JSON.parse(readFileSync(path.join(dir, `run-${k.me.run}`), 'utf8'));
  assert.is(announcement(a).shared, false);

  const b = new KeyLeases({ dir, clock });
  const told: string[] = [];
  let got: Awaited<ReturnType<KeyLeases['acquire']>> | undefined;
  const second = b.acquire(KEY, signal, (h) => told.push(h.run)).then((r) => (got = r));
  // Time passes (each time someone sleeps) until b waits for the key itself, held by a in a file now.
  for (let i = 0; i < 50 && told.length === 0; i++) {
    await clock.nextSleep();
    clock.advance(1000);
  }
  assert.equal(told, [a.me.run], 'b waits for the lease a took on becoming shared');
  assert.is(JSON.parse(readFileSync(path.join(dir, KEY), 'utf8')).run, a.me.run);
  assert.is(announcement(a).shared, true);
  assert.is(announcement(b).shared, true);
  assert.is(got, undefined);

  await first.lease.release();
  assert.not.ok(existsSync(path.join(dir, KEY)));
  for (let i = 0; i < 50 && got === undefined; i++) {
    const sleeping = clock.nextSleep();
    clock.advance(1000);
    await Promise.race([sleeping, second]);
  }
  assert.is(got?.waitedFor?.run, a.me.run);
  await got?.lease.release();
  await Promise.all([a.leave(), b.leave()]);
  assert.equal(readdirSync(dir), [], 'leave removes the announcements');
});

test('an announcement left by a run that is gone is removed: the run is alone', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'graph-lease-'));
  writeFileSync(path.join(dir, 'run-gone'), `${JSON.stringify({ pid: 4242, host: hostname(), run: 'gone', since: 0, shared: false })}\n`);
  const a = new KeyLeases({ dir, clock: new FakeClock(), alive: (pid) => pid !== 4242 });
  const { lease } = await a.acquire(KEY, new AbortController().signal);
  assert.equal(readdirSync(dir), [`run-${a.me.run}`]);
  await lease.release();
  await a.leave();
  assert.equal(readdirSync(dir), []);
});

test.run();
