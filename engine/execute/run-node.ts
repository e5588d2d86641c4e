/**
 * `graph run-node --key KEY NODE`: what a cluster job runs on its compute node. It plans the node
 * and its dependencies in the shared workspace, checks that the node's action key is `KEY` (the
 * coordinator planned the same inputs) and that every dependency is in the shared cache, then runs
 * exactly that node with the local executor and records its result in the cache; it never runs a
 * dependency. The node's time limit is the job's (`--time`): Slurm enforces it, and reports
 * TIMEOUT.
 *
 * @returns through `RunNodeResult`: exit status 0 (ran, or already recorded), 1 (failed: the
 *   failure is also written as JSON to `failureFile`, for the coordinator's report).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { ActionCache } from '../cache/action-cache.js';
import { FileDigester } from '../key/files.js';
import { planBuild, type Plan, type PlannedNode } from '../plan.js';
import { ExecaRunner } from '../process.js';
import type { NodeId } from '../rule.js';
import { ContentStore } from '../cache/store.js';
import { resolveTools } from '../key/tools.js';
import type { Workspace } from '../workspace.js';
import { describeFailure, type Failure } from './failure.js';
import { executePlan } from './scheduler.js';
import { hostDevices, localHostResources } from './devices.js';

export interface RunNodeRequest {
  readonly id: NodeId;
  /** The action key the coordinator planned for the node. */
  readonly key: string;
  /** Where a failure is written as JSON (`Failure`). */
  readonly failureFile?: string;
  readonly signal?: AbortSignal;
  /** Lines for the job's output (the node's log). */
  readonly write: (text: string) => void;
}

/** 0: the node ran and is recorded, or was already; 1: it failed (`failure`). */
export interface RunNodeResult {
  readonly code: 0 | 1;
  readonly failure?: Failure;
}

/**
 * Run exactly node `id` of `ws`, as planned under `key`.
 * @throws Error when `id` is not a node of the workspace.
 */
export async function runNode(ws: Workspace, req: RunNodeRequest): Promise<RunNodeResult> {
  const fail = (failure: Failure): RunNodeResult => {
    req.write(`# run-node: ${describeFailure(failure)}\n`);
    if (req.failureFile) {
      try {
        mkdirSync(path.dirname(req.failureFile), { recursive: true });
        writeFileSync(req.failureFile, `${JSON.stringify(failure)}\n`);
      } catch {
        // the exit status still says it failed
      }
    }
    return { code: 1, failure };
  };
  if (!ws.graph.has(req.id)) throw new Error(`no node '${req.id}' in ${ws.root}`);
  const cache = new ActionCache(ws.cacheDir);
  const store = new ContentStore(path.join(ws.cacheDir, 'cas'));
  const digester = new FileDigester(ws.root, path.join(ws.stateDir, 'stat-memo.json'), ws.decls.boundary);
  const selection = ws.graph.withDependencies(new Set([req.id]));
  const tools = await resolveTools([...selection].map((id) => ws.graph.node(id)), path.join(ws.stateDir, 'tools.json'));
  const full = planBuild(ws.graph, selection, { root: ws.root, cache, store, digester, env: process.env, tools, hostResources: localHostResources(ws.decls.settings, true) });
  const target = full.byId.get(req.id) as PlannedNode;
  if (target.key !== req.key) {
    return fail({ type: 'error', message: `${req.id} has action key ${target.key.slice(0, 12)} on this node, not ${req.key.slice(0, 12)} as planned: the workspace, the environment or a tool differs here (${target.reasons.join('; ') || 'cached'})` });
  }
  if (target.status === 'cached') {
    req.write(`# run-node: ${req.id} is already recorded under ${req.key.slice(0, 12)}\n`);
    return { code: 0 };
  }
  const missing = full.nodes.filter((p) => p.node.id !== req.id && p.status !== 'cached').map((p) => p.node.id);
  if (missing.length) {
    return fail({ type: 'error', message: `dependencies not in the cache on this node: ${missing.join(', ')} (is the cache directory on a file system every node mounts?)` });
  }
  // Slurm holds the time limit (--time): the node runs without one of its own here.
  const { timeoutMs: _limit, ...untimed } = target.node;
  const nodes = full.nodes.map((p) => (p === target ? { ...p, node: untimed } : p));
  const plan: Plan = { graph: full.graph, nodes, byId: new Map(nodes.map((p) => [p.node.id, p])) };
  digester.save();
  let failure: Failure | undefined;
  const summary = await executePlan(plan, {
    workspace: ws.forRules,
    jobs: 1,
    limits: {},
    // This machine's tokens and devices: a GPU test holds GPUs of the node it runs on.
    resources: ws.decls.settings.resources,
    devices: hostDevices(ws.decls.settings, true),
    failFast: true,
    ...(req.signal ? { signal: req.signal } : {}),
    runner: new ExecaRunner(),
    cache,
    store,
    stateDir: ws.stateDir,
    emit: (e) => {
      if (e.type === 'node-finish' && e.result.id === req.id && e.result.failure) failure = e.result.failure;
    },
  });
  const result = summary.results.find((r) => r.id === req.id);
  if (result?.status === 'ran') return { code: 0 };
  return fail(failure ?? { type: 'error', message: `${req.id} did not run` });
}
