/**
 * Scheduling benchmark: how close the scheduler's makespan comes to the lower bound
 * max(critical path, total work ÷ jobs) on a DAG of sleep nodes.
 *
 * The DAG is a synthetic zoo (bench/zoo.ts: 8 base images, 16 images built FROM them, half of
 * them converted, publishes, 200 models' tests; work ≈ 12 × the critical path, so the bound is
 * the work at --jobs 2 and 8 and the critical path at 32) whose every node sleeps for a fixed, known
 * duration (by kind, varied by a hash of the node id) instead of working. Many roots, so that the
 * bound can be reached: with Kipoi's single base image, every slot but one idles while the base
 * builds, which no scheduler can avoid and the bound ignores. The critical path and the total work
 * are computed from those durations; the makespan is the wall time of `executePlan` at --jobs 2, 8
 * and 32, with no per-kind limits (they would raise the bound). One warm-up run records every
 * node's duration, so the scheduler's critical-path order is the steady state of a team's runs;
 * each measured run re-runs every node (a per-run value in every node's key). Medians of RUNS.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ActionCache } from '../engine/cache/action-cache.js';
import { executePlan } from '../engine/execute/scheduler.js';
import { FileDigester } from '../engine/key/files.js';
import { planBuild } from '../engine/plan.js';
import type { ProcessRunner } from '../engine/process.js';
import type { NodeDef, Rule } from '../engine/rule.js';
import { ContentStore } from '../engine/cache/store.js';
import { openWorkspace } from '../engine/workspace.js';
import { defaultRules } from '../rules/index.js';
import { emitRows, median, ms } from './rows.js';
import { writeZoo } from './zoo.js';

/** Milliseconds a node sleeps: by kind, spread over ±50% by a hash of its id. */
export function sleepMs(node: Pick<NodeDef, 'id' | 'kind' | 'deps'>): number {
  const base = node.kind === 'build' ? (node.deps.length ? 300 : 500) : node.kind === 'convert' ? 200 : node.kind === 'publish' ? 40 : 30;
  const spread = createHash('sha256').update(node.id).digest().readUInt16LE(0) / 0xffff; // 0..1
  return Math.round(base * (0.5 + spread));
}

/** Rules whose actions only sleep `sleepMs(node)`, and whose keys carry BENCH_RUN (so each run re-runs). */
const sleepRules: Rule[] = defaultRules.map(({ outputs: _reader, ...r }) => ({
  ...r,
  expand: (decls) => r.expand(decls).map((n) => ({ ...n, env: [...n.env, 'BENCH_RUN'] })),
  async execute(node, ctx) {
    const ms = sleepMs(node);
    await sleep(ms, undefined, { signal: ctx.signal });
    return { outputs: { slept_ms: ms }, artifacts: [] };
  },
}));

export interface ScheduleRow {
  readonly jobs: number;
  readonly nodes: number;
  /** Sum of every node's sleep, ms. */
  readonly workMs: number;
  /** Longest dependency chain of sleeps, ms. */
  readonly criticalPathMs: number;
  /** max(critical path, work ÷ jobs), ms. */
  readonly lowerBoundMs: number;
  /** Median wall time of the execution, ms. */
  readonly makespanMs: number;
}

/** Run the benchmark on a zoo of `models` models; one row per `jobs` value. */
export async function scheduleBench(opts: { runs: number; jobs: readonly number[]; models?: number; log?: (line: string) => void }): Promise<ScheduleRow[]> {
  const dir = mkdtempSync(path.join(tmpdir(), 'graph-bench-schedule-'));
  try {
    writeZoo(dir, { models: opts.models ?? 200, images: 16, groups: 16, bases: 8 });
    const ws = openWorkspace(dir, sleepRules);
    const graph = ws.graph;
    // Work and critical path (longest chain ending at each node, in topological order).
    let workMs = 0;
    let criticalPathMs = 0;
    const finish = new Map<string, number>();
    for (const id of graph.order) {
      const n = graph.node(id);
      const d = sleepMs(n);
      workMs += d;
      const f = d + Math.max(0, ...n.deps.map((dep) => finish.get(dep.id) ?? 0));
      finish.set(id, f);
      criticalPathMs = Math.max(criticalPathMs, f);
    }
    const cache = new ActionCache(ws.stateDir);
    const store = new ContentStore(path.join(ws.stateDir, 'cas'));
    const runner: ProcessRunner = { run: async () => ({ exitCode: 0, aborted: false }) };
    let run = 0;
    const once = async (jobs: number) => {
      run++;
      const digester = new FileDigester(ws.root, path.join(ws.stateDir, 'stat-memo.json'));
      const plan = planBuild(graph, new Set(graph.order), { root: ws.root, cache, store, digester, env: { BENCH_RUN: String(run) } });
      digester.save();
      const t0 = performance.now();
      const summary = await executePlan(plan, { workspace: ws.forRules, jobs, limits: {}, resources: {}, failFast: true, runner, cache, store, stateDir: ws.stateDir, emit: () => {} });
      const ms = performance.now() - t0;
      if (summary.counts.ran !== graph.size) throw new Error(`expected ${graph.size} nodes to run, ${summary.counts.ran} ran`);
      return ms;
    };
    await once(8); // warm-up: records every node's duration for the critical-path order
    const rows: ScheduleRow[] = [];
    for (const jobs of opts.jobs) {
      const times: number[] = [];
      for (let i = 0; i < opts.runs; i++) times.push(await once(jobs));
      const lowerBoundMs = Math.max(criticalPathMs, workMs / jobs);
      const row = { jobs, nodes: graph.size, workMs, criticalPathMs, lowerBoundMs, makespanMs: median(times) };
      opts.log?.(`scheduling --jobs ${jobs}: makespan ${row.makespanMs.toFixed(0)} ms, bound ${lowerBoundMs.toFixed(0)} ms, ratio ${(row.makespanMs / lowerBoundMs).toFixed(3)}`);
      rows.push(row);
    }
    return rows;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const rows = await scheduleBench({ runs: Number(process.env.BENCH_RUNS ?? 5), jobs: [2, 8, 32], log: (l) => process.stderr.write(`${l}\n`) });
  emitRows(
    rows.map((r) => ({
      section: 'scheduling',
      case: `${r.nodes} sleep nodes, --jobs ${r.jobs} (work ${ms(r.workMs)}, critical path ${ms(r.criticalPathMs)})`,
      graph: `makespan ${ms(r.makespanMs)}`,
      reference: `lower bound ${ms(r.lowerBoundMs)}`,
      ratio: r.makespanMs / r.lowerBoundMs,
      target: '≤ 1.05',
      met: r.makespanMs / r.lowerBoundMs <= 1.05,
    })),
  );
}
