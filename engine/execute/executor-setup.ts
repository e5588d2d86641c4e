/**
 * The executor a build runs its plan on, from the settings (`settings.executor`, `--executor`):
 * undefined for all-local (the scheduler's default), else a `SlurmExecutor` for the kinds that go
 * to Slurm, behind an `ExecutorByKind` when some kinds stay local. Slurm is checked (sbatch on
 * PATH, the partition exists) before anything is submitted, and only when a node of a Slurm kind
 * will run.
 */
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import type { ActionCache } from '../cache/action-cache.js';
import type { Plan } from '../plan.js';
import type { ProcessRunner } from '../process.js';
import type { ContentStore } from '../cache/store.js';
import type { Workspace } from '../workspace.js';
import type { Executor } from './executor.js';
import { ExecutorByKind } from './executor-by-kind.js';
import { executorOf } from './executor-settings.js';
import { LocalExecutor } from './local-executor.js';
import { SlurmCli } from './slurm.js';
import { SlurmExecutor } from './slurm-executor.js';

export interface ExecutorSetup {
  readonly ws: Workspace;
  readonly plan: Plan;
  readonly cache: ActionCache;
  readonly store: ContentStore;
  readonly runner: ProcessRunner;
  /** `--retries`: resubmissions after NODE_FAIL, PREEMPTED, BOOT_FAIL. */
  readonly retries: number;
  /** The command a job runs, up to the `run-node` arguments: `[node, cli.js, -C, ROOT, run-node, …]`. */
  readonly command: readonly string[];
  /** Default: Slurm's commands through `captureOutput`. */
  readonly cli?: SlurmCli;
}

/**
 * @returns `executor` undefined when every node runs locally; `slurm` the Slurm executor, if any.
 * @throws SlurmConfigError when a node would go to Slurm and Slurm cannot take it.
 */
export async function setUpExecutor(s: ExecutorSetup): Promise<{ executor?: Executor; slurm?: SlurmExecutor }> {
  const settings = s.ws.decls.settings.executor;
  const kinds = [...s.ws.graph.rules.keys()];
  const slurmKinds = kinds.filter((k) => executorOf(settings, k) === 'slurm');
  if (!slurmKinds.length) return {};
  const cli = s.cli ?? new SlurmCli();
  if (s.plan.nodes.some((p) => p.status === 'run' && slurmKinds.includes(p.node.kind))) await cli.check(settings.slurm);
  const slurm = new SlurmExecutor({
    cli,
    settings: settings.slurm,
    cache: s.cache,
    store: s.store,
    root: s.ws.root,
    stateDir: s.ws.stateDir,
    run: randomBytes(4).toString('hex'),
    command: s.command,
    retries: s.retries,
  });
  if (slurmKinds.length === kinds.length) return { executor: slurm, slurm };
  const local = new LocalExecutor({ workspace: s.ws.forRules, rules: s.ws.graph.rules, runner: s.runner, store: s.store, stateDir: s.ws.stateDir });
  return { executor: new ExecutorByKind(new Map(slurmKinds.map((k) => [k, slurm])), local), slurm };
}

/** Where a node of `kind` runs, for the plan: `slurm` or `local`. */
export function placementOf(ws: Workspace, kind: string): string {
  return executorOf(ws.decls.settings.executor, kind);
}

/** The jobs' command: this Node.js and this CLI, on the workspace, with the settings overrides. */
export function runNodeCommand(cliPath: string, root: string, overrides: Readonly<Record<string, string>>): string[] {
  const flags = Object.entries(overrides)
    .filter(([name]) => name !== 'executor')
    .sort(([a], [b]) => a.localeCompare(b))
    // A flag (`--require-gpu`) has the value 'true', which no setting with a value takes.
    .map(([name, value]) => (value === 'true' ? `--${name}` : `--${name}=${value}`));
  return [process.execPath, path.resolve(cliPath), '-C', root, 'run-node', ...flags];
}
