/**
 * The local executor: runs a node's rule in this process (its tools as child processes on this
 * machine, through the `ProcessRunner`). It owns what one run of a node needs: the log file (a
 * header naming the node, its key and why it runs), a scratch directory removed afterwards, the
 * node's timeout, and the translation of whatever ended the node into a `Failure`.
 */
import { appendFileSync, mkdirSync, rmSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import type { ProcessRunner } from '../process.js';
import { NodeFailure, type ExecContext, type Rule, type RuleWorkspace } from '../rule.js';
import type { ContentStore } from '../store.js';
import { systemClock, type Clock } from './clock.js';
import type { Executor, Job, Outcome } from './executor.js';
import { describeFailure, type Failure } from './failure.js';

export interface LocalExecutorOptions {
  /** What rules may know of the workspace (`ExecContext.workspace`). */
  readonly workspace: RuleWorkspace;
  /** Rules by node kind. */
  readonly rules: ReadonlyMap<string, Rule>;
  readonly runner: ProcessRunner;
  readonly store: ContentStore;
  /** Absolute `.graph` directory: `out/`, `cache/` and `tmp/` (scratch) are under it. */
  readonly stateDir: string;
  readonly clock?: Clock;
}

export class LocalExecutor implements Executor {
  private readonly clock: Clock;

  constructor(private readonly options: LocalExecutorOptions) {
    this.clock = options.clock ?? systemClock;
  }

  async run(job: Job): Promise<Outcome> {
    const { options, clock } = this;
    const p = job.planned;
    const node = p.node;
    const t0 = clock.now();
    let tmpDir: string | undefined;
    const signals = [job.signal];
    if (node.timeoutMs !== undefined) signals.push(clock.timeout(node.timeoutMs));
    const signal = AbortSignal.any(signals);
    try {
      // Files are created on libuv's thread pool: creating one costs ≈0.5 ms here, and the event
      // loop must stay free to start other nodes.
      await writeFile(job.log, `# ${node.id}\n# key ${p.key}\n# why: ${p.reasons.join('; ')}\n`);
      const rule = options.rules.get(node.kind);
      if (!rule) throw new Error(`no rule for node kind '${node.kind}'`);
      const ctx: ExecContext = {
        workspace: options.workspace,
        signal,
        log: { path: job.log, write: (text) => appendFileSync(job.log, text) },
        runner: options.runner,
        store: options.store,
        outDir: path.join(options.stateDir, 'out'),
        cacheDir: path.join(options.stateDir, 'cache'),
        env: p.record.env,
        keys: { node: p.key, deps: p.record.deps },
        deps: job.deps,
        scratchDir: () => {
          if (!tmpDir) {
            tmpDir = path.join(options.stateDir, 'tmp', `${process.pid}-${randomBytes(6).toString('hex')}`);
            mkdirSync(tmpDir, { recursive: true });
          }
          return tmpDir;
        },
      };
      const result = await rule.execute(node, ctx);
      if (signal.aborted) throw signal.reason;
      return { ok: true, result, duration_ms: clock.now() - t0 };
    } catch (e) {
      let failure: Failure;
      if (job.signal.aborted) failure = { type: 'interrupted' };
      else if (signal.aborted) failure = { type: 'timeout', limit_ms: node.timeoutMs ?? 0 };
      else if (e instanceof NodeFailure) failure = e.detail.type === 'error' ? { type: 'error', message: e.message } : { ...e.detail, message: e.message };
      else failure = { type: 'error', message: e instanceof Error ? e.message : String(e) };
      try {
        appendFileSync(job.log, `\n# failed: ${describeFailure(failure)}\n`);
      } catch {
        // the log is gone or the disk is full: the failure is still reported
      }
      return { ok: false, failure, duration_ms: clock.now() - t0 };
    } finally {
      if (tmpDir) rmSync(tmpDir, { recursive: true, force: true });
    }
  }
}
