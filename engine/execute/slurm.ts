/**
 * Slurm's command line as data: the `sbatch` arguments a node becomes, and the parsers of what
 * `sbatch --parsable`, `squeue` and `scontrol show job` print (Slurm 22.05 and later; see the
 * man pages of sbatch(1) "--parsable", squeue(1) "JOB STATE CODES", scontrol(1) "show job").
 * Nothing here starts a process: `SlurmCli` runs the commands through one injected `capture`, so
 * unit tests hand it canned outputs.
 *
 * Job states are Slurm's long names (`squeue -o %T`). A job is *active* while it may still run
 * (PENDING, RUNNING, COMPLETING, …) and *ended* in exactly one terminal state; success is decided
 * by the state alone (COMPLETED), never by the exit code: a TIMEOUT can report exit code 0.
 */
import { captureOutput } from '../process.js';

/** Terminal job states graph tells apart (squeue(1) "JOB STATE CODES"). */
export const FAILED_STATES = ['FAILED', 'TIMEOUT', 'OUT_OF_MEMORY', 'NODE_FAIL', 'CANCELLED', 'PREEMPTED', 'BOOT_FAIL', 'DEADLINE', 'REVOKED'] as const;

/** A terminal state other than COMPLETED. */
export type FailedState = (typeof FAILED_STATES)[number];

/** States after which a job is resubmitted by `--retries` (the node, not the work, failed). */
export const RETRYABLE_STATES: readonly FailedState[] = ['NODE_FAIL', 'PREEMPTED', 'BOOT_FAIL'];

/** A Slurm job id, as `sbatch --parsable` prints it (without the cluster name). */
export type JobId = string & { readonly __brand: 'JobId' };

/** What `settings.slurm` says about every job graph submits. */
export interface SlurmSettings {
  readonly partition?: string;
  readonly account?: string;
  readonly qos?: string;
  /** Further `sbatch` arguments, passed as given (after graph's own, so they win). */
  readonly args: readonly string[];
}

/** What one node asks of the cluster, for `sbatchArgs`. */
export interface JobRequest {
  /** `-J`: `graph-<run>-<node id>`, characters Slurm mangles replaced by `_`. */
  readonly name: string;
  /** Absolute path of the node's log: `--output`, appended to (`--open-mode=append`). */
  readonly log: string;
  /** Absolute working directory of the job (the workspace). */
  readonly chdir: string;
  /** The node's time limit in milliseconds; `--time` in whole minutes, rounded up. */
  readonly timeoutMs?: number;
  /** The node's resource tokens; `gpu: N` becomes `--gres=gpu:N`. */
  readonly resources: Readonly<Record<string, number>>;
  /** `-c`. */
  readonly cpus?: number;
  /** `--mem`, in MiB. */
  readonly memoryMb?: number;
  /** Hosts to avoid (`--exclude`): where earlier tries of this node failed. */
  readonly exclude: readonly string[];
}

/** `graph-<run>-<node id>` with characters other than `A-Za-z0-9._@-` replaced by `_`. */
export function jobName(run: string, nodeId: string): string {
  return `graph-${run}-${nodeId}`.replace(/[^A-Za-z0-9._@-]/g, '_');
}

/** Whole minutes, rounded up, at least 1: `--time` has minute resolution. */
export function timeLimitMinutes(ms: number): number {
  return Math.max(1, Math.ceil(ms / 60_000));
}

/**
 * The `sbatch` arguments of one node (without the script, which goes to sbatch's stdin).
 * Order: graph's own, then `settings.slurm` (partition, account, qos), then its `args`.
 */
export function sbatchArgs(req: JobRequest, settings: SlurmSettings): string[] {
  const args = ['--parsable', '-J', req.name, `--output=${req.log}`, '--open-mode=append', `--chdir=${req.chdir}`];
  if (req.timeoutMs !== undefined) args.push(`--time=${timeLimitMinutes(req.timeoutMs)}`);
  const gpus = req.resources.gpu;
  if (gpus !== undefined && gpus > 0) args.push(`--gres=gpu:${gpus}`);
  if (req.cpus !== undefined) args.push('-c', String(req.cpus));
  if (req.memoryMb !== undefined) args.push(`--mem=${req.memoryMb}M`);
  if (req.exclude.length) args.push(`--exclude=${[...new Set(req.exclude)].sort().join(',')}`);
  if (settings.partition) args.push(`--partition=${settings.partition}`);
  if (settings.account) args.push(`--account=${settings.account}`);
  if (settings.qos) args.push(`--qos=${settings.qos}`);
  args.push(...settings.args);
  return args;
}

/**
 * The job id in `sbatch --parsable` output (`ID` or `ID;CLUSTER`, one line).
 * @throws Error quoting the output when it holds no job id.
 */
export function parseSbatch(stdout: string): JobId {
  const m = /^\s*([0-9]+(?:_[0-9]+)?)(?:;\S+)?\s*$/.exec(stdout);
  if (!m) throw new Error(`sbatch printed no job id: ${JSON.stringify(stdout.trim().slice(0, 200))}`);
  return m[1] as JobId;
}

/** The `squeue -o` format `parseSqueue` reads: id, state, node list, reason. */
export const SQUEUE_FORMAT = '%i|%T|%N|%r';

/** One job as `squeue` lists it. */
export interface QueueRow {
  readonly id: JobId;
  /** Long state name, e.g. `RUNNING`, `COMPLETED`, `TIMEOUT`. */
  readonly state: string;
  /** Where it runs or ran; undefined while pending. */
  readonly host?: string;
  readonly reason?: string;
}

/** Rows of `squeue -h -t all -o SQUEUE_FORMAT`; lines that do not parse are ignored. */
export function parseSqueue(stdout: string): Map<JobId, QueueRow> {
  const rows = new Map<JobId, QueueRow>();
  for (const line of stdout.split('\n')) {
    const [id, state, host, reason] = line.trim().split('|');
    if (!id || !state || !/^[0-9_]+$/.test(id)) continue;
    rows.set(id as JobId, { id: id as JobId, state: state.split(/[\s+]/)[0], ...(host && host !== '(null)' ? { host } : {}), ...(reason && reason !== 'None' ? { reason } : {}) });
  }
  return rows;
}

/** What `scontrol show job` says of a job, as far as graph reads it. */
export interface JobDetail {
  readonly id: JobId;
  readonly state: string;
  /** `ExitCode=CODE:SIGNAL`: the batch script's exit code and the signal that ended it (0: none). */
  readonly exitCode?: number;
  readonly exitSignal?: number;
  /** `BatchHost`, else `NodeList`. */
  readonly host?: string;
  readonly reason?: string;
  /** `TimeLimit` as printed (`00:01:00`, `UNLIMITED`). */
  readonly timeLimit?: string;
}

/**
 * `scontrol show job -o ID` (one line of `Key=Value` pairs; values graph reads hold no spaces).
 * @returns undefined when the output names no job.
 */
export function parseScontrolJob(stdout: string): JobDetail | undefined {
  const fields = new Map<string, string>();
  for (const m of stdout.matchAll(/(?:^|\s)([A-Za-z][A-Za-z0-9/:_]*)=(\S*)/g)) if (!fields.has(m[1])) fields.set(m[1], m[2]);
  const id = fields.get('JobId');
  const state = fields.get('JobState');
  if (!id || !state) return undefined;
  const exit = /^([0-9]+):([0-9]+)$/.exec(fields.get('ExitCode') ?? '');
  const nodeList = fields.get('NodeList');
  const batchHost = fields.get('BatchHost');
  const host = batchHost && batchHost !== '(null)' ? batchHost : nodeList && nodeList !== '(null)' ? nodeList : undefined;
  const reason = fields.get('Reason');
  return {
    id: id as JobId,
    state,
    ...(exit ? { exitCode: Number(exit[1]), exitSignal: Number(exit[2]) } : {}),
    ...(host ? { host } : {}),
    ...(reason && reason !== 'None' ? { reason } : {}),
    ...(fields.has('TimeLimit') ? { timeLimit: fields.get('TimeLimit') } : {}),
  };
}

/** Whether `state` is final: COMPLETED or one of `FAILED_STATES`. */
export function isEnded(state: string): boolean {
  return state === 'COMPLETED' || (FAILED_STATES as readonly string[]).includes(state);
}

/** Runs a command and returns its standard output; throws with its stderr when it fails. */
export type Capture = (argv: readonly string[], options?: { input?: string }) => Promise<string>;

/** Why Slurm cannot be used as configured (no sbatch, an unknown partition): exit status 2. */
export class SlurmConfigError extends Error {}

/**
 * Slurm's commands, each one call: `sbatch`, one `squeue` for many jobs, `scontrol show job`,
 * `scancel`. Every call goes through `capture` (default: `captureOutput`, engine/process.ts).
 */
export class SlurmCli {
  constructor(private readonly capture: Capture = captureOutput) {}

  /**
   * Check before anything is submitted: `sbatch` runs, and the partition exists.
   * @throws SlurmConfigError saying what is wrong.
   */
  async check(settings: SlurmSettings): Promise<void> {
    try {
      await this.capture(['sbatch', '--version']);
    } catch (e) {
      const why = (e as Error).message;
      throw new SlurmConfigError(/ENOENT|not found/.test(why) ? 'sbatch is not on PATH: --executor slurm needs the Slurm client commands (sbatch, squeue, scontrol, scancel)' : `sbatch does not run: ${why}`);
    }
    if (settings.partition) {
      let out: string;
      try {
        out = await this.capture(['scontrol', 'show', 'partition', '-o', settings.partition]);
      } catch {
        // scontrol prints "Partition X not found" and exits 1
        out = '';
      }
      if (!/PartitionName=/.test(out)) throw new SlurmConfigError(`settings.slurm.partition '${settings.partition}' does not exist on this cluster${await this.partitionsHint()}`);
    }
  }

  private async partitionsHint(): Promise<string> {
    try {
      const names = (await this.capture(['sinfo', '-h', '-o', '%R'])).split('\n').map((s) => s.trim()).filter(Boolean);
      return names.length ? ` (partitions: ${[...new Set(names)].sort().join(', ')})` : '';
    } catch {
      return '';
    }
  }

  /**
   * Submit `script` (sbatch reads it from stdin).
   * @throws Error with sbatch's message when it refuses the job.
   */
  async submit(args: readonly string[], script: string): Promise<JobId> {
    return parseSbatch(await this.capture(['sbatch', ...args], { input: script }));
  }

  /** Every job of `ids` that squeue still lists (all states), in one call. */
  async queue(ids: readonly JobId[]): Promise<Map<JobId, QueueRow>> {
    if (!ids.length) return new Map();
    try {
      return parseSqueue(await this.capture(['squeue', '-h', '-t', 'all', '-j', ids.join(','), '-o', SQUEUE_FORMAT]));
    } catch (e) {
      // squeue refuses a list in which no job is known any more (purged after MinJobAge).
      if (/Invalid job id/i.test((e as Error).message)) return new Map();
      throw e;
    }
  }

  /** `scontrol show job`; undefined when Slurm no longer knows the job. */
  async show(id: JobId): Promise<JobDetail | undefined> {
    try {
      return parseScontrolJob(await this.capture(['scontrol', 'show', 'job', '-o', id]));
    } catch (e) {
      if (/Invalid job id/i.test((e as Error).message)) return undefined;
      throw e;
    }
  }

  /** `scancel` the jobs (one call); never throws (a job that already ended is fine). */
  async cancel(ids: readonly JobId[]): Promise<void> {
    if (!ids.length) return;
    try {
      await this.capture(['scancel', ...ids]);
    } catch {
      // already ended, or Slurm unreachable: the poll that follows tells
    }
  }
}
