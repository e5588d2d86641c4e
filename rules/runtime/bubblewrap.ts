/**
 * The bubblewrap backend (the default test runtime): one `bwrap` process per test command, with
 * every namespace unshared. The command line (bubblewrap(1) options, in this order):
 *
 *   bwrap ROOT-MOUNTS [--ro-bind IN TARGET]… --bind OUT OUTPUT [--bind SCRATCH TARGET]…
 *       --proc /proc --dev /dev [GPU-ARGS] --perms 1777 --tmpfs /tmp [--remount-ro /] --unshare-all
 *       --die-with-parent --new-session --cap-drop ALL --clearenv --setenv K V… --chdir WORKDIR
 *       -- CMD…
 *
 * The binds are the run contract's, in `sandboxBinds` order (kipoi and synapse: `--ro-bind IN
 * /input --bind OUT /output`; tre: `--ro-bind IN /safe_data --bind OUT /safe_outputs --bind
 * SCRATCH /scratch`). ROOT-MOUNTS is `--ro-bind ROOTFS /` when the root filesystem already has
 * every mount point as a directory (each bind's target, /proc, /dev, /tmp): bwrap creates
 * missing mount points, which it cannot do in a read-only root. Otherwise the root is bwrap's own
 * tmpfs with each top-level entry of ROOTFS bound read-only (`--ro-bind ROOTFS/usr /usr`, a
 * symbolic link such as usrmerge's `bin -> usr/bin` recreated with `--symlink`), and once the
 * mount points exist, `--remount-ro /` makes that tmpfs read-only too. Either way nothing in
 * ROOTFS is written, ROOTFS needs no preparation, and every write outside the output, scratch
 * and /tmp fails with EROFS. (In that second form a mount point below a top-level directory of
 * the image, e.g. `/opt/data` where the image has `/opt` but no `/opt/data`, cannot be created:
 * bwrap says so, and the run fails with its message.)
 *
 * GPU-ARGS, for a test holding GPUs, are {@link gpuArgs}: their device nodes, the driver's files
 * and sonames; the environment then has the grant's variables and the driver's directories
 * (rules/runtime/gpu.ts).
 *
 * Why the other options:
 * - `--unshare-all`: own user, mount, PID, network, IPC, UTS and cgroup namespaces. The network
 *   namespace has only loopback, so a connection attempt fails at once ("Network is unreachable",
 *   or refused on 127.0.0.1) instead of hanging.
 * - `--cap-drop ALL`: when graph runs as root, bwrap maps uid 0 into the sandbox with every
 *   capability of its user namespace, and the command could `mount -o remount,bind,rw /usr` and
 *   write into ROOTFS (tried). Without capabilities it cannot remount; it still runs as uid 0 (or
 *   the caller's uid), so it can write /output and /tmp, which it owns.
 * - `--perms 1777 --tmpfs /tmp`: the mode /tmp has in every image.
 * - `--new-session`: the command cannot reach the terminal graph was started from (TIOCSTI).
 * - `--die-with-parent` and the PID namespace: see {@link BubblewrapBackend.run}.
 * - `--clearenv --setenv`: exactly the image's environment, keys sorted so the line is stable.
 *
 * bwrap reports its own failures as one `bwrap: …` line on stderr and exit status 1; the
 * backend reads that line from the log to tell "command not found in the image" (execvp failed)
 * and a missing working directory from the command's own exit status 1. (A command that itself
 * ends with status 1 right after printing a line starting `bwrap: ` would be misread; the
 * alternative, bwrap's `--json-status-fd`, needs a file descriptor the process runner cannot pass.)
 */
import { lstatSync, readdirSync, readlinkSync, statSync } from 'node:fs';
import path from 'node:path';
import { captureOutput, ExecaRunner, KILL_GRACE_MS, type ProcessRunner } from '../../engine/process.js';
import { gpuEnv, type GpuGrant } from './gpu.js';
import {
  cannotStartReason,
  commandEnv,
  DEFAULT_PATH,
  lastLine,
  plainOutcome,
  prepareRequest,
  processSnapshot,
  runBounded,
  sandboxBinds,
  type ProcessId,
  type RunInImage,
  type RunOutcome,
  type RuntimeOptions,
  type TestRuntimeBackend,
  waitForProcessesToEnd,
} from './runtime.js';

/** The sandbox's own mount points, besides the run contract's. */
const MOUNT_POINTS = ['/proc', '/dev', '/tmp'] as const;

/** How long `run` waits for the sandbox's init to vanish after ending bwrap, in milliseconds (then SIGKILL). */
export const SANDBOX_END_WAIT_MS = KILL_GRACE_MS;

/** bubblewrap (`bwrap`). Construct through `detectBackend`, or directly with the path of bwrap. */
export class BubblewrapBackend implements TestRuntimeBackend {
  readonly name = 'bubblewrap' as const;
  readonly #runner: ProcessRunner;
  #version: Promise<string> | undefined;

  constructor(
    readonly bwrap: string,
    private readonly options: RuntimeOptions = {},
  ) {
    this.#runner = options.runner ?? new ExecaRunner();
  }

  /** `bubblewrap 0.8.0`. @throws Error when bwrap cannot run. */
  version(): Promise<string> {
    return (this.#version ??= captureOutput([this.bwrap, '--version']).then((out) => {
      const m = /^bubblewrap (\S+)/.exec(out.trim());
      if (!m) throw new Error(`cannot read bubblewrap's version from: ${out.trim()}`);
      return `bubblewrap ${m[1]}`;
    }));
  }

  /**
   * @see TestRuntimeBackend.run. Ending the process tree on a timeout or an abort: the runner
   * ends bwrap's process group (SIGTERM, SIGKILL after its grace period). The command is not in
   * that group (`--new-session`), but it is in bwrap's PID namespace, whose init (bwrap's own
   * reaper) has the parent-death signal SIGKILL (`--die-with-parent`): when bwrap dies its init
   * is killed, and the kernel kills every process of the namespace with it. That happens just
   * after the runner sees bwrap exit, so `run` then waits until the init is gone (found in /proc
   * by its command line, which is exactly `argv`) before returning. Mounts live only in the
   * sandbox's mount namespace, which ends with its last process.
   */
  async run(req: RunInImage): Promise<RunOutcome> {
    prepareRequest(req);
    const argv = bubblewrapArgv(this.bwrap, req, rootMounts(req.rootfs, [...sandboxBinds(req).map((b) => b.target), ...(req.gpus ? ['/.graph'] : [])]));
    const cmdline = `${argv.join('\0')}\0`;
    // bwrap and its init, recognised while their command lines can still be read.
    let sandbox: ProcessId[] = [];
    const run = await runBounded(this.#runner, argv, req, this.options.env, () => (sandbox = processSnapshot((c) => c === cmdline)));
    if (run.timedOut || run.interrupted) {
      await waitForProcessesToEnd('bubblewrap sandbox', (c) => c === cmdline, SANDBOX_END_WAIT_MS, sandbox);
    }
    if (run.interrupted) req.signal.throwIfAborted();
    if (!run.timedOut && run.result.exitCode === 1) {
      const reason = bwrapFailure(lastLine(run.tail), req);
      if (reason) return { exitCode: 1, timedOut: false, reason };
    }
    return plainOutcome(run, req);
  }
}

/**
 * The bwrap argv for `req` (module comment), with `rootMountArgs` from {@link rootMounts}.
 * Pure: reads nothing, so tests can check it exactly.
 */
export function bubblewrapArgv(bwrap: string, req: RunInImage, rootMountArgs: readonly string[]): string[] {
  const readOnlyRoot = rootMountArgs[0] === '--ro-bind' && rootMountArgs[2] === '/';
  return [
    bwrap,
    ...rootMountArgs,
    ...sandboxBinds(req).flatMap((b) => [b.writable ? '--bind' : '--ro-bind', b.source, b.target]),
    '--proc', '/proc',
    '--dev', '/dev',
    ...(req.gpus ? gpuArgs(req.gpus) : []),
    '--perms', '1777', '--tmpfs', '/tmp',
    // Last of the mounts: bwrap had to create the mount points in its tmpfs root first.
    ...(readOnlyRoot ? [] : ['--remount-ro', '/']),
    '--unshare-all',
    '--die-with-parent',
    '--new-session',
    '--cap-drop', 'ALL',
    '--clearenv',
    ...Object.entries(commandEnv(req.gpus ? gpuEnv(req.env, req.gpus, DEFAULT_PATH) : req.env)).flatMap(([k, v]) => ['--setenv', k, v]),
    '--chdir', req.workdir ?? '/',
    '--',
    ...req.command,
  ];
}

/**
 * bwrap arguments for held GPUs (rules/runtime/gpu.ts): `--dev-bind` each device node into the
 * sandbox's `/dev`, `--ro-bind` each driver file into `/.graph/gpu/{lib,bin}`, `--symlink` the
 * sonames. The root is then bwrap's tmpfs (`rootMounts` with `.graph` as a mount point), where
 * bwrap can make those directories.
 */
export function gpuArgs(grant: GpuGrant): string[] {
  return [
    ...grant.deviceNodes.flatMap((n) => ['--dev-bind', n.hostPath, n.path]),
    ...grant.files.flatMap((f) => ['--ro-bind', f.hostPath, f.path]),
    ...grant.links.flatMap((l) => ['--symlink', l.target, l.path]),
  ];
}

/**
 * bwrap arguments that mount `rootfs` read-only at `/` (module comment): `--ro-bind ROOTFS /`
 * when every mount point (`targets`, absolute container paths, and /proc, /dev, /tmp) exists in
 * it as a directory, else one `--ro-bind`/`--symlink` per top-level entry (sorted by name;
 * entries that are a mount point themselves, and entries that are neither directories, files nor
 * symbolic links, are left out). A test holding GPUs adds `/.graph` (where their files go).
 * @throws Error when `rootfs` cannot be read.
 */
export function rootMounts(rootfs: string, targets: readonly string[]): string[] {
  const points = [...MOUNT_POINTS, ...targets];
  if (!statSync(rootfs).isDirectory()) throw new Error(`root filesystem ${rootfs} is not a directory`);
  if (points.every((p) => isDirectoryInRoot(rootfs, p))) return ['--ro-bind', rootfs, '/'];
  const topLevel = new Set(points.filter((p) => p.lastIndexOf('/') === 0).map((p) => p.slice(1)));
  const args: string[] = [];
  for (const name of readdirSync(rootfs).sort()) {
    if (topLevel.has(name)) continue;
    const host = path.join(rootfs, name);
    const st = lstatSync(host);
    if (st.isSymbolicLink()) args.push('--symlink', readlinkSync(host), `/${name}`);
    else if (st.isDirectory() || st.isFile()) args.push('--ro-bind', host, `/${name}`);
  }
  return args;
}

/** Whether container path `p` is a directory in `rootfs`, no component of it a symbolic link (bwrap would follow one to a place we did not check). */
function isDirectoryInRoot(rootfs: string, p: string): boolean {
  let at = rootfs;
  for (const part of p.split('/').filter(Boolean)) {
    at = path.join(at, part);
    if (!lstatSync(at, { throwIfNoEntry: false })?.isDirectory()) return false;
  }
  return true;
}

/**
 * The reason for bwrap's own failure, from the last line it printed; undefined when the line is
 * not bwrap's (the command itself exited with status 1).
 */
export function bwrapFailure(line: string, req: RunInImage): string | undefined {
  const exec = /^bwrap: execvp (.*): ([^:]+)$/.exec(line);
  if (exec) return cannotStartReason(exec[1], exec[2], req);
  const chdir = /^bwrap: Can't chdir to (.*): ([^:]+)$/.exec(line);
  if (chdir) {
    return chdir[2] === 'No such file or directory'
      ? `working directory '${chdir[1]}' does not exist in the image`
      : `cannot enter working directory '${chdir[1]}' in the image: ${chdir[2]}`;
  }
  const other = /^bwrap: (.*)$/.exec(line);
  if (other) return `bubblewrap could not set up the sandbox: ${other[1]}`;
  return undefined;
}
