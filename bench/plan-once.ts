/**
 * `node out/bench/plan-once.js DIR NODES`: write a synthetic zoo of about NODES nodes into DIR and
 * fill its action cache by running every node with a fake rule (a success that stores one blob),
 * through the scheduler as `graph build` runs it (leases included), so `graph build` in DIR
 * afterwards is a no-op; prints the node count. `--fill DIR` fills the
 * cache of a zoo already written there and prints `{nodes, executeMs}` (bench/run.ts).
 */
import path from 'node:path';
import { ActionCache, type RemoteCache } from '../engine/cache/action-cache.js';
import { systemClock } from '../engine/execute/clock.js';
import { KeyLeases } from '../engine/execute/lease.js';
import { executePlan } from '../engine/execute/scheduler.js';
import { CacheRecorder } from '../engine/execute/recorder.js';
import { FileDigester } from '../engine/key/files.js';
import { planBuild } from '../engine/plan.js';
import type { ProcessRunner } from '../engine/process.js';
import type { Rule } from '../engine/rule.js';
import { ContentStore } from '../engine/cache/store.js';
import { resolveTools } from '../engine/key/tools.js';
import { openWorkspace } from '../engine/workspace.js';
import { defaultRules } from '../rules/index.js';
import { modelsForNodes, writeZoo } from './zoo.js';

/** Rules that succeed at once, for filling a cache (without outputs readers: their outputs are a digest only). */
export const instantRules: Rule[] = defaultRules.map(({ outputs: _reader, ...r }) => ({
  ...r,
  async execute(node, ctx) {
    const blob = await ctx.store.putBytesAsync(node.id);
    return { outputs: { digest: blob.digest }, artifacts: [blob.digest] };
  },
}));

/**
 * Rules whose nodes do nothing and produce nothing (no blob, no artifact): what is left of a
 * node's run is the engine's own work (scheduling, the log, the record): bench/run.ts's second
 * engine row.
 */
export const bareRules: Rule[] = defaultRules.map(({ outputs: _reader, ...r }) => ({
  ...r,
  async execute() {
    return { outputs: {}, artifacts: [] };
  },
}));

/**
 * Run every node of the zoo in `dir` with `rules`, recording into its cache and, with `remote`, also
 * uploading to that remote cache; returns the node count and the wall time of the execution (ms).
 */
export async function fillCache(dir: string, rules: Rule[], jobs = 8, remote?: RemoteCache): Promise<{ nodes: number; executeMs: number }> {
  const ws = openWorkspace(dir, rules);
  const cache = new ActionCache(ws.cacheDir);
  const store = new ContentStore(path.join(ws.cacheDir, 'cas'));
  const digester = new FileDigester(ws.root, path.join(ws.stateDir, 'stat-memo.json'));
  // Tools probed as the CLI probes them (and remembered where it looks), so `graph plan` agrees.
  const tools = await resolveTools(ws.graph.nodes(), path.join(ws.stateDir, 'tools.json'));
  const plan = planBuild(ws.graph, new Set(ws.graph.order), { root: ws.root, cache, store, digester, env: process.env, tools });
  digester.save();
  const runner: ProcessRunner = { run: async () => ({ exitCode: 0, aborted: false }) };
  // Leases as `graph build` takes them (alone in its cache, a run holds them in memory).
  const leases = new KeyLeases({ dir: path.join(ws.cacheDir, 'leases'), clock: systemClock });
  const t0 = performance.now();
  await executePlan(plan, {
    workspace: ws.forRules,
    jobs,
    limits: {},
    resources: {},
    failFast: false,
    runner,
    cache,
    store,
    stateDir: ws.stateDir,
    leases,
    ...(remote ? { recorder: new CacheRecorder(cache, store, remote) } : {}),
    emit: () => {},
  });
  return { nodes: ws.graph.size, executeMs: performance.now() - t0 };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  if (process.argv[2] === '--fill' || process.argv[2] === '--fill-bare') {
    // `--fill DIR`: the zoo is already there; print {nodes, executeMs} as JSON (bench/run.ts).
    // `--fill-bare DIR`: the same with `bareRules`.
    const r = await fillCache(process.argv[3], process.argv[2] === '--fill' ? instantRules : bareRules);
    process.stdout.write(`${JSON.stringify(r)}\n`);
  } else {
    const [dir, nodes] = process.argv.slice(2);
    writeZoo(dir, { models: modelsForNodes(Number(nodes)) });
    const r = await fillCache(dir, instantRules);
    process.stdout.write(`${r.nodes}\n`);
  }
}
