/**
 * Child processes. Rules start tools only through a `ProcessRunner`, so engine tests swap in a
 * fake and every real process is started one way: in its own process group, output appended to
 * the node's log, and the whole group ended (SIGTERM, then SIGKILL after a grace period) when the
 * node's signal aborts.
 */
import type { Readable } from 'node:stream';
import type { execa as Execa } from 'execa';

// execa costs ~130 ms to import; plan and validate never start a process, so load it on first use.
let execaPromise: Promise<typeof Execa> | undefined;
const loadExeca = () => (execaPromise ??= import('execa').then((m) => m.execa));

export interface RunOptions {
  readonly cwd?: string;
  /** Complete environment of the child (nothing is inherited implicitly). */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Aborting ends the child's whole process group. */
  readonly signal?: AbortSignal;
  /** Absolute path of a log file that receives stdout and stderr (appended). */
  readonly logFile?: string;
  /** Bytes, text or a stream written to the child's stdin. */
  readonly input?: string | Uint8Array | Readable;
}

export interface RunResult {
  /** Exit code, or undefined when the process was ended by a signal. */
  readonly exitCode?: number;
  readonly signal?: string;
  /** Whether it ended because `signal` aborted. */
  readonly aborted: boolean;
}

/** Starts processes. @see ExecaRunner for the real one. */
export interface ProcessRunner {
  /** Run `argv` to completion. Never throws for a non-zero exit; throws if it cannot start (ENOENT). */
  run(argv: readonly string[], options?: RunOptions): Promise<RunResult>;
}

/** Grace period between SIGTERM and SIGKILL for a process group, in milliseconds. */
export const KILL_GRACE_MS = 2000;

/** The real runner, on execa. */
export class ExecaRunner implements ProcessRunner {
  async run(argv: readonly string[], options: RunOptions = {}): Promise<RunResult> {
    const [file, ...args] = argv;
    const execa = await loadExeca();
    const output = options.logFile ? { file: options.logFile, append: true } : 'ignore';
    const child = execa(file, args, {
      cwd: options.cwd,
      env: options.env as Record<string, string>,
      extendEnv: options.env === undefined,
      input: options.input,
      stdin: options.input === undefined ? 'ignore' : undefined,
      stdout: output as 'ignore',
      stderr: output as 'ignore',
      reject: false,
      // Own process group, so ending the node ends every process it started.
      detached: true,
      cleanup: true,
    });
    const pid = child.pid;
    let killTimer: NodeJS.Timeout | undefined;
    const onAbort = () => {
      if (pid === undefined) return;
      killGroup(pid, 'SIGTERM');
      killTimer = setTimeout(() => killGroup(pid, 'SIGKILL'), KILL_GRACE_MS);
      killTimer.unref();
    };
    if (options.signal?.aborted) onAbort();
    else options.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const r = await child;
      if (r.failed && r.exitCode === undefined && r.signal === undefined && !options.signal?.aborted) {
        throw new Error(r.shortMessage ?? `cannot run ${file}`);
      }
      return { exitCode: r.exitCode, signal: r.signal, aborted: options.signal?.aborted ?? false };
    } finally {
      options.signal?.removeEventListener('abort', onAbort);
      if (killTimer) clearTimeout(killTimer);
      // Reap stragglers the command left in its group (daemons, orphans).
      if (pid !== undefined) killGroup(pid, 'SIGKILL');
    }
  }
}

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // already gone
  }
}

/**
 * Run a command and capture its standard output (git, tool version probes, credential helpers).
 * @throws Error with the command's stderr when it exits non-zero or cannot start.
 */
export async function captureOutput(argv: readonly string[], options: { cwd?: string; input?: string } = {}): Promise<string> {
  const [file, ...args] = argv;
  const execa = await loadExeca();
  const r = await execa(file, args, { cwd: options.cwd, reject: false, ...(options.input === undefined ? { stdin: 'ignore' as const } : { input: options.input }) });
  if (r.exitCode !== 0) {
    const why = String(r.stderr || r.shortMessage || '').trim();
    throw new Error(`${argv.join(' ')} failed${why ? `: ${why}` : ''}`);
  }
  return String(r.stdout);
}

/** Shell-style quoting of one argument, for command lines written to logs (display only). */
export function quoteArg(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}
