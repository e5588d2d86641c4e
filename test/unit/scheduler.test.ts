/**
 * The scheduler against a fake executor, a fake recorder and a fake clock: which nodes started,
 * when, and how each ended. Nothing here sleeps or polls; `settle()` only lets pending promise
 * callbacks run.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import path from 'node:path';
import { ActionCache } from '../../engine/cache/action-cache.js';
import type { EngineEvent, NodeResult, RunSummary } from '../../engine/events.js';
import type { Executor, Job } from '../../engine/execute/executor.js';
import { LocalExecutor } from '../../engine/execute/local-executor.js';
import type { Recorder } from '../../engine/execute/recorder.js';
import { executePlan, type ExecuteOptions } from '../../engine/execute/scheduler.js';
import { FileDigester } from '../../engine/key/files.js';
import { planBuild } from '../../engine/plan.js';
import type { NodeId, Rule } from '../../engine/rule.js';
import { ContentStore } from '../../engine/cache/store.js';
import { openWorkspace, type Workspace } from '../../engine/workspace.js';
import { FakeClock, FakeExecutor, FakeRunner, fakeRules, SMALL_ZOO, wideZoo, workspace } from '../helpers.js';

const test = suite('scheduler');

/** Let every pending promise callback run (one turn of the event loop), without waiting on time. */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

/** A recorder that keeps results in memory; `failing` ids reject, `held` ids wait for `release`. */
class FakeRecorder implements Recorder {
  readonly recorded: string[] = [];
  private readonly held = new Map<string, () => void>();
  constructor(
    private readonly failing: ReadonlyMap<string, string> = new Map(),
    private readonly hold: ReadonlySet<string> = new Set(),
  ) {}
  async record(job: Job): Promise<void> {
    const id = job.planned.node.id;
    if (this.hold.has(id)) await new Promise<void>((resolve) => this.held.set(id, resolve));
    const why = this.failing.get(id);
    if (why) throw new Error(why);
    this.recorded.push(id);
  }
  release(id: string): void {
    this.held.get(id)?.();
  }
}

interface Run {
  readonly done: Promise<RunSummary>;
  readonly events: EngineEvent[];
  readonly exec: FakeExecutor;
  result(id: string): NodeResult | undefined;
}

/** Start executing every node of `files` through `exec` and `recorder`; the test drives it. */
function start(
  files: Record<string, string>,
  opts: Partial<ExecuteOptions> & { rules?: Rule[]; local?: (ws: Workspace, store: ContentStore) => Executor } = {},
): Run {
  const dir = workspace(files);
  const ws = openWorkspace(dir, opts.rules ?? fakeRules());
  const cache = new ActionCache(ws.stateDir);
  const store = new ContentStore(path.join(ws.stateDir, 'cas'));
  const plan = planBuild(ws.graph, new Set(ws.graph.order), { root: ws.root, cache, store, digester: new FileDigester(ws.root, undefined), env: {} });
  const exec = new FakeExecutor();
  const events: EngineEvent[] = [];
  const done = executePlan(plan, {
    workspace: ws.forRules,
    jobs: 4,
    limits: ws.decls.settings.concurrency,
    resources: ws.decls.settings.resources,
    failFast: false,
    runner: new FakeRunner(),
    cache,
    store,
    stateDir: ws.stateDir,
    emit: (e) => events.push(e),
    executor: opts.local?.(ws, store) ?? exec,
    recorder: new FakeRecorder(),
    ...opts,
  });
  let summary: RunSummary | undefined;
  void done.then((s) => (summary = s));
  return { done, events, exec, result: (id) => summary?.results.find((r) => r.id === id) };
}

/**
 * End running jobs until the run is over: each step ends every running job (failing those in
 * `failing`), so a node that starts in step N started after everything of steps < N ended.
 * @returns the ids started in each step.
 */
async function drive(run: Run, failing: ReadonlySet<string> = new Set()): Promise<string[][]> {
  let over = false;
  void run.done.then(() => (over = true));
  const steps: string[][] = [];
  let seen = 0;
  for (;;) {
    await settle();
    if (over) return steps;
    steps.push(run.exec.started.slice(seen));
    seen = run.exec.started.length;
    for (const id of [...run.exec.running.keys()].sort()) (failing.has(id) ? run.exec.fail(id) : run.exec.succeed(id));
  }
}

test('every node runs once, in a step after all of its dependencies', async () => {
  const run = start(SMALL_ZOO);
  const steps = await drive(run);
  const stepOf = new Map(steps.flatMap((ids, i) => ids.map((id) => [id, i] as const)));
  assert.equal([...stepOf.keys()].sort(), ['build:base', 'build:pwm', 'convert:pwm', 'publish:base', 'publish:pwm', 'test:pwm/CTCF@oci', 'test:pwm/CTCF@sif', 'test:pwm/GATA1@oci', 'test:pwm/GATA1@sif']);
  assert.equal(steps[0], ['build:base']);
  assert.ok((stepOf.get('publish:pwm') as number) > (stepOf.get('test:pwm/GATA1@sif') as number));
  assert.ok((stepOf.get('test:pwm/CTCF@sif') as number) > (stepOf.get('convert:pwm') as number));
  assert.equal((await run.done).counts, { ran: 9, cached: 0, failed: 0, interrupted: 0, skipped: 0 });
});

test('a dependent starts only after its dependency is recorded', async () => {
  const recorder = new FakeRecorder(new Map(), new Set(['build:base']));
  const run = start(SMALL_ZOO, { recorder });
  await run.exec.whenStarted('build:base');
  run.exec.succeed('build:base');
  await settle();
  await settle();
  assert.equal(run.exec.started, ['build:base'], 'nothing starts while build:base is being recorded');
  assert.ok(run.events.some((e) => e.type === 'node-executed' && e.id === 'build:base'));
  assert.not.ok(run.events.some((e) => e.type === 'node-finish' && e.result.id === 'build:base'));
  recorder.release('build:base');
  await run.exec.whenStarted('build:pwm');
  await drive(run);
  assert.equal(recorder.recorded.length, 9);
});

test('a result that cannot be recorded fails its node, and nothing downstream starts or is published', async () => {
  const enospc = 'ENOSPC: no space left on device, write';
  const recorder = new FakeRecorder(new Map([['build:pwm', enospc]]));
  const run = start(SMALL_ZOO, { recorder });
  await drive(run);
  const summary = await run.done;
  assert.equal(run.exec.started.sort(), ['build:base', 'build:pwm', 'publish:base']);
  const failed = run.result('build:pwm');
  assert.is(failed?.status, 'failed');
  assert.equal(failed?.failure, { type: 'record', message: enospc });
  assert.equal(failed?.reasons, [`ran, but its result could not be recorded in the action cache: ${enospc}`]);
  for (const id of ['convert:pwm', 'test:pwm/CTCF@oci', 'test:pwm/GATA1@sif', 'publish:pwm']) {
    const r = run.result(id);
    assert.is(r?.status, 'skipped', id);
    assert.equal(r?.reasons, [`dependency build:pwm failed (could not record its result: ${enospc})`]);
    assert.equal(r?.failure, { type: 'dependency', dependency: 'build:pwm', cause: { type: 'record', message: enospc } });
  }
  assert.equal(summary.counts, { ran: 2, cached: 0, failed: 1, interrupted: 0, skipped: 6 });
});

test('never more than --jobs at once, nor more than a kind limit', async () => {
  const run = start(wideZoo(8), { jobs: 3, limits: { test: 2 } });
  const byKind = new Map<string, number>();
  let over = false;
  void run.done.then(() => (over = true));
  while (!over) {
    await settle();
    const kinds = [...run.exec.running.keys()].map((id) => id.split(':')[0]);
    for (const k of new Set(kinds)) byKind.set(k, Math.max(byKind.get(k) ?? 0, kinds.filter((x) => x === k).length));
    // End one job at a time, so the scheduler refills one slot at a time.
    const first = [...run.exec.running.keys()].sort()[0];
    if (first) run.exec.succeed(first);
  }
  assert.is(run.exec.maxRunning, 3);
  assert.is(byKind.get('test'), 2);
  assert.is(run.exec.started.length, 8 * 3);
});

test('a resource token is held by one node at a time', async () => {
  const mostTestsAtOnce = async (testFields: string) => {
    const run = start(wideZoo(4, testFields), { jobs: 8 });
    let most = 0;
    let over = false;
    void run.done.then(() => (over = true));
    while (!over) {
      await settle();
      most = Math.max(most, [...run.exec.running.keys()].filter((id) => id.startsWith('test:')).length);
      for (const id of [...run.exec.running.keys()]) run.exec.succeed(id);
    }
    return most;
  };
  // `slot`, not `gpu`: the gpu token stands for this host's GPUs (engine/execute/devices.ts).
  assert.is(await mostTestsAtOnce(', resources: {slot: 1}'), 1);
  assert.ok((await mostTestsAtOnce('')) > 1, 'without the token, tests run side by side');
});

test('ready nodes start longest remaining chain first', async () => {
  const files = {
    'a.txt': 'a',
    'b.txt': 'b',
    'images.yaml': 'version: 1\nimages:\n  a:\n    layers: [{copy: a.txt, to: /a}]\n  b:\n    layers: [{copy: b.txt, to: /b}]\n  c:\n    from: b\n    layers: [{copy: b.txt, to: /c}]\n',
    'models.yaml': 'version: 1\ngroups:\n  g:\n    image: c\n    models: [m1, m2]\n    test: {command: [run]}\n',
  };
  const run = start(files, { jobs: 1 });
  await drive(run);
  // b heads the longest chain (b → c → tests → publish:c), so it and c start before a.
  assert.equal(run.exec.started.slice(0, 2), ['build:b', 'build:c']);
  assert.ok(run.exec.started.indexOf('build:a') > run.exec.started.indexOf('build:c'));
});

test('keep-going: a failure skips exactly its dependents, with the failure as data; independent nodes go on', async () => {
  const run = start(wideZoo(3));
  await drive(run, new Set(['build:img1']));
  const exit = { type: 'exit', code: 1, message: 'exited with status 1' };
  assert.equal(run.result('build:img1')?.failure, exit);
  assert.is(run.result('build:img1')?.status, 'failed');
  for (const id of ['test:g1/m@oci', 'publish:img1']) {
    assert.is(run.result(id)?.status, 'skipped');
    assert.equal(run.result(id)?.failure, { type: 'dependency', dependency: 'build:img1', cause: exit });
    assert.equal(run.result(id)?.reasons, ['dependency build:img1 failed']);
  }
  for (const i of [0, 2]) for (const id of [`build:img${i}`, `test:g${i}/m@oci`, `publish:img${i}`]) assert.is(run.result(id)?.status, 'ran', id);
});

test('fail-fast: nothing new starts after the first failure', async () => {
  const run = start(wideZoo(6), { jobs: 1, failFast: true });
  await run.exec.whenStarted('build:img0');
  run.exec.fail('build:img0');
  const summary = await run.done;
  assert.equal(run.exec.started, ['build:img0']);
  assert.is(summary.counts.skipped, 6 * 3 - 1);
  assert.equal(run.result('build:img5')?.failure, { type: 'not-started', why: 'fail-fast', after: 'build:img0' });
  assert.equal(run.result('build:img5')?.reasons, ['not started: --fail-fast after build:img0 failed']);
});

test('an interrupt ends running nodes as interrupted (not failed) and starts nothing new', async () => {
  const interrupt = new AbortController();
  const run = start(wideZoo(2), { signal: interrupt.signal, jobs: 1 });
  await run.exec.whenStarted('build:img0');
  run.exec.succeed('build:img0');
  // build:img1 heads a longer chain than test:g0 (three nodes to two), so it comes next.
  await run.exec.whenStarted('build:img1');
  interrupt.abort();
  const summary = await run.done;
  assert.ok(summary.interrupted);
  assert.equal(run.exec.started, ['build:img0', 'build:img1']);
  assert.is(run.result('build:img0')?.status, 'ran');
  assert.is(run.result('build:img1')?.status, 'interrupted');
  assert.equal(run.result('build:img1')?.failure, { type: 'interrupted' });
  assert.equal(run.result('build:img1')?.reasons, ['interrupted']);
  assert.is(run.result('test:g0/m@oci')?.status, 'skipped');
  assert.equal(run.result('test:g0/m@oci')?.failure, { type: 'not-started', why: 'interrupted' });
  assert.equal(summary.counts, { ran: 1, cached: 0, failed: 0, interrupted: 1, skipped: 4 });
});

test('the local executor: a node past its timeout fails with the limit, on the fake clock', async () => {
  const clock = new FakeClock();
  let started!: () => void;
  const isStarted = new Promise<void>((resolve) => (started = resolve));
  // A rule that runs until its signal aborts.
  const rules: Rule[] = fakeRules().map((r) => ({
    ...r,
    execute: (node, ctx) =>
      new Promise((resolve, reject) => {
        if (node.kind !== 'test') return resolve({ outputs: {}, artifacts: [] });
        started();
        ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason));
      }),
  }));
  const run = start(wideZoo(1, ', timeout: 50ms'), {
    rules,
    clock,
    local: (ws, store) => new LocalExecutor({ workspace: ws.forRules, rules: ws.graph.rules, runner: new FakeRunner(), store, stateDir: ws.stateDir, clock }),
  });
  await isStarted;
  clock.advance(49);
  await settle();
  assert.is(run.result('test:g0/m@oci'), undefined, 'still running at 49 ms');
  clock.advance(1);
  await run.done;
  assert.is(run.result('test:g0/m@oci')?.status, 'failed');
  assert.equal(run.result('test:g0/m@oci')?.failure, { type: 'timeout', limit_ms: 50 });
  assert.equal(run.result('test:g0/m@oci')?.reasons, ['timed out after 50ms']);
  assert.is(run.result('test:g0/m@oci')?.duration_ms, 50);
});

test('events: a start and a finish per node that runs, node-executed before its finish, run-finish last', async () => {
  const run = start(SMALL_ZOO);
  await drive(run);
  const ids = (type: string) => run.events.flatMap((e) => (e.type === type ? [e.type === 'node-finish' ? e.result.id : (e as { id: NodeId }).id] : []));
  assert.is(ids('node-start').length, 9);
  assert.is(ids('node-finish').length, 9);
  for (const id of ids('node-start')) {
    const i = run.events.findIndex((e) => e.type === 'node-executed' && e.id === id);
    const j = run.events.findIndex((e) => e.type === 'node-finish' && e.result.id === id);
    assert.ok(i !== -1 && i < j, id);
  }
  assert.is(run.events[0].type, 'run-start');
  assert.is(run.events[run.events.length - 1].type, 'run-finish');
});

test.run();
