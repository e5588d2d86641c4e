/**
 * The Slurm executor's state machine (engine/execute/slurm-executor.ts) against a fake Slurm (canned
 * sbatch, squeue, scontrol and scancel answers) and a fake clock: what is submitted, one squeue per
 * poll for every job, the backoff, success only as COMPLETED with an intact record, each failed
 * state as a typed failure, retries without the failed host, one scancel on an interrupt, and the
 * first refusal ending every later submission.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ActionCache } from '../../engine/cache/action-cache.js';
import type { Job, Outcome } from '../../engine/execute/executor.js';
import { JobWatch, SlurmExecutor } from '../../engine/execute/slurm-executor.js';
import { SlurmCli, type JobId } from '../../engine/execute/slurm.js';
import type { PlannedNode } from '../../engine/plan.js';
import type { NodeDef, NodeId } from '../../engine/rule.js';
import { ContentStore } from '../../engine/cache/store.js';
import { executePlan } from '../../engine/execute/scheduler.js';
import { FileDigester } from '../../engine/key/files.js';
import { planBuild } from '../../engine/plan.js';
import { openWorkspace } from '../../engine/workspace.js';
import { FakeClock, fakeRules, FakeRunner, wideZoo, workspace } from '../helpers.js';

const test = suite('slurm-executor');

/** A fake Slurm: jobs by id with a state the test sets; every command line recorded. */
class FakeSlurm {
  readonly calls: string[][] = [];
  readonly scripts: string[] = [];
  readonly jobs = new Map<string, { state: string; host?: string; exit: number; args: string[] }>();
  private next = 100;
  refuse?: string;
  squeueDown = false;

  readonly capture = async (argv: readonly string[], o?: { input?: string }): Promise<string> => {
    this.calls.push([...argv]);
    const [cmd, ...args] = argv;
    if (cmd === 'sbatch') {
      if (args[0] === '--version') return 'slurm-wlm 22.05.8\n';
      if (this.refuse) throw new Error(`sbatch ${args.join(' ')} failed: ${this.refuse}`);
      const id = String(this.next++);
      this.jobs.set(id, { state: 'PENDING', exit: 0, args });
      this.scripts.push(o?.input ?? '');
      return `${id}\n`;
    }
    if (cmd === 'squeue') {
      if (this.squeueDown) throw new Error('squeue failed: slurm_load_jobs error: Unable to contact slurm controller (connect failure)');
      const ids = args[args.indexOf('-j') + 1].split(',');
      return ids
        .filter((id) => this.jobs.has(id))
        .map((id) => {
          const j = this.jobs.get(id)!;
          return `${id}|${j.state}|${j.host ?? ''}|None\n`;
        })
        .join('');
    }
    if (cmd === 'scontrol') {
      const j = this.jobs.get(args[3]);
      if (!j) throw new Error('scontrol failed: slurm_load_jobs error: Invalid job id specified');
      return `JobId=${args[3]} JobName=x JobState=${j.state} Reason=None ExitCode=${j.exit}:0 TimeLimit=00:02:00 NodeList=${j.host ?? ''} BatchHost=${j.host ?? '(null)'}\n`;
    }
    if (cmd === 'scancel') {
      for (const id of args) {
        const j = this.jobs.get(id);
        if (j) j.state = 'CANCELLED';
      }
      return '';
    }
    throw new Error(`${argv.join(' ')} failed: unexpected`);
  };

  set(id: string, state: string, host?: string, exit = 0): void {
    this.jobs.set(id, { ...this.jobs.get(id)!, state, ...(host ? { host } : {}), exit });
  }

  commands(name: string): string[][] {
    return this.calls.filter((c) => c[0] === name && c[1] !== '--version');
  }
}

/** Let every pending promise and I/O callback run. */
async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
}

/** Wait (through I/O turns, no time passes) until `cond` holds. */
async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 2000 && !cond(); i++) await new Promise((r) => setTimeout(r, 1));
  assert.ok(cond(), 'condition never held');
}

/** Advance `clock` by `ms` once something waits on it (the watcher's next sleep), then settle. */
async function tick(clock: FakeClock, ms: number): Promise<void> {
  await settle();
  // Real milliseconds (keeping the process alive) while the executor writes its files.
  for (let i = 0; i < 2000 && clock.pending === 0; i++) await new Promise((r) => setTimeout(r, 1));
  assert.ok(clock.pending > 0, 'nothing waits on the clock');
  clock.advance(ms);
  await settle();
}

interface Setup {
  readonly slurm: FakeSlurm;
  readonly clock: FakeClock;
  readonly exec: SlurmExecutor;
  readonly cache: ActionCache;
  readonly store: ContentStore;
  readonly dir: string;
  job(id: string, extra?: Partial<NodeDef>): { job: Job; key: string; recordText: string; abort: AbortController };
  /** Advance past one poll interval and let the executor react. */
  poll(): Promise<void>;
}

function setup(opts: { retries?: number } = {}): Setup {
  const dir = mkdtempSync(path.join(tmpdir(), 'graph-slurm-exec-'));
  const stateDir = path.join(dir, '.graph');
  mkdirSync(path.join(stateDir, 'logs'), { recursive: true });
  const slurm = new FakeSlurm();
  const clock = new FakeClock();
  const cache = new ActionCache(stateDir);
  const store = new ContentStore(path.join(stateDir, 'cas'));
  const exec = new SlurmExecutor({
    cli: new SlurmCli(slurm.capture),
    settings: { partition: 'debug', args: [] },
    cache,
    store,
    root: dir,
    stateDir,
    run: 'r1',
    command: ['/usr/bin/node', '/opt/graph/cli.js', '-C', dir, 'run-node'],
    retries: opts.retries ?? 0,
    clock,
    pollMinMs: 1000,
    pollMaxMs: 1000,
    cancelWaitMs: 5000,
  });
  return {
    slurm,
    clock,
    exec,
    cache,
    store,
    dir,
    job(id, extra = {}) {
      // A key record's shape (the action cache serves nothing else), naming the node in its decl.
      const recordText = JSON.stringify({ rule: 'test', ruleVersion: 1, decl: { node: id }, files: {}, env: {}, tool: 't', deps: {} });
      const key = createHash('sha256').update(recordText).digest('hex');
      const node = { id: id as NodeId, kind: 'test', deps: [], decl: null, inputs: [], env: [], tool: 't', resources: {}, at: () => ({}) as never, ...extra } as NodeDef;
      const planned = { node, key, recordText, record: {} as never, status: 'run', reasons: ['no previous record'] } as PlannedNode;
      const abort = new AbortController();
      const job: Job = { planned, deps: new Map(), log: path.join(stateDir, 'logs', `${id.replace(/[:/]/g, '_')}.log`), signal: abort.signal };
      return { job, key, recordText, abort };
    },
    poll: () => tick(clock, 1000),
  };
}

test('a node becomes one sbatch of the run-node command; COMPLETED with an intact record succeeds', async () => {
  const s = setup();
  const { job, key, recordText } = s.job('test:g/m@oci', { timeoutMs: 90_000, resources: { gpu: 1 }, request: { cpus: 2, memoryMb: 512 } });
  const outcome = s.exec.run(job);
  await s.poll();
  assert.equal(s.slurm.commands('sbatch'), [
    ['sbatch', '--parsable', '-J', 'graph-r1-test_g_m@oci', `--output=${job.log}`, '--open-mode=append', `--chdir=${s.dir}`, '--time=2', '--gres=gpu:1', '-c', '2', '--mem=512M', '--partition=debug'],
  ]);
  const failureFile = path.join(s.dir, '.graph', 'slurm', 'r1', 'test_g_m@oci.log.failure.json');
  assert.is(s.slurm.scripts[0], `#!/bin/sh\n# graph: test:g/m@oci\nexec /usr/bin/node /opt/graph/cli.js -C ${s.dir} run-node --key ${key} --failure-file ${failureFile} -- test:g/m@oci\n`);
  s.slurm.set('100', 'RUNNING', 'n1');
  await s.poll();
  // The job records its result (as `graph run-node` does on the compute node), then ends.
  const blob = s.store.putBytes('model output');
  await s.cache.put('test:g/m@oci' as NodeId, key, recordText, { outputs: { passed: true }, artifacts: [blob.digest], duration_ms: 5 });
  s.slurm.set('100', 'COMPLETED', 'n1');
  await s.poll();
  const o = await outcome;
  assert.equal({ ...o, duration_ms: 0 }, { ok: true, result: { outputs: { passed: true }, artifacts: [blob.digest] }, duration_ms: 0, where: { executor: 'slurm', job: '100', host: 'n1' } });
  assert.match(readFileSync(job.log, 'utf8'), '# slurm: job 100 COMPLETED on n1 (exit code 0)\n');
  assert.equal(s.exec.activeJobs, []);
});

test('COMPLETED without a record, or with a damaged artifact, fails as a record failure', async () => {
  const s = setup();
  const { job } = s.job('test:g/a@oci');
  const outcome = s.exec.run(job);
  await s.poll();
  s.slurm.set('100', 'COMPLETED', 'n1');
  await s.poll();
  const o = (await outcome) as Extract<Outcome, { ok: false }>;
  assert.is(o.ok, false);
  assert.equal(o.failure.type, 'record');
  assert.match((o.failure as { message: string }).message, /^Slurm job 100 COMPLETED on n1, but no intact record of its action key [0-9a-f]{12} is in the cache \(is the cache directory on a file system every node mounts\?\)$/);
});

test('every job is watched by one squeue per poll', async () => {
  const s = setup();
  const runs = ['test:a@oci', 'test:b@oci', 'test:c@oci'].map((id) => s.exec.run(s.job(id).job));
  await until(() => s.slurm.commands('sbatch').length === 3);
  await s.poll();
  await s.poll();
  const squeues = s.slurm.commands('squeue');
  assert.is(squeues.length, 2);
  for (const q of squeues) assert.equal(q, ['squeue', '-h', '-t', 'all', '-j', '100,101,102', '-o', '%i|%T|%N|%r']);
  for (const id of ['100', '101', '102']) s.slurm.set(id, 'CANCELLED', 'n1');
  await s.poll();
  for (const r of await Promise.all(runs)) assert.is(r.ok, false);
  assert.is(s.slurm.commands('squeue').length, 3);
});

test('polls back off by half while nothing changes, and start over when a state changes', async () => {
  const slurm = new FakeSlurm();
  const clock = new FakeClock();
  const watch = new JobWatch(new SlurmCli(slurm.capture), clock, 100, 400, 10);
  slurm.jobs.set('7', { state: 'PENDING', exit: 0, args: [] });
  const ended = watch.wait('7' as JobId);
  for (let i = 0; i < 5; i++) await tick(clock, 400);
  slurm.set('7', 'RUNNING', 'n1');
  for (let i = 0; i < 2; i++) await tick(clock, 400);
  slurm.set('7', 'TIMEOUT', 'n1');
  await tick(clock, 400);
  assert.equal(await ended, { id: '7', state: 'TIMEOUT', host: 'n1' });
  // PENDING seen at the first poll (a change), then unchanged: 100, 150, 225, 338, 400 (the cap);
  // RUNNING is a change: 100 again, then 150, after which TIMEOUT ends the watch.
  assert.equal(watch.waits, [100, 100, 150, 225, 338, 400, 100, 150]);
});

/** Run one job to `state` and return its failure. */
async function endIn(state: string, exit = 0, cause?: object): Promise<{ failure: Record<string, unknown>; log: string }> {
  const s = setup();
  const { job } = s.job('test:g/m@oci', { timeoutMs: 60_000 });
  const outcome = s.exec.run(job);
  await s.poll();
  if (cause) {
    mkdirSync(path.join(s.dir, '.graph', 'slurm', 'r1'), { recursive: true });
    writeFileSync(path.join(s.dir, '.graph', 'slurm', 'r1', 'test_g_m@oci.log.failure.json'), JSON.stringify(cause));
  }
  s.slurm.set('100', state, 'n1', exit);
  await s.poll();
  const o = (await outcome) as Extract<Outcome, { ok: false }>;
  assert.is(o.ok, false);
  assert.equal(o.where, { executor: 'slurm', job: '100', host: 'n1' });
  return { failure: o.failure as unknown as Record<string, unknown>, log: readFileSync(job.log, 'utf8') };
}

test('FAILED: a cluster failure with the exit code and the node\'s own failure as its cause', async () => {
  const cause = { type: 'exit', code: 1, message: 'test command exited with status 1' };
  const { failure, log } = await endIn('FAILED', 1, cause);
  assert.equal(failure, { type: 'cluster', state: 'FAILED', job: '100', host: 'n1', code: 1, message: 'Slurm job 100 FAILED on n1 (exit code 1): test command exited with status 1', cause });
  assert.match(log, '# failed: Slurm job 100 FAILED on n1 (exit code 1): test command exited with status 1\n');
});

test('TIMEOUT is a failure even when the job reports exit code 0', async () => {
  const { failure } = await endIn('TIMEOUT', 0);
  assert.equal(failure, { type: 'cluster', state: 'TIMEOUT', job: '100', host: 'n1', code: 0, message: 'Slurm job 100 TIMEOUT on n1: ran past its time limit 00:02:00' });
});

test('OUT_OF_MEMORY, NODE_FAIL, CANCELLED, PREEMPTED: each named in the reason', async () => {
  const messages: Record<string, string> = {
    OUT_OF_MEMORY: "Slurm job 100 OUT_OF_MEMORY on n1: ran out of memory (raise the test's memory:)",
    NODE_FAIL: 'Slurm job 100 NODE_FAIL on n1: the node failed',
    CANCELLED: 'Slurm job 100 CANCELLED on n1: cancelled outside graph',
    PREEMPTED: 'Slurm job 100 PREEMPTED on n1: preempted by another job',
  };
  for (const [state, message] of Object.entries(messages)) {
    const { failure } = await endIn(state);
    assert.equal([failure.type, failure.state, failure.message], ['cluster', state, message]);
  }
});

test('--retries: NODE_FAIL and PREEMPTED are submitted again without the hosts that failed', async () => {
  const s = setup({ retries: 2 });
  const { job, key, recordText } = s.job('test:g/m@oci');
  const outcome = s.exec.run(job);
  await s.poll();
  s.slurm.set('100', 'NODE_FAIL', 'n1');
  await s.poll();
  await until(() => s.slurm.jobs.has('101'));
  s.slurm.set('101', 'PREEMPTED', 'n2');
  await s.poll();
  await until(() => s.slurm.jobs.has('102'));
  await s.cache.put('test:g/m@oci' as NodeId, key, recordText, { outputs: {}, artifacts: [], duration_ms: 1 });
  s.slurm.set('102', 'COMPLETED', 'n3');
  await s.poll();
  const o = await outcome;
  assert.is(o.ok, true);
  assert.equal(o.where, { executor: 'slurm', job: '102', host: 'n3' });
  const excludes = s.slurm.commands('sbatch').map((c) => c.find((a) => a.startsWith('--exclude')) ?? null);
  assert.equal(excludes, [null, '--exclude=n1', '--exclude=n1,n2']);
});

test('without retries left, NODE_FAIL fails the node; FAILED is never retried', async () => {
  const s = setup({ retries: 1 });
  const { job } = s.job('test:g/m@oci');
  const outcome = s.exec.run(job);
  await s.poll();
  s.slurm.set('100', 'FAILED', 'n1', 1);
  await s.poll();
  const o = (await outcome) as Extract<Outcome, { ok: false }>;
  assert.equal([o.failure.type, (o.failure as { state: string }).state], ['cluster', 'FAILED']);
  assert.is(s.slurm.commands('sbatch').length, 1);
});

test('an interrupt cancels every running job of the run with one scancel; the nodes end interrupted', async () => {
  const s = setup();
  const a = s.job('test:a@oci');
  const b = s.job('test:b@oci');
  const runs = [s.exec.run(a.job), s.exec.run(b.job)];
  await until(() => s.slurm.jobs.size === 2);
  await s.poll();
  s.slurm.set('100', 'RUNNING', 'n1');
  s.slurm.set('101', 'PENDING');
  await s.poll();
  a.abort.abort();
  b.abort.abort();
  await s.poll();
  assert.equal(s.slurm.commands('scancel'), [['scancel', '100', '101']]);
  const outcomes = await Promise.all(runs);
  assert.equal(
    outcomes.map((o) => (o.ok ? 'ok' : o.failure.type)),
    ['interrupted', 'interrupted'],
  );
  assert.equal(s.exec.activeJobs, []);
});

test('squeue failing poll after poll fails the node (its job cancelled), never a hang', async () => {
  const s = setup();
  const { job } = s.job('test:g/m@oci');
  const outcome = s.exec.run(job);
  await until(() => s.slurm.jobs.has('100'));
  s.slurm.squeueDown = true;
  for (let i = 0; i < 10; i++) await s.poll();
  const o = (await outcome) as Extract<Outcome, { ok: false }>;
  assert.equal(o.failure, { type: 'cluster', state: 'UNKNOWN', job: '100', message: 'cannot follow Slurm job 100 (cancelled): squeue failed 10 times in a row: squeue failed: slurm_load_jobs error: Unable to contact slurm controller (connect failure)' });
  await settle();
  assert.equal(s.slurm.commands('scancel'), [['scancel', '100']]);
});

test('sbatch refusing a job fails that node with its message and submits nothing more', async () => {
  const s = setup();
  s.slurm.refuse = 'sbatch: error: Batch job submission failed: Requested node configuration is not available';
  const first = (await s.exec.run(s.job('test:a@oci').job)) as Extract<Outcome, { ok: false }>;
  const second = (await s.exec.run(s.job('test:b@oci').job)) as Extract<Outcome, { ok: false }>;
  const message = `sbatch refused the job: sbatch ${'--parsable'}`;
  assert.is(first.failure.type, 'error');
  assert.ok((first.failure as { message: string }).message.startsWith(message));
  assert.match((first.failure as { message: string }).message, /Requested node configuration is not available$/);
  assert.equal(second.failure, first.failure);
  assert.is(s.slurm.commands('sbatch').length, 1);
});

test('through the scheduler: per-kind limits cap the jobs in the queue; dependents wait for the record', async () => {
  const dir = workspace(wideZoo(3));
  const ws = openWorkspace(dir, fakeRules());
  const cache = new ActionCache(ws.stateDir);
  const store = new ContentStore(path.join(ws.stateDir, 'cas'));
  const plan = planBuild(ws.graph, new Set(ws.graph.order), { root: ws.root, cache, store, digester: new FileDigester(ws.root, undefined), env: {} });
  const slurm = new FakeSlurm();
  const clock = new FakeClock();
  const exec = new SlurmExecutor({ cli: new SlurmCli(slurm.capture), settings: { args: [] }, cache, store, root: dir, stateDir: ws.stateDir, run: 'r2', command: ['graph', 'run-node'], clock, pollMinMs: 1000, pollMaxMs: 1000 });
  let maxBuilds = 0;
  const done = executePlan(plan, { workspace: ws.forRules, jobs: 8, limits: { build: 1 }, resources: { gpu: 1 }, failFast: false, runner: new FakeRunner(), cache, store, stateDir: ws.stateDir, emit: () => {}, executor: exec, clock });
  let finished = false;
  void done.then(() => (finished = true));
  for (;;) {
    await until(() => finished || clock.pending > 0);
    if (finished) break;
    clock.advance(1000);
    await settle();
    const active = [...slurm.jobs.entries()].filter(([, j]) => j.state === 'PENDING');
    maxBuilds = Math.max(maxBuilds, active.filter(([, j]) => j.args.some((a) => a.includes('-build_'))).length);
    // The cluster runs every pending job: what `graph run-node` does (record the result), then COMPLETED.
    for (const [id] of active) {
      const script = slurm.scripts[Number(id) - 100];
      const [, key, node] = /--key ([0-9a-f]{64}) .* -- (\S+)\n/.exec(script) as RegExpExecArray;
      const planned = plan.byId.get(node as NodeId) as PlannedNode;
      // Every dependency's record is in the cache before the job was submitted.
      for (const d of planned.node.deps) assert.ok(cache.get(plan.byId.get(d.id)?.key as string), `${d.id} recorded before ${node} was submitted`);
      await cache.put(node as NodeId, key, planned.recordText, { outputs: { made: node }, artifacts: [], duration_ms: 1 });
      slurm.set(id, 'COMPLETED', 'n1');
    }
  }
  const summary = await done;
  assert.equal(summary.counts, { ran: 9, cached: 0, failed: 0, interrupted: 0, skipped: 0 });
  assert.is(maxBuilds, 1);
  assert.is(slurm.commands('sbatch').length, 9);
  for (const r of summary.results) assert.equal(r.where, { executor: 'slurm', job: r.where?.job, host: 'n1' }, r.id);
});

test.run();
