/**
 * Compile stage: the rules' nodes become one directed acyclic graph, checked for duplicate ids,
 * dangling edges and cycles (graphlib's strongly connected components name them), then sealed. Only a sealed `BuildGraph` is planned and
 * executed. Edges point from a node to what it depends on.
 */
import { lazyRequire } from '../lazy.js';
import type { Declarations } from '../validate/declarations.js';
import { DiagnosticError, type Diagnostic } from '../diagnostics.js';
import type { NodeDef, NodeId, Rule } from '../rule.js';

const graphlib = lazyRequire<typeof import('@dagrejs/graphlib')>('@dagrejs/graphlib');

export class BuildGraph {
  private readonly dependentsOf = new Map<NodeId, NodeId[]>();

  private constructor(
    private readonly byId: ReadonlyMap<NodeId, NodeDef>,
    /** Nodes in a topological order: every node after all of its dependencies (ties by id). */
    readonly order: readonly NodeId[],
    readonly rules: ReadonlyMap<string, Rule>,
    /**
     * The compiled-graph cache's key of the declarations this graph was compiled from
     * (engine/compile/snapshot.ts); undefined when it was not cached. Equal keys, equal nodes.
     */
    readonly key?: string,
  ) {
    // forEach, not for…of: a one-shot loop over every node runs unoptimized, and each step of a
    // Map iterator then allocates its result.
    byId.forEach((n) => {
      for (const d of n.deps) {
        let list = this.dependentsOf.get(d.id);
        if (!list) this.dependentsOf.set(d.id, (list = []));
        list.push(n.id);
      }
    });
    Object.freeze(this);
  }

  /**
   * Expand every rule over the declarations and seal the graph (`key`: its compiled-graph cache key, if any).
   * @throws DiagnosticError for duplicate node ids, dangling edges and cycles (with the whole path).
   */
  static compile(decls: Declarations, rules: readonly Rule[], key?: string): BuildGraph {
    const diagnostics: Diagnostic[] = [];
    const nodes = new Map<NodeId, NodeDef>();
    for (const rule of rules) {
      for (const node of rule.expand(decls)) {
        const prior = nodes.get(node.id);
        if (prior) {
          diagnostics.push({ code: 'duplicate', message: `two declarations make node '${node.id}'`, span: node.at(), related: [{ span: prior.at(), note: 'also made here' }] });
          continue;
        }
        nodes.set(node.id, node);
      }
    }
    nodes.forEach((node) => {
      for (const d of node.deps) {
        if (!nodes.has(d.id)) {
          diagnostics.push({ code: 'unknown-node', message: `node '${node.id}' depends on '${d.id}', which no declaration makes`, span: (d.at ?? node.at)() });
        }
      }
    });
    if (diagnostics.length) throw new DiagnosticError(diagnostics);
    const order = topologicalOrder(nodes);
    // Nodes left out of the order sit on or behind a cycle; only then is graphlib's SCC search needed.
    if (order.length < nodes.size) throw new DiagnosticError(cycleDiagnostics(nodes));
    return new BuildGraph(nodes, order, new Map(rules.map((r) => [r.kind, r])), key);
  }

  /**
   * A graph compiled before (engine/compile/snapshot.ts): `nodes` and `order` exactly as
   * `compile` made them from the same declarations, so nothing is checked again.
   */
  static restore(nodes: ReadonlyMap<NodeId, NodeDef>, order: readonly NodeId[], rules: readonly Rule[], key: string): BuildGraph {
    return new BuildGraph(nodes, order, new Map(rules.map((r) => [r.kind, r])), key);
  }

  get size(): number {
    return this.byId.size;
  }

  node(id: NodeId): NodeDef {
    const n = this.byId.get(id);
    if (!n) throw new Error(`no node '${id}'`);
    return n;
  }

  has(id: string): id is NodeId {
    return this.byId.has(id as NodeId);
  }

  nodes(): IterableIterator<NodeDef> {
    return this.byId.values();
  }

  /** Nodes that depend directly on `id`. */
  dependents(id: NodeId): readonly NodeId[] {
    return this.dependentsOf.get(id) ?? [];
  }

  /** `ids` plus everything they depend on, transitively. */
  withDependencies(ids: Iterable<NodeId>): Set<NodeId> {
    // Every node already (a plain `graph build`): no walk needed.
    if (ids instanceof Set && ids.size === this.byId.size && [...ids].every((id) => this.byId.has(id))) return new Set(ids);
    return this.closure(ids, (id) => this.node(id).deps.map((d) => d.id));
  }

  /** `ids` plus everything that depends on them, transitively. */
  withDependents(ids: Iterable<NodeId>): Set<NodeId> {
    return this.closure(ids, (id) => this.dependents(id));
  }

  private closure(ids: Iterable<NodeId>, next: (id: NodeId) => readonly NodeId[]): Set<NodeId> {
    const seen = new Set<NodeId>();
    const stack = [...ids];
    while (stack.length) {
      const id = stack.pop() as NodeId;
      if (seen.has(id)) continue;
      seen.add(id);
      for (const n of next(id)) if (!seen.has(n)) stack.push(n);
    }
    return seen;
  }
}

/** Kahn's algorithm with ids sorted at each step, so the order is deterministic. */
function topologicalOrder(nodes: ReadonlyMap<NodeId, NodeDef>): NodeId[] {
  const pending = new Map<NodeId, number>();
  const dependents = new Map<NodeId, NodeId[]>();
  let ready: NodeId[] = [];
  nodes.forEach((n) => {
    pending.set(n.id, n.deps.length);
    if (n.deps.length === 0) ready.push(n.id);
    for (const d of n.deps) {
      const list = dependents.get(d.id);
      if (list) list.push(n.id);
      else dependents.set(d.id, [n.id]);
    }
  });
  ready.sort();
  const order: NodeId[] = [];
  while (ready.length) {
    const next: NodeId[] = [];
    for (const id of ready) {
      order.push(id);
      for (const dep of dependents.get(id) ?? []) {
        const left = (pending.get(dep) as number) - 1;
        pending.set(dep, left);
        if (left === 0) next.push(dep);
      }
    }
    ready = next.sort();
  }
  return order;
}

function cycleDiagnostics(nodes: ReadonlyMap<NodeId, NodeDef>): Diagnostic[] {
  const { Graph, alg } = graphlib();
  const g = new Graph({ directed: true });
  for (const n of nodes.values()) {
    g.setNode(n.id);
    for (const d of n.deps) g.setEdge(n.id, d.id);
  }
  const out: Diagnostic[] = [];
  for (const component of alg.findCycles(g)) {
    const members = new Set(component);
    const start = [...component].sort()[0] as NodeId;
    // Shortest way around the cycle from its smallest member, by breadth-first search.
    const parent = new Map<string, string>();
    const queue: string[] = [start];
    let closing: string | undefined;
    while (queue.length && closing === undefined) {
      const v = queue.shift() as string;
      for (const w of [...(g.successors(v) ?? [])].sort()) {
        if (!members.has(w)) continue;
        if (w === start) {
          closing = v;
          break;
        }
        if (!parent.has(w)) {
          parent.set(w, v);
          queue.push(w);
        }
      }
    }
    const path: NodeId[] = [];
    for (let v: string | undefined = closing; v !== undefined && v !== start; v = parent.get(v)) path.unshift(v as NodeId);
    path.unshift(start);
    const hops = path.map((id, i) => {
      const to = path[(i + 1) % path.length];
      const dep = (nodes.get(id) as NodeDef).deps.find((d) => d.id === to);
      return { from: id, to, span: (dep?.at ?? (nodes.get(id) as NodeDef).at)() };
    });
    out.push({
      code: 'cycle',
      message: `dependency cycle: ${[...path, start].join(' -> ')}`,
      span: hops[0].span,
      related: hops.slice(1).map((h) => ({ span: h.span, note: `${h.from} depends on ${h.to}` })),
    });
  }
  return out;
}
