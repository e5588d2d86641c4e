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
 * append per line and a read at its end; and a success whose log holds nothing but its header
 * (node, key, why: all in the record) costs none: no file is made (creating a file is the dearest
 * thing a node's run does here, ≈ the rest of the engine's work per node), and an earlier run's
 * log of the node is removed, so `.graph/logs` never shows a stale one.
 */
import { appendFileSync, mkdirSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
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
    // A combined signal only with a timeout (AbortSignal.any costs a listener per node).
    const signal = node.timeoutMs === undefined ? job.signal : AbortSignal.any([job.signal, clock.timeout(node.timeoutMs)]);
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
      const said = log.close(true);
      return { ok: true, result, duration_ms: clock.now() - t0, log: said.text, ...(said.written ? {} : { noLogFile: true }) };
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
    private readonly header: string,
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
   * Write the file if it is not written yet; with `skipHeaderOnly`, not when nothing but the
   * header was written (an earlier run's file is removed instead).
   * @returns `text`, the log's whole text when it was all in memory until now (the recorder then
   *   need not read the file back), else undefined; `written`, whether the file is there.
   * @throws the fs error when the file cannot be written.
   */
  close(skipHeaderOnly = false): { text: string | undefined; written: boolean } {
    const text = this.pending;
    if (skipHeaderOnly && text === this.header) {
      // One unlink (rmSync stats twice first): there is seldom an earlier log to remove.
      try {
        unlinkSync(this.file);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      }
      this.pending = undefined;
      return { text, written: false };
    }
    this.flush();
    return { text, written: true };
  }

  private flush(): void {
    if (this.pending === undefined) return;
    writeFileSync(this.file, this.pending);
    this.pending = undefined;
  }
}
