/**
 * The Slurm executor: each node the scheduler hands over becomes one batch job, as Snakemake's and
 * Nextflow's slurm executors do; Slurm decides where and when it runs, graph's scheduler still
 * decides what is ready and how many jobs of a kind are in the queue at once.
 *
 * One node, one job:
 *   1. `sbatch --parsable -J graph-<run>-<node>` with the node's log as the job's output, its
 *      timeout as `--time` (whole minutes, rounded up), `gpu: N` as `--gres=gpu:N`, a test's
 *      `cpus:` and `memory:` as `-c` and `--mem`, and `settings.slurm` (partition, account, qos,
 *      args). The job runs `graph run-node --key KEY NODE` on the compute node, which executes
 *      exactly that node and records its result into the shared action cache.
 *   2. Every job of the run is watched by one `squeue -t all` per poll, with backoff (fast while
 *      states change, slower while they do not).
 *   3. When the job ends, `scontrol show job` says where it ran and its exit code; success is the
 *      state COMPLETED *and* an intact record under the node's key (its digest and every artifact
 *      checked), never the exit code alone (a TIMEOUT can report exit 0). Any other state is a
 *      `cluster` failure naming it; NODE_FAIL, PREEMPTED and BOOT_FAIL are resubmitted up to
 *      `retries` times with the failed host in `--exclude`.
 *   4. On an interrupt, every job of the run still in the queue is cancelled with one `scancel`,
 *      and the node ends `interrupted` once Slurm says the job has ended.
 *
 * Assumption (documented in the README): the workspace and the cache directory are on a file
 * system every node mounts, at the same path, so the job reads the declarations and the
 * dependencies' outputs and the coordinator reads its record.
 */
import { appendFileSync, readFileSync, rmdirSync, rmSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { ActionCache } from '../cache/action-cache.js';
import { quoteArg } from '../process.js';
import type { NodeOutputs } from '../rule.js';
import type { ContentStore } from '../cache/store.js';
import { systemClock, type Clock } from './clock.js';
import type { Executor, Job, Outcome, Placement } from './executor.js';
import { describeFailure, type Failure } from './failure.js';
import { isEnded, jobName, RETRYABLE_STATES, sbatchArgs, SlurmCli, type FailedState, type JobDetail, type JobId, type QueueRow, type SlurmSettings } from './slurm.js';

export interface SlurmExecutorOptions {
  readonly cli: SlurmCli;
  readonly settings: SlurmSettings;
  /** The shared action cache and store, where jobs record their results. */
  readonly cache: ActionCache;
  readonly store: ContentStore;
  /** Absolute workspace directory (the jobs' working directory). */
  readonly root: string;
  /** Absolute `.graph` directory; a failed job's note (its `Failure`) goes under `slurm/<run>/`. */
  readonly stateDir: string;
  /** This run's id, in every job name (`graph-<run>-<node>`). */
  readonly run: string;
  /**
   * The command a job runs to execute one node, before `--key KEY --failure-file F -- NODE`:
   * `[node, cli.js, -C, ROOT, run-node, (settings overrides)]`.
   */
  readonly command: readonly string[];
  /** Resubmissions of a node after NODE_FAIL, PREEMPTED or BOOT_FAIL (default 0). */
  readonly retries?: number;
  readonly clock?: Clock;
  /** First and longest wait between two polls, in milliseconds (default 250 and 5000). */
  readonly pollMinMs?: number;
  readonly pollMaxMs?: number;
  /** Polls in a row that may fail (squeue unreachable) before every job fails (default 10). */
  readonly pollFailures?: number;
  /** How long an interrupted node waits for Slurm to confirm its job ended, ms (default 30000). */
  readonly cancelWaitMs?: number;
}

/** Polls in a row a job may be missing from squeue before `scontrol` is asked about it. */
const MISSING_POLLS = 3;

export class SlurmExecutor implements Executor {
  private readonly clock: Clock;
  private readonly watch: JobWatch;
  /** Jobs of this run not yet seen ended. */
  private readonly active = new Set<JobId>();
  /** sbatch's message after its first refusal: nothing more is submitted. */
  private refused?: string;
  private cancelBatch: JobId[] = [];

  constructor(private readonly options: SlurmExecutorOptions) {
    this.clock = options.clock ?? systemClock;
    this.watch = new JobWatch(options.cli, this.clock, options.pollMinMs ?? 250, options.pollMaxMs ?? 5000, options.pollFailures ?? 10);
  }

  /** Jobs submitted by this run that have not ended (for tests and a last `scancel`). */
  get activeJobs(): JobId[] {
    return [...this.active];
  }

  /** `scancel` every job of this run still in the queue (one call). */
  async cancelAll(): Promise<void> {
    await this.options.cli.cancel([...this.active]);
  }

  async run(job: Job): Promise<Outcome> {
    const { options, clock } = this;
    const p = job.planned;
    const node = p.node;
    const t0 = clock.now();
    const exclude: string[] = [];
    const failureFile = path.join(options.stateDir, 'slurm', options.run, `${path.basename(job.log)}.failure.json`);
    let where: Placement = { executor: 'slurm' };
    const note = (text: string) => {
      try {
        appendFileSync(job.log, text);
      } catch {
        // the log is gone: the outcome still says it
      }
    };
    const failed = (failure: Failure): Outcome => {
      note(`# failed: ${describeFailure(failure)}\n`);
      return { ok: false, failure, duration_ms: clock.now() - t0, where };
    };
    try {
      await writeFile(job.log, `# ${node.id}\n# key ${p.key}\n# why: ${p.reasons.join('; ')}\n`);
    } catch (e) {
      return failed({ type: 'error', message: `cannot write ${job.log}: ${(e as Error).message}` });
    }
    for (let attempt = 0; ; attempt++) {
      if (job.signal.aborted) return failed({ type: 'interrupted' });
      if (this.refused) return failed({ type: 'error', message: this.refused });
      rmSync(failureFile, { force: true });
      const args = sbatchArgs(
        {
          name: jobName(options.run, node.id),
          log: job.log,
          chdir: options.root,
          ...(node.timeoutMs !== undefined ? { timeoutMs: node.timeoutMs } : {}),
          resources: node.resources,
          ...(node.request?.cpus !== undefined ? { cpus: node.request.cpus } : {}),
          ...(node.request?.memoryMb !== undefined ? { memoryMb: node.request.memoryMb } : {}),
          exclude,
        },
        options.settings,
      );
      const argv = [...options.command, '--key', p.key, '--failure-file', failureFile, '--', node.id];
      const script = `#!/bin/sh\n# graph: ${node.id}\nexec ${argv.map(quoteArg).join(' ')}\n`;
      let id: JobId;
      try {
        id = await options.cli.submit(args, script);
      } catch (e) {
        this.refused ??= `sbatch refused the job: ${(e as Error).message}`;
        return failed({ type: 'error', message: this.refused });
      }
      this.active.add(id);
      where = { executor: 'slurm', job: id };
      const submitted = `# slurm: job ${id}${attempt ? ` (try ${attempt + 1})` : ''}: sbatch ${args.map(quoteArg).join(' ')}\n`;
      note(submitted);

      const { row, lost } = await this.waitEnd(id, job.signal);
      if (lost) {
        // Slurm cannot be asked: the job may still run, and nothing of this run should.
        this.cancelSoon(id);
        this.active.delete(id);
        return failed({ type: 'cluster', state: 'UNKNOWN', job: id, message: `cannot follow Slurm job ${id} (cancelled): ${lost}` });
      }
      const detail = (await options.cli.show(id).catch(() => undefined)) ?? (row ? detailOf(row) : undefined);
      this.active.delete(id);
      const state = detail?.state ?? 'UNKNOWN';
      const host = detail?.host ?? row?.host;
      where = { executor: 'slurm', job: id, ...(host ? { host } : {}) };
      const code = detail?.exitCode;
      // The job's own run rewrote the log from its start: say again how it was submitted.
      note(`${submitted}# slurm: job ${id} ${state}${host ? ` on ${host}` : ''}${code !== undefined ? ` (exit code ${code})` : ''}\n`);
      if (job.signal.aborted) return failed({ type: 'interrupted' });

      // COMPLETED, or a job Slurm has forgotten: the record decides.
      if (state === 'COMPLETED' || state === 'UNKNOWN') {
        const verified = this.verify(p.key);
        if (verified.ok) return { ok: true, result: verified.result, duration_ms: clock.now() - t0, where };
        if (state === 'COMPLETED') return failed({ type: 'record', message: `Slurm job ${id} COMPLETED${host ? ` on ${host}` : ''}, but ${verified.why}` });
        return failed({ type: 'cluster', state, job: id, message: `Slurm job ${id} left the queue with no state Slurm remembers, and ${verified.why}` });
      }
      if ((RETRYABLE_STATES as readonly string[]).includes(state) && attempt < (options.retries ?? 0)) {
        if (host) exclude.push(host);
        note(`# slurm: ${state}: submitting again${exclude.length ? ` without ${[...new Set(exclude)].join(', ')}` : ''}\n`);
        continue;
      }
      const cause = readFailure(failureFile);
      return failed({
        type: 'cluster',
        state,
        job: id,
        ...(host ? { host } : {}),
        ...(code !== undefined ? { code } : {}),
        message: clusterMessage(state as FailedState, id, host, code, detail, cause),
        ...(cause ? { cause } : {}),
      });
    }
  }

  /**
   * Wait for job `id` to end; on `signal`, cancel it (batched with the run's other jobs into one
   * `scancel`) and wait at most `cancelWaitMs` for Slurm to say it ended.
   * @returns its last row (none when Slurm no longer knows it), or `lost`: why it cannot be followed
   *   (squeue failed `pollFailures` times in a row).
   */
  private async waitEnd(id: JobId, signal: AbortSignal): Promise<{ row?: QueueRow; lost?: string }> {
    const ended = this.watch.wait(id);
    const onAbort = () => this.cancelSoon(id);
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
    try {
      const first = await Promise.race([ended, aborted(signal)]);
      if (first !== ABORTED) return first ? { row: first } : {};
      const cap = this.clock.sleep(this.options.cancelWaitMs ?? 30_000).then(() => undefined);
      const row = await Promise.race([ended, cap]);
      return row ? { row } : {};
    } catch (e) {
      return signal.aborted ? {} : { lost: (e as Error).message };
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
  }

  /** Cancel `id` together with every other job cancelled in the same turn: one `scancel`. */
  private cancelSoon(id: JobId): void {
    this.cancelBatch.push(id);
    if (this.cancelBatch.length > 1) return;
    queueMicrotask(() => {
      const ids = this.cancelBatch.sort((a, b) => Number(a) - Number(b) || a.localeCompare(b));
      this.cancelBatch = [];
      void this.options.cli.cancel(ids).then(() => this.watch.poke());
    });
  }

  /** The record a job left under `key`, checked: the entry's digest and every artifact's. */
  private verify(key: string): { ok: true; result: NodeOutputs } | { ok: false; why: string } {
    const entry = this.options.cache.get(key);
    if (!entry) return { ok: false, why: `no intact record of its action key ${key.slice(0, 12)} is in the cache (is the cache directory on a file system every node mounts?)` };
    for (const a of entry.result.artifacts) {
      const state = this.options.store.check(a);
      if (state !== 'intact') return { ok: false, why: `its output ${a.slice(0, 19)} is ${state} in the store` };
    }
    const { outputs, artifacts, files } = entry.result;
    return { ok: true, result: { outputs, artifacts, ...(files ? { files } : {}) } };
  }
}

const ABORTED = Symbol('aborted');
function aborted(signal: AbortSignal): Promise<typeof ABORTED> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve(ABORTED);
    else signal.addEventListener('abort', () => resolve(ABORTED), { once: true });
  });
}

function detailOf(row: QueueRow): JobDetail {
  return { id: row.id, state: row.state, ...(row.host ? { host: row.host } : {}), ...(row.reason ? { reason: row.reason } : {}) };
}

/**
 * The node's own failure, as `graph run-node` wrote it; undefined when it wrote none. The file is
 * removed (its content is now in the outcome), and its run's directory with the last one.
 */
function readFailure(file: string): Failure | undefined {
  let failure: Failure | undefined;
  try {
    const f = JSON.parse(readFileSync(file, 'utf8')) as Failure;
    failure = typeof f?.type === 'string' ? f : undefined;
  } catch {
    // none written
  }
  rmSync(file, { force: true });
  try {
    rmdirSync(path.dirname(file));
  } catch {
    // other nodes of the run still have theirs
  }
  return failure;
}

/** One line: the state, the job, the host, and what it means. */
function clusterMessage(state: FailedState, id: JobId, host: string | undefined, code: number | undefined, detail: JobDetail | undefined, cause: Failure | undefined): string {
  const at = `Slurm job ${id} ${state}${host ? ` on ${host}` : ''}`;
  switch (state) {
    case 'FAILED':
      return `${at}${code !== undefined ? ` (exit code ${code})` : ''}${cause ? `: ${describeFailure(cause)}` : ''}`;
    case 'TIMEOUT':
      return `${at}: ran past its time limit${detail?.timeLimit ? ` ${detail.timeLimit}` : ''}`;
    case 'OUT_OF_MEMORY':
      return `${at}: ran out of memory (raise the test's memory:)`;
    case 'NODE_FAIL':
      return `${at}: the node failed`;
    case 'PREEMPTED':
      return `${at}: preempted by another job`;
    case 'CANCELLED':
      return `${at}: cancelled outside graph${detail?.reason ? ` (${detail.reason})` : ''}`;
    default:
      return `${at}${detail?.reason ? ` (${detail.reason})` : ''}`;
  }
}

/**
 * Watches jobs with one `squeue` per poll for all of them. The wait between polls starts at
 * `minMs`, grows by half after each poll in which nothing changed, up to `maxMs`, and starts over
 * when a job is added or a state changes.
 */
export class JobWatch {
  private readonly waiters = new Map<JobId, { resolve(row: QueueRow | undefined): void; reject(e: Error): void; last?: string; missing: number; row?: QueueRow }>();
  private running = false;
  private interval: number;
  private wake?: AbortController;
  /** Milliseconds waited before each poll so far (for tests of the backoff). */
  readonly waits: number[] = [];

  constructor(
    private readonly cli: SlurmCli,
    private readonly clock: Clock,
    private readonly minMs: number,
    private readonly maxMs: number,
    private readonly maxFailures: number,
  ) {
    this.interval = minMs;
  }

  /** Resolves with the job's last row once it ended (undefined: Slurm no longer knows it). */
  wait(id: JobId): Promise<QueueRow | undefined> {
    return new Promise((resolve, reject) => {
      this.waiters.set(id, { resolve, reject, missing: 0 });
      this.interval = this.minMs;
      if (!this.running) {
        this.running = true;
        void this.loop();
      }
    });
  }

  /** Poll now (after an `scancel`). */
  poke(): void {
    this.interval = this.minMs;
    this.wake?.abort();
  }

  private async loop(): Promise<void> {
    let failures = 0;
    while (this.waiters.size) {
      this.wake = new AbortController();
      this.waits.push(this.interval);
      await this.clock.sleep(this.interval, this.wake.signal).catch(() => {});
      const ids = [...this.waiters.keys()];
      let rows: Map<JobId, QueueRow>;
      try {
        rows = await this.cli.queue(ids);
        failures = 0;
      } catch (e) {
        if (++failures >= this.maxFailures) {
          for (const [id, w] of this.waiters) {
            this.waiters.delete(id);
            w.reject(new Error(`squeue failed ${failures} times in a row: ${(e as Error).message}`));
          }
          break;
        }
        this.interval = Math.min(this.maxMs, this.interval * 1.5);
        continue;
      }
      let changed = false;
      for (const id of ids) {
        const w = this.waiters.get(id);
        if (!w) continue;
        const row = rows.get(id);
        if (!row) {
          // Purged from squeue (MinJobAge) or not listed yet: scontrol has the last word.
          if (++w.missing < MISSING_POLLS) continue;
          this.waiters.delete(id);
          const detail = await this.cli.show(id).catch(() => undefined);
          w.resolve(detail ? { id, state: isEnded(detail.state) ? detail.state : 'UNKNOWN', ...(detail.host ? { host: detail.host } : {}) } : undefined);
          changed = true;
          continue;
        }
        w.missing = 0;
        if (row.state !== w.last) changed = true;
        w.last = row.state;
        if (isEnded(row.state)) {
          this.waiters.delete(id);
          w.resolve(row);
        }
      }
      this.interval = changed ? this.minMs : Math.min(this.maxMs, Math.round(this.interval * 1.5));
    }
    this.running = false;
  }
}
