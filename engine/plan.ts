/**
 * Plan stage: for every selected node, decide before anything runs whether it is cached or will
 * run, and record why, the way ninja's `-d explain` does: no previous record; input X changed
 * (old → new digest); dependency Y will run; output missing; output corrupt; cache entry corrupt.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import type { ActionCache, CacheEntry, RemoteCache } from './cache.js';
import { expandInputs, type FileDigester } from './files.js';
import type { BuildGraph } from './graph.js';
import { canonicalJson, explainChange, Keyer, shortDigest, type KeyRecord } from './key.js';
import type { Declarations } from './declarations.js';
import type { Json, NodeDef, NodeId, Rule } from './rule.js';
import type { ContentStore } from './store.js';
import type { ToolIdentities } from './tools.js';

export type PlanStatus = 'run' | 'cached';

export interface PlannedNode {
  readonly node: NodeDef;
  readonly key: string;
  readonly record: KeyRecord;
  /**
   * `record` as canonical JSON (what the cache stores). Kept for nodes that run; a cached node's
   * is made again when asked for (at 100k nodes the texts are ≈65 MB that no one reads).
   */
  readonly recordText: string;
  readonly status: PlanStatus;
  /** Why it runs; empty when cached, or why it is already done (e.g. "already in registry"). */
  readonly reasons: readonly string[];
  /** The cache entry that makes it cached. */
  readonly cached?: CacheEntry;
  /** Cached, but these visible files are gone: the rule writes them again from the store first. */
  readonly restore?: readonly string[];
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
  /** Identities of the external tools the nodes name (`resolveTools`); without, `NAME: not probed`. */
  readonly tools?: ToolIdentities;
}

/** The reasons of a node that has none (shared, never changed). */
const NO_REASONS: string[] = Object.freeze([]) as unknown as string[];

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
  const keyer = new Keyer(ctx.digester, ctx.env, ctx.tools);
  // Many nodes share one input spec (every test of a group reads its inputs); expand each once.
  const expanded = new Map<string, string[]>();
  // A model's tests in each runtime share one inputs array: its JSON is made once.
  const specKeys = new Map<readonly unknown[], string>();

  for (const id of graph.order) {
    if (!selection.has(id)) continue;
    const node = graph.node(id);
    // Rules build input specs in a fixed order, so plain JSON identifies them.
    let specKey = specKeys.get(node.inputs);
    if (specKey === undefined) specKeys.set(node.inputs, (specKey = JSON.stringify(node.inputs)));
    let files = expanded.get(specKey);
    if (!files) expanded.set(specKey, (files = expandInputs(ctx.root, node.inputs)));
    const rule = graph.rules.get(node.kind);
    const { record, text: recordText, key } = keyer.key(node, rule?.version ?? 0, files, specKey, keys);
    keys.set(id, key);

    const entry = ctx.cache.get(key, id);
    let status: PlanStatus = 'run';
    // Arrays are made only when there is something to put in them: most nodes of a no-op plan
    // have no reason, no missing artifact and no gone file.
    let reasons: string[] = NO_REASONS;
    let restore: string[] | undefined;
    if (entry) {
      // One stat per artifact; the bytes are read only when a stat differs from the store's memo.
      let missing: string[] | undefined;
      let corrupt: string[] | undefined;
      for (const d of entry.result.artifacts) {
        const state = ctx.store.check(d);
        if (state === 'missing') (missing ??= []).push(d);
        else if (state === 'corrupt') (corrupt ??= []).push(d);
      }
      // One stat per visible file (a layout's index.json, a SIF, a dist/ copy). Files the rule can
      // write again from the store are restored; others make the node run.
      const gone = entry.result.files?.length ? goneFiles(ctx.root, entry.result) : NO_REASONS;
      const restorable = gone.length > 0 && rule?.restore !== undefined;
      if (!missing && !corrupt && (gone.length === 0 || restorable)) status = 'cached';
      if (missing || corrupt || gone.length) reasons = [];
      if (missing) reasons.push(`output missing: ${missing.map(shortDigest).join(', ')} no longer in the store`);
      if (corrupt) reasons.push(`output corrupt: ${corrupt.map(shortDigest).join(', ')} did not match its digest (removed from the store)`);
      if (gone.length) reasons.push(status === 'cached' ? restoresReason(gone) : `output missing: ${gone.join(', ')} no longer in the workspace`);
      if (status === 'cached' && gone.length) restore = gone;
    } else if (ctx.cache.isCorrupt(key, id)) {
      reasons = ['cache entry corrupt'];
    } else {
      reasons = whyNoEntry(ctx.cache, id, key, record, (dep) => byId.get(dep as NodeId)?.status === 'run');
    }
    const planned: PlannedNode =
      status === 'run'
        ? { node, key, record, recordText, status, reasons, cached: undefined }
        : withLazyText({ node, key, record, status, reasons, cached: entry, ...(restore ? { restore } : {}) });
    byId.set(id, planned);
    nodes.push(planned);
  }
  return { graph, nodes, byId };
}

/**
 * A cached node's planned form: `recordText` an enumerable getter (a spread copy still has it),
 * one shared function, no closure per node.
 */
function withLazyText(p: Omit<PlannedNode, 'recordText'>): PlannedNode {
  return Object.defineProperty(p, 'recordText', { get: recordTextOf, enumerable: true }) as PlannedNode;
}

function recordTextOf(this: PlannedNode): string {
  return canonicalJson(this.record);
}

/** A result's visible files that are not in the workspace at `root` (one stat each). */
export function goneFiles(root: string, result: CacheEntry['result']): string[] {
  return (result.files ?? []).filter((f) => !existsSync(path.join(root, f)));
}

const restoresReason = (files: readonly string[]) => `restores ${files.join(', ')} from the store`;

/**
 * Why a node with no usable entry for `key` runs: no previous record; the entry is missing; or,
 * against its last record, which inputs changed (`depWillRun` says which dependencies run).
 */
function whyNoEntry(cache: ActionCache, id: NodeId, key: string, record: KeyRecord, depWillRun: (id: string) => boolean): string[] {
  const lastKey = cache.lastKey(id);
  const previous = lastKey === undefined || lastKey === key ? undefined : cache.get(lastKey)?.record;
  let reasons: string[];
  if (lastKey === undefined) reasons = ['no previous record'];
  else if (lastKey === key) reasons = ['cache entry missing'];
  else if (!previous) reasons = ['previous record missing or corrupt'];
  else {
    reasons = explainChange(previous, record, depWillRun);
    if (reasons.length === 0) reasons = ['key changed'];
  }
  return reasons.length > MAX_REASONS ? [...reasons.slice(0, MAX_REASONS - 1), `and ${reasons.length - MAX_REASONS + 1} more changes`] : reasons;
}

/**
 * The second tier: ask `remote` about every node that would run (a few at a time), in order. A hit
 * (artifacts fetched into `store` and verified by the remote) is recorded in the local `cache` and
 * the node becomes cached with the reason `from remote cache NAME`; the nodes still to run are
 * explained again, since a dependency they named as running may now be cached. Never throws for
 * the remote's failures (they are misses).
 */
export async function checkRemote(plan: Plan, cache: ActionCache, remote: RemoteCache, store: ContentStore, root: string, signal?: AbortSignal): Promise<Plan> {
  const candidates = plan.nodes.filter((p) => p.status === 'run');
  if (!candidates.length) return plan;
  const hits = new Map<NodeId, PlannedNode>();
  let next = 0;
  const worker = async () => {
    while (next < candidates.length) {
      const p = candidates[next++];
      const result = await remote.fetch(p.node.id, p.key, store, signal).catch(() => undefined);
      // Trust, then verify: every artifact the entry names must now be in the local store, intact.
      if (!result || !result.artifacts.every((d) => store.check(d) === 'intact')) continue;
      // Its visible files were written on another machine: usable only if the rule can restore them.
      const gone = goneFiles(root, result);
      if (gone.length && !plan.graph.rules.get(p.node.kind)?.restore) continue;
      await cache.put(p.node.id, p.key, p.recordText, result);
      const reasons = [`from remote cache ${remote.name}`, ...(gone.length ? [restoresReason(gone)] : [])];
      hits.set(p.node.id, { ...p, status: 'cached', reasons, cached: cache.get(p.key, p.node.id), ...(gone.length ? { restore: gone } : {}) });
    }
  };
  await Promise.all(Array.from({ length: Math.min(REMOTE_CONCURRENCY, candidates.length) }, worker));
  if (!hits.size) return plan;
  const nodes = plan.nodes.map((p) => {
    const hit = hits.get(p.node.id);
    if (hit) return hit;
    if (p.status !== 'run' || !p.node.deps.some((d) => hits.has(d.id))) return p;
    const willRun = (dep: string) => !hits.has(dep as NodeId) && plan.byId.get(dep as NodeId)?.status === 'run';
    return { ...p, reasons: whyNoEntry(cache, p.node.id, p.key, p.record, willRun) };
  });
  return { graph: plan.graph, nodes, byId: new Map(nodes.map((p) => [p.node.id, p])) };
}

/** Remote lookups in flight at once. */
const REMOTE_CONCURRENCY = 8;

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
