/**
 * Test runtimes: the request a test node hands to a runtime backend (run one command in an
 * image's root filesystem, with the run contract's directories mounted; rules/runtime/contract.ts
 * says which), the outcome it gets back, the backend interface, backend selection, and the
 * plumbing the backends share (environment defaults, the mounts in their order, the output and
 * scratch directories, the timeout, reading what the tool said about a failure).
 *
 * Contract of every backend: the command sees the image's root filesystem read-only, the
 * request's read-only mounts (`/input` by default), its output directory read-write (`/output`
 * by default), its scratch directories read-write, a private `/tmp`, no network but loopback, and
 * exactly the environment of the request (plus `PATH` and `HOME` defaults, as container runtimes
 * add them). {@link sandboxBinds} gives every backend the same mounts in the same order.
 * Its stdout and stderr are appended to `req.logFile`, after one `$ argv` line naming the tool's
 * command line. When the call returns, no process of the command is left: on a timeout or an
 * abort the backend ends the whole process tree and waits for it. A non-zero exit is an outcome,
 * not an exception; exceptions are for requests that cannot be honoured (bad paths, a non-empty
 * output directory) and for `req.signal` aborting (the signal's reason is thrown).
 */
import { appendFileSync, closeSync, existsSync, fstatSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, statSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import path from 'node:path';
import { formatMs } from '../../engine/duration.js';
import { quoteArg, type ProcessRunner, type RunResult } from '../../engine/process.js';
import { findExecutable } from '../../engine/key/tools.js';
import { SBIN_DIRS } from './probe.js';
import { resolveInRoot } from '../oci/unpack.js';
import type { GpuGrant } from './gpu.js';

/** One command to run in an image's root filesystem. Every path is absolute on the host. */
export interface RunInImage {
  /** The image's root filesystem: a directory (apptainer also takes a SIF file). Never written. */
  rootfs: string;
  /** argv; `argv[0]` is looked up in the image's `PATH` (from `env`) like a container runtime does. */
  command: string[];
  /** The image's `Env` (OCI image config), plus `HOME=/root` if unset; `PATH` defaults to {@link DEFAULT_PATH}. */
  env: Record<string, string>;
  /** The image's `WorkingDir` (must exist in the image); default `/`. */
  workdir?: string;
  /** Mounted read-only at `/input` (shorthand for a `mounts` entry); nothing is mounted there when undefined. */
  inputDir?: string;
  /** More read-only mounts: host directory `source` at container path `target`. */
  mounts?: readonly BindMount[];
  /** Mounted read-write at `outputPath`; created when missing, and must be empty (`run` throws otherwise). */
  outputDir: string;
  /** The GPUs the command holds (rules/runtime/gpu.ts): device nodes, driver files and env to add. */
  gpus?: GpuGrant;
  /** The container path of `outputDir`; default `/output`. */
  outputPath?: string;
  /** Writable scratch directories: each host `source` (created when missing, must be empty) at `target`. */
  scratch?: readonly BindMount[];
  /** Wall-clock limit in milliseconds from the tool's start; then the backend ends the whole process tree. */
  timeoutMs?: number;
  /** Aborting ends the command's whole process tree; `run` then rejects with the signal's reason. */
  signal: AbortSignal;
  /** The command's stdout and stderr are appended here (after a `$ argv` line). */
  logFile: string;
}

/** A host directory (`source`, absolute) at a container path (`target`, absolute). */
export interface BindMount {
  readonly source: string;
  readonly target: string;
}

/** One mount of a run, in the order backends make them: read-only ones, the output, scratch. */
export interface SandboxBind extends BindMount {
  readonly writable: boolean;
}

/**
 * The mounts of `req` in the order every backend makes them: the read-only mounts (`inputDir` at
 * `/input` among them) sorted by target, then the output, then the scratch directories sorted by
 * target. A backend adding its own binds (devices, driver libraries) appends them after these.
 */
export function sandboxBinds(req: RunInImage): SandboxBind[] {
  const byTarget = (a: BindMount, b: BindMount) => (a.target < b.target ? -1 : a.target > b.target ? 1 : 0);
  const readOnly = [...(req.inputDir !== undefined ? [{ source: req.inputDir, target: '/input' }] : []), ...(req.mounts ?? [])].sort(byTarget);
  return [
    ...readOnly.map((m) => ({ ...m, writable: false })),
    { source: req.outputDir, target: req.outputPath ?? '/output', writable: true },
    ...[...(req.scratch ?? [])].sort(byTarget).map((m) => ({ ...m, writable: true })),
  ];
}

/**
 * How the command ended. Exactly one of: `exitCode` (its exit status; backends whose sandbox
 * turns a fatal signal into 128+N report that status), `signal` (the tool itself died by a
 * signal), `timedOut` (graph ended it; neither of the others is set). `reason` is set whenever
 * `exitCode` is not 0, e.g. "command 'predict' not found in the image", "timed out after 2s",
 * "exited with status 3".
 */
export interface RunOutcome {
  exitCode?: number;
  signal?: string;
  timedOut: boolean;
  reason?: string;
}

/** A runtime that runs a test command in an image's root filesystem. */
export interface TestRuntimeBackend {
  name: 'bubblewrap' | 'docker' | 'podman' | 'apptainer';
  /**
   * Tool identity for the action key, e.g. `bubblewrap 0.8.0`, `podman 4.3.1`.
   * @throws Error when the tool cannot run.
   */
  version(): Promise<string>;
  /**
   * Run `req.command` (contract in the module comment).
   * @returns the outcome; a failing command is an outcome, not an exception.
   * @throws Error for an invalid request (relative paths, non-empty `outputDir`, a tool that
   *   cannot start); the signal's reason when `req.signal` aborted.
   */
  run(req: RunInImage): Promise<RunOutcome>;
}

/** Backend names. */
export const RUNTIME_BACKENDS = ['bubblewrap', 'podman', 'docker', 'apptainer'] as const;
/** One of {@link RUNTIME_BACKENDS}. */
export type RuntimeBackendName = (typeof RUNTIME_BACKENDS)[number];

/** How backends run; every field is optional. */
export interface RuntimeOptions {
  /** Starts every process (default: the real execa runner). Tests pass a fake. */
  readonly runner?: ProcessRunner;
  /** Environment for detection and for the tool's own process (default `process.env`). */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Parent of private per-run directories (podman's storage); default the OS temp dir. */
  readonly scratchDir?: string;
}

/**
 * Pick the test runtime backend: `preferred`, or bubblewrap when none is given. No silent
 * fallback: a test that asked for one runtime must not run in another.
 * @throws Error for an unknown name, or when the backend cannot be used here; the message says
 *   why and how to install it (e.g. `apt-get install bubblewrap`).
 */
export async function detectBackend(preferred?: string, options: RuntimeOptions = {}): Promise<TestRuntimeBackend> {
  const name = (preferred ?? 'bubblewrap') as RuntimeBackendName;
  if (!(RUNTIME_BACKENDS as readonly string[]).includes(name)) {
    throw new Error(`unknown test runtime '${preferred}' (choose one of: ${RUNTIME_BACKENDS.join(', ')})`);
  }
  const searchPath = (options.env ?? process.env).PATH;
  // Loaded on demand, as the Dockerfile builders are: most runs need one backend at most.
  switch (name) {
    case 'bubblewrap': {
      const bwrap = findExecutable('bwrap', searchPath);
      if (!bwrap) throw new Error('test runtime bubblewrap: bwrap is not on PATH; install it with `apt-get install bubblewrap` (Debian/Ubuntu)');
      return new (await import('./bubblewrap.js')).BubblewrapBackend(bwrap, options);
    }
    case 'podman': {
      const podman = findExecutable('podman', searchPath);
      const runc = findExecutable('runc', searchPath, SBIN_DIRS);
      if (!podman || !runc) throw new Error(`test runtime podman: ${podman ? 'runc' : 'podman'} is not on PATH; install it with \`apt-get install podman runc\` (Debian/Ubuntu)`);
      return new (await import('./podman.js')).PodmanBackend(podman, runc, options);
    }
    case 'docker':
      throw new Error(
        'test runtime docker is not available: `docker run` needs an image reference (it has no --rootfs), ' +
          'and test nodes run an unpacked root filesystem; use bubblewrap (default) or podman',
      );
    case 'apptainer': {
      const exe = findExecutable('apptainer', searchPath) ?? findExecutable('singularity', searchPath);
      if (!exe) throw new Error('test runtime apptainer: neither apptainer nor singularity is on PATH (Apptainer is not packaged for Debian 12; install it from the Apptainer project)');
      return new (await import('./apptainer.js')).ApptainerBackend(exe, options);
    }
  }
}

/** Directories searched for runc beyond PATH (root's PATH may lack sbin directories). */

// ---------------------------------------------------------------------------------------------
// Plumbing shared by the backends.

/** `PATH` a container runtime sets when the image has none (Docker's and podman's default). */
export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** The command's environment: `env` with `PATH` ({@link DEFAULT_PATH}) and `HOME` (`/root`) defaults, keys sorted. */
export function commandEnv(env: Readonly<Record<string, string>>): Record<string, string> {
  const all: Record<string, string> = { PATH: DEFAULT_PATH, HOME: '/root', ...env };
  return Object.fromEntries(Object.entries(all).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/**
 * Check a request's paths and make `/output`'s directory: created when missing.
 * @throws Error when a path is relative, `rootfs` or `inputDir` does not exist, `command` is
 *   empty, or `outputDir` is not an empty directory (stale output would pass for new output).
 */
export function prepareRequest(req: RunInImage): void {
  const paths: [string, string | undefined][] = [
    ['rootfs', req.rootfs],
    ['inputDir', req.inputDir],
    ['outputDir', req.outputDir],
    ['logFile', req.logFile],
    ...(req.mounts ?? []).map((m): [string, string] => [`mount ${m.target}`, m.source]),
    ...(req.scratch ?? []).map((m): [string, string] => [`scratch ${m.target}`, m.source]),
  ];
  for (const [field, p] of paths) {
    if (p !== undefined && !path.isAbsolute(p)) throw new Error(`${field} must be an absolute path, got '${p}'`);
  }
  for (const b of sandboxBinds(req)) {
    if (!b.target.startsWith('/')) throw new Error(`mount target must be an absolute path in the image, got '${b.target}'`);
  }
  if (req.command.length === 0) throw new Error('the test command is empty');
  if (req.workdir !== undefined && !req.workdir.startsWith('/')) throw new Error(`workdir must be an absolute path in the image, got '${req.workdir}'`);
  if (!existsSync(req.rootfs)) throw new Error(`root filesystem ${req.rootfs} does not exist`);
  if (req.inputDir !== undefined && !statSync(req.inputDir, { throwIfNoEntry: false })?.isDirectory()) {
    throw new Error(`input directory ${req.inputDir} does not exist`);
  }
  for (const m of req.mounts ?? []) {
    if (!statSync(m.source, { throwIfNoEntry: false })?.isDirectory()) throw new Error(`directory ${m.source} (for ${m.target}) does not exist`);
  }
  for (const [what, dir] of [['output', req.outputDir], ...(req.scratch ?? []).map((m) => [`scratch ${m.target}`, m.source])] as const) {
    mkdirSync(dir, { recursive: true });
    if (readdirSync(dir).length > 0) throw new Error(`${what} directory ${dir} is not empty`);
  }
}

/**
 * Why `command` could not start, from exec's errno text `error` (strerror, e.g. "No such file or
 * directory"). ENOENT has two causes that the error alone does not tell apart: no such file on
 * the image's PATH, or a file whose `#!` interpreter or ELF loader is missing; this looks in the
 * image to say which.
 */
export function cannotStartReason(command: string, error: string, req: RunInImage): string {
  if (error === 'No such file or directory') {
    const found = findInImage(command, req);
    if (!found) return `command '${command}' not found in the image`;
    return `command '${command}' (${found}) cannot start: its interpreter (#!) or dynamic loader is missing from the image`;
  }
  if (error === 'Permission denied') return `command '${command}' cannot start: not an executable file (execvp: Permission denied)`;
  return `command '${command}' cannot start: ${error}`;
}

/**
 * Where `command` is in the image, as an image path: itself when it contains a slash, else the
 * first `PATH` entry holding it; undefined when nothing is there. Paths under the request's
 * mounts (see {@link sandboxBinds}) are looked up in those directories.
 */
export function findInImage(command: string, req: RunInImage): string | undefined {
  const env = commandEnv(req.env);
  const candidates = command.includes('/')
    ? [path.posix.resolve(req.workdir ?? '/', command)]
    : (env.PATH ?? DEFAULT_PATH).split(':').filter(Boolean).map((dir) => path.posix.join(dir, command));
  return candidates.find((p) => existsSync(hostPath(p, req)));
}

function hostPath(imagePath: string, req: RunInImage): string {
  for (const { source, target } of sandboxBinds(req)) {
    if (imagePath === target || imagePath.startsWith(`${target}/`)) return resolveInRoot(source, imagePath.slice(target.length), true);
  }
  return resolveInRoot(req.rootfs, imagePath, true);
}

/** A finished (or ended) tool run: the runner's result and what the tool wrote during it. */
export interface BoundedRun {
  readonly result: RunResult;
  /** Ended by `req.timeoutMs`. */
  readonly timedOut: boolean;
  /** Ended because `req.signal` aborted. */
  readonly interrupted: boolean;
  /** The last lines written to the log by this run (at most {@link TAIL_BYTES} bytes), without a final newline. */
  readonly tail: string;
}

/** How much of its own output a run reads back to explain a failure, in bytes. */
export const TAIL_BYTES = 4096;

/**
 * Run a backend's tool command line `argv` for `req`: log `$ argv`, start it through `runner`
 * with the output appended to `req.logFile`, and end its process group when `req.timeoutMs`
 * passes or `req.signal` aborts (the runner's SIGTERM, then SIGKILL after its grace period).
 * The caller still has to wait for processes that left the group (see each backend).
 * @throws Error when the tool cannot start; the signal's reason when `req.signal` was already aborted.
 */
export async function runBounded(
  runner: ProcessRunner,
  argv: readonly string[],
  req: RunInImage,
  env?: Readonly<Record<string, string | undefined>>,
  /** Called just before the run is ended (a timeout or `req.signal`), while its processes still look as they did. */
  beforeEnd?: () => void,
): Promise<BoundedRun> {
  req.signal.throwIfAborted();
  appendFileSync(req.logFile, `$ ${argv.map(quoteArg).join(' ')}\n`);
  const logStart = statSync(req.logFile).size;
  const controller = new AbortController();
  let timedOut = false;
  const timer =
    req.timeoutMs === undefined
      ? undefined
      : setTimeout(() => {
          timedOut = true;
          beforeEnd?.();
          controller.abort(new Error(`timed out after ${formatMs(req.timeoutMs ?? 0)}`));
        }, req.timeoutMs);
  const onAbort = () => {
    beforeEnd?.();
    controller.abort(req.signal.reason);
  };
  req.signal.addEventListener('abort', onAbort, { once: true });
  try {
    const result = await runner.run(argv, { signal: controller.signal, logFile: req.logFile, env });
    const interrupted = !timedOut && req.signal.aborted;
    return { result, timedOut, interrupted, tail: readFrom(req.logFile, logStart) };
  } finally {
    if (timer) clearTimeout(timer);
    req.signal.removeEventListener('abort', onAbort);
  }
}

/** The text appended to `file` since byte `start`, at most the last {@link TAIL_BYTES} bytes, trailing newlines dropped. */
function readFrom(file: string, start: number): string {
  let fd: number | undefined;
  try {
    fd = openSync(file, 'r');
    const size = fstatSync(fd).size;
    const from = Math.max(start, size - TAIL_BYTES);
    const buf = Buffer.alloc(Math.max(0, size - from));
    readSync(fd, buf, 0, buf.length, from);
    return buf.toString('utf8').replace(/\n+$/, '');
  } catch {
    return '';
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** The last line of `text` ('' for none). */
export function lastLine(text: string): string {
  return text.slice(text.lastIndexOf('\n') + 1);
}

/**
 * The outcome of a run whose tool-specific failures (command not found, sandbox set-up) were
 * already ruled out: a timeout, an exit status, or a signal. A status of 128+N is also named as
 * the likely signal N, since sandboxes (bwrap's init, shells) report a child's fatal signal so.
 */
export function plainOutcome(run: BoundedRun, req: RunInImage): RunOutcome {
  if (run.timedOut) return { timedOut: true, reason: `timed out after ${formatMs(req.timeoutMs ?? 0)}` };
  const { exitCode, signal } = run.result;
  if (exitCode === 0) return { exitCode, timedOut: false };
  if (exitCode !== undefined) {
    const name = exitCode > 128 ? signalName(exitCode - 128) : undefined;
    return { exitCode, timedOut: false, reason: `exited with status ${exitCode}${name ? ` (likely killed by ${name})` : ''}` };
  }
  return { signal, timedOut: false, reason: `killed by ${signal ?? 'a signal'}` };
}

/** `SIGKILL` for 9; undefined for numbers that name no signal. */
function signalName(n: number): string | undefined {
  return Object.entries(osConstants.signals).find(([, v]) => v === n)?.[0];
}

/**
 * Wait until no live process has a command line that `matches` (given NUL-separated, as in
 * /proc/PID/cmdline) and every `known` process (from `processSnapshot`) has ended; after
 * `graceMs`, SIGKILL those left and wait as long again. For processes that left the runner's
 * process group: a sandbox's init, a container's monitor.
 * @throws Error naming `what` and the pids when they outlive 2·`graceMs` (stuck in the kernel).
 */
export async function waitForProcessesToEnd(what: string, matches: (cmdline: string) => boolean, graceMs: number, known: readonly ProcessId[] = []): Promise<void> {
  const start = Date.now();
  for (;;) {
    const left = [...new Set([...processesMatching(matches), ...known.filter(stillRuns).map((p) => p.pid)])];
    if (left.length === 0) return;
    const waited = Date.now() - start;
    if (waited > 2 * graceMs) throw new Error(`${what} processes ${left.join(', ')} did not end within ${formatMs(2 * graceMs)}`);
    if (waited > graceMs) {
      for (const pid of left) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone meanwhile
        }
      }
    }
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** A process by pid and start time (clock ticks since boot), so a reused pid is not mistaken for it. */
export interface ProcessId {
  readonly pid: number;
  readonly start: string;
}

/**
 * The live processes whose command line `matches`, by pid and start time: taken before a run is
 * ended, while they can still be recognised (an exiting process's command line reads empty, and
 * a sandbox's init stays in its exit, with an empty command line, until the kernel has killed
 * every process of its PID namespace).
 */
export function processSnapshot(matches: (cmdline: string) => boolean): ProcessId[] {
  return processesMatching(matches).flatMap((pid) => {
    const start = startTime(pid);
    return start === undefined ? [] : [{ pid, start }];
  });
}

/** Field 22 of /proc/PID/stat (start time), or undefined when the process is gone or a zombie. */
function startTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[0] === 'Z' ? undefined : fields[19];
  } catch {
    return undefined;
  }
}

function stillRuns(p: ProcessId): boolean {
  return startTime(p.pid) === p.start;
}

/** Pids of live (not zombie) processes whose command line `matches`. */
function processesMatching(matches: (cmdline: string) => boolean): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (!matches(readFileSync(`/proc/${entry}/cmdline`, 'utf8'))) continue;
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z') pids.push(Number(entry));
    } catch {
      // ended while we looked
    }
  }
  return pids;
}
