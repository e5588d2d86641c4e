/**
 * Plan stage: for every selected node, decide before anything runs whether it is cached or will
 * run, and record why, the way ninja's `-d explain` does: no previous record; input X changed
 * (old → new digest); dependency Y will run; output missing; output corrupt; cache entry corrupt.
 */
import type { ActionCache, CacheEntry } from './cache.js';
import { expandInputs, type FileDigester } from './files.js';
import type { BuildGraph } from './graph.js';
import { explainChange, Keyer, shortDigest, type KeyRecord } from './key.js';
import type { Declarations } from './declarations.js';
import type { Json, NodeDef, NodeId, Rule } from './rule.js';
import type { ContentStore } from './store.js';

export type PlanStatus = 'run' | 'cached';

export interface PlannedNode {
  readonly node: NodeDef;
  readonly key: string;
  readonly record: KeyRecord;
  /** `record` as canonical JSON (what the cache stores). */
  readonly recordText: string;
  readonly status: PlanStatus;
  /** Why it runs; empty when cached, or why it is already done (e.g. "already in registry"). */
  readonly reasons: readonly string[];
  /** The cache entry that makes it cached. */
  readonly cached?: CacheEntry;
}

export interface Plan {
  readonly graph: BuildGraph;
  /** Selected nodes in topological order. */
  readonly nodes: readonly PlannedNode[];
  readonly byId: ReadonlyMap<NodeId, PlannedNode>;
}

export interface PlanContext {
  readonly root: string;
  readonly cache: ActionCache;
  readonly store: ContentStore;
  readonly digester: FileDigester;
  readonly env: NodeJS.ProcessEnv;
}

/** Most reasons listed for one node before "and N more". */
const MAX_REASONS = 8;

/**
 * Plan `selection` (which must be closed under dependencies; see `BuildGraph.withDependencies`).
 * Reads the action cache and digests inputs (through the stat memo); stats each cached result's
 * artifacts, re-reading only those whose stat changed since they were verified (the store's memo,
 * which it updates; a corrupt blob is removed from the store). Writes nothing else.
 */
export function planBuild(graph: BuildGraph, selection: ReadonlySet<NodeId>, ctx: PlanContext): Plan {
  const keys = new Map<NodeId, string>();
  const byId = new Map<NodeId, PlannedNode>();
  const nodes: PlannedNode[] = [];
  const keyer = new Keyer(ctx.digester, ctx.env);
  // Many nodes share one input spec (every test of a group reads its inputs); expand each once.
  const expanded = new Map<string, string[]>();

  for (const id of graph.order) {
    if (!selection.has(id)) continue;
    const node = graph.node(id);
    // Rules build input specs in a fixed order, so plain JSON identifies them.
    const specKey = JSON.stringify(node.inputs);
    let files = expanded.get(specKey);
    if (!files) expanded.set(specKey, (files = expandInputs(ctx.root, node.inputs)));
    const rule = graph.rules.get(node.kind);
    const { record, text: recordText, key } = keyer.key(node, rule?.version ?? 0, files, specKey, keys);
    keys.set(id, key);

    const entry = ctx.cache.get(key, id);
    let status: PlanStatus = 'run';
    let reasons: string[] = [];
    if (entry) {
      // One stat per artifact; the bytes are read only when a stat differs from the store's memo.
      const missing: string[] = [];
      const corrupt: string[] = [];
      for (const d of entry.result.artifacts) {
        const state = ctx.store.check(d);
        if (state === 'missing') missing.push(d);
        else if (state === 'corrupt') corrupt.push(d);
      }
      if (missing.length === 0 && corrupt.length === 0) status = 'cached';
      if (missing.length) reasons.push(`output missing: ${missing.map(shortDigest).join(', ')} no longer in the store`);
      if (corrupt.length) reasons.push(`output corrupt: ${corrupt.map(shortDigest).join(', ')} did not match its digest (removed from the store)`);
    } else if (ctx.cache.isCorrupt(key, id)) {
      reasons = ['cache entry corrupt'];
    } else {
      const lastKey = ctx.cache.lastKey(id);
      const previous = lastKey === undefined || lastKey === key ? undefined : ctx.cache.get(lastKey)?.record;
      if (lastKey === undefined) reasons = ['no previous record'];
      else if (lastKey === key) reasons = ['cache entry missing'];
      else if (!previous) reasons = ['previous record missing or corrupt'];
      else {
        reasons = explainChange(previous, record, (dep) => byId.get(dep as NodeId)?.status === 'run');
        if (reasons.length === 0) reasons = ['key changed'];
      }
    }
    if (reasons.length > MAX_REASONS) {
      reasons = [...reasons.slice(0, MAX_REASONS - 1), `and ${reasons.length - MAX_REASONS + 1} more changes`];
    }
    const planned: PlannedNode = { node, key, record, recordText, status, reasons, cached: status === 'cached' ? entry : undefined };
    byId.set(id, planned);
    nodes.push(planned);
  }
  return { graph, nodes, byId };
}

/**
 * Ask rules with an `upToDate` check (a publish: is the registry already holding this digest?)
 * about the nodes that would run; those already done become cached with the rule's reason, and
 * the answer is recorded in the action cache so the next plan needs no network. Checks run a few
 * at a time. Skipped entirely with `--offline`.
 */
export async function checkUpToDate(plan: Plan, cache: ActionCache, decls: Declarations, signal?: AbortSignal): Promise<Plan> {
  const candidates = plan.nodes.filter((p) => p.status === 'run' && plan.graph.rules.get(p.node.kind)?.upToDate);
  if (!candidates.length) return plan;
  const replaced = new Map<NodeId, PlannedNode>();
  let next = 0;
  const worker = async () => {
    while (next < candidates.length) {
      const p = candidates[next++];
      const deps = new Map<NodeId, { key: string; outputs?: { readonly [k: string]: Json } }>();
      for (const d of p.node.deps) {
        const dep = plan.byId.get(d.id);
        if (dep) deps.set(d.id, { key: dep.key, outputs: dep.cached?.result.outputs });
      }
      let answer: Awaited<ReturnType<NonNullable<Rule['upToDate']>>>;
      try {
        answer = await plan.graph.rules.get(p.node.kind)?.upToDate?.(p.node, { decls, deps, signal });
      } catch {
        answer = undefined;
      }
      if (!answer) continue;
      const result = { outputs: answer.outputs, artifacts: [], duration_ms: 0 };
      await cache.put(p.node.id, p.key, p.recordText, result);
      const entry = cache.get(p.key, p.node.id);
      replaced.set(p.node.id, { ...p, status: 'cached', reasons: [answer.reason], cached: entry });
    }
  };
  await Promise.all(Array.from({ length: Math.min(8, candidates.length) }, worker));
  if (!replaced.size) return plan;
  const nodes = plan.nodes.map((p) => replaced.get(p.node.id) ?? p);
  return { graph: plan.graph, nodes, byId: new Map(nodes.map((p) => [p.node.id, p])) };
}

/** Counts for summaries. */
export function planSummary(plan: Plan): { total: number; run: number; cached: number } {
  let run = 0;
  for (const p of plan.nodes) if (p.status === 'run') run++;
  return { total: plan.nodes.length, run, cached: plan.nodes.length - run };
}
