/**
 * The local executor: runs a node's rule in this process (its tools as child processes on this
 * machine, through the `ProcessRunner`). It owns what one run of a node needs: the log file (a
 * header naming the node, its key and why it runs), a scratch directory removed afterwards, the
 * node's timeout, and the translation of whatever ended the node into a `Failure`.
 *
 * The log is kept in memory until something needs the file: a child process writing to it (the
 * rule asks for `ctx.log.path`), or the node's end. Then it is written in one go, and a success
 * hands its text to the recorder, which need not read it back. A node whose rule starts no
 * process (a build from layers, a publish) so costs one file write, not a create at its start, an
 * append per line and a read at its end.
 */
import { appendFileSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import type { ProcessRunner } from '../process.js';
import { NodeFailure, type ExecContext, type LogSink, type Rule, type RuleWorkspace } from '../rule.js';
import type { ContentStore } from '../cache/store.js';
import { systemClock, type Clock } from './clock.js';
import { logHeader, type Executor, type Job, type Outcome } from './executor.js';
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
    const log = new NodeLog(job.log, logHeader(p));
    try {
      const rule = options.rules.get(node.kind);
      if (!rule) throw new Error(`no rule for node kind '${node.kind}'`);
      const ctx: ExecContext = {
        workspace: options.workspace,
        signal,
        log,
        runner: options.runner,
        store: options.store,
        outDir: path.join(options.stateDir, 'out'),
        cacheDir: path.join(options.stateDir, 'cache'),
        env: p.record.env,
        keys: { node: p.key, deps: p.record.deps },
        deps: job.deps,
        devices: job.devices ?? {},
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
      return { ok: true, result, duration_ms: clock.now() - t0, log: log.close() };
    } catch (e) {
      let failure: Failure;
      if (job.signal.aborted) failure = { type: 'interrupted' };
      else if (signal.aborted) failure = { type: 'timeout', limit_ms: node.timeoutMs ?? 0 };
      else if (e instanceof NodeFailure) failure = e.detail.type === 'error' ? { type: 'error', message: e.message } : { ...e.detail, message: e.message };
      else failure = { type: 'error', message: e instanceof Error ? e.message : String(e) };
      try {
        log.write(`\n# failed: ${describeFailure(failure)}\n`);
        log.close();
      } catch {
        // the log is gone or the disk is full: the failure is still reported
      }
      return { ok: false, failure, duration_ms: clock.now() - t0 };
    } finally {
      if (tmpDir) rmSync(tmpDir, { recursive: true, force: true });
    }
  }
}

/**
 * A node's log: its text in memory until `path` is asked for (a child process will write to the
 * file) or `close` writes it; from then on, writes are appended to the file.
 */
class NodeLog implements LogSink {
  /** The whole text while the file is not written yet; undefined once it is. */
  private pending: string | undefined;

  constructor(
    private readonly file: string,
    header: string,
  ) {
    this.pending = header;
  }

  get path(): string {
    this.flush();
    return this.file;
  }

  write(text: string): void {
    if (this.pending !== undefined) this.pending += text;
    else appendFileSync(this.file, text);
  }

  /**
   * Write the file if it is not written yet.
   * @returns the log's whole text when it was all in memory until now (the recorder then need
   *   not read the file back), else undefined.
   * @throws the fs error when the file cannot be written.
   */
  close(): string | undefined {
    const text = this.pending;
    this.flush();
    return text;
  }

  private flush(): void {
    if (this.pending === undefined) return;
    writeFileSync(this.file, this.pending);
    this.pending = undefined;
  }
}
