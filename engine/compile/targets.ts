/**
 * Target selection: which nodes a command works on. A target is a node id
 * (`build:base`, `test:Basset/Basset@oci`), `image:NAME` (every node of that image), `group:NAME`
 * (every test of that group), or a glob over any of those (`test:CpGenie/*`, `group:MMSplice/*`;
 * `*` matches any characters, `?` one). `--only KIND,…` keeps the matched nodes of those kinds.
 * The selection then pulls in every dependency.
 */
import { didYouMean } from '../diagnostics.js';
import type { BuildGraph } from './graph.js';
import type { NodeDef, NodeId } from '../rule.js';

/** A target that matches nothing; the CLI reports it with exit code 2. */
export class TargetError extends Error {}

function globToRegExp(glob: string): RegExp {
  const body = glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${body}$`);
}

function matcher(target: string): (n: NodeDef) => boolean {
  const isGlob = /[*?]/.test(target);
  const test = isGlob ? ((re) => (s: string) => re.test(s))(globToRegExp(target.replace(/^(image|group):/, ''))) : undefined;
  if (target.startsWith('image:')) {
    const name = target.slice('image:'.length);
    return (n) => n.image !== undefined && (test ? test(n.image) : n.image === name);
  }
  if (target.startsWith('group:')) {
    const name = target.slice('group:'.length);
    return (n) => n.group !== undefined && (test ? test(n.group) : n.group === name);
  }
  return test ? (n) => test(n.id) : (n) => n.id === target;
}

/**
 * Nodes matched by `targets` (all nodes when empty), filtered by `only` kinds.
 * @throws TargetError naming the first target that matches nothing, with a "did you mean".
 */
export function matchTargets(graph: BuildGraph, targets: readonly string[], only?: readonly string[]): Set<NodeId> {
  const kinds = only?.length ? new Set(only) : undefined;
  if (kinds) {
    const known = new Set(graph.rules.keys());
    for (const k of kinds) if (!known.has(k)) throw new TargetError(`unknown node kind '${k}' in --only (kinds: ${[...known].join(', ')})`);
  }
  const selected = new Set<NodeId>();
  const keep = (n: NodeDef) => !kinds || kinds.has(n.kind);
  if (targets.length === 0) {
    for (const n of graph.nodes()) if (keep(n)) selected.add(n.id);
    return selected;
  }
  for (const target of targets) {
    const match = matcher(target);
    let found = false;
    for (const n of graph.nodes()) {
      if (match(n)) {
        found = true;
        if (keep(n)) selected.add(n.id);
      }
    }
    if (!found) {
      const names = new Set<string>();
      for (const n of graph.nodes()) {
        names.add(n.id);
        if (n.image) names.add(`image:${n.image}`);
        if (n.group) names.add(`group:${n.group}`);
      }
      const guess = didYouMean(target, names);
      throw new TargetError(`unknown target '${target}'${guess ? ` (did you mean '${guess}'?)` : ''}; 'graph query' lists targets`);
    }
  }
  return selected;
}
