/**
 * The commands that run nodes: `graph build` (plan, then the scheduler over the configured
 * executor, with the progress and profile reporters and the report files) and `graph run-node`
 * (one node, as a Slurm job runs it). cli.ts loads this module only for them.
 */
import path from 'node:path';
import { materializeNeeded } from '../cache/remote/materialize.js';
import type { ShardSpec } from '../compile/shard.js';
import { systemClock } from '../execute/clock.js';
import { runNodeCommand, setUpExecutor } from '../execute/executor-setup.js';
import { KeyLeases } from '../execute/lease.js';
import { CacheRecorder } from '../execute/recorder.js';
import { runNode } from '../execute/run-node.js';
import { executePlan } from '../execute/scheduler.js';
import { hostDevices } from '../execute/devices.js';
import { ExecaRunner } from '../process.js';
import { reportJson, reportJunit, writeReport } from '../report/build-report.js';
import { shardLine } from '../report/plan.js';
import { profileReporter } from '../report/profile.js';
import { progressReporter } from '../report/progress.js';
import { buildMarkdown } from '../report/step-summary.js';
import { UsageError, type NodeId } from '../rule.js';
import { recordProcess, sweepTemps } from '../tmp.js';
import type { CommandContext, CommandOutcome } from './command.js';
import type { Interrupts } from './interrupts.js';
import { makePlan, stepSummary, type SelectionValues } from './selection.js';

/** `graph build`, its arguments parsed and checked (report paths writable, numbers whole). */
export interface BuildRequest {
  readonly values: SelectionValues;
  readonly targets: readonly string[];
  /** `--jobs`: most nodes at once. */
  readonly jobs: number;
  /** `--limit KIND=N`: checked against the rules' kinds here. */
  readonly limits: Readonly<Record<string, number>>;
  readonly failFast: boolean;
  /** `--report`, `--junit`, `--profile` files. */
  readonly report?: string;
  readonly junit?: string;
  readonly profile?: string;
  readonly shard?: ShardSpec;
  /** `--retries` (Slurm). */
  readonly retries: number;
  /** The settings overrides (`--builder`, `--sandbox`) that Slurm jobs repeat. */
  readonly overrides: Readonly<Record<string, string>>;
  /** The CLI's own path, for the Slurm jobs' command. */
  readonly cliPath: string;
  /** Whether stderr is a terminal that takes a live view, and its width. */
  readonly live: boolean;
  readonly columns?: number;
  readonly interrupts: Interrupts;
}

/**
 * Plan, run what is not cached, write the reports.
 * @returns `failed` when a node failed, `interrupted` after SIGINT/SIGTERM.
 * @throws UsageError for an unknown `--limit` kind; SlurmConfigError; as `makePlan`.
 */
export async function buildCommand(c: CommandContext, r: BuildRequest): Promise<CommandOutcome> {
  const { io, rules } = c;
  const ws = c.open();
  for (const kind of Object.keys(r.limits)) {
    if (!ws.graph.rules.has(kind)) throw new UsageError(`--limit: unknown node kind '${kind}' (kinds: ${[...ws.graph.rules.keys()].join(', ')})`);
  }
  r.interrupts.workspace(ws, rules);
  // Before this process makes any temp file: those of processes that are gone go first.
  const swept = sweepTemps(ws.root, ws.stateDir, rules);
  if (swept.removed.length) io.err(`removed ${swept.removed.length} temp file${swept.removed.length === 1 ? '' : 's'} left by graph processes that are gone\n`);
  for (const k of swept.kept) io.err(`kept ${path.relative(ws.root, k.path)}, left by a graph process that is gone: ${k.why}\n`);
  recordProcess(ws.stateDir);
  const made = await makePlan(ws, r.values, r.targets, rules, io.err, r.shard);
  const { digester, cache, store, remote, lookups, shard: shardSummary } = made;
  digester.save();
  cache.compact();
  if (shardSummary) io.err(`${shardLine(shardSummary, made.plan.nodes.length)}\n`);
  // Builds without the bytes: only the remote hits a node that runs needs are downloaded.
  // Targets named on the command line are wanted for their outputs too (as Bazel downloads
  // top-level outputs); a build of everything downloads nothing it does not use.
  const wanted = r.targets.length ? made.selected : undefined;
  const plan = lookups ? await materializeNeeded(made.plan, { cache, remote: lookups, store, root: ws.root, signal: r.interrupts.signal, wanted }) : made.plan;
  const progress = progressReporter({ write: io.err, live: r.live, columns: r.columns, root: ws.root });
  const profile = r.profile ? profileReporter({ now: systemClock.now, deps: (id) => ws.graph.node(id).deps.map((d) => d.id), key: (id) => plan.byId.get(id)?.key }) : undefined;
  const runner = new ExecaRunner();
  const { executor } = await setUpExecutor({ ws, plan, cache, store, runner, retries: r.retries, command: runNodeCommand(r.cliPath, ws.root, r.overrides) });
  const summary = await executePlan(plan, {
    workspace: ws.forRules,
    jobs: r.jobs,
    limits: { ...ws.decls.settings.concurrency, ...r.limits },
    resources: ws.decls.settings.resources,
    devices: hostDevices(ws.decls.settings),
    failFast: r.failFast,
    signal: r.interrupts.signal,
    runner,
    ...(executor ? { executor } : {}),
    cache,
    store,
    stateDir: ws.stateDir,
    leases: new KeyLeases({ dir: path.join(ws.cacheDir, 'leases'), clock: systemClock }),
    recorder: new CacheRecorder(cache, store, remote),
    emit: profile
      ? (e) => {
          profile.emit(e);
          progress(e);
        }
      : progress,
  });
  r.interrupts.finished();
  if (profile && r.profile) writeReport(r.profile, `${JSON.stringify(profile.trace())}\n`);
  stepSummary(buildMarkdown(summary), io.err);
  if (r.report) writeReport(r.report, reportJson(summary, ws.root, shardSummary));
  if (r.junit) writeReport(r.junit, reportJunit(summary));
  if (summary.interrupted) return 'interrupted';
  return summary.counts.failed > 0 ? 'failed' : 'ok';
}

/**
 * `graph run-node --key KEY NODE` (engine/execute/run-node.ts); the node's lines go to `io.out`.
 * @throws UsageError when NODE is not a node of the workspace.
 */
export async function runNodeCommandLine(c: CommandContext, id: string, key: string, failureFile: string | undefined, interrupts: Interrupts): Promise<CommandOutcome> {
  const ws = c.open();
  if (!ws.graph.has(id)) throw new UsageError(`no node '${id}'`);
  const result = await runNode(ws, { id: id as NodeId, key, ...(failureFile !== undefined ? { failureFile } : {}), signal: interrupts.signal, write: c.io.out });
  interrupts.finished();
  if (interrupts.signal.aborted) return 'interrupted';
  return result.code === 0 ? 'ok' : 'failed';
}
