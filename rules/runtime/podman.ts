/**
 * The container-engine backend: podman runs the root filesystem directory itself (`--rootfs`).
 * With G = `podman --root W/root --runroot W/run --storage-driver vfs --runtime RUNC
 * --cgroup-manager cgroupfs --events-backend file --tmpdir W/libpod` (W a private directory per
 * run, removed afterwards), the command line is:
 *
 *   G run --rm --name graph-test-RANDOM --network none --read-only --unsetenv-all
 *       --ulimit nofile=1024:1024 --ulimit nproc=1000:1000
 *       [--mount type=bind,src=IN,dst=TARGET,ro=true]… --mount type=bind,src=OUT,dst=OUTPUT
 *       [--mount type=bind,src=SCRATCH,dst=TARGET]… --workdir WORKDIR --env K=V…
 *       --rootfs ROOTFS:O CMD…
 *
 * The mounts are the run contract's, in `sandboxBinds` order (as bubblewrap makes them), as
 * `--mount` rather than `-v SRC:DST`: the test's output directory is named after its node
 * (`test:GROUP%2FMODEL@oci`), and `-v` cannot take a path with ':'. `--mount` separates with ','
 * instead, which graph's own paths never contain.
 *
 * Why these flags:
 * - `--rootfs ROOTFS:O`: an overlay over ROOTFS. Without `:O`, podman and runc create their mount
 *   points (/input, /output, /etc, /run, …) inside ROOTFS itself (tried), i.e. they would write
 *   into the unpacked image; `--read-only` then makes the overlay read-only as well.
 * - `--network none`: loopback only, as with bubblewrap.
 * - `--unsetenv-all --env K=V`: exactly the image's environment (podman would add `TERM`,
 *   `container`); podman still sets `HOSTNAME`.
 * - The global flags and ulimits are those that work on these hosts (see rules/dockerfile/podman.ts:
 *   crun fails on hybrid cgroups, root lacks CAP_SYS_RESOURCE); a private storage keeps runs from
 *   touching the host's podman state. No `--` before CMD: podman would take it as the command.
 *
 * Ending a run: the podman client is not the container's parent (conmon is, in its own session),
 * so ending the client's process group on a timeout or an abort leaves the container running;
 * the backend then runs `G rm --force --time 0 --ignore NAME`, which kills the container and
 * waits for it, before it returns.
 *
 * docker is not a backend here: `docker run` has no `--rootfs`, so it would need the image
 * loaded into the engine under a reference (`docker load`, then `docker run … REF CMD…`), which
 * is a copy of every layer per run. `detectBackend('docker')` says so.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { captureOutput, ExecaRunner, type ProcessRunner } from '../../engine/process.js';
import { PODMAN_ULIMITS } from '../dockerfile/podman.js';
import { gpuEnv, type GpuGrant } from './gpu.js';
import { cannotStartReason, commandEnv, DEFAULT_PATH, lastLine, plainOutcome, prepareRequest, runBounded, sandboxBinds, type RunInImage, type RunOutcome, type RuntimeOptions, type TestRuntimeBackend, waitForProcessesToEnd } from './runtime.js';

/** How long removing an ended container may take, in milliseconds. */
export const REMOVE_TIMEOUT_MS = 60_000;

/** How long podman's own processes may outlive a run before they are killed, in milliseconds. */
export const CLEANUP_WAIT_MS = 10_000;

/** podman's private directories for one run. */
export interface PodmanDirs {
  /** Removed after the run. */
  readonly dir: string;
  readonly root: string;
  readonly runroot: string;
}

/** podman, running the root filesystem directory with `--rootfs`. Construct through `detectBackend`. */
export class PodmanBackend implements TestRuntimeBackend {
  readonly name = 'podman' as const;
  /** podman: "the specified runroot is longer than 50 characters". */
  static readonly MAX_RUNROOT_LENGTH = 50;
  readonly #runner: ProcessRunner;
  #version: Promise<string> | undefined;

  constructor(
    readonly podman: string,
    readonly runc: string,
    private readonly options: RuntimeOptions = {},
  ) {
    this.#runner = options.runner ?? new ExecaRunner();
  }

  /** `podman 4.3.1`. @throws Error when podman cannot run. */
  version(): Promise<string> {
    return (this.#version ??= captureOutput([this.podman, '--version']).then((out) => {
      const m = /^podman version (\S+)/.exec(out.trim());
      if (!m) throw new Error(`cannot read podman's version from: ${out.trim()}`);
      return `podman ${m[1]}`;
    }));
  }

  /** @see TestRuntimeBackend.run; ending a run as in the module comment. */
  async run(req: RunInImage): Promise<RunOutcome> {
    prepareRequest(req);
    if (!statSync(req.rootfs).isDirectory()) throw new Error(`root filesystem ${req.rootfs} is not a directory`);
    const dirs = podmanDirs(this.options.scratchDir ?? tmpdir());
    const global = podmanGlobal(this.podman, this.runc, dirs);
    const name = `graph-test-${randomBytes(6).toString('hex')}`;
    try {
      const run = await runBounded(this.#runner, [...global, ...podmanRunArgs(req, name)], req, this.options.env);
      if (run.timedOut || run.interrupted) {
        await this.#runner.run([...global, 'rm', '--force', '--time', '0', '--ignore', name], {
          logFile: req.logFile,
          env: this.options.env,
          signal: AbortSignal.timeout(REMOVE_TIMEOUT_MS),
        });
      }
      if (run.interrupted) req.signal.throwIfAborted();
      const code = run.result.exitCode;
      if (!run.timedOut && code !== undefined && code >= 125 && code <= 127) {
        const reason = podmanFailure(lastLine(run.tail), req);
        if (reason) return { exitCode: code, timedOut: false, reason };
      }
      return plainOutcome(run, req);
    } finally {
      // conmon and the `podman container cleanup` it starts outlive the client for a moment, and
      // name the private directory on their command lines: wait for them before removing it.
      await waitForProcessesToEnd('podman', (c) => c.includes(`\0${dirs.root}\0`), CLEANUP_WAIT_MS);
      // An overlay still mounted under the directory would make rm reach into it.
      if (!mountedUnder(dirs.dir)) rmSync(dirs.dir, { recursive: true, force: true, maxRetries: 3 });
    }
  }
}

/** Private directories under `parent`; in /tmp when `parent` would make the run root too long for podman. */
export function podmanDirs(parent: string): PodmanDirs {
  let dir = mkdtempSync(path.join(parent, 'graph-podman-'));
  if (path.join(dir, 'run').length > PodmanBackend.MAX_RUNROOT_LENGTH) {
    rmSync(dir, { recursive: true, force: true });
    dir = mkdtempSync('/tmp/graph-podman-');
  }
  return { dir, root: path.join(dir, 'root'), runroot: path.join(dir, 'run') };
}

/** `podman --root R --runroot RR --storage-driver vfs --runtime RUNC --cgroup-manager cgroupfs --events-backend file --tmpdir D/libpod`. */
export function podmanGlobal(podman: string, runc: string, dirs: PodmanDirs): string[] {
  return [
    podman,
    '--root', dirs.root,
    '--runroot', dirs.runroot,
    '--storage-driver', 'vfs',
    '--runtime', runc,
    '--cgroup-manager', 'cgroupfs',
    '--events-backend', 'file',
    '--tmpdir', path.join(dirs.dir, 'libpod'),
  ];
}

/**
 * `run …` arguments for `req` (module comment). Pure.
 * @throws Error when a mount path contains ',' or '=' (the `--mount` syntax separators), the
 *   root filesystem's path contains ':' (the `--rootfs` separator), or the
 *   command starts with '-' (podman would read it as an option).
 */
export function podmanRunArgs(req: RunInImage, name: string): string[] {
  const binds = sandboxBinds(req);
  if (req.rootfs.includes(':')) throw new Error(`podman cannot use a root filesystem whose path contains ':': ${req.rootfs}`);
  for (const p of binds.flatMap((b) => [b.source, b.target])) {
    if (/[,=]/.test(p)) throw new Error(`podman cannot mount a path containing ',' or '=': ${p}`);
  }
  if (req.command[0]?.startsWith('-')) throw new Error(`podman would read the command '${req.command[0]}' as an option`);
  return [
    'run',
    '--rm',
    '--name', name,
    '--network', 'none',
    '--read-only',
    '--unsetenv-all',
    ...PODMAN_ULIMITS.flatMap((u) => ['--ulimit', u]),
    ...binds.flatMap((b) => ['--mount', `type=bind,src=${b.source},dst=${b.target}${b.writable ? '' : ',ro=true'}`]),
    '--workdir', req.workdir ?? '/',
    ...(req.gpus ? podmanGpuArgs(req.gpus) : []),
    ...Object.entries(commandEnv(req.gpus ? podmanGpuEnv(req.env, req.gpus) : req.env)).flatMap(([k, v]) => ['--env', `${k}=${v}`]),
    '--rootfs', `${req.rootfs}:O`,
    ...req.command,
  ];
}

/**
 * podman arguments for held GPUs: with a CDI spec on the host, `--device nvidia.com/gpu=ID` per
 * GPU (podman applies the spec itself, hooks included); without one, `--device` per device node
 * and `-v HOST:PATH:ro` per driver file, as bubblewrap binds them (rules/runtime/gpu.ts).
 */
export function podmanGpuArgs(grant: GpuGrant): string[] {
  if (grant.cdiKind) return grant.ids.flatMap((id) => ['--device', `${grant.cdiKind}=${id}`]);
  return [
    ...grant.deviceNodes.flatMap((n) => ['--device', n.hostPath === n.path ? n.path : `${n.hostPath}:${n.path}`]),
    ...grant.files.flatMap((f) => ['-v', `${f.hostPath}:${f.path}:ro`]),
  ];
}

/**
 * The environment for held GPUs: with CDI, podman applies the spec's own env and mounts (at their
 * host paths, with its ldcache hook), so only the visible-device variables are added; without,
 * as bubblewrap's (`gpuEnv`).
 */
export function podmanGpuEnv(env: Readonly<Record<string, string>>, grant: GpuGrant): Record<string, string> {
  if (!grant.cdiKind) return gpuEnv(env, grant, DEFAULT_PATH);
  return { ...env, NVIDIA_VISIBLE_DEVICES: grant.env.NVIDIA_VISIBLE_DEVICES, CUDA_VISIBLE_DEVICES: grant.env.CUDA_VISIBLE_DEVICES };
}

/**
 * The reason for podman's own failure (exit status 125–127), from its last line; undefined when
 * the line is not podman's. Examples of that line: `Error: …: exec: "nosuch": executable file not
 * found in $PATH: OCI runtime attempted to invoke a command that was not found`, `Error: workdir
 * "/x" does not exist on container …`.
 */
export function podmanFailure(line: string, req: RunInImage): string | undefined {
  if (!line.startsWith('Error: ')) return undefined;
  const exec = /exec: "(.*?)": (?:executable file not found in \$PATH|stat \S+: (no such file or directory)|(permission denied))/.exec(line);
  if (exec) return cannotStartReason(exec[1], exec[3] ? 'Permission denied' : 'No such file or directory', req);
  const workdir = /^Error: workdir "(.*)" does not exist/.exec(line);
  if (workdir) return `working directory '${workdir[1]}' does not exist in the image`;
  return `podman could not run the command: ${line.slice('Error: '.length)}`;
}

/** Whether any mount point lies under `dir` (per /proc/self/mountinfo, field 5). */
function mountedUnder(dir: string): boolean {
  try {
    return readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .some((l) => {
        const mountPoint = l.split(' ')[4];
        return mountPoint !== undefined && (mountPoint === dir || mountPoint.startsWith(`${dir}/`));
      });
  } catch {
    return false;
  }
}
