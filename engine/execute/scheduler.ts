/**
 * Execute stage: the scheduler (ninja's `Builder`). It walks a plan and only walks: the executor
 * runs nodes (local processes, or a cluster), the recorder makes results durable, the reporters
 * print. The loop:
 *
 *   1. start the highest-priority ready node that fits (`--jobs`, the per-kind limits, the named
 *      resource tokens), until nothing more fits;
 *   2. wait for one message: a node ended (its kind's place and its tokens are free), or a
 *      success was recorded (its `--jobs` slot is free: recording is part of the node's run, so
 *      a slot never goes to a lower-priority node while a dependency is being recorded);
 *   3. a recorded success releases its dependents; a failure (the node's own, outputs its rule's
 *      reader rejects, checked before anything is recorded, or a record that could not be
 *      written) skips everything downstream with the reason; repeat.
 *
 * Dependents start only after their dependency's result is recorded, so a node whose record fails
 * never has dependents that ran (nothing downstream of it is tested or published). Priority is the
 * longest remaining chain of estimated durations (earlier runs' durations, else 1 s). On an
 * interrupt (`signal`), running nodes are aborted and nothing new starts; successes already being
 * recorded finish recording, so the next run resumes from there. With `failFast`, nothing new
 * starts after the first failure.
 *
 * Tokens that stand for host devices (`devices`: GPUs) are also handed out by id
 * (engine/execute/devices.ts): a node starts only when distinct devices are free for it, holds
 * them until it ends, and its `node-start` event and result name them. A node the plan found
 * `unavailable` on this host (it claims more GPUs than there are, or its rule set
 * `NodeDef.skip`: a foreign platform without emulation) never starts: it ends `skipped`
 * with the reason, or `failed` when it was required (`--require-gpu`).
 */
import { appendFileSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { ActionCache, CacheEntry } from '../cache/action-cache.js';
import type { EventSink, NodeResult, NodeStatus, RunSummary } from '../events.js';
import { canonicalJson } from '../key/key.js';
import { goneFiles, type Plan, type PlannedNode } from '../plan.js';
import type { ProcessRunner } from '../process.js';
import type { NodeId, NodeOutputs, Rule, RuleWorkspace } from '../rule.js';
import type { ContentStore } from '../cache/store.js';
import { systemClock, type Clock } from './clock.js';
import type { Executor, Job, Outcome, Placement } from './executor.js';
import { describeFailure, type Failure } from './failure.js';
import type { Holder, KeyLeases, Lease } from './lease.js';
import type { Recorder } from './recorder.js';
import { ReadyHeap } from './ready-heap.js';
import { DeviceAllocator, type HeldDevices } from './devices.js';

export interface ExecuteOptions {
  /** What rules may know of the workspace (`ExecContext.workspace`). */
  readonly workspace: RuleWorkspace;
  /** Most nodes running at once. */
  readonly jobs: number;
  /** Per node kind: most running at once. */
  readonly limits: Readonly<Record<string, number>>;
  /** Named tokens and their capacity. */
  readonly resources: Readonly<Record<string, number>>;
  /** Tokens that stand for host devices: every device id per token (`{gpu: ['0', '1']}`). Default: none. */
  readonly devices?: Readonly<Record<string, readonly string[]>>;
  readonly failFast: boolean;
  /** Interrupt (SIGINT/SIGTERM). */
  readonly signal?: AbortSignal;
  /** Starts the rules' processes (for the default local executor). */
  readonly runner: ProcessRunner;
  /** Where results are recorded (by the default recorder), and earlier durations for priorities. */
  readonly cache: ActionCache;
  readonly store: ContentStore;
  /** Absolute `.graph` directory (logs and scratch space go under it). */
  readonly stateDir: string;
  readonly emit: EventSink;
  /** Where nodes run; default: a `LocalExecutor` over `runner`. */
  readonly executor?: Executor;
  /** How results are recorded; default: a `CacheRecorder` into `cache` and `store`. */
  readonly recorder?: Recorder;
  /** Default: the system clock. */
  readonly clock?: Clock;
  /**
   * Leases on action keys shared with other `graph` processes: a node another process is running
   * is waited for, then taken from the action cache, not run twice. Default: none.
   */
  readonly leases?: KeyLeases;
}

/** Estimated duration of a node that never ran, for critical-path ordering (ms). */
const DEFAULT_ESTIMATE_MS = 1000;

/**
 * Results are recorded two at a time. The local recorder's writes are synchronous (two small
 * files); what waits here is the rest: reading back a log an executor did not hand over, and a
 * custom recorder's own work.
 */
const RECORD_CONCURRENCY = 2;

/** The modules that run nodes (see `executePlan`). */
async function loadMachinery() {
  const [{ default: PQueue }, { LocalExecutor }, { CacheRecorder }] = await Promise.all([import('p-queue'), import('./local-executor.js'), import('./recorder.js')]);
  return { PQueue, LocalExecutor, CacheRecorder };
}

/** File name of a node's log: the id with '/' escaped. */
export function logFileName(id: NodeId): string {
  return `${id.replace(/%/g, '%25').replace(/\//g, '%2F')}.log`;
}

/**
 * What `rule.outputs` (the rule's outputs reader) says is wrong with `result`.
 * @returns the reader's message; undefined when the outputs read well or the rule has no reader.
 */
export function outputsProblem(rule: Rule | undefined, id: NodeId, result: NodeOutputs): string | undefined {
  if (!rule?.outputs) return undefined;
  try {
    rule.outputs(id, result);
    return undefined;
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
}

/**
 * Append why a node that ran failed to its log, which may be all that explains it.
 * @param unwritten the log's text when the executor wrote no file (it is written now, with the note).
 */
function noteInLog(log: string, failure: Failure, unwritten?: string): void {
  const note = `\n# failed: ${describeFailure(failure)}\n`;
  try {
    // Synchronous on purpose: nothing is recorded, so the log must say why before the node ends.
    if (unwritten === undefined) appendFileSync(log, note);
    else writeFileSync(log, unwritten + note);
  } catch {
    // the disk is full: the failure is still reported
  }
}

/** What wakes the loop: a node ended, or a success was recorded (or failed to be). */
type Message =
  | { readonly type: 'ended'; readonly job: Job; readonly outcome: Outcome }
  /** Another process ran the node meanwhile and recorded it: its cached entry serves. */
  | { readonly type: 'reused'; readonly job: Job; readonly entry: CacheEntry; readonly by?: Holder }
  /** `logText`: the log's text when the executor wrote no log file (`Outcome.noLogFile`). */
  | { readonly type: 'recorded'; readonly job: Job; readonly result: NodeOutputs; readonly duration_ms: number; readonly error?: unknown; readonly where?: Placement; readonly logText?: string };

/**
 * Run the plan's nodes that are not cached.
 * @returns the summary (every selected node has exactly one result); never throws for a node's
 *   failure, only for a broken state directory (the logs directory cannot be made).
 */
export async function executePlan(plan: Plan, options: ExecuteOptions): Promise<RunSummary> {
  const clock = options.clock ?? systemClock;
  const started = clock.now();
  const results = new Map<NodeId, NodeResult>();
  // Devices each node held, for its result (kept after they are given back).
  const held = new Map<NodeId, HeldDevices>();
  const finish = (r: NodeResult) => {
    const devices = held.get(r.id);
    const result = devices ? { ...r, devices } : r;
    results.set(r.id, result);
    options.emit({ type: 'node-finish', result });
  };
  const toRun = plan.nodes.filter((p) => p.status === 'run');
  // What running nodes takes (the local executor, the recorder, p-queue) loads only when a node
  // runs: a no-op build needs none of it.
  const machinery = toRun.length ? await loadMachinery() : undefined;
  const executor = options.executor ?? (machinery ? new machinery.LocalExecutor({ workspace: options.workspace, rules: plan.graph.rules, runner: options.runner, store: options.store, stateDir: options.stateDir, clock }) : undefined);
  const recorder = options.recorder ?? (machinery ? new machinery.CacheRecorder(options.cache, options.store) : undefined);
  options.emit({ type: 'run-start', total: plan.nodes.length, toRun: toRun.length, cached: plan.nodes.length - toRun.length, jobs: options.jobs });

  const outputs = new Map<NodeId, NodeOutputs>();

  // Critical path: a node's priority is its estimated duration plus its costliest dependent's.
  const runSet = new Set(toRun.map((p) => p.node.id));
  const priority = new Map<NodeId, number>();
  for (let i = toRun.length - 1; i >= 0; i--) {
    const p = toRun[i];
    let downstream = 0;
    for (const d of plan.graph.dependents(p.node.id)) if (runSet.has(d)) downstream = Math.max(downstream, priority.get(d) ?? 0);
    const last = options.cache.last(p.node.id);
    priority.set(p.node.id, (last ? Math.max(1, last.result.duration_ms) : DEFAULT_ESTIMATE_MS) + downstream);
  }

  // Ready nodes wait in one heap per (kind, resources): a heap's top that does not fit stands for
  // every node behind it, so finding the next node to start looks at a handful of tops.
  const waiting = new Map<NodeId, number>();
  const heaps = new Map<string, ReadyHeap>();
  // Ready nodes this host cannot run: they end at once, without a slot.
  const unavailable: PlannedNode[] = [];
  const makeReady = (p: PlannedNode) => {
    if (p.unavailable) {
      unavailable.push(p);
      return;
    }
    const k = `${p.node.kind}\0${canonicalJson(p.node.resources)}`;
    let h = heaps.get(k);
    if (!h) heaps.set(k, (h = new ReadyHeap()));
    h.push(p.node.id, priority.get(p.node.id) as number);
  };
  for (const p of toRun) {
    const n = p.node.deps.filter((d) => runSet.has(d.id)).length;
    waiting.set(p.node.id, n);
    if (n === 0) makeReady(p);
  }

  mkdirSync(path.join(options.stateDir, 'logs'), { recursive: true });
  const running = new Map<NodeId, AbortController>();
  const kindRunning = new Map<string, number>();
  const tokensFree = new Map(Object.entries(options.resources));
  const allocator = new DeviceAllocator(options.devices);
  let recording = 0;
  let stop: Failure | undefined;
  let interrupted = false;
  const recordings = machinery ? new machinery.PQueue({ concurrency: RECORD_CONCURRENCY }) : undefined;

  // The mailbox: executors and the recorder post, the loop takes.
  const mailbox: Message[] = [];
  let wake: (() => void) | undefined;
  const post = (m: Message) => {
    mailbox.push(m);
    wake?.();
  };

  const onInterrupt = () => {
    interrupted = true;
    stop = { type: 'not-started', why: 'interrupted' };
    for (const c of running.values()) c.abort(new Error('interrupted'));
    wake?.();
  };
  if (options.signal?.aborted) onInterrupt();
  else options.signal?.addEventListener('abort', onInterrupt, { once: true });

  const fits = (p: PlannedNode): boolean => {
    const limit = options.limits[p.node.kind];
    if (limit !== undefined && (kindRunning.get(p.node.kind) ?? 0) >= limit) return false;
    for (const [token, amount] of Object.entries(p.node.resources)) if ((tokensFree.get(token) ?? 0) < amount) return false;
    return allocator.fits(p.node.resources);
  };

  const start = (p: PlannedNode) => {
    const { node } = p;
    const controller = new AbortController();
    running.set(node.id, controller);
    kindRunning.set(node.kind, (kindRunning.get(node.kind) ?? 0) + 1);
    for (const [token, amount] of Object.entries(node.resources)) tokensFree.set(token, (tokensFree.get(token) ?? 0) - amount);
    const devices = allocator.take(node.resources) as HeldDevices;
    const holds = Object.keys(devices).length > 0;
    if (holds) held.set(node.id, devices);
    const deps = new Map<NodeId, NodeOutputs>();
    for (const d of node.deps) deps.set(d.id, outputs.get(d.id) as NodeOutputs);
    const job: Job = { planned: p, deps, log: path.join(options.stateDir, 'logs', logFileName(node.id)), signal: controller.signal, ...(holds ? { devices } : {}) };
    options.emit({ type: 'node-start', id: node.id, kind: node.kind, log: job.log, ...(holds ? { devices } : {}) });
    runLeased(job).then(
      (m) => post(m),
      (e) => post({ type: 'ended', job, outcome: { ok: false, failure: { type: 'error', message: `executor failed: ${(e as Error).message}` }, duration_ms: 0 } }),
    );
  };

  // With leases: take the key's lease first; if another process held it, its result may be in the
  // action cache by now. The lease is released once the node's result is recorded or it failed.
  const leases = new Map<NodeId, Lease>();
  const runLeased = async (job: Job): Promise<Message> => {
    const { node, key } = job.planned;
    if (options.leases) {
      const t0 = clock.now();
      let got: Awaited<ReturnType<KeyLeases['acquire']>> | undefined;
      try {
        got = await options.leases.acquire(key, job.signal, (by) => options.emit({ type: 'node-waiting', id: node.id, pid: by.pid, host: by.host }));
      } catch {
        if (job.signal.aborted) return { type: 'ended', job, outcome: { ok: false, failure: { type: 'interrupted' }, duration_ms: clock.now() - t0 } };
        // An unwritable lease directory costs only the sharing: the node runs.
      }
      if (got) {
        leases.set(node.id, got.lease);
        // Whoever held the lease (now, or since this run planned) may have recorded the result:
        // usable if its artifacts are intact and its visible files are here (in this workspace).
        const entry = options.cache.get(key);
        if (entry && entry.result.artifacts.every((a) => options.store.has(a)) && goneFiles(options.workspace.root, entry.result).length === 0) {
          return { type: 'reused', job, entry, by: got.waitedFor };
        }
      }
    }
    return { type: 'ended', job, outcome: await (executor as Executor).run(job) };
  };
  const releasing: Array<Promise<void>> = [];
  const releaseLease = (id: NodeId) => {
    const lease = leases.get(id);
    if (!lease) return;
    leases.delete(id);
    releasing.push(lease.release());
  };

  const fail = (p: PlannedNode, status: NodeStatus, failure: Failure, duration_ms: number, log?: string, where?: Placement) => {
    const { node } = p;
    finish({ id: node.id, kind: node.kind, status, duration_ms, reasons: [describeFailure(failure)], failure, ...(log ? { log } : {}), ...(where ? { where } : {}) });
    // Everything downstream is skipped, naming this node and why it failed.
    const skipped: Failure = { type: 'dependency', dependency: node.id, cause: failure };
    const stack = [...plan.graph.dependents(node.id)];
    while (stack.length) {
      const d = stack.pop() as NodeId;
      if (!runSet.has(d) || results.has(d) || running.has(d)) continue;
      const dp = plan.byId.get(d) as PlannedNode;
      finish({ id: d, kind: dp.node.kind, status: 'skipped', duration_ms: 0, reasons: [describeFailure(skipped)], failure: skipped });
      stack.push(...plan.graph.dependents(d));
    }
    if (status === 'failed' && options.failFast && stop === undefined) stop = { type: 'not-started', why: 'fail-fast', after: node.id };
  };

  const release = (job: Job, result: NodeResult, out: NodeOutputs) => {
    outputs.set(job.planned.node.id, out);
    finish(result);
    for (const d of plan.graph.dependents(job.planned.node.id)) {
      if (!runSet.has(d)) continue;
      const left = (waiting.get(d) as number) - 1;
      waiting.set(d, left);
      if (left === 0 && !results.has(d)) makeReady(plan.byId.get(d) as PlannedNode);
    }
  };

  const handle = (m: Message) => {
    const { node } = m.job.planned;
    if (m.type === 'ended' || m.type === 'reused') {
      running.delete(node.id);
      kindRunning.set(node.kind, (kindRunning.get(node.kind) ?? 1) - 1);
      for (const [token, amount] of Object.entries(node.resources)) tokensFree.set(token, (tokensFree.get(token) ?? 0) + amount);
      if (m.job.devices) allocator.give(m.job.devices);
    }
    if (m.type === 'reused') {
      releaseLease(node.id);
      const { outputs: out, artifacts } = m.entry.result;
      const reason = `done meanwhile by another graph process${m.by ? ` (pid ${m.by.pid} on ${m.by.host})` : ''}`;
      release(m.job, { id: node.id, kind: node.kind, status: 'cached', duration_ms: 0, reasons: [reason], outputs: out }, { outputs: out, artifacts });
      return;
    }
    if (m.type === 'ended') {
      const { outcome } = m;
      if (!outcome.ok) {
        releaseLease(node.id);
        fail(m.job.planned, outcome.failure.type === 'interrupted' ? 'interrupted' : 'failed', outcome.failure, outcome.duration_ms, m.job.log, outcome.where);
        return;
      }
      const { result, duration_ms, log, where } = outcome;
      const logText = outcome.noLogFile ? (log ?? '') : undefined;
      // What the rule's dependents and the cache will read is checked before it is recorded: a
      // malformed output fails here, with its field named, and leaves no record behind.
      const malformed = outputsProblem(plan.graph.rules.get(node.kind), node.id, result);
      if (malformed !== undefined) {
        releaseLease(node.id);
        const failure: Failure = { type: 'outputs', message: malformed };
        noteInLog(m.job.log, failure, logText);
        fail(m.job.planned, 'failed', failure, duration_ms, m.job.log, where);
        return;
      }
      options.emit({ type: 'node-executed', id: node.id, duration_ms: outcome.duration_ms });
      recording++;
      void (recordings as NonNullable<typeof recordings>).add(() =>
        (recorder as Recorder).record(m.job, result, duration_ms, log).then(
          () => post({ type: 'recorded', job: m.job, result, duration_ms, where, logText }),
          (error: unknown) => post({ type: 'recorded', job: m.job, result, duration_ms, where, logText, error: error ?? new Error('unknown error') }),
        ),
      );
      return;
    }
    recording--;
    releaseLease(node.id);
    if (m.error !== undefined) {
      const failure: Failure = { type: 'record', message: m.error instanceof Error ? m.error.message : String(m.error) };
      noteInLog(m.job.log, failure, m.logText);
      fail(m.job.planned, 'failed', failure, m.duration_ms, m.job.log, m.where);
      return;
    }
    // A log that said nothing beyond its header has no file: the result names none.
    const logFile = m.logText === undefined ? { log: m.job.log } : {};
    release(m.job, { id: node.id, kind: node.kind, status: 'ran', duration_ms: m.duration_ms, reasons: m.job.planned.reasons, outputs: m.result.outputs, ...logFile, ...(m.where ? { where: m.where } : {}) }, m.result);
  };

  // Cached nodes are done; those whose visible files are gone get them back from the store first
  // (in order: a restore is a link or a small write). One that cannot be restored fails, and what
  // would run after it is skipped.
  for (const p of plan.nodes) {
    if (p.status !== 'cached' || !p.cached) continue;
    const result: NodeOutputs = { outputs: p.cached.result.outputs, artifacts: p.cached.result.artifacts, ...(p.cached.result.files ? { files: p.cached.result.files } : {}) };
    if (p.restore) {
      try {
        await plan.graph.rules.get(p.node.kind)?.restore?.(p.node, result, { workspace: options.workspace, store: options.store, outDir: path.join(options.stateDir, 'out') });
      } catch (e) {
        fail(p, 'failed', { type: 'error', message: `could not restore ${p.restore.join(', ')}: ${(e as Error).message}` }, 0);
        continue;
      }
    }
    outputs.set(p.node.id, result);
    finish({ id: p.node.id, kind: p.node.kind, status: 'cached', duration_ms: 0, reasons: p.reasons, outputs: p.cached.result.outputs });
  }

  for (;;) {
    while (mailbox.length) handle(mailbox.shift() as Message);
    for (let p = unavailable.shift(); p; p = unavailable.shift()) {
      if (results.has(p.node.id) || !p.unavailable) continue;
      const { reason, required } = p.unavailable;
      fail(p, required ? 'failed' : 'skipped', { type: 'unavailable', message: reason, required }, 0);
    }
    if (stop === undefined) {
      // Start the highest-priority ready node that fits, until nothing more fits.
      // A success holds its slot until it is recorded: its dependents may be the next to start.
      while (running.size + recording < options.jobs) {
        let best: { heap: ReadyHeap; id: NodeId; priority: number } | undefined;
        for (const heap of heaps.values()) {
          const top = heap.peek();
          if (!top || !fits(plan.byId.get(top.id) as PlannedNode)) continue;
          if (!best || top.priority > best.priority || (top.priority === best.priority && top.id < best.id)) best = { heap, ...top };
        }
        if (!best) break;
        best.heap.pop();
        // Skipped while it waited in the heap (a cached dependency could not be restored).
        if (results.has(best.id)) continue;
        start(plan.byId.get(best.id) as PlannedNode);
      }
    }
    if (running.size === 0 && recording === 0 && mailbox.length === 0) break;
    if (mailbox.length === 0) await new Promise<void>((resolve) => (wake = resolve));
    wake = undefined;
  }
  options.signal?.removeEventListener('abort', onInterrupt);
  await Promise.all([...releasing, recorder?.flush?.()]);
  await options.leases?.leave();

  // Whatever never started: stopped by --fail-fast or an interrupt.
  const notStarted: Failure = stop ?? { type: 'not-started', why: 'interrupted' };
  for (const p of toRun) {
    if (results.has(p.node.id)) continue;
    finish({ id: p.node.id, kind: p.node.kind, status: 'skipped', duration_ms: 0, reasons: [describeFailure(notStarted)], failure: notStarted });
  }

  const ordered = plan.nodes.map((p) => results.get(p.node.id) as NodeResult);
  const counts: Record<NodeStatus, number> = { ran: 0, cached: 0, failed: 0, interrupted: 0, skipped: 0 };
  for (const r of ordered) counts[r.status]++;
  const summary: RunSummary = { results: ordered, counts, duration_ms: clock.now() - started, interrupted };
  options.emit({ type: 'run-finish', summary });
  return summary;
}
