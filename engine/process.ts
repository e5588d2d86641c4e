/**
 * Child processes. Rules start tools only through a `ProcessRunner`, so engine tests swap in a
 * fake and every real process is started one way: in its own process group, output appended to
 * the node's log, and the whole group ended (SIGTERM, then SIGKILL after a grace period) when the
 * node's signal aborts.
 *
 * Every child of graph, from the runner, `captureOutput` or `readOutput`, runs in a process group
 * of its own: a terminal's Ctrl-C reaches graph's process group only, and graph decides what to
 * end. And every such group dies with graph, even when graph is killed with SIGKILL: a reaper
 * (one `sh` per graph process, in a group of its own too) is told each group as it starts and
 * ends, and when its standard input reaches end-of-file (graph has exited, however it exited) it
 * ends the groups still listed: SIGTERM, then SIGKILL a second later. (A group is told in the same
 * turn as its process starts: only a SIGKILL in that instant, before graph's next line of
 * JavaScript, leaves one behind.)
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { PassThrough, type Readable } from 'node:stream';
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

/**
 * How long a child that died of SIGINT or SIGTERM waits for its run's signal to abort, in
 * milliseconds. An interrupt can reach graph and the child at once (a service manager signals
 * every process of a unit, `kill` of a whole session), and the child's exit may be seen before
 * graph's own handler has run: the node must then end as interrupted, not failed.
 */
export const INTERRUPT_SETTLE_MS = 500;

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
    if (pid !== undefined) reaper.watch(pid);
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
      let aborted = options.signal?.aborted ?? false;
      if (!aborted && options.signal && (r.signal === 'SIGINT' || r.signal === 'SIGTERM')) aborted = await abortsWithin(options.signal, INTERRUPT_SETTLE_MS);
      return { exitCode: r.exitCode, signal: r.signal, aborted };
    } finally {
      options.signal?.removeEventListener('abort', onAbort);
      if (killTimer) clearTimeout(killTimer);
      // Reap stragglers the command left in its group (daemons, orphans).
      if (pid !== undefined) {
        killGroup(pid, 'SIGKILL');
        reaper.forget(pid);
      }
    }
  }
}

/** Whether `signal` is aborted now or aborts within `ms` milliseconds. */
function abortsWithin(signal: AbortSignal, ms: number): Promise<boolean> {
  if (signal.aborted) return Promise.resolve(true);
  return new Promise((resolve) => {
    const done = (aborted: boolean) => {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      resolve(aborted);
    };
    const onAbort = () => done(true);
    const timer = setTimeout(() => done(false), ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // already gone
  }
}

// The reaper's program. It ignores the signals a terminal or a process-group kill sends, keeps
// the listed groups (`+ PGID`, `- PGID` lines), and at end-of-file ends those left.
const REAPER_SCRIPT = `trap '' INT TERM HUP QUIT
groups=' '
while read -r op pgid; do
  case "$op" in
    +) groups="$groups$pgid " ;;
    -) case "$groups" in *" $pgid "*) groups="\${groups%% $pgid *} \${groups#* $pgid }" ;; esac ;;
  esac
done
[ "$groups" = ' ' ] && exit 0
for g in $groups; do kill -TERM -"$g" 2>/dev/null; done
sleep 1
for g in $groups; do kill -KILL -"$g" 2>/dev/null; done
`;

/**
 * The process groups alive now, and the reaper that ends them if graph dies first. Started with
 * the first child; started again (told every live group) if it ever exits early.
 */
class Reaper {
  private readonly groups = new Set<number>();
  private child: ChildProcess | undefined;

  watch(pgid: number): void {
    this.groups.add(pgid);
    this.tell(`+ ${pgid}\n`);
  }

  forget(pgid: number): void {
    if (this.groups.delete(pgid)) this.tell(`- ${pgid}\n`);
  }

  private tell(line: string): void {
    if (!this.child) {
      const child = spawn('sh', ['-c', REAPER_SCRIPT], { stdio: ['pipe', 'ignore', 'ignore'], detached: true });
      // It must not keep graph running: graph's exit is what it waits for.
      child.unref();
      (child.stdin as unknown as { unref(): void }).unref();
      child.stdin?.on('error', () => undefined);
      child.on('error', () => undefined);
      child.on('exit', () => {
        if (this.child === child) this.child = undefined;
      });
      this.child = child;
      line = [...this.groups].map((g) => `+ ${g}\n`).join('') + (line.startsWith('+') ? '' : line);
    }
    this.child.stdin?.write(line);
  }

  /** SIGKILL every live group now. */
  killAll(): void {
    for (const g of this.groups) killGroup(g, 'SIGKILL');
  }
}

const reaper = new Reaper();

/**
 * SIGKILL the process group of every child running now, without the grace period (a second
 * Ctrl-C: the runs then end at once, as aborted if their signal has aborted).
 */
export function killAllProcesses(): void {
  reaper.killAll();
}

/**
 * Run a command and capture its standard output (git, tool version probes, credential helpers).
 * The command runs in a process group of its own, ended with graph (see the module comment).
 * @throws Error with the command's stderr when it exits non-zero or cannot start.
 */
export async function captureOutput(argv: readonly string[], options: { cwd?: string; input?: string } = {}): Promise<string> {
  const [file, ...args] = argv;
  const execa = await loadExeca();
  const child = execa(file, args, {
    cwd: options.cwd,
    reject: false,
    detached: true,
    cleanup: true,
    ...(options.input === undefined ? { stdin: 'ignore' as const } : { input: options.input }),
  });
  const pid = child.pid;
  if (pid !== undefined) reaper.watch(pid);
  let r;
  try {
    r = await child;
  } finally {
    if (pid !== undefined) {
      killGroup(pid, 'SIGKILL');
      reaper.forget(pid);
    }
  }
  if (r.exitCode !== 0) {
    const why = String(r.stderr || r.shortMessage || '').trim();
    throw new Error(`${argv.join(' ')} failed${why ? `: ${why}` : ''}`);
  }
  return String(r.stdout);
}

/** How a command started by `readOutput` failed: it could not start (`error`), or it ended badly. */
export interface OutputFailure {
  /** Why it could not start (ENOENT…); undefined when it ran. */
  readonly error?: Error;
  readonly exitCode?: number;
  /** The signal that ended it, if one did. */
  readonly signal?: string;
  /** Everything it wrote to standard error. */
  readonly stderr: string;
}

/**
 * A command's standard output as a stream (a tool's tar or decompressed output, too large to
 * buffer), the command in a process group of its own, ended with graph. The stream ends only once
 * the command exits 0, so a consumer never takes a truncated output for a whole one.
 * @param fail makes the error the stream fails with when the command cannot start or does not exit 0.
 * @returns the stream; destroying it ends the command's process group.
 */
export function readOutput(argv: readonly string[], fail: (failure: OutputFailure) => Error): Readable {
  const [file, ...args] = argv;
  const out = new PassThrough();
  const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const pid = child.pid;
  if (pid !== undefined) reaper.watch(pid);
  let stderr = '';
  child.stderr?.on('data', (c: Buffer) => (stderr += c.toString()));
  child.stdout?.pipe(out, { end: false });
  child.on('error', (error) => out.destroy(fail({ error, stderr })));
  child.on('close', (code, signal) => {
    if (pid !== undefined) {
      killGroup(pid, 'SIGKILL');
      reaper.forget(pid);
    }
    if (out.destroyed) return;
    if (code === 0) out.end();
    else out.destroy(fail({ exitCode: code ?? undefined, signal: signal ?? undefined, stderr }));
  });
  out.on('close', () => {
    if (pid !== undefined && child.exitCode === null && child.signalCode === null) killGroup(pid, 'SIGTERM');
  });
  return out;
}

/** Shell-style quoting of one argument, for command lines written to logs (display only). */
export function quoteArg(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}
