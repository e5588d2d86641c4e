/**
 * Execute stage: the scheduler. It walks a plan, starting ready nodes in critical-path order
 * (longest remaining chain of estimated durations first) while respecting `--jobs`, the per-kind
 * limits and the named resource tokens. It only walks: hashing is the planner's, records are the
 * cache's, processes are the runner's, printing is the reporters'.
 *
 * The loop: start every node that fits, wait for one to finish, record it, release its
 * dependents, repeat. A failed node's dependents are skipped with the reason; with `failFast` no
 * new node starts after the first failure. When `signal` aborts (SIGINT/SIGTERM), running nodes
 * are aborted (their process groups ended) and nothing new starts; only finished successes were
 * recorded, so the next run resumes from there.
 */
import { appendFileSync, mkdirSync, rmSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import PQueue from 'p-queue';
import type { ActionCache } from './cache.js';
import type { Declarations } from './declarations.js';
import type { EventSink, NodeResult, NodeStatus, RunSummary } from './events.js';
import { canonicalJson } from './key.js';
import type { Plan, PlannedNode } from './plan.js';
import type { ProcessRunner } from './process.js';
import type { ExecContext, NodeId, NodeOutputs } from './rule.js';
import type { ContentStore } from './store.js';

export interface ExecuteOptions {
  readonly decls: Declarations;
  /** Most nodes running at once. */
  readonly jobs: number;
  /** Per node kind: most running at once. */
  readonly limits: Readonly<Record<string, number>>;
  /** Named tokens and their capacity. */
  readonly resources: Readonly<Record<string, number>>;
  readonly failFast: boolean;
  /** Interrupt (SIGINT/SIGTERM). */
  readonly signal?: AbortSignal;
  readonly runner: ProcessRunner;
  readonly cache: ActionCache;
  readonly store: ContentStore;
  /** Absolute `.graph` directory (logs and scratch space go under it). */
  readonly stateDir: string;
  readonly emit: EventSink;
  /** Milliseconds clock (injectable for tests). */
  readonly now?: () => number;
}

/** Estimated duration of a node that never ran, for critical-path ordering (ms). */
const DEFAULT_ESTIMATE_MS = 1000;

/** A binary max-heap of ready nodes by priority, ties broken by id for determinism. */
class ReadyHeap {
  private items: Array<{ id: NodeId; priority: number }> = [];
  get size(): number {
    return this.items.length;
  }
  private before(a: { id: NodeId; priority: number }, b: { id: NodeId; priority: number }): boolean {
    return a.priority > b.priority || (a.priority === b.priority && a.id < b.id);
  }
  push(id: NodeId, priority: number): void {
    const items = this.items;
    items.push({ id, priority });
    let i = items.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.before(items[i], items[p])) break;
      [items[i], items[p]] = [items[p], items[i]];
      i = p;
    }
  }
  peek(): { id: NodeId; priority: number } | undefined {
    return this.items[0];
  }
  pop(): NodeId | undefined {
    const items = this.items;
    if (!items.length) return undefined;
    const top = items[0];
    const last = items.pop() as { id: NodeId; priority: number };
    if (items.length) {
      items[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < items.length && this.before(items[l], items[m])) m = l;
        if (r < items.length && this.before(items[r], items[m])) m = r;
        if (m === i) break;
        [items[i], items[m]] = [items[m], items[i]];
        i = m;
      }
    }
    return top.id;
  }
  drain(): NodeId[] {
    const ids = this.items.map((x) => x.id);
    this.items = [];
    return ids;
  }
}

/** File name of a node's log: the id with '/' escaped. */
export function logFileName(id: NodeId): string {
  return `${id.replace(/%/g, '%25').replace(/\//g, '%2F')}.log`;
}

/**
 * Run the plan's nodes that are not cached.
 * @returns the summary (every selected node has exactly one result); never throws for a node's
 *   failure, only for a broken state directory.
 */
export async function executePlan(plan: Plan, options: ExecuteOptions): Promise<RunSummary> {
  const now = options.now ?? Date.now;
  const started = now();
  const results = new Map<NodeId, NodeResult>();
  const finish = (r: NodeResult) => {
    results.set(r.id, r);
    options.emit({ type: 'node-finish', result: r });
  };
  const toRun = plan.nodes.filter((p) => p.status === 'run');
  options.emit({ type: 'run-start', total: plan.nodes.length, toRun: toRun.length, cached: plan.nodes.length - toRun.length, jobs: options.jobs });

  const outputs = new Map<NodeId, NodeOutputs>();
  for (const p of plan.nodes) {
    if (p.status !== 'cached' || !p.cached) continue;
    outputs.set(p.node.id, { outputs: p.cached.result.outputs, artifacts: p.cached.result.artifacts });
    finish({ id: p.node.id, kind: p.node.kind, status: 'cached', duration_ms: 0, reasons: [], outputs: p.cached.result.outputs });
  }

  // Critical path: a node's priority is its estimated duration plus its costliest dependent's.
  const runSet = new Set(toRun.map((p) => p.node.id));
  const priority = new Map<NodeId, number>();
  for (let i = toRun.length - 1; i >= 0; i--) {
    const p = toRun[i];
    let downstream = 0;
    for (const d of plan.graph.dependents(p.node.id)) if (runSet.has(d)) downstream = Math.max(downstream, priority.get(d) ?? 0);
    priority.set(p.node.id, estimateMs(p, options.cache) + downstream);
  }

  const waiting = new Map<NodeId, number>();
  const heaps = new Map<string, ReadyHeap>();
  const heapKey = (p: PlannedNode) => `${p.node.kind}\0${canonicalJson(p.node.resources)}`;
  const makeReady = (p: PlannedNode) => {
    const k = heapKey(p);
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
  let stopReason: string | undefined;
  let interrupted = false;
  let wake: (() => void) | undefined;
  const completions: Array<() => void> = [];
  // Results are recorded in the background, two at a time: libuv's four threads then always have
  // room for the next node's start (its log file), which otherwise queues behind the records.
  const recordings = new PQueue({ concurrency: 2 });

  const skipDownstream = (id: NodeId, reason: string) => {
    const stack = [...plan.graph.dependents(id)];
    while (stack.length) {
      const d = stack.pop() as NodeId;
      if (!runSet.has(d) || results.has(d) || running.has(d)) continue;
      const p = plan.byId.get(d) as PlannedNode;
      finish({ id: d, kind: p.node.kind, status: 'skipped', duration_ms: 0, reasons: [reason] });
      stack.push(...plan.graph.dependents(d));
    }
  };

  const onInterrupt = () => {
    interrupted = true;
    stopReason = 'interrupted';
    for (const c of running.values()) c.abort(new Error('interrupted'));
    wake?.();
  };
  if (options.signal?.aborted) onInterrupt();
  else options.signal?.addEventListener('abort', onInterrupt, { once: true });

  const fits = (p: PlannedNode): boolean => {
    const limit = options.limits[p.node.kind];
    if (limit !== undefined && (kindRunning.get(p.node.kind) ?? 0) >= limit) return false;
    for (const [token, amount] of Object.entries(p.node.resources)) if ((tokensFree.get(token) ?? 0) < amount) return false;
    return true;
  };

  const start = (p: PlannedNode) => {
    const { node } = p;
    const controller = new AbortController();
    running.set(node.id, controller);
    kindRunning.set(node.kind, (kindRunning.get(node.kind) ?? 0) + 1);
    for (const [token, amount] of Object.entries(node.resources)) tokensFree.set(token, (tokensFree.get(token) ?? 0) - amount);
    void runNode(p, controller).then((r) => {
      running.delete(node.id);
      kindRunning.set(node.kind, (kindRunning.get(node.kind) ?? 1) - 1);
      for (const [token, amount] of Object.entries(node.resources)) tokensFree.set(token, (tokensFree.get(token) ?? 0) + amount);
      completions.push(() => {
        finish(r);
        if (r.status === 'ran') {
          for (const d of plan.graph.dependents(node.id)) {
            if (!runSet.has(d)) continue;
            const left = (waiting.get(d) as number) - 1;
            waiting.set(d, left);
            if (left === 0 && !results.has(d)) makeReady(plan.byId.get(d) as PlannedNode);
          }
        } else {
          skipDownstream(node.id, `dependency ${node.id} failed`);
          if (options.failFast && stopReason === undefined) stopReason = `not started: --fail-fast after ${node.id} failed`;
        }
      });
      wake?.();
    });
  };

  const runNode = async (p: PlannedNode, controller: AbortController): Promise<NodeResult> => {
    const { node } = p;
    const rule = plan.graph.rules.get(node.kind);
    const logPath = path.join(options.stateDir, 'logs', logFileName(node.id));
    // Files are created on libuv's thread pool: creating one costs ≈0.5 ms here, and the event
    // loop must stay free to start other nodes.
    await writeFile(logPath, `# ${node.id}\n# key ${p.key}\n# why: ${p.reasons.join('; ')}\n`);
    let tmpDir: string | undefined;
    options.emit({ type: 'node-start', id: node.id, kind: node.kind, log: logPath });
    const t0 = now();
    const signals = [controller.signal];
    if (node.timeoutMs !== undefined) signals.push(AbortSignal.timeout(node.timeoutMs));
    const signal = AbortSignal.any(signals);
    const deps = new Map<NodeId, NodeOutputs>();
    for (const d of node.deps) deps.set(d.id, outputs.get(d.id) as NodeOutputs);
    const ctx: ExecContext = {
      decls: options.decls,
      signal,
      log: { path: logPath, write: (text) => appendFileSync(logPath, text) },
      runner: options.runner,
      store: options.store,
      outDir: path.join(options.stateDir, 'out'),
      cacheDir: path.join(options.stateDir, 'cache'),
      keys: { node: p.key, deps: p.record.deps },
      deps,
      scratchDir: () => {
        if (!tmpDir) {
          tmpDir = path.join(options.stateDir, 'tmp', `${process.pid}-${randomBytes(6).toString('hex')}`);
          mkdirSync(tmpDir, { recursive: true });
        }
        return tmpDir;
      },
    };
    try {
      if (!rule) throw new Error(`no rule for node kind '${node.kind}'`);
      const out = await rule.execute(node, ctx);
      if (signal.aborted) throw signal.reason;
      const duration_ms = now() - t0;
      outputs.set(node.id, out);
      // Recorded in the background: the slot and the dependents are free now (they need only the
      // outputs, in memory), and the run waits for every record before it returns.
      void recordings.add(async () => {
        try {
          const log = (await options.store.putBytesAsync(await readFile(logPath))).digest;
          await options.cache.put(node.id, p.key, p.recordText, { outputs: out.outputs, artifacts: out.artifacts, log, duration_ms });
        } catch (e) {
          const why = `ran, but its result could not be recorded in the action cache: ${(e as Error).message}`;
          appendFileSync(logPath, `\n# failed: ${why}\n`);
          results.set(node.id, { id: node.id, kind: node.kind, status: 'failed', duration_ms, reasons: [why], log: logPath });
        }
      });
      return { id: node.id, kind: node.kind, status: 'ran', duration_ms, reasons: p.reasons, outputs: out.outputs, log: logPath };
    } catch (e) {
      const duration_ms = now() - t0;
      let why: string;
      if (controller.signal.aborted) why = 'interrupted';
      else if (signal.aborted) why = `timed out after ${formatMs(node.timeoutMs ?? 0)}`;
      else why = e instanceof Error ? e.message : String(e);
      appendFileSync(logPath, `\n# failed: ${why}\n`);
      return { id: node.id, kind: node.kind, status: 'failed', duration_ms, reasons: [why], log: logPath };
    } finally {
      if (tmpDir) rmSync(tmpDir, { recursive: true, force: true });
    }
  };

  for (;;) {
    while (completions.length) (completions.shift() as () => void)();
    if (stopReason === undefined) {
      // Start the highest-priority ready node that fits, until nothing more fits.
      while (running.size < options.jobs) {
        let best: { heap: ReadyHeap; id: NodeId; priority: number } | undefined;
        for (const heap of heaps.values()) {
          const top = heap.peek();
          if (!top || !fits(plan.byId.get(top.id) as PlannedNode)) continue;
          if (!best || top.priority > best.priority || (top.priority === best.priority && top.id < best.id)) best = { heap, ...top };
        }
        if (!best) break;
        best.heap.pop();
        start(plan.byId.get(best.id) as PlannedNode);
      }
    }
    if (running.size === 0 && completions.length === 0) break;
    if (completions.length === 0) await new Promise<void>((resolve) => (wake = resolve));
    wake = undefined;
  }
  options.signal?.removeEventListener('abort', onInterrupt);
  await recordings.onIdle();

  // Whatever never started: stopped by --fail-fast or an interrupt.
  for (const heap of heaps.values()) for (const id of heap.drain()) if (!results.has(id)) skipWith(id);
  for (const p of toRun) if (!results.has(p.node.id)) skipWith(p.node.id);
  function skipWith(id: NodeId) {
    const p = plan.byId.get(id) as PlannedNode;
    finish({ id, kind: p.node.kind, status: 'skipped', duration_ms: 0, reasons: [stopReason ?? 'not started'] });
  }

  const ordered = plan.nodes.map((p) => results.get(p.node.id) as NodeResult);
  const counts: Record<NodeStatus, number> = { ran: 0, cached: 0, failed: 0, skipped: 0 };
  for (const r of ordered) counts[r.status]++;
  const summary: RunSummary = { results: ordered, counts, duration_ms: now() - started, interrupted };
  options.emit({ type: 'run-finish', summary });
  return summary;
}

function estimateMs(p: PlannedNode, cache: ActionCache): number {
  const last = cache.last(p.node.id);
  return last ? Math.max(1, last.result.duration_ms) : DEFAULT_ESTIMATE_MS;
}

/** `1h2m`, `10m`, `1.5s`, `250ms`. */
export function formatMs(ms: number): string {
  if (ms < 1000) return `${ms}ms`;
  if (ms < 60_000) return `${+(ms / 1000).toFixed(1)}s`;
  const h = Math.floor(ms / 3_600_000);
  const m = Math.floor((ms % 3_600_000) / 60_000);
  const s = Math.round((ms % 60_000) / 1000);
  return `${h ? `${h}h` : ''}${m ? `${m}m` : ''}${s ? `${s}s` : ''}`;
}
