/**
 * Plan reporters: `graph plan --format text|json|dot|mermaid|matrix`.
 *
 * The JSON form is a stable, documented contract (README "Plan JSON"):
 *
 *     {"version": 1,
 *      "nodes": [{"id", "kind", "deps": [ids, sorted], "key": "<64 hex>",
 *                 "status": "run" | "cached" | "skip" | "fail", "reasons": [strings]}],   // topological order
 *      "summary": {"total", "run", "cached", ["unavailable"]}}
 *
 * `skip` and `fail` are nodes this host cannot run (a test claiming GPUs on a host without them):
 * they will end skipped, or failed under `--require-gpu`, with the reason given; the summary
 * counts them as `unavailable` (only when there are any), not as `run`.
 *
 * A node that would run elsewhere than on this machine (`settings.executor`, `--executor`) also has
 * `"executor": "slurm"`; in text, its run line ends with `(slurm)`.
 */
import type { Plan, PlannedNode } from '../plan.js';
import { planSummary } from '../plan.js';
import type { PlanNote } from '../rule.js';
import { shardMatrix, type ShardSummary } from '../compile/shard.js';

export type PlanFormat = 'text' | 'json' | 'dot' | 'mermaid' | 'matrix';
export const PLAN_FORMATS: readonly PlanFormat[] = ['text', 'json', 'dot', 'mermaid', 'matrix'];

/**
 * Render a plan in one of the formats. `verbose` lists cached nodes in text form too.
 * @param notes the rules' notes (`Rule.planNote`: e.g. published images whose lineage lock is out
 *   of date), after the nodes in text, as their `jsonKey` in JSON.
 * @param shard for `--shard i/n`: the plan is that shard's part; text starts with `shardLine`, JSON
 *   has `shard: {index, count, split, groups, dependencies}`.
 */
export function renderPlan(plan: Plan, format: PlanFormat, verbose = false, notes: readonly PlanNote[] = [], shard?: ShardSummary, executorOf?: (kind: string) => string | undefined): string {
  return [...renderPlanChunks(plan, format, verbose, notes, shard, executorOf)].join('');
}

/** Most characters in one chunk of `renderPlanChunks`. */
const CHUNK = 1 << 18;

/**
 * As `renderPlan`, in pieces whose concatenation is its text: the JSON plan of a large graph
 * (≈40 MB at 100k nodes) is written piece by piece, never held whole, nor its object form.
 */
export function* renderPlanChunks(plan: Plan, format: PlanFormat, verbose = false, notes: readonly PlanNote[] = [], shard?: ShardSummary, executorOf?: (kind: string) => string | undefined): Generator<string> {
  if (format !== 'json') {
    yield renderWhole(plan, format, verbose, notes, shard, executorOf);
    return;
  }
  // JSON.stringify(…, null, 2)'s bytes, one node at a time: each node's lines are indented by
  // its depth (a JSON string never holds a raw newline, so every '\n' starts a line).
  const rest: Record<string, unknown> = { summary: planSummary(plan), ...(shard ? { shard } : {}), ...Object.fromEntries(notes.map((n) => [n.jsonKey, n.lines])) };
  let out = `{\n  "version": 1,\n  "nodes": [`;
  for (let i = 0; i < plan.nodes.length; i++) {
    out += `${i ? ',' : ''}\n    ${nodeJsonText(plan.nodes[i], executorOf)}`;
    if (out.length >= CHUNK) {
      yield out;
      out = '';
    }
  }
  out += plan.nodes.length ? '\n  ]' : ']';
  for (const [k, v] of Object.entries(rest)) if (v !== undefined) out += `,\n  ${JSON.stringify(k)}: ${JSON.stringify(v, null, 2).replace(/\n/g, '\n  ')}`;
  yield `${out}\n}\n`;
}

function renderWhole(plan: Plan, format: Exclude<PlanFormat, 'json'>, verbose: boolean, notes: readonly PlanNote[], shard: ShardSummary | undefined, executorOf: ((kind: string) => string | undefined) | undefined): string {
  switch (format) {
    case 'text':
      return (shard ? `${shardLine(shard, plan.nodes.length)}\n` : '') + planText(plan, verbose, executorOf) + notes.map((n) => `${n.heading}:\n${n.lines.map((l) => `  ${l}\n`).join('')}`).join('');
    case 'dot':
      return planDot(plan);
    case 'mermaid':
      return planMermaid(plan);
    case 'matrix':
      return `${JSON.stringify(planMatrix(plan))}\n`;
  }
}

function plural(n: number, word: string): string {
  return `${n.toLocaleString('en-US')} ${word}${n === 1 ? '' : 's'}`;
}

function planText(plan: Plan, verbose: boolean, executorOf?: (kind: string) => string | undefined): string {
  const s = planSummary(plan);
  const unavailable = s.unavailable ? `, ${s.unavailable.toLocaleString('en-US')} cannot run here` : '';
  const lines = [`${plural(s.run, 'node')} to run, ${s.cached.toLocaleString('en-US')} cached${unavailable} (${plural(s.total, 'node')} selected)`];
  for (const p of plan.nodes) {
    if (p.status === 'cached' && !verbose && p.reasons.length === 0) continue;
    const elsewhere = p.status === 'run' && !p.unavailable ? executorOf?.(p.node.kind) : undefined;
    lines.push(`  ${shownStatus(p).padEnd(6)} ${p.node.id}${elsewhere ? ` (${elsewhere})` : ''}`);
    for (const r of p.reasons) lines.push(`           ${r}`);
  }
  return `${lines.join('\n')}\n`;
}

/**
 * The JSON plan object (see the module comment).
 * @param executorOf a kind's executor when it is not this machine (`slurm`), else undefined.
 */
export function planJson(plan: Plan, executorOf?: (kind: string) => string | undefined) {
  return {
    version: 1,
    nodes: plan.nodes.map((p: PlannedNode) => nodeJson(p, executorOf)),
    summary: planSummary(plan),
  };
}

/** A list of strings as JSON.stringify(…, null, 2) writes it inside a node of the plan (at depth 3). */
function listText(items: readonly string[]): string {
  if (items.length === 0) return '[]';
  let out = '[';
  for (let i = 0; i < items.length; i++) out += `${i ? ',' : ''}\n        ${JSON.stringify(items[i])}`;
  return `${out}\n      ]`;
}

/**
 * `nodeJson(p)` as JSON.stringify(…, null, 2) writes it at depth 2 of the plan (a test checks the
 * bytes are the same): written directly, since this runs once per node of every plan.
 */
function nodeJsonText(p: PlannedNode, executorOf?: (kind: string) => string | undefined): string {
  const executor = executorOf?.(p.node.kind);
  const deps = p.node.deps.length === 1 ? [p.node.deps[0].id] : p.node.deps.map((d) => d.id).sort();
  return (
    `{\n      "id": ${JSON.stringify(p.node.id)},\n      "kind": ${JSON.stringify(p.node.kind)},\n      "deps": ${listText(deps)},` +
    `\n      "key": "${p.key}",\n      "status": "${shownStatus(p)}",\n      "reasons": ${listText(p.reasons)}` +
    `${executor ? `,\n      "executor": ${JSON.stringify(executor)}` : ''}\n    }`
  );
}

/** One node of the JSON plan. */
function nodeJson(p: PlannedNode, executorOf?: (kind: string) => string | undefined) {
  const executor = executorOf?.(p.node.kind);
  return {
    id: p.node.id,
    kind: p.node.kind,
    deps: p.node.deps.map((d) => d.id).sort(),
    key: p.key,
    status: shownStatus(p),
    reasons: p.reasons,
    ...(executor ? { executor } : {}),
  };
}

/** A node's status as the plan shows it: `skip` / `fail` for a node this host cannot run. */
function shownStatus(p: PlannedNode): 'run' | 'cached' | 'skip' | 'fail' {
  // A node found in a remote cache is cached, whatever this host lacks.
  return p.status === 'run' && p.unavailable ? (p.unavailable.required ? 'fail' : 'skip') : p.status;
}

/** Text inside a DOT double-quoted string: `"` and `\` escaped (a lone `\` would start an escape such as `\n`). */
function dotEscape(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/"/g, '\\"');
}

function quote(s: string): string {
  return `"${dotEscape(s)}"`;
}

/**
 * The plan as a Graphviz DOT digraph (graphviz.org/doc/info/lang.html): one box per node, labelled
 * with its id and status on two lines (`\n`, DOT's centred line break), nodes to run filled.
 * The graph is named `plan`: `graph`, `digraph`, `node`, `edge`, `strict` and `subgraph` are DOT keywords.
 */
function planDot(plan: Plan): string {
  const lines = ['digraph plan {', '  rankdir=LR;', '  node [shape=box, fontname="monospace"];'];
  for (const p of plan.nodes) {
    const style = p.status === 'run' ? ', style=filled, fillcolor="#ffd8a8"' : ', color="#868e96"';
    lines.push(`  ${quote(p.node.id)} [label="${dotEscape(p.node.id)}\\n${p.status}"${style}];`);
  }
  for (const p of plan.nodes) for (const d of p.node.deps) lines.push(`  ${quote(d.id)} -> ${quote(p.node.id)};`);
  lines.push('}');
  return `${lines.join('\n')}\n`;
}

function planMermaid(plan: Plan): string {
  const ids = new Map(plan.nodes.map((p, i) => [p.node.id, `n${i}`]));
  const lines = ['flowchart LR'];
  for (const p of plan.nodes) {
    lines.push(`  ${ids.get(p.node.id)}["${p.node.id.replace(/"/g, '#quot;')}"]:::${p.status}`);
  }
  for (const p of plan.nodes) for (const d of p.node.deps) lines.push(`  ${ids.get(d.id)} --> ${ids.get(p.node.id)}`);
  lines.push('  classDef run fill:#ffd8a8,stroke:#e8590c', '  classDef cached fill:#f1f3f5,stroke:#868e96');
  return `${lines.join('\n')}\n`;
}

/**
 * A GitHub Actions matrix: one entry per image with nodes to run, `targets` being those nodes'
 * ids (space-separated) for `graph build $targets`; `{"include": []}` when nothing runs.
 */
export function planMatrix(plan: Plan): { include: Array<{ image: string; targets: string }> } {
  const byImage = new Map<string, string[]>();
  for (const p of plan.nodes) {
    if (p.status !== 'run') continue;
    const image = p.node.image ?? '-';
    const list = byImage.get(image) ?? [];
    list.push(p.node.id);
    byImage.set(image, list);
  }
  return { include: [...byImage].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([image, targets]) => ({ image, targets: targets.join(' ') })) };
}

/**
 * One line about a shard, e.g. `shard 1/2 (split 0123456789abcdef): 5 nodes; images base, pwm;
 * dependencies owned by other shards: build:base` (`nodes`: how many the shard plans).
 */
export function shardLine(shard: ShardSummary, nodes: number): string {
  const parts = [`shard ${shard.index}/${shard.count} (split ${shard.split}): ${plural(nodes, 'node')}`];
  parts.push(shard.groups.length ? `${shard.groups.length === 1 ? 'image' : 'images'} ${shard.groups.join(', ')}` : 'no image of its own');
  if (shard.dependencies.length) parts.push(`${shard.dependencies.length === 1 ? 'a dependency' : 'dependencies'} owned by other shards: ${shard.dependencies.join(', ')}`);
  return parts.join('; ');
}

/** `graph plan --format matrix --max-shards N`: the shards' matrix (engine/compile/shard.ts `shardMatrix`). */
export function renderShardMatrix(count: number): string {
  return `${JSON.stringify(shardMatrix(count))}\n`;
}
