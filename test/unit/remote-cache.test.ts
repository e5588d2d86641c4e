/**
 * The action cache's second tier: a fresh machine takes what another recorded in a shared remote
 * cache (here the in-memory fake; the HTTP implementation has its own end-to-end tests), local
 * first, remote for what would run; a remote that is down or lies is a miss, never a failure.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { FakeRemoteCache, FakeRunner, runEngine, SMALL_ZOO, statuses, workspace } from '../helpers.js';

const test = suite('remote-cache');

/** A second checkout of the same workspace, on "another machine" (no .graph/). */
function clone(dir: string): string {
  const copy = mkdtempSync(path.join(tmpdir(), 'graph-clone-'));
  cpSync(dir, copy, { recursive: true, filter: (src) => !src.includes(`${path.sep}.graph`) });
  return copy;
}

test('a fresh checkout takes every result from the remote cache another machine filled, then needs no network', async () => {
  const remote = new FakeRemoteCache();
  const a = workspace(SMALL_ZOO);
  const first = await runEngine(a, new FakeRunner(), { remote });
  assert.is(first.summary.counts.ran, 9);
  assert.is(remote.entries.size, 9, 'every success uploaded');

  const b = clone(a);
  const second = await runEngine(b, new FakeRunner(), { remote });
  assert.is(second.runner.calls.length, 0, 'nothing ran on the second machine');
  assert.is(second.summary.counts.cached, 9);
  for (const p of second.plan.nodes) assert.equal(p.reasons, ['from remote cache fake://remote'], p.node.id);
  // Recorded locally: the next plan is all cached without asking the remote.
  remote.down = true;
  const third = await runEngine(b, new FakeRunner(), { remote });
  assert.is(third.summary.counts.cached, 9);
  assert.equal(third.plan.nodes.flatMap((p) => p.reasons), []);
});

test('a changed input misses remotely too: exactly the affected nodes run, the rest come from the remote', async () => {
  const remote = new FakeRemoteCache();
  const a = workspace(SMALL_ZOO);
  await runEngine(a, new FakeRunner(), { remote });
  const b = clone(a);
  writeFileSync(path.join(b, 'zoo/pwm/motifs/CTCF.pwm'), 'A 0.9 0.9\n');
  const run = await runEngine(b, new FakeRunner(), { remote });
  const s = statuses(run);
  assert.equal(run.runner.started.sort(), ['build:pwm', 'convert:pwm', 'publish:pwm', 'test:pwm/CTCF@oci', 'test:pwm/CTCF@sif', 'test:pwm/GATA1@oci', 'test:pwm/GATA1@sif']);
  assert.is(s['build:base'], 'cached');
  assert.is(s['publish:base'], 'cached');
});

test('a remote that is down is a miss: everything runs, nothing fails', async () => {
  const remote = new FakeRemoteCache();
  remote.down = true;
  const run = await runEngine(workspace(SMALL_ZOO), new FakeRunner(), { remote });
  assert.equal(run.summary.counts, { ran: 9, cached: 0, failed: 0, interrupted: 0, skipped: 0 });
});

test('an entry whose artifact does not reach the local store intact is not used', async () => {
  const remote = new FakeRemoteCache();
  const a = workspace(SMALL_ZOO);
  await runEngine(a, new FakeRunner(), { remote });
  // The remote claims build:base's result but serves another blob than the one it names.
  const entry = [...remote.entries.values()].find((e) => e.id === 'build:base');
  const [digest] = entry!.result.artifacts;
  remote.fetch = async (id, key, store) => {
    const e = remote.entries.get(key);
    if (!e) return undefined;
    if (id !== 'build:base') for (const [, bytes] of e.blobs) store.putBytes(bytes);
    return e.result;
  };
  const b = clone(a);
  const run = await runEngine(b, new FakeRunner(), { remote });
  assert.is(statuses(run)['build:base'], 'ran');
  assert.ok(readFileSync(path.join(b, '.graph', 'cas', 'sha256', digest.slice(7))).length > 0, 'the rerun stored the real blob');
});

test.run();
