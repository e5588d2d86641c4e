/**
 * The commands that read and never build: `graph plan`, `graph explain`, `graph query` and
 * `graph validate`. Each writes its result to `io.out`.
 */
import { shardCountFor, type ShardSpec } from '../compile/shard.js';
import { matchTargets } from '../compile/targets.js';
import { executorOf } from '../execute/executor-settings.js';
import { explainNode, explainText } from '../report/explain.js';
import { renderPlanChunks, renderShardMatrix, type PlanFormat } from '../report/plan.js';
import { planMarkdown } from '../report/step-summary.js';
import { UsageError, type NodeId } from '../rule.js';
import type { CommandContext, CommandOutcome } from './command.js';
import { makePlan, selectTargets, stepSummary, type SelectionValues } from './selection.js';

/** `graph plan`, its arguments parsed: `format` checked, `shard` parsed (none for a matrix). */
export interface PlanRequest {
  readonly values: SelectionValues;
  readonly targets: readonly string[];
  readonly format: PlanFormat;
  readonly verbose: boolean;
  /** With `format: 'matrix'`: the shards' matrix of at most this many shards. */
  readonly maxShards?: number;
  readonly shard?: ShardSpec;
}

/**
 * Write the plan of the targets in `format` (engine/report/plan.ts), and its Markdown to
 * GITHUB_STEP_SUMMARY when that is set (not for a matrix).
 * @throws UsageError, TargetError, ChangedSinceError, DiagnosticError.
 */
export async function planCommand(c: CommandContext, r: PlanRequest): Promise<CommandOutcome> {
  const ws = c.open();
  const { plan, digester, shard } = await makePlan(ws, r.values, r.targets, c.rules, c.io.err, r.shard);
  digester.save();
  if (r.maxShards !== undefined) {
    c.io.out(renderShardMatrix(shardCountFor(plan, r.maxShards)));
    return 'ok';
  }
  const notes = c.rules.flatMap((rule) => rule.planNote?.(ws.root, (id) => plan.byId.get(id)?.key) ?? []);
  const elsewhere = (kind: string) => {
    const where = executorOf(ws.decls.settings.executor, kind);
    return where === 'local' ? undefined : where;
  };
  // In pieces: a large JSON plan is never held whole.
  for (const chunk of renderPlanChunks(plan, r.format, r.verbose, notes, shard, elsewhere)) c.io.out(chunk);
  // A matrix job only feeds the build jobs, whose summaries say more.
  if (r.format !== 'matrix') stepSummary(planMarkdown(plan), c.io.err);
  return 'ok';
}

/**
 * `graph explain NODE`: the node's key record beside its last record, as text or JSON.
 * @throws TargetError (with "did you mean") for an unknown id; UsageError for a target that is
 *   not one node.
 */
export async function explainCommand(c: CommandContext, values: SelectionValues, target: string, format: 'text' | 'json'): Promise<CommandOutcome> {
  const ws = c.open();
  const id = target as NodeId;
  if (!ws.graph.has(id)) matchTargets(ws.graph, [id]); // throws the target error, with "did you mean"
  if (!ws.graph.has(id)) throw new UsageError(`'${id}' is not one node: name a node id (graph query lists them)`);
  const { plan, cache, digester } = await makePlan(ws, { ...values, offline: true, registry: values.offline !== true }, [id], c.rules, c.io.err);
  digester.save();
  const p = plan.byId.get(id);
  if (!p) throw new UsageError(`'${id}' is not planned`);
  const lastKey = cache.lastKey(id);
  const record = lastKey === undefined ? undefined : lastKey === p.key ? p.record : cache.get(lastKey)?.record;
  const x = explainNode(p, lastKey !== undefined && record ? { key: lastKey, record } : undefined);
  c.io.out(format === 'json' ? `${JSON.stringify(x, null, 2)}\n` : explainText(x));
  return 'ok';
}

/** `graph query`: the selected node ids, one a line, or `[{id, kind, deps, image, group}]` as JSON. */
export async function queryCommand(c: CommandContext, values: SelectionValues, targets: readonly string[], deps: boolean, format: 'text' | 'json'): Promise<CommandOutcome> {
  const ws = c.open();
  let selected = await selectTargets(ws, values, targets, c.rules);
  if (deps) selected = ws.graph.withDependencies(selected);
  const nodes = ws.graph.order.filter((id) => selected.has(id)).map((id) => ws.graph.node(id));
  if (format === 'json') {
    const rows = nodes.map((n) => ({ id: n.id, kind: n.kind, deps: n.deps.map((d) => d.id).sort(), image: n.image ?? null, group: n.group ?? null }));
    c.io.out(`${JSON.stringify(rows, null, 2)}\n`);
  } else {
    c.io.out(nodes.map((n) => `${n.id}\n`).join(''));
  }
  return 'ok';
}

/** `graph validate`: one line of counts when the declarations compile (else `open` throws their diagnostics). */
export async function validateCommand(c: CommandContext): Promise<CommandOutcome> {
  const ws = c.open();
  const models = [...ws.decls.groups.values()].reduce((n, g) => n + g.models.length, 0);
  c.io.out(`ok: ${ws.decls.images.size} images, ${ws.decls.groups.size} groups, ${models} models, ${ws.graph.size} nodes\n`);
  return 'ok';
}
