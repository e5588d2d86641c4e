/**
 * Local execution end to end: the scheduler, the local executor and the real action cache, with
 * fake rules over a fake process runner (the scheduler's own behaviour is in scheduler.test.ts).
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { ActionCache, type CachedResult } from '../../engine/cache/action-cache.js';
import { executePlan } from '../../engine/execute/scheduler.js';
import { FileDigester } from '../../engine/key/files.js';
import { planBuild } from '../../engine/plan.js';
import { ContentStore } from '../../engine/cache/store.js';
import { openWorkspace } from '../../engine/workspace.js';
import type { Rule } from '../../engine/rule.js';
import { fakeRules, FakeRunner, runEngine, SMALL_ZOO, statuses, wideZoo, workspace } from '../helpers.js';
import type { NodeId } from '../../engine/rule.js';
import { defaultRules } from '../../rules/index.js';

const test = suite('execute');

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
  assert.equal(run.summary.counts, { ran: 9, cached: 0, failed: 0, interrupted: 0, skipped: 0 });
});

test('a second run is all cached and starts nothing', async () => {
  const dir = workspace(SMALL_ZOO);
  await runEngine(dir, new FakeRunner());
  const second = await runEngine(dir, new FakeRunner());
  assert.equal(second.runner.calls.length, 0);
  assert.equal(second.summary.counts, { ran: 0, cached: 9, failed: 0, interrupted: 0, skipped: 0 });
  assert.equal(second.digester.stats.bytesRead, 0, 'no file bytes read on a no-op run');
});

test('an interrupt stops running nodes, records only successes, and the next run resumes', async () => {
  const dir = workspace(wideZoo(2));
  const controller = new AbortController();
  const runner = new FakeRunner({ hanging: new Set(['test:g1/m@oci']) });
  // Abort once the hanging test has started and img0's chain has finished (and is recorded).
  let publishedImg0!: () => void;
  const img0Done = new Promise<void>((resolve) => (publishedImg0 = resolve));
  const first = runEngine(dir, runner, { jobs: 4, signal: controller.signal, onEvent: (e) => e.type === 'node-finish' && e.result.id === 'publish:img0' && publishedImg0() });
  await runner.whenStarted('test:g1/m@oci');
  await img0Done;
  controller.abort();
  const run = await first;
  assert.ok(run.summary.interrupted);
  const s = statuses(run);
  assert.equal(s['test:g1/m@oci'], 'interrupted');
  assert.equal(run.summary.results.find((r) => r.id === 'test:g1/m@oci')?.failure, { type: 'interrupted' });
  assert.equal(s['publish:img1'], 'skipped');
  assert.equal(s['publish:img0'], 'ran');

  const again = await runEngine(dir, new FakeRunner());
  assert.equal(again.runner.started.sort(), ['publish:img1', 'test:g1/m@oci']);
  assert.equal(statuses(again)['build:img1'], 'cached');
});

test('two runs building one workspace at once run each node once, and leave a valid cache', async () => {
  const dir = workspace(wideZoo(6));
  // Both plan before either runs (so every node is planned to run in both), then both run at once.
  let planned = 0;
  let allPlanned!: () => void;
  const barrier = new Promise<void>((resolve) => (allPlanned = resolve));
  const afterPlan = () => {
    if (++planned === 2) allPlanned();
    return barrier;
  };
  const [a, b] = await Promise.all([runEngine(dir, new FakeRunner(), { afterPlan }), runEngine(dir, new FakeRunner(), { afterPlan })]);
  assert.is(a.summary.counts.failed + b.summary.counts.failed, 0);
  assert.is(a.runner.calls.length + b.runner.calls.length, 18, 'every node ran in exactly one of the two');
  const reused = [...a.summary.results, ...b.summary.results].filter((r) => r.status === 'cached');
  assert.is(reused.length, 18);
  for (const r of reused) assert.match(r.reasons[0], /^done meanwhile by another graph process/);
  assert.equal(readdirSync(path.join(dir, '.graph', 'leases')), [], 'every lease released');
  const third = await runEngine(dir, new FakeRunner());
  assert.equal(third.summary.counts, { ran: 0, cached: 18, failed: 0, interrupted: 0, skipped: 0 });
});

test('a result that cannot be recorded fails its node; its dependents never run (the real action cache)', async () => {
  const dir = workspace(SMALL_ZOO);
  const ws = openWorkspace(dir, fakeRules());
  const store = new ContentStore(path.join(ws.stateDir, 'cas'));
  class FullDisk extends ActionCache {
    override async put(id: NodeId, key: string, recordLine: string, result: CachedResult): Promise<void> {
      await new Promise((r) => setImmediate(r)); // an asynchronous failure, as a full disk gives
      if (id === 'build:pwm') throw new Error('ENOSPC: no space left on device, write');
      return super.put(id, key, recordLine, result);
    }
  }
  const cache = new FullDisk(ws.stateDir);
  const plan = planBuild(ws.graph, new Set(ws.graph.order), { root: ws.root, cache, store, digester: new FileDigester(ws.root, undefined), env: {} });
  const summary = await executePlan(plan, { workspace: ws.forRules, jobs: 4, limits: {}, resources: {}, failFast: false, runner: new FakeRunner(), cache, store, stateDir: ws.stateDir, emit: () => {} });
  const failed = summary.results.find((r) => r.id === 'build:pwm');
  assert.is(failed?.status, 'failed');
  assert.is(failed?.reasons[0], 'ran, but its result could not be recorded in the action cache: ENOSPC: no space left on device, write');
  assert.match(readFileSync(failed!.log!, 'utf8'), /# failed: ran, but its result could not be recorded/);
  assert.equal(summary.counts, { ran: 2, cached: 0, failed: 1, interrupted: 0, skipped: 6 });
  const publish = summary.results.find((r) => r.id === 'publish:pwm');
  assert.equal(publish?.reasons, ['dependency build:pwm failed (could not record its result: ENOSPC: no space left on device, write)']);
  // Everything that ran was recorded before executePlan returned: the next plan runs build:pwm and what depends on it.
  const again = planBuild(ws.graph, new Set(ws.graph.order), { root: ws.root, cache: new ActionCache(ws.stateDir), store, digester: new FileDigester(ws.root, undefined), env: {} });
  assert.equal(again.nodes.filter((p) => p.status === 'run').map((p) => p.node.id).sort(), ['build:pwm', 'convert:pwm', 'publish:pwm', 'test:pwm/CTCF@oci', 'test:pwm/CTCF@sif', 'test:pwm/GATA1@oci', 'test:pwm/GATA1@sif']);
});

test('rules read the environment the key recorded, never the process\'s own', async () => {
  const dir = workspace({ 'f.txt': 'x', 'images.yaml': 'version: 1\nimages:\n  a:\n    layers: [{copy: f.txt, to: /f}]\n' });
  const ws = openWorkspace(dir, defaultRules);
  const cache = new ActionCache(ws.stateDir);
  const store = new ContentStore(path.join(ws.stateDir, 'cas'));
  const saved = process.env.SOURCE_DATE_EPOCH;
  process.env.SOURCE_DATE_EPOCH = '999999999';
  try {
    const plan = planBuild(ws.graph, new Set(['build:a' as NodeId]), { root: ws.root, cache, store, digester: new FileDigester(ws.root, undefined), env: { SOURCE_DATE_EPOCH: '1234' } });
    assert.equal(plan.byId.get('build:a' as NodeId)?.record.env, { SOURCE_DATE_EPOCH: '1234' });
    const summary = await executePlan(plan, { workspace: ws.forRules, jobs: 1, limits: {}, resources: {}, failFast: false, runner: new FakeRunner(), cache, store, stateDir: ws.stateDir, emit: () => {} });
    const config = JSON.parse(readFileSync(store.pathOf(String(summary.results[0].outputs?.config)), 'utf8'));
    assert.is(config.created, '1970-01-01T00:20:34Z');
  } finally {
    if (saved === undefined) delete process.env.SOURCE_DATE_EPOCH;
    else process.env.SOURCE_DATE_EPOCH = saved;
  }
});

test('logs: a node that writes nothing leaves no log file (an earlier one is removed) and no log blob; one that writes keeps its log in the store', async () => {
  const dir = workspace({ 'f.txt': 'x', 'images.yaml': `version: 1\nimages:\n${['a', 'b', 'c'].map((n) => `  ${n}:\n    layers: [{copy: f.txt, to: /f}]\n`).join('')}` });
  const rules: Rule[] = defaultRules.map(({ outputs: _reader, ...r }) => ({
    ...r,
    async execute(node, ctx) {
      if (node.id === 'build:b') ctx.log.write('said something\n');
      // A child process would append to the file: it is there, header first, when the rule asks for it.
      if (node.id === 'build:c') assert.is(readFileSync(ctx.log.path, 'utf8'), `# ${node.id}\n# key ${ctx.keys.node}\n# why: no previous record\n`);
      return { outputs: { made: node.id }, artifacts: [] };
    },
  }));
  const ws = openWorkspace(dir, rules);
  const cache = new ActionCache(ws.stateDir);
  const store = new ContentStore(path.join(ws.stateDir, 'cas'));
  // An earlier run's log of build:a: a new run that says nothing must not leave it to be read as its own.
  const staleLog = path.join(ws.stateDir, 'logs', 'build:a.log');
  mkdirSync(path.dirname(staleLog), { recursive: true });
  writeFileSync(staleLog, '# build:a\n# key 0000\nan earlier run\n');
  const plan = planBuild(ws.graph, new Set(ws.graph.order), { root: ws.root, cache, store, digester: new FileDigester(ws.root, undefined), env: {} });
  const summary = await executePlan(plan, { workspace: ws.forRules, jobs: 2, limits: {}, resources: {}, failFast: false, runner: new FakeRunner(), cache, store, stateDir: ws.stateDir, emit: () => {} });
  assert.equal(summary.counts, { ran: 6, cached: 0, failed: 0, interrupted: 0, skipped: 0 });
  const logOf = (id: string) => summary.results.find((r) => r.id === id)?.log as string;
  const key = (id: string) => plan.byId.get(id as NodeId)?.key;
  assert.is(logOf('build:a'), undefined, 'a header-only log names no file');
  assert.not.ok(existsSync(staleLog), "the earlier run's log is gone");
  assert.equal(readdirSync(path.join(ws.stateDir, 'logs')).sort(), ['build:b.log', 'build:c.log']);
  assert.is(readFileSync(logOf('build:b'), 'utf8'), `# build:b\n# key ${key('build:b')}\n# why: no previous record\nsaid something\n`);
  const fresh = new ActionCache(ws.stateDir);
  assert.is(fresh.last('build:a' as NodeId)?.result.log, undefined, 'no blob for a header-only log');
  const blob = fresh.last('build:b' as NodeId)?.result.log as string;
  assert.ok(existsSync(store.pathOf(blob)));
  assert.is(readFileSync(store.pathOf(blob), 'utf8'), readFileSync(logOf('build:b'), 'utf8'));
  assert.is(readFileSync(logOf('build:c'), 'utf8'), `# build:c\n# key ${key('build:c')}\n# why: no previous record\n`);
});

test.run();
