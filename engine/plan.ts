/**
 * Plan stage: for every selected node, decide before anything runs whether it is cached or will
 * run, and record why, the way ninja's `-d explain` does: no previous record; input X changed
 * (old → new digest); dependency Y will run; output missing; output corrupt; cache entry corrupt.
 */
import { existsSync, rmSync } from 'node:fs';
import path from 'node:path';
import type { ActionCache, CacheEntry, RemoteCache } from './cache/action-cache.js';
import { expandInputs, type FileDigester } from './key/files.js';
import type { BuildGraph } from './compile/graph.js';
import { canonicalJson, explainChange, Keyer, shortDigest, type KeyedRecord, type KeyRecord } from './key/key.js';
import { KeyMemo, TextTable } from './key/key-memo.js';
import type { Json, NodeDef, NodeId, Rule, RuleWorkspace } from './rule.js';
import type { ContentStore } from './cache/store.js';
import type { ToolIdentities } from './key/tools.js';
import type { HostResource } from './validate/declarations.js';

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
  /**
   * Cached through the remote cache, without its bytes (engine/cache/remote/materialize.ts brings
   * them in if a node that runs needs them): `hit`, looked up, its artifacts not in the local
   * store; `unchecked`, not looked up, since every node that depends on it is cached.
   */
  readonly remote?: 'hit' | 'unchecked';
  /**
   * Would run, but this host lacks what it claims (`Settings.hostResources`: more GPUs than it
   * has): it never starts, and ends `skipped` with `reason` (its only reason in the plan), or
   * `failed` when `required` (`--require-gpu`).
   */
  readonly unavailable?: { readonly reason: string; readonly required: boolean };
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
  /** Tokens that stand for host devices (`Settings.hostResources`): nodes claiming more than were found are `unavailable`. */
  readonly hostResources?: Readonly<Record<string, HostResource>>;
  /**
   * Where this graph's keys are kept for the next plan (`.graph/keys.bin`, engine/key/key-memo.ts);
   * used only for a graph from the compiled-graph cache (`BuildGraph.key`).
   */
  readonly keyMemo?: string;
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
  // The selected nodes in order, each with its expanded input files.
  const selected: Array<{ readonly node: NodeDef; readonly files: string[]; readonly specKey: string }> = [];
  const positions: number[] = [];
  graph.order.forEach((id, position) => {
    if (!selection.has(id)) return;
    const node = graph.node(id);
    // Rules build input specs in a fixed order, so plain JSON identifies them.
    let specKey = specKeys.get(node.inputs);
    if (specKey === undefined) specKeys.set(node.inputs, (specKey = JSON.stringify(node.inputs)));
    let files = expanded.get(specKey);
    if (!files) expanded.set(specKey, (files = expandInputs(ctx.root, node.inputs)));
    selected.push({ node, files, specKey });
    positions.push(position);
  });

  // The keys of earlier plans of this compiled graph (engine/key/key-memo.ts): a node whose parts
  // from outside the graph and whose dependencies' keys are what they were keeps its key.
  const memo = ctx.keyMemo !== undefined && graph.key !== undefined ? new KeyMemo(ctx.keyMemo, graph.key, graph.order.length) : undefined;
  const earlier = memo?.read();
  const table = new TextTable();
  const parts = memo ? new Uint32Array(selected.length * 3) : undefined;
  let current: Int32Array | undefined;
  if (memo) {
    selected.forEach(({ node, files, specKey }, i) => {
      const p = keyer.parts(node, files, specKey);
      const at = parts as Uint32Array;
      at[i * 3] = table.add(p.files.text);
      at[i * 3 + 1] = table.add(p.envText);
      at[i * 3 + 2] = table.add(p.tool);
    });
    if (earlier) current = Int32Array.from(earlier.texts, (t) => table.find(t));
  }
  /** Nodes whose key is the remembered one (their dependents may keep theirs). */
  const remembered = new Set<NodeId>();

  // With remembered keys, records are made when asked for: a cached node's seldom is.
  const records = new LazyRecords(keyer, selected, keys, graph);
  for (const { node, files, specKey } of selected) {
    const id = node.id;
    const rule = graph.rules.get(node.kind);
    const index = nodes.length;
    let key: string | undefined;
    let keyed: KeyedRecord | undefined;
    if (earlier && parts && current && depsRemembered(node, remembered)) {
      key = earlier.keyIf(positions[index], parts[index * 3], parts[index * 3 + 1], parts[index * 3 + 2], current);
      if (key !== undefined) remembered.add(id);
    }
    if (key === undefined) ({ key } = keyed = keyer.key(node, rule?.version ?? 0, files, specKey, keys));
    keys.set(id, key);
    const keyedRecord = (): KeyedRecord => (keyed ??= records.make(index));

    const entry = ctx.cache.get(key, id);
    // A remembered key whose entry is another node's is a memo gone wrong (module key-memo.ts):
    // dropped, and the plan made without it.
    if (entry && entry.id !== id && remembered.has(id)) return planBuild(graph, selection, { ...ctx, keyMemo: dropMemo(ctx.keyMemo) });
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
      reasons = whyNoEntry(ctx.cache, id, key, keyedRecord().record, (dep) => byId.get(dep as NodeId)?.status === 'run');
    }
    const unavailable = status === 'run' ? unavailableHere(node, ctx.hostResources) : undefined;
    if (unavailable) reasons = [unavailable.required ? `will fail: ${unavailable.reason}` : `will be skipped: ${unavailable.reason}`];
    // How the host runs it (a foreign platform under emulation), after why it runs.
    else if (status === 'run' && node.note !== undefined) reasons = [...reasons, node.note];
    let planned: PlannedNode;
    if (status === 'run') {
      const { record, text: recordText, key: made } = keyedRecord();
      // A remembered key is the key of the same record; were it ever not, the memo is dropped
      // and the plan made without it (writing a new one).
      if (made !== key) return planBuild(graph, selection, { ...ctx, keyMemo: dropMemo(ctx.keyMemo) });
      planned = { node, key, record, recordText, status, reasons, cached: undefined, ...(unavailable ? { unavailable } : {}) };
    } else {
      const base = { node, key, status, reasons, cached: entry, ...(restore ? { restore } : {}) };
      planned = keyed ? withLazyText({ ...base, record: keyed.record }) : withLazyRecord(base, records, index);
    }
    byId.set(id, planned);
    nodes.push(planned);
  }
  // Written again unless every node kept its remembered key. Nodes not selected keep theirs, but
  // for those downstream of a node keyed again: their keys were made with its old key.
  if (memo && parts && (remembered.size < nodes.length || !earlier)) {
    const stale = new Set<NodeId>();
    const stack = nodes.filter((p) => !remembered.has(p.node.id)).map((p) => p.node.id);
    while (stack.length) {
      for (const d of graph.dependents(stack.pop() as NodeId)) {
        if (!selection.has(d) && !stale.has(d)) {
          stale.add(d);
          stack.push(d);
        }
      }
    }
    memo.write(
      table,
      nodes.map((p, i) => ({ position: positions[i], files: parts[i * 3], env: parts[i * 3 + 1], tool: parts[i * 3 + 2], key: p.key })),
      earlier,
      (position) => !stale.has(graph.order[position]),
    );
  }
  return { graph, nodes, byId };
}

/** Remove the key memo `file`; returns it, or undefined when it could not be removed (then it is not used). */
function dropMemo(file: string | undefined): string | undefined {
  try {
    if (file !== undefined) rmSync(file, { force: true });
    return file;
  } catch {
    return undefined;
  }
}

/** Whether every dependency of `node` kept its remembered key. */
function depsRemembered(node: NodeDef, remembered: ReadonlySet<NodeId>): boolean {
  for (const d of node.deps) if (!remembered.has(d.id)) return false;
  return true;
}

/**
 * Why `node` cannot run on this host, or undefined: its rule says so (`NodeDef.skip`: a foreign
 * platform without emulation), or it claims more devices of a token than were found (`host`).
 */
function unavailableHere(node: NodeDef, host: Readonly<Record<string, HostResource>> | undefined): PlannedNode['unavailable'] {
  if (node.skip !== undefined) return { reason: node.skip, required: false };
  if (!host) return undefined;
  for (const [token, amount] of Object.entries(node.resources)) {
    const found = host[token];
    if (found && amount > found.ids.length) return { reason: found.unavailable(amount), required: found.required };
  }
  return undefined;
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

/** The records of a plan whose keys came from the key memo, made when asked for (node by selection index). */
class LazyRecords {
  private readonly made = new Map<number, KeyedRecord>();
  constructor(
    private readonly keyer: Keyer,
    private readonly selected: ReadonlyArray<{ readonly node: NodeDef; readonly files: string[]; readonly specKey: string }>,
    private readonly keys: ReadonlyMap<NodeId, string>,
    private readonly graph: BuildGraph,
  ) {}

  make(i: number): KeyedRecord {
    let made = this.made.get(i);
    if (!made) {
      const { node, files, specKey } = this.selected[i];
      this.made.set(i, (made = this.keyer.key(node, this.graph.rules.get(node.kind)?.version ?? 0, files, specKey, this.keys)));
    }
    return made;
  }
}

const RECORDS = Symbol('records');
const RECORD_INDEX = Symbol('record index');

/** `PlannedNode.record` of a node whose key came from the key memo. */
function lazyRecord(this: { [RECORDS]: LazyRecords; [RECORD_INDEX]: number }): KeyRecord {
  return this[RECORDS].make(this[RECORD_INDEX]).record;
}

/**
 * A cached node's planned form whose key came from the key memo: `record` (and `recordText`)
 * enumerable getters, one function for every node (so they share their hidden class).
 */
function withLazyRecord(p: Omit<PlannedNode, 'record' | 'recordText'>, records: LazyRecords, index: number): PlannedNode {
  Object.defineProperty(p, RECORDS, { value: records });
  Object.defineProperty(p, RECORD_INDEX, { value: index });
  Object.defineProperty(p, 'record', { get: lazyRecord, enumerable: true });
  return withLazyText(p as Omit<PlannedNode, 'recordText'>);
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
export function whyNoEntry(cache: ActionCache, id: NodeId, key: string, record: KeyRecord, depWillRun: (id: string) => boolean): string[] {
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
 * The second tier: ask `remote` about the nodes that would run, sinks first. A hit (its key record
 * hashes to its key; the remote checked that) becomes cached with the reason `from remote cache
 * NAME`, without its bytes: when its artifacts are all in the local store already (or it has
 * none) it is recorded in the local `cache` at once; otherwise it is marked `remote: 'hit'` and its
 * artifacts are downloaded only if a node that runs needs them (engine/cache/remote/materialize.ts).
 *
 * A node is asked about only when something depends on it that will run, or nothing selected
 * depends on it. A hit's key holds its dependencies' keys, and a result is recorded only after its
 * dependencies' were, so a hit vouches for everything upstream of it: a node every one of whose
 * dependents is cached is not needed, and is cached without a request (`remote: 'unchecked'`,
 * reason "not needed: every node that depends on it is cached"; looked up after all if a node
 * that runs turns out to need it). A fresh runner's no-op asks about the sinks only.
 *
 * With `prune: 'under-hits'` only the hits of this call vouch for what is upstream of them, not
 * nodes cached before it: for the registry (engine/cache/registry-source.ts), asked after the
 * remote cache, where a publish cached as "already in registry" must not spare the tests that
 * never ran here.
 *
 * The nodes still to run are explained again, since a dependency they named as running may now be
 * cached. Never throws for the remote's failures (they are misses).
 */
export async function checkRemote(
  plan: Plan,
  cache: ActionCache,
  remote: RemoteCache,
  store: ContentStore,
  root: string,
  signal?: AbortSignal,
  options: { readonly prune?: 'all' | 'under-hits' } = {},
): Promise<Plan> {
  if (!plan.nodes.some((p) => p.status === 'run')) return plan;
  const current = new Map(plan.byId);
  const dependents = (id: NodeId) => plan.graph.dependents(id).filter((d) => plan.byId.has(d as NodeId)) as NodeId[];
  // Levels by distance from the sinks: a node's dependents are all decided before it is.
  const height = new Map<NodeId, number>();
  const levels: PlannedNode[][] = [];
  for (let i = plan.nodes.length - 1; i >= 0; i--) {
    const p = plan.nodes[i];
    let h = 0;
    for (const d of dependents(p.node.id)) h = Math.max(h, (height.get(d) as number) + 1);
    height.set(p.node.id, h);
    (levels[h] ??= []).push(p);
  }
  for (const level of levels) {
    const ask: PlannedNode[] = [];
    for (const p of level) {
      if (p.status !== 'run') continue;
      const ds = dependents(p.node.id);
      // 'under-hits': only this pass's hits vouch (not, say, a publish recorded as already in a registry).
      const vouches = (d: NodeId) => current.get(d)?.status === 'cached' && (options.prune !== 'under-hits' || current.get(d) !== plan.byId.get(d));
      if (ds.length && ds.every(vouches)) current.set(p.node.id, unchecked(p));
      else ask.push(p);
    }
    let next = 0;
    const worker = async () => {
      while (next < ask.length) {
        const p = ask[next++];
        const hit = await remoteHit(p, { cache, remote, store, root, rules: plan.graph.rules, signal });
        if (hit) current.set(p.node.id, hit);
      }
    };
    await Promise.all(Array.from({ length: Math.min(REMOTE_CONCURRENCY, ask.length) }, worker));
  }
  const replaced = new Map<NodeId, PlannedNode>();
  for (const p of plan.nodes) if (current.get(p.node.id) !== p) replaced.set(p.node.id, current.get(p.node.id) as PlannedNode);
  if (!replaced.size) return plan;
  return replaceNodes(plan, cache, replaced);
}

/** Cached because everything that depends on it is: not looked up (its outputs are not known). */
function unchecked(p: PlannedNode): PlannedNode {
  const cached: CacheEntry = { id: p.node.id, key: p.key, record: p.record, result: { outputs: {}, artifacts: [], duration_ms: 0 } };
  return { ...p, status: 'cached', reasons: ['not needed: every node that depends on it is cached'], cached, remote: 'unchecked' };
}

/**
 * Ask `remote` about `p`: the planned node cached by its hit (recorded locally when its artifacts
 * are all here, else `remote: 'hit'`), or undefined on a miss or when the hit is not usable here.
 */
export async function remoteHit(
  p: PlannedNode,
  ctx: { cache: ActionCache; remote: RemoteCache; store: ContentStore; root: string; rules: ReadonlyMap<string, Rule>; signal?: AbortSignal },
): Promise<PlannedNode | undefined> {
  const result = await ctx.remote.lookup(p.node.id, p.key, ctx.signal).catch(() => undefined);
  if (!result) return undefined;
  // Its visible files were written on another machine: usable only if the rule can restore them.
  const gone = goneFiles(ctx.root, result);
  if (gone.length && !ctx.rules.get(p.node.kind)?.restore) return undefined;
  // The answering tier's words: `from remote cache URL`, or `from registry REF (sha256:…)`.
  const reasons = [ctx.remote.hitReason?.(p.key) ?? `from remote cache ${ctx.remote.name}`];
  if (result.artifacts.every((d) => ctx.store.has(d))) {
    await ctx.cache.put(p.node.id, p.key, p.recordText, result);
    return { ...p, status: 'cached', reasons: gone.length ? [...reasons, restoresReason(gone)] : reasons, cached: ctx.cache.get(p.key, p.node.id), remote: undefined, ...(gone.length ? { restore: gone } : {}) };
  }
  return { ...p, status: 'cached', reasons, cached: { id: p.node.id, key: p.key, record: p.record, result }, remote: 'hit' };
}

/**
 * The plan with `replaced` nodes swapped in, and the nodes still to run whose dependencies changed
 * status explained again (against the new statuses), except those in `keep`.
 */
export function replaceNodes(plan: Plan, cache: ActionCache, replaced: ReadonlyMap<NodeId, PlannedNode>, keep?: ReadonlySet<NodeId>): Plan {
  const status = (id: NodeId) => (replaced.get(id) ?? plan.byId.get(id))?.status;
  const nodes = plan.nodes.map((p) => {
    const r = replaced.get(p.node.id);
    if (r) return r;
    if (p.status !== 'run' || p.unavailable || keep?.has(p.node.id) || !p.node.deps.some((d) => replaced.has(d.id))) return p;
    return { ...p, reasons: whyNoEntry(cache, p.node.id, p.key, p.record, (dep) => status(dep as NodeId) === 'run') };
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
export async function checkUpToDate(plan: Plan, cache: ActionCache, workspace: RuleWorkspace, signal?: AbortSignal): Promise<Plan> {
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
        answer = await plan.graph.rules.get(p.node.kind)?.upToDate?.(p.node, { workspace, deps, signal });
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
export function planSummary(plan: Plan): { total: number; run: number; cached: number; unavailable?: number } {
  let run = 0;
  let unavailable = 0;
  for (const p of plan.nodes) if (p.status === 'run') p.unavailable ? unavailable++ : run++;
  return { total: plan.nodes.length, run, cached: plan.nodes.length - run - unavailable, ...(unavailable ? { unavailable } : {}) };
}
