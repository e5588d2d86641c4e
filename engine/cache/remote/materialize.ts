/**
 * Builds without the bytes: after the plan, before the scheduler starts, bring into the local
 * store the artifacts of exactly those remote cache hits that a node that runs depends on (a test
 * that runs needs its image's layers or its SIF; a publish its image's blobs), and nothing else.
 * A fresh runner where nothing changed downloads no layer and no SIF. A node the plan did not look
 * up (everything depending on it was cached, plan.ts `checkRemote`) is looked up first when it is
 * needed after all; a miss runs.
 *
 * Each hit brought in is recorded in the local action cache (the next plan needs no network) and,
 * when its visible files are gone (`.graph/out/oci/NAME`, a SIF's name), restored by the scheduler
 * as any cached node is. A hit whose artifacts cannot be brought in intact (a blob tampered with
 * or missing on the server, the server gone) is not used: it becomes a node that runs, with the
 * reason, and the nodes it depends on are considered in turn. This runs before the scheduler, so a
 * lost hit runs through the scheduler like any other node (with its limits, its report line, its
 * record), never behind its back.
 */
import type { ActionCache, RemoteCache } from '../action-cache.js';
import { goneFiles, remoteHit, replaceNodes, whyNoEntry, type Plan, type PlannedNode } from '../../plan.js';
import type { NodeId } from '../../rule.js';
import type { ContentStore } from '../store.js';

/** Hits brought in at once. */
const CONCURRENCY = 4;

/**
 * The plan with every remote hit a running node needs brought into the local store (see the
 * module comment). Resolves when they are all in, or turned into nodes that run. Never rejects
 * for the remote's failures.
 */
export async function materializeNeeded(
  plan: Plan,
  ctx: {
    cache: ActionCache;
    remote: RemoteCache;
    store: ContentStore;
    root: string;
    signal?: AbortSignal;
    /** Nodes whose own outputs are wanted (the command line's targets): brought in as well. */
    wanted?: ReadonlySet<NodeId>;
  },
): Promise<Plan> {
  // The hit's own reason (which tier answered), and that it could not be used.
  const lostReason = (p: PlannedNode) => `${p.reasons[0] ?? `from remote cache ${ctx.remote.name}`}, but its artifacts could not be downloaded intact`;
  const lost = new Set<NodeId>();
  for (;;) {
    const needed = neededHits(plan, ctx.wanted);
    if (!needed.length || ctx.signal?.aborted) return plan;
    const replaced = new Map<NodeId, PlannedNode>();
    let next = 0;
    const worker = async () => {
      while (next < needed.length) {
        let p = needed[next++];
        if (p.remote === 'unchecked') {
          // Not looked up at plan time (everything depending on it was cached); needed now.
          const hit = await remoteHit({ ...p, status: 'run', remote: undefined }, { ...ctx, rules: plan.graph.rules });
          if (!hit) {
            const willRun = (id: string) => plan.byId.get(id as NodeId)?.status === 'run';
            replaced.set(p.node.id, { ...p, status: 'run', reasons: whyNoEntry(ctx.cache, p.node.id, p.key, p.record, willRun), cached: undefined, remote: undefined });
            continue;
          }
          if (hit.remote === undefined) {
            replaced.set(p.node.id, hit);
            continue;
          }
          p = hit;
        }
        const result = p.cached!.result;
        const ok = await ctx.remote.download(result.artifacts, ctx.store, ctx.signal).catch(() => false);
        if (!ok) {
          replaced.set(p.node.id, { ...p, status: 'run', reasons: [lostReason(p)], cached: undefined, remote: undefined });
          lost.add(p.node.id);
          continue;
        }
        await ctx.cache.put(p.node.id, p.key, p.recordText, result);
        const gone = goneFiles(ctx.root, result);
        replaced.set(p.node.id, {
          ...p,
          cached: ctx.cache.get(p.key, p.node.id) ?? p.cached,
          remote: undefined,
          ...(gone.length ? { restore: gone, reasons: [...p.reasons, `restores ${gone.join(', ')} from the store`] } : {}),
        });
      }
    };
    await Promise.all(Array.from({ length: Math.min(CONCURRENCY, needed.length) }, worker));
    // A lost hit keeps its reason when a later round re-explains what is downstream of a change.
    plan = replaceNodes(plan, ctx.cache, replaced, lost);
  }
}

/**
 * Nodes cached through the remote (hits without their bytes, or not looked up) that a node that
 * runs depends on, or that are `wanted`, in plan order.
 */
function neededHits(plan: Plan, wanted?: ReadonlySet<NodeId>): PlannedNode[] {
  const needed = new Set<NodeId>();
  for (const id of wanted ?? []) if (plan.byId.get(id)?.remote) needed.add(id);
  for (const p of plan.nodes) {
    if (p.status !== 'run') continue;
    for (const d of p.node.deps) if (plan.byId.get(d.id)?.remote) needed.add(d.id);
  }
  return plan.nodes.filter((p) => needed.has(p.node.id));
}
