/**
 * Sharding: one plan split across `n` CI runners (`graph build --shard i/n`, `GRAPH_SHARD=i/n`,
 * 1-based like Playwright's and Jest's `--shard`).
 *
 * The unit of work is an **image group**: every selected node of one image (its build, convert,
 * tests and publish; `NodeDef.image`), so a shard pulls or builds each image once. A node without
 * an image is a group of its own. Each group is *owned* by exactly one shard, so the shards' owned
 * nodes partition the selection: their union is every selected node, and no node is owned twice.
 *
 * **Dependencies across shards.** Shards run in parallel on separate machines without waiting for
 * each other, so a shard also plans the dependencies of the nodes it owns (`build:py3-base` for a
 * shard owning `pwm-scanner`), as a plain `graph build TARGET` would. Such a dependency is cached
 * when a shared cache holds it (a remote cache, or a `GRAPH_CACHE_DIR` on a shared file system,
 * whose leases make a second process wait instead of running it again); otherwise it runs in every
 * shard that needs it, the one case where two shards run one node, because each shard's own nodes
 * need its output on that machine. The split weighs that cost: adding a group to a shard costs the
 * group's own work plus the work of its dependencies that the shard does not have yet, so images
 * on one changed base tend to share a shard only when that balances better.
 *
 * **Balance.** Weights are estimated durations of the nodes that will run (cached nodes weigh 0):
 * a node's `duration_ms` from its last recorded run (the action cache's `actions.log`); a node
 * that never ran gets the mean of the known durations of its kind, else of all known durations,
 * else 1, so with no durations at all the split balances node counts. Groups are placed largest
 * first on the shard whose load grows least (longest-processing-time first, ties by the shard's
 * node count, then its index).
 *
 * **Determinism.** The split is a function of the selection and of this machine's action cache as
 * it was when the plan was made (which nodes it holds, their durations); group names break every
 * tie. It is made before registries and remote caches are asked (a shard asks them about its own
 * part only), because their answers change while shards run: one shard's upload is another's hit.
 * Runners therefore agree when they plan the same commit with the same selection options from the
 * same local cache: every runner fresh (CI's usual case: node counts balance), or the same restored
 * `.graph/`. A `GRAPH_CACHE_DIR` shared by shards that start at different times is not that (a
 * late shard sees an early one's results). `Split.digest` names the assignment; reports carry it,
 * and `graph report merge` says when shards come from different splits.
 */
import { createHash } from 'node:crypto';
import type { Plan, PlanStatus } from '../plan.js';
import type { NodeDef, NodeId } from '../rule.js';

/** Shard `index` of `count`, 1-based: `{index: 2, count: 3}` is `--shard 2/3`. */
export interface ShardSpec {
  readonly index: number;
  readonly count: number;
}

/** The part of a plan a split reads (a `Plan` is one): selected nodes in topological order. */
export interface SplitInput {
  readonly nodes: ReadonlyArray<{ readonly node: Pick<NodeDef, 'id' | 'kind' | 'deps' | 'image'>; readonly status: PlanStatus }>;
}

/** One image group: the nodes of one image, and what they need from outside it. */
export interface WorkGroup {
  /** The image's name, or the node id of a node without an image. */
  readonly name: string;
  /** Its selected nodes, in plan order. */
  readonly nodes: readonly NodeId[];
  /** Dependencies of those nodes (transitively) outside the group, in plan order. */
  readonly needs: readonly NodeId[];
  /** Estimated work of its own nodes that will run (ms, or a node count with no durations). */
  readonly weight: number;
}

/** One shard of a split. */
export interface ShardAssignment {
  /** 1-based. */
  readonly index: number;
  /** Names of the image groups it owns, sorted. */
  readonly groups: readonly string[];
  /** The nodes it owns, in plan order. */
  readonly owned: readonly NodeId[];
  /** Dependencies of its nodes that other shards own (run here too unless cached), in plan order. */
  readonly dependencies: readonly NodeId[];
  /** Estimated work that will run on it, dependencies included (same unit as `WorkGroup.weight`). */
  readonly load: number;
}

/** A plan split into `count` shards: each selected node owned by exactly one. */
export interface Split {
  readonly count: number;
  readonly shards: readonly ShardAssignment[];
  /** 16 hex digits of the SHA-256 of the assignment (which shard owns which node). */
  readonly digest: string;
}

/**
 * Parse `i/n` (1 ≤ i ≤ n, decimal, no sign or spaces). `source` names the flag or variable in the
 * message.
 * @returns the shard, or a one-line message for a usage error.
 */
export function parseShard(text: string, source: string): { ok: true; shard: ShardSpec } | { ok: false; message: string } {
  const m = /^([1-9][0-9]{0,5})\/([1-9][0-9]{0,5})$/.exec(text);
  const usage = `${source} takes i/n, shard i of n counted from 1 (1/3, 2/3, 3/3)`;
  if (!m) return { ok: false, message: `${usage}, got '${text}'` };
  const index = Number(m[1]);
  const count = Number(m[2]);
  if (index > count) return { ok: false, message: `${usage}, got '${text}': there is no shard ${index} of ${count}` };
  return { ok: true, shard: { index, count } };
}

/**
 * The image groups of `plan`, sorted by name, weighed by `durationOf` (a node's last recorded run
 * in ms, or undefined when it never ran; see the module comment for the estimate of the others).
 */
export function workGroups(plan: SplitInput, durationOf: (id: NodeId) => number | undefined): WorkGroup[] {
  const estimate = estimator(plan, durationOf);
  const order = new Map(plan.nodes.map((p, i) => [p.node.id, i]));
  const byName = new Map<string, NodeId[]>();
  for (const p of plan.nodes) {
    const name = p.node.image ?? p.node.id;
    const list = byName.get(name);
    if (list) list.push(p.node.id);
    else byName.set(name, [p.node.id]);
  }
  const depsOf = new Map(plan.nodes.map((p) => [p.node.id, p.node.deps]));
  const groups: WorkGroup[] = [];
  for (const [name, nodes] of byName) {
    const own = new Set(nodes);
    const needs = new Set<NodeId>();
    const stack = [...nodes];
    while (stack.length) {
      const id = stack.pop() as NodeId;
      for (const d of depsOf.get(id) ?? []) {
        if (own.has(d.id) || needs.has(d.id) || !order.has(d.id)) continue;
        needs.add(d.id);
        stack.push(d.id);
      }
    }
    const weight = nodes.reduce((w, id) => w + estimate(id), 0);
    groups.push({ name, nodes, needs: [...needs].sort((a, b) => (order.get(a) as number) - (order.get(b) as number)), weight });
  }
  return groups.sort((a, b) => compareText(a.name, b.name));
}

/**
 * Split `plan` into `count` shards (see the module comment). Every selected node is owned by
 * exactly one shard; a shard may own nothing when there are fewer groups than shards.
 * @param durationOf a node's last recorded duration in ms (`ActionCache.last(id)?.result.duration_ms`).
 */
export function splitPlan(plan: SplitInput, count: number, durationOf: (id: NodeId) => number | undefined): Split {
  if (!Number.isInteger(count) || count < 1) throw new Error(`internal error: a split into ${count} shards`);
  const estimate = estimator(plan, durationOf);
  const order = new Map(plan.nodes.map((p, i) => [p.node.id, i]));
  const shards = Array.from({ length: count }, () => ({ groups: [] as string[], owned: new Set<NodeId>(), members: new Set<NodeId>(), load: 0 }));
  const groups = workGroups(plan, durationOf).sort((a, b) => b.weight - a.weight || compareText(a.name, b.name));
  for (const g of groups) {
    let best = 0;
    let bestLoad = Infinity;
    for (let s = 0; s < count; s++) {
      const shard = shards[s];
      // A node the shard already plans (as another group's dependency) costs nothing more.
      let added = 0;
      for (const id of g.nodes) if (!shard.members.has(id)) added += estimate(id);
      for (const d of g.needs) if (!shard.members.has(d)) added += estimate(d);
      const load = shard.load + added;
      if (load < bestLoad || (load === bestLoad && shard.members.size < shards[best].members.size)) {
        best = s;
        bestLoad = load;
      }
    }
    const shard = shards[best];
    shard.groups.push(g.name);
    for (const id of g.nodes) {
      shard.owned.add(id);
      shard.members.add(id);
    }
    for (const id of g.needs) shard.members.add(id);
    shard.load = bestLoad;
  }
  const byOrder = (ids: Iterable<NodeId>) => [...ids].sort((a, b) => (order.get(a) as number) - (order.get(b) as number));
  const assignments: ShardAssignment[] = shards.map((s, i) => ({
    index: i + 1,
    groups: [...s.groups].sort(compareText),
    owned: byOrder(s.owned),
    dependencies: byOrder([...s.members].filter((id) => !s.owned.has(id))),
    load: s.load,
  }));
  const digest = createHash('sha256')
    .update(JSON.stringify([count, assignments.map((a) => a.owned)]))
    .digest('hex')
    .slice(0, 16);
  return { count, shards: assignments, digest };
}

/**
 * How many shards the work of `plan` is worth: one per image group with nodes to run, at most
 * `maxShards`; 0 when nothing runs.
 */
export function shardCountFor(plan: SplitInput, maxShards: number): number {
  const working = new Set<string>();
  for (const p of plan.nodes) if (p.status === 'run') working.add(p.node.image ?? p.node.id);
  return Math.min(maxShards, working.size);
}

/**
 * The GitHub Actions matrix for `count` shards: `{"include": [{"shard": "1/3"}, …]}`, for
 * `strategy.matrix` and `graph build --shard ${{ matrix.shard }}`; `{"include": []}` for 0.
 */
export function shardMatrix(count: number): { include: Array<{ shard: string }> } {
  return { include: Array.from({ length: count }, (_, i) => ({ shard: `${i + 1}/${count}` })) };
}

/** The nodes shard `index` plans: the ones it owns and their dependencies. */
export function shardMembers(split: Split, index: number): Set<NodeId> {
  const s = split.shards[index - 1];
  if (!s) throw new Error(`internal error: no shard ${index} of ${split.count}`);
  return new Set([...s.owned, ...s.dependencies]);
}

/**
 * The plan of shard `index`: the nodes it owns and their dependencies, in `plan`'s order, with
 * `plan`'s statuses and reasons (a subset closed under dependencies needs no new planning).
 */
export function planForShard(plan: Plan, split: Split, index: number): Plan {
  const members = shardMembers(split, index);
  const nodes = plan.nodes.filter((p) => members.has(p.node.id));
  return { graph: plan.graph, nodes, byId: new Map(nodes.map((p) => [p.node.id, p])) };
}

/** What a plan or report says about one shard. */
export interface ShardSummary {
  readonly index: number;
  readonly count: number;
  /** `Split.digest`. */
  readonly split: string;
  /** The image groups it owns. */
  readonly groups: readonly string[];
  /** Nodes it plans that other shards own. */
  readonly dependencies: readonly NodeId[];
}

/**
 * Split `plan` for `spec` and keep shard `spec.index`'s part (`planForShard`).
 * @param durationOf as for `splitPlan`.
 */
export function selectShard(plan: Plan, spec: ShardSpec, durationOf: (id: NodeId) => number | undefined): { plan: Plan; shard: ShardSummary } {
  const split = splitPlan(plan, spec.count, durationOf);
  const s = split.shards[spec.index - 1];
  return {
    plan: planForShard(plan, split, spec.index),
    shard: { index: spec.index, count: spec.count, split: split.digest, groups: s.groups, dependencies: s.dependencies },
  };
}

/** A node's estimated work: 0 when cached; else its last duration, or a mean (module comment). */
function estimator(plan: SplitInput, durationOf: (id: NodeId) => number | undefined): (id: NodeId) => number {
  const known = new Map<NodeId, number>();
  const byKind = new Map<string, { sum: number; n: number }>();
  let sum = 0;
  for (const p of plan.nodes) {
    if (p.status !== 'run') continue;
    const d = durationOf(p.node.id);
    if (d === undefined || !Number.isFinite(d)) continue;
    // A recorded 0 (a publish found already done) still took a moment when it ran.
    const ms = Math.max(1, d);
    known.set(p.node.id, ms);
    const k = byKind.get(p.node.kind) ?? { sum: 0, n: 0 };
    byKind.set(p.node.kind, { sum: k.sum + ms, n: k.n + 1 });
    sum += ms;
  }
  const overall = known.size ? sum / known.size : 1;
  const status = new Map(plan.nodes.map((p) => [p.node.id, p]));
  return (id) => {
    const p = status.get(id);
    if (!p || p.status !== 'run') return 0;
    const d = known.get(id);
    if (d !== undefined) return d;
    const k = byKind.get(p.node.kind);
    return k ? k.sum / k.n : overall;
  };
}

/** Code-unit order, the same in every locale. */
function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
