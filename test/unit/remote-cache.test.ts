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
import type { NodeId } from '../../engine/rule.js';
import { FakeRemoteCache, FakeRunner, runEngine, SMALL_ZOO, statuses, workspace } from '../helpers.js';

const test = suite('remote-cache');

/** A second checkout of the same workspace, on "another machine" (no .graph/). */
function clone(dir: string): string {
  const copy = mkdtempSync(path.join(tmpdir(), 'graph-clone-'));
  cpSync(dir, copy, { recursive: true, filter: (src) => !src.includes(`${path.sep}.graph`) });
  return copy;
}

test('a fresh checkout takes every result from the remote cache another machine filled, asking about the sinks only and downloading no artifact', async () => {
  const remote = new FakeRemoteCache();
  const a = workspace(SMALL_ZOO);
  const first = await runEngine(a, new FakeRunner(), { remote });
  assert.is(first.summary.counts.ran, 9);
  assert.is(remote.entries.size, 9, 'every success uploaded');

  const b = clone(a);
  const second = await runEngine(b, new FakeRunner(), { remote });
  assert.is(second.runner.calls.length, 0, 'nothing ran on the second machine');
  assert.is(second.summary.counts.cached, 9);
  // The sinks are asked about; their hits vouch for everything upstream, which is not asked.
  const sinks = ['publish:base', 'publish:pwm'];
  assert.equal(remote.fetched.sort(), sinks);
  for (const p of second.plan.nodes) assert.equal(p.reasons, [sinks.includes(p.node.id) ? 'from remote cache fake://remote' : 'not needed: every node that depends on it is cached'], p.node.id);
  for (const r of second.summary.results) assert.equal(r.reasons, second.plan.byId.get(r.id)?.reasons, `the report says so too: ${r.id}`);
  assert.equal(remote.downloaded, [], 'no node ran, so no artifact was needed');
  // Nothing was recorded locally without its bytes: with the remote down, everything runs.
  remote.down = true;
  const third = await runEngine(b, new FakeRunner(), { remote });
  assert.is(third.summary.counts.ran, 9);
});

test('a changed input misses remotely too: exactly the affected nodes run, and only what they need is downloaded', async () => {
  const remote = new FakeRemoteCache();
  const a = workspace(SMALL_ZOO);
  const first = await runEngine(a, new FakeRunner(), { remote });
  const baseArtifact = first.summary.results.find((r) => r.id === 'build:base')?.outputs?.digest;
  const b = clone(a);
  writeFileSync(path.join(b, 'zoo/pwm/motifs/CTCF.pwm'), 'A 0.9 0.9\n');
  const run = await runEngine(b, new FakeRunner(), { remote });
  const s = statuses(run);
  assert.equal(run.runner.started.sort(), ['build:pwm', 'convert:pwm', 'publish:pwm', 'test:pwm/CTCF@oci', 'test:pwm/CTCF@sif', 'test:pwm/GATA1@oci', 'test:pwm/GATA1@sif']);
  assert.is(s['build:base'], 'cached');
  assert.is(s['publish:base'], 'cached');
  assert.equal(remote.downloaded, [baseArtifact], "build:pwm runs, so build:base's artifact comes in; nothing else");
  assert.equal(run.plan.byId.get('build:base' as NodeId)?.reasons, ['from remote cache fake://remote']);
  // Brought in, so recorded locally: with the remote down, only publish:base (a hit never
  // brought in) runs next time.
  remote.down = true;
  const again = await runEngine(b, new FakeRunner(), { remote });
  assert.equal(again.runner.started, ['publish:base']);
});

test('a node not looked up is looked up when a node that runs needs it after all', async () => {
  const remote = new FakeRemoteCache();
  const a = workspace(SMALL_ZOO);
  const first = await runEngine(a, new FakeRunner(), { remote });
  const pwmArtifact = first.summary.results.find((r) => r.id === 'build:pwm')?.outputs?.digest;
  // publish:pwm's entry is gone: it runs, so everything it depends on is asked about and brought
  // in; build:base, which only cached nodes depend on, is neither.
  for (const [key, e] of remote.entries) if (e.id === 'publish:pwm') remote.entries.delete(key);
  const b = clone(a);
  const run = await runEngine(b, new FakeRunner(), { remote });
  assert.equal(run.runner.started, ['publish:pwm']);
  assert.ok(remote.downloaded.includes(pwmArtifact as string));
  assert.is(remote.downloaded.length, 6, "its dependencies': build:pwm, convert:pwm and the four tests (every fake node stores a blob)");
  assert.equal(run.plan.byId.get('build:base' as NodeId)?.reasons, ['not needed: every node that depends on it is cached']);
  assert.equal(run.plan.byId.get('build:pwm' as NodeId)?.reasons, ['from remote cache fake://remote']);
});

test('a node not looked up that turns out to be needed and misses runs, explained', async () => {
  const remote = new FakeRemoteCache();
  const a = workspace(SMALL_ZOO);
  const first = await runEngine(a, new FakeRunner(), { remote });
  const pwmArtifact = first.summary.results.find((r) => r.id === 'build:pwm')?.outputs?.digest as string;
  // publish:pwm and test:pwm/CTCF@oci must run (their entries are gone); the test needs build:pwm,
  // whose blob is bad, so build:pwm runs and needs build:base: not looked up at plan time
  // (everything depending on it was cached), and gone from the remote too.
  for (const [key, e] of remote.entries) if (['publish:pwm', 'test:pwm/CTCF@oci', 'build:base'].includes(e.id)) remote.entries.delete(key);
  for (const e of remote.entries.values()) if (e.blobs.has(pwmArtifact)) e.blobs.set(pwmArtifact, Buffer.from('tampered'));
  const run = await runEngine(clone(a), new FakeRunner(), { remote });
  assert.equal(run.runner.started.sort(), ['build:base', 'build:pwm', 'publish:pwm', 'test:pwm/CTCF@oci']);
  assert.equal(run.plan.byId.get('build:base' as NodeId)?.reasons, ['no previous record']);
  assert.equal(run.plan.byId.get('build:pwm' as NodeId)?.reasons, ['from remote cache fake://remote, but its artifacts could not be downloaded intact']);
  assert.equal(run.summary.counts, { ran: 4, cached: 5, failed: 0, interrupted: 0, skipped: 0 });
});

test('a remote that is down is a miss: everything runs, nothing fails', async () => {
  const remote = new FakeRemoteCache();
  remote.down = true;
  const run = await runEngine(workspace(SMALL_ZOO), new FakeRunner(), { remote });
  assert.equal(run.summary.counts, { ran: 9, cached: 0, failed: 0, interrupted: 0, skipped: 0 });
});

test('a hit whose artifacts do not reach the local store intact runs instead, and is explained', async () => {
  const remote = new FakeRemoteCache();
  const a = workspace(SMALL_ZOO);
  const first = await runEngine(a, new FakeRunner(), { remote });
  const digest = first.summary.results.find((r) => r.id === 'build:base')?.outputs?.digest as string;
  // The remote serves other bytes than the ones build:base's entry names.
  for (const e of remote.entries.values()) if (e.blobs.has(digest)) e.blobs.set(digest, Buffer.from('tampered'));
  const b = clone(a);
  writeFileSync(path.join(b, 'zoo/pwm/motifs/CTCF.pwm'), 'A 0.9 0.9\n');
  const run = await runEngine(b, new FakeRunner(), { remote });
  assert.is(statuses(run)['build:base'], 'ran');
  assert.equal(run.plan.byId.get('build:base' as NodeId)?.reasons, ['from remote cache fake://remote, but its artifacts could not be downloaded intact']);
  assert.is(statuses(run)['publish:base'], 'cached', 'not needed by anything that runs: still a hit');
  assert.is(readFileSync(path.join(b, '.graph', 'cas', 'sha256', digest.slice(7)), 'utf8'), 'output of build:base', 'the rerun stored the real blob');
});

test.run();
