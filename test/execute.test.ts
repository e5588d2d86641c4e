/** The scheduler against a fake runner: what ran, in which order, how many at once. */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { ActionCache, type CachedResult } from '../engine/cache.js';
import { executePlan } from '../engine/execute.js';
import { FileDigester } from '../engine/files.js';
import { planBuild } from '../engine/plan.js';
import { ContentStore } from '../engine/store.js';
import { openWorkspace } from '../engine/workspace.js';
import { fakeRules, FakeRunner, runEngine, SMALL_ZOO, statuses, workspace } from './helpers.js';
import type { NodeId } from '../engine/rule.js';

const test = suite('execute');

/** A zoo with `n` independent images, each with one model tested in oci. */
function wideZoo(n: number, extra = ''): Record<string, string> {
  let images = 'version: 1\nsettings:\n  resources: {gpu: 1}\nimages:\n';
  let models = 'version: 1\ngroups:\n';
  const files: Record<string, string> = {};
  for (let i = 0; i < n; i++) {
    images += `  img${i}:\n    layers: [{copy: f${i}.txt, to: /f}]\n`;
    models += `  g${i}:\n    image: img${i}\n    models: [m]\n    test: {command: [run]${extra}}\n`;
    files[`f${i}.txt`] = `file ${i}\n`;
  }
  return { ...files, 'images.yaml': images, 'models.yaml': models };
}

test('runs every node once, each after all of its dependencies', async () => {
  const run = await runEngine(workspace(SMALL_ZOO), new FakeRunner());
  const started = run.runner.started;
  assert.equal([...started].sort(), [
    'build:base',
    'build:pwm',
    'convert:pwm',
    'publish:base',
    'publish:pwm',
    'test:pwm/CTCF@oci',
    'test:pwm/CTCF@sif',
    'test:pwm/GATA1@oci',
    'test:pwm/GATA1@sif',
  ]);
  for (const r of run.ws.graph.nodes()) {
    for (const d of r.deps) {
      assert.ok((run.runner.call(d.id).end as number) < run.runner.call(r.id).start, `${d.id} finished before ${r.id} started`);
    }
  }
  assert.equal(run.summary.counts, { ran: 9, cached: 0, failed: 0, skipped: 0 });
});

test('a second run is all cached and starts nothing', async () => {
  const dir = workspace(SMALL_ZOO);
  await runEngine(dir, new FakeRunner());
  const second = await runEngine(dir, new FakeRunner());
  assert.equal(second.runner.calls.length, 0);
  assert.equal(second.summary.counts, { ran: 0, cached: 9, failed: 0, skipped: 0 });
  assert.equal(second.digester.stats.bytesRead, 0, 'no file bytes read on a no-op run');
});

test('never more than --jobs at once, nor more than a kind limit', async () => {
  const runner = new FakeRunner({ durations: Object.fromEntries(Array.from({ length: 8 }, (_, i) => [`test:g${i}/m@oci`, 20])) });
  await runEngine(workspace(wideZoo(8)), runner, { jobs: 3, limits: { test: 2 } });
  assert.equal(runner.maxRunning, 3);
  assert.equal(runner.maxByKind.get('test'), 2);
  assert.equal(runner.calls.length, 8 * 3);
});

test('a resource token is held by one node at a time', async () => {
  const dir = workspace(wideZoo(4, ', resources: {gpu: 1}'));
  const runner = new FakeRunner({ durations: { 'test:g0/m@oci': 15, 'test:g1/m@oci': 15, 'test:g2/m@oci': 15, 'test:g3/m@oci': 15 } });
  await runEngine(dir, runner, { jobs: 8 });
  assert.equal(runner.maxByKind.get('test'), 1);
});

test('ready nodes start longest remaining chain first', async () => {
  // img0's chain is build → test → publish; img1's build has no test. With one job, after
  // the builds... the chain with more work below goes first.
  const files = {
    'a.txt': 'a',
    'b.txt': 'b',
    'images.yaml': 'version: 1\nimages:\n  a:\n    layers: [{copy: a.txt, to: /a}]\n  b:\n    layers: [{copy: b.txt, to: /b}]\n  c:\n    from: b\n    layers: [{copy: b.txt, to: /c}]\n',
    'models.yaml': 'version: 1\ngroups:\n  g:\n    image: c\n    models: [m1, m2]\n    test: {command: [run]}\n',
  };
  const runner = new FakeRunner();
  await runEngine(workspace(files), runner, { jobs: 1 });
  // b heads the longest chain (b → c → tests → publish:c), so it starts before a.
  assert.equal(runner.started.slice(0, 2), ['build:b', 'build:c']);
  assert.ok(runner.started.indexOf('build:a') > runner.started.indexOf('build:c'));
});

test('keep-going: a failure skips exactly its dependents; independent nodes go on', async () => {
  const run = await runEngine(workspace(wideZoo(3)), new FakeRunner({ failing: new Set(['build:img1']) }));
  const s = statuses(run);
  assert.equal(s['build:img1'], 'failed');
  assert.equal(s['test:g1/m@oci'], 'skipped');
  assert.equal(s['publish:img1'], 'skipped');
  for (const i of [0, 2]) {
    assert.equal(s[`build:img${i}`], 'ran');
    assert.equal(s[`test:g${i}/m@oci`], 'ran');
    assert.equal(s[`publish:img${i}`], 'ran');
  }
  const skipped = run.summary.results.find((r) => r.id === 'publish:img1');
  assert.equal(skipped?.reasons, ['dependency build:img1 failed']);
  const failed = run.summary.results.find((r) => r.id === 'build:img1');
  assert.equal(failed?.reasons, ['fake command exited with 1']);
});

test('fail-fast: nothing new starts after the first failure', async () => {
  const runner = new FakeRunner({ failing: new Set(['build:img0']), durations: { 'build:img0': 1 } });
  const run = await runEngine(workspace(wideZoo(6)), runner, { jobs: 1, failFast: true });
  assert.equal(runner.calls.length, 1);
  const s = statuses(run);
  assert.equal(s['build:img0'], 'failed');
  assert.equal(run.summary.counts.skipped, 6 * 3 - 1);
  const other = run.summary.results.find((r) => r.id === 'build:img5');
  assert.equal(other?.reasons, ['not started: --fail-fast after build:img0 failed']);
});

test('a node past its timeout fails with the limit in its reason', async () => {
  const files = { ...wideZoo(1, ', timeout: 50ms') };
  const run = await runEngine(workspace(files), new FakeRunner({ hanging: new Set(['test:g0/m@oci']) }));
  const r = run.summary.results.find((x) => x.id === 'test:g0/m@oci');
  assert.equal(r?.status, 'failed');
  assert.equal(r?.reasons, ['timed out after 50ms']);
});

test('an interrupt stops running nodes, records only successes, and the next run resumes', async () => {
  const dir = workspace(wideZoo(2));
  const controller = new AbortController();
  const runner = new FakeRunner({ hanging: new Set(['test:g1/m@oci']) });
  const first = runEngine(dir, runner, { jobs: 4, signal: controller.signal });
  // Abort once the hanging test has started and img0's chain has finished.
  const settled = () => runner.running.has('test:g1/m@oci') && runner.calls.some((c) => c.id === 'publish:img0' && c.end !== undefined);
  while (!settled()) await new Promise((r) => setTimeout(r, 2));
  controller.abort();
  const run = await first;
  assert.ok(run.summary.interrupted);
  const s = statuses(run);
  assert.equal(s['test:g1/m@oci'], 'failed');
  assert.equal(run.summary.results.find((r) => r.id === 'test:g1/m@oci')?.reasons, ['interrupted']);
  assert.equal(s['publish:img1'], 'skipped');
  assert.equal(s['publish:img0'], 'ran');

  const again = await runEngine(dir, new FakeRunner());
  assert.equal(again.runner.started.sort(), ['publish:img1', 'test:g1/m@oci']);
  assert.equal(statuses(again)['build:img1'], 'cached');
});

test('events: one finish per node, and run-finish last', async () => {
  const run = await runEngine(workspace(SMALL_ZOO), new FakeRunner(), { targets: ['test:pwm/CTCF@oci' as NodeId] });
  const finishes = run.events.filter((e) => e.type === 'node-finish');
  assert.equal(finishes.length, 3);
  assert.equal(run.events[0].type, 'run-start');
  assert.equal(run.events[run.events.length - 1].type, 'run-finish');
});

test('two processes building one workspace at once leave a valid cache', async () => {
  const dir = workspace(wideZoo(6));
  const [a, b] = await Promise.all([runEngine(dir, new FakeRunner()), runEngine(dir, new FakeRunner())]);
  assert.is(a.summary.counts.failed + b.summary.counts.failed, 0);
  const third = await runEngine(dir, new FakeRunner());
  assert.equal(third.summary.counts, { ran: 0, cached: 18, failed: 0, skipped: 0 });
});

test('a result that cannot be recorded fails its node (the run waits for every record), and nothing is cached for it', async () => {
  const dir = workspace(SMALL_ZOO);
  const ws = openWorkspace(dir, fakeRules());
  const store = new ContentStore(path.join(ws.stateDir, 'cas'));
  class FullDisk extends ActionCache {
    override async put(id: NodeId, key: string, recordLine: string, result: CachedResult): Promise<void> {
      await new Promise((r) => setTimeout(r, 20)); // finishes after the node's slot was freed
      if (id === 'build:pwm') throw new Error('ENOSPC: no space left on device, write');
      return super.put(id, key, recordLine, result);
    }
  }
  const cache = new FullDisk(ws.stateDir);
  const plan = planBuild(ws.graph, new Set(ws.graph.order), { root: ws.root, cache, store, digester: new FileDigester(ws.root, undefined), env: {} });
  const summary = await executePlan(plan, { decls: ws.decls, jobs: 4, limits: {}, resources: {}, failFast: false, runner: new FakeRunner(), cache, store, stateDir: ws.stateDir, emit: () => {} });
  const failed = summary.results.find((r) => r.id === 'build:pwm');
  assert.is(failed?.status, 'failed');
  assert.is(failed?.reasons[0], 'ran, but its result could not be recorded in the action cache: ENOSPC: no space left on device, write');
  assert.match(readFileSync(failed!.log!, 'utf8'), /# failed: ran, but its result could not be recorded/);
  assert.is(summary.counts.failed, 1);
  // Everything else was recorded before executePlan returned: the next plan has only that node to run.
  const again = planBuild(ws.graph, new Set(ws.graph.order), { root: ws.root, cache: new ActionCache(ws.stateDir), store, digester: new FileDigester(ws.root, undefined), env: {} });
  assert.equal(again.nodes.filter((p) => p.status === 'run').map((p) => p.node.id), ['build:pwm']);
});

test.run();
