/**
 * What the commands that plan share (`graph plan`, `build`, `explain`, `report html`): the nodes
 * the targets select and the plan of them, with the caches it was planned against. Loads nothing
 * that runs nodes.
 */
import path from 'node:path';
import { ActionCache, type RemoteCache } from '../cache/action-cache.js';
import { ContentStore } from '../cache/store.js';
import { openRemoteCache, RemoteCacheConfigError } from '../cache/remote/config.js';
import { SourceTier, tieredRemote } from '../cache/registry-source.js';
import { localHostResources } from '../execute/devices.js';
import { affectedSince } from '../compile/changed.js';
import { selectShard, type ShardSpec, type ShardSummary } from '../compile/shard.js';
import { matchTargets } from '../compile/targets.js';
import { FileDigester } from '../key/files.js';
import { KEYS_FILE } from '../key/key-memo.js';
import { resolveTools } from '../key/tools.js';
import { checkRemote, checkUpToDate, planBuild, planSummary, type Plan } from '../plan.js';
import { appendStepSummary } from '../report/step-summary.js';
import { UsageError, type CommandOutput, type NodeId, type Rule } from '../rule.js';
import type { Workspace } from '../workspace.js';

/**
 * The command-line values planning reads: `only` (comma-separated kinds), `changed-since` (a git
 * revision), `offline`, `remote-cache` and `remote-cache-mode`; others are ignored.
 */
export type SelectionValues = Readonly<Record<string, unknown>>;

/** A plan and what it was made with. */
export interface MadePlan {
  readonly plan: Plan;
  readonly cache: ActionCache;
  readonly store: ContentStore;
  /** The file digest memo; `save()` it once the plan is used. */
  readonly digester: FileDigester;
  readonly remote?: RemoteCache;
  /** Where a cached node's outputs can be fetched from: the remote cache, then the registries (undefined: nowhere). */
  readonly lookups?: RemoteCache;
  /** The nodes the targets selected, before their dependencies were pulled in. */
  readonly selected: ReadonlySet<NodeId>;
  readonly summary: ReturnType<typeof planSummary>;
  readonly shard?: ShardSummary;
}

/** `a, b` → `['a', 'b']`; undefined for a value that is not a string. */
export function splitList(v: unknown): string[] | undefined {
  return typeof v === 'string' ? v.split(',').map((s) => s.trim()).filter(Boolean) : undefined;
}

/**
 * The nodes targets, `--only` and `--changed-since` select (before dependencies are pulled in).
 * @throws TargetError for a target that matches nothing; ChangedSinceError for a bad revision.
 */
export async function selectTargets(ws: Workspace, values: SelectionValues, positionals: readonly string[], rules: readonly Rule[]): Promise<ReadonlySet<NodeId>> {
  const selected = matchTargets(ws.graph, [...positionals], splitList(values.only));
  if (typeof values['changed-since'] !== 'string') return selected;
  const { affected } = await affectedSince(ws, values['changed-since'], rules);
  return new Set([...selected].filter((id) => affected.has(id)));
}

/**
 * The plan of the selected nodes, or of `shard`'s part of them (engine/compile/shard.ts); remote
 * cache hits and registries' answers (unless `offline`) applied.
 * @throws UsageError for a bad remote cache setting; as `selectTargets`.
 */
export async function makePlan(ws: Workspace, values: SelectionValues, positionals: readonly string[], rules: readonly Rule[], err: CommandOutput['err'], shard?: ShardSpec): Promise<MadePlan> {
  const selected = await selectTargets(ws, values, positionals, rules);
  const cache = new ActionCache(ws.cacheDir, { entryFiles: ws.cacheDir !== ws.stateDir });
  const store = new ContentStore(path.join(ws.cacheDir, 'cas'));
  const digester = new FileDigester(ws.root, path.join(ws.stateDir, 'stat-memo.json'), ws.decls.boundary);
  const selection = ws.graph.withDependencies(selected);
  // The external tools' identities go into the keys (memoized by their executables' stat).
  const tools = await resolveTools([...selection].map((id) => ws.graph.node(id)), path.join(ws.stateDir, 'tools.json'));
  let plan: Plan = planBuild(ws.graph, selection, { root: ws.root, cache, store, digester, env: process.env, tools, hostResources: localHostResources(ws.decls.settings), keyMemo: path.join(ws.stateDir, KEYS_FILE) });
  // Split before asking registries or remote caches: their answers change while shards run (one
  // shard's upload is another's hit), this machine's cache as it was does not.
  let shardSummary: ShardSummary | undefined;
  if (shard) ({ plan, shard: shardSummary } = selectShard(plan, shard, (id) => cache.last(id)?.result.duration_ms));
  const remote = await remoteCache(ws, values, err);
  if (remote) plan = await checkRemote(plan, cache, remote, store, ws.root);
  // Local first (planBuild), then the remote cache, then the registries published results are in:
  // their hits vouch for what is upstream of them, but nothing cached before does (a publish found
  // already in a registry spares no test that never ran here).
  const sources = (values.registry ?? !values.offline) ? await resultSources(ws, err) : [];
  for (const source of sources) plan = await checkRemote(plan, cache, source, store, ws.root, undefined, { prune: 'under-hits' });
  const lookups = tieredRemote([remote, ...sources]);
  if (!values.offline) plan = await checkUpToDate(plan, cache, ws.forRules);
  return { plan, cache, store, digester, ...(remote ? { remote } : {}), ...(lookups ? { lookups } : {}), selected, summary: planSummary(plan), ...(shardSummary ? { shard: shardSummary } : {}) };
}

/** The rules' sources of published results (`Rule.resultSource`), as tiers; their one warning each goes to `err`. */
async function resultSources(ws: Workspace, err: CommandOutput['err']): Promise<SourceTier[]> {
  const tiers: SourceTier[] = [];
  for (const rule of ws.graph.rules.values()) {
    const source = await rule.resultSource?.(ws.forRules).catch(() => undefined);
    if (source) tiers.push(new SourceTier(source, (m) => err(`warning: ${m}\n`)));
  }
  return tiers;
}

/** The remote cache the options, the environment or images.yaml name; its warnings go to `err`. */
async function remoteCache(ws: Workspace, values: SelectionValues, err: CommandOutput['err']): Promise<RemoteCache | undefined> {
  try {
    return await openRemoteCache({ flag: values['remote-cache'] as string | undefined, mode: values['remote-cache-mode'] as string | undefined, settings: ws.decls.settings.remoteCache }, process.env, (m) => err(`warning: ${m}\n`));
  } catch (e) {
    if (e instanceof RemoteCacheConfigError) throw new UsageError(e.message);
    throw e;
  }
}

/** Append `markdown` to GITHUB_STEP_SUMMARY when it is set; a failure to is a warning on `err`, never a failed command. */
export function stepSummary(markdown: string, err: CommandOutput['err']): void {
  const problem = appendStepSummary(process.env, markdown);
  if (problem) err(`warning: cannot append to GITHUB_STEP_SUMMARY: ${problem}\n`);
}
