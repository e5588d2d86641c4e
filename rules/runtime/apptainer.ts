/**
 * The Apptainer backend (also drives Singularity, whose command line is the same), used only when
 * `apptainer` or `singularity` is on PATH: it is not packaged for Debian 12, so on the project's
 * machines only the command line below is tested, against a fake runner. The command line:
 *
 *   apptainer exec --containall --no-home --net --network none
 *       [--mount type=bind,src=IN,dst=TARGET,ro]… --mount type=bind,src=OUT,dst=OUTPUT
 *       [--mount type=bind,src=SCRATCH,dst=TARGET]… --pwd WORKDIR --env K=V… IMAGE CMD…
 *
 * The binds are the run contract's, in `sandboxBinds` order (as bubblewrap makes them), as
 * `--mount` (Apptainer 1.0+, SingularityCE 3.9+) rather than `--bind SRC:DST`, which cannot take
 * the ':' of a test's output directory (`test:GROUP%2FMODEL@sif`); scratch
 * directories are host directories bound writable, not `--scratch` (whose directory apptainer
 * picks and removes), so every backend gives the command the same empty directory.
 *
 * IMAGE is `req.rootfs`: a SIF file (the `sif` test runtime) or a root filesystem directory
 * (a "sandbox" in Apptainer's terms); both are read-only without `--writable`.
 *
 * Why these flags: `--containall` gives own PID, IPC and mount namespaces, a private /tmp and a
 * clean environment (only `--env` values reach the command); `--no-home` keeps the caller's home
 * directory out; `--net --network none` gives a network namespace with loopback only. Apptainer
 * creates missing mount points itself (in its session directory), so the image is never written.
 * `HOME` is not passed with `--env`: Apptainer refuses to override it that way and sets it
 * itself. Ending a run: the runner ends apptainer's process group, and the command's PID
 * namespace (`--containall`) ends with apptainer's starter.
 */
import { captureOutput, ExecaRunner, type ProcessRunner } from '../../engine/process.js';
import type { GpuGrant } from './gpu.js';
import { cannotStartReason, commandEnv, plainOutcome, prepareRequest, runBounded, sandboxBinds, type RunInImage, type RunOutcome, type RuntimeOptions, type TestRuntimeBackend } from './runtime.js';

/** Apptainer or Singularity. Construct through `detectBackend`, or with the executable's path. */
export class ApptainerBackend implements TestRuntimeBackend {
  readonly name = 'apptainer' as const;
  readonly #runner: ProcessRunner;
  #version: Promise<string> | undefined;

  constructor(
    readonly executable: string,
    private readonly options: RuntimeOptions = {},
  ) {
    this.#runner = options.runner ?? new ExecaRunner();
  }

  /** `apptainer 1.3.4` or `singularity-ce 4.1.0`. @throws Error when the tool cannot run. */
  version(): Promise<string> {
    return (this.#version ??= captureOutput([this.executable, '--version']).then((out) => {
      const m = /^(\S+) version (\S+)/.exec(out.trim());
      if (!m) throw new Error(`cannot read ${this.executable}'s version from: ${out.trim()}`);
      return `${m[1]} ${m[2]}`;
    }));
  }

  /** @see TestRuntimeBackend.run */
  async run(req: RunInImage): Promise<RunOutcome> {
    prepareRequest(req);
    const run = await runBounded(this.#runner, apptainerArgv(this.executable, req), req, this.options.env);
    if (run.interrupted) req.signal.throwIfAborted();
    if (!run.timedOut && run.result.exitCode === 255) {
      const reason = apptainerFailure(run.tail, req);
      if (reason) return { exitCode: 255, timedOut: false, reason };
    }
    return plainOutcome(run, req);
  }
}

/**
 * The command line for `req` (module comment). Pure.
 * @throws Error when a mount path contains ',' or '=' (the `--mount` syntax separators).
 */
export function apptainerArgv(executable: string, req: RunInImage): string[] {
  const binds = sandboxBinds(req);
  for (const p of binds.flatMap((b) => [b.source, b.target])) {
    if (/[,=]/.test(p)) throw new Error(`apptainer cannot mount a path containing ',' or '=': ${p}`);
  }
  const env = Object.entries(commandEnv(req.gpus ? { ...req.env, ...apptainerGpuEnv(req.gpus) } : req.env)).filter(([k]) => k !== 'HOME');
  return [
    executable,
    'exec',
    '--containall',
    '--no-home',
    '--net', '--network', 'none',
    ...binds.flatMap((b) => ['--mount', `type=bind,src=${b.source},dst=${b.target}${b.writable ? '' : ',ro'}`]),
    '--pwd', req.workdir ?? '/',
    ...(req.gpus ? ['--nv'] : []),
    ...env.flatMap(([k, v]) => ['--env', `${k}=${v}`]),
    req.rootfs,
    ...req.command,
  ];
}

/**
 * The variables Apptainer's `--nv` needs for held GPUs: `--nv` binds every GPU's device node and
 * the driver's libraries (from its own nvliblist.conf), so the held GPUs are chosen by host index:
 * `NVIDIA_VISIBLE_DEVICES` and `CUDA_VISIBLE_DEVICES` are the held ids (with `--nvccli`,
 * nvidia-container-cli would bind only those named by `NVIDIA_VISIBLE_DEVICES`).
 */
export function apptainerGpuEnv(grant: GpuGrant): Record<string, string> {
  const ids = grant.ids.join(',');
  return { NVIDIA_VISIBLE_DEVICES: ids, CUDA_VISIBLE_DEVICES: ids };
}

/**
 * The reason for Apptainer's own failure (it exits 255 with a `FATAL:` line), e.g. `FATAL:
 * "nosuch": executable file not found in $PATH`; undefined when its output has no such line.
 */
export function apptainerFailure(tail: string, req: RunInImage): string | undefined {
  const fatal = tail.split('\n').reverse().find((l) => l.startsWith('FATAL:'));
  if (!fatal) return undefined;
  const message = fatal.slice('FATAL:'.length).trim();
  const notFound = /^"(.*)": executable file not found in \$PATH$/.exec(message) ?? /^stat (.*): no such file or directory$/.exec(message);
  if (notFound) return cannotStartReason(notFound[1], 'No such file or directory', req);
  return `apptainer could not run the command: ${message}`;
}
