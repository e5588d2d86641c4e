/**
 * The buildah backend, and the build flow it shares with podman (both are containers/storage
 * tools): everything happens in a vfs storage private to the build, under `req.scratchDir`, so
 * parallel builds share no state and nothing is left behind. With R = WORK/root, RR =
 * WORK/runroot, G = `buildah --root R --runroot RR --storage-driver vfs`, the steps are:
 *
 *   tar -C WORK/base-layout --dereference -cf WORK/base.oci.tar oci-layout index.json blobs
 *   G pull oci-archive:WORK/base.oci.tar
 *   G bud --isolation chroot --format oci --layers=false --pull=false --timestamp EPOCH
 *       -f DOCKERFILE [--build-arg K=V]… [--target T] -t localhost/graph-result:latest CONTEXT
 *   G push localhost/graph-result:latest oci:OUT.partial-…:latest      (then renamed to OUT)
 *
 * (the first two only when `req.base` is given). With network `none`, `--isolation chroot`
 * becomes `--isolation oci --runtime RUNC --network none`: chroot isolation always shares the
 * host's network, and crun fails on these hosts' hybrid cgroups.
 *
 * How the base is passed, and why. WORK/base-layout is the base pinned by digest
 * ({@link pinBaseImage}): an OCI layout holding only the manifest `base.tag` named when the build
 * started, annotated `org.opencontainers.image.ref.name = base.name`. Pulling its archive stores
 * it in the private storage as `localhost/<base.name>:latest`, so `FROM <base.name>` (literally
 * or through an ARG) resolves locally and `--pull=false` never asks a registry for it. Tried on
 * buildah 1.28.2 and rejected:
 *   - `--build-context NAME=oci-layout://DIR:TAG`: not a source buildah 1.28 knows (the name
 *     then stays unresolved: "base: image not known").
 *   - `--build-context NAME=docker-image://oci:DIR:TAG` and `pull oci:DIR:TAG`: work, but buildah
 *     names the pulled image after DIR, so any upper-case letter in the path fails ("repository
 *     name must be lowercase"); temp and workspace paths often have one.
 * `oci-archive:` takes the image's name from the annotation instead, whatever the path.
 *
 * Reproducibility: `--timestamp EPOCH` sets the image's created time, its history times and the
 * mtime of every file in the new layer; `--layers=false` commits one layer for the whole build
 * (and is explicit so BUILDAH_LAYERS cannot change it); `--format oci` likewise for
 * BUILDAH_FORMAT. Two builds of the same inputs then give the same manifest digest (the push
 * recompresses with the same gzip settings). The image carries label io.buildah.version.
 */
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { captureOutput, ExecaRunner, type ProcessRunner } from '../../engine/process.js';
import { NodeFailure } from '../../engine/rule.js';
import { findExecutable } from '../../engine/key/tools.js';
import {
  archiveLayoutArgv,
  argsAndTarget,
  builderEnv,
  commitLayout,
  killContainerProcesses,
  partialLayoutPath,
  pinBaseImage,
  prepareWork,
  runStep,
  type BuilderOptions,
  type DockerfileBuild,
  type DockerfileBuilder,
  type WorkDirs,
} from './builder.js';

/** Name of the result inside the private storage (the storage is private, so no clash is possible). */
export const RESULT_NAME = 'localhost/graph-result:latest';

/** Directories searched for runc besides PATH (root's PATH has them; a service's may not). */
const SBIN_DIRS = ['/usr/sbin', '/sbin', '/usr/local/sbin'];

/**
 * Absolute path of runc for `--runtime`.
 * @throws NodeFailure saying how to install it, when absent.
 */
export function findRunc(options: BuilderOptions, why: string): string {
  const runc = findExecutable('runc', (options.env ?? process.env).PATH, SBIN_DIRS);
  if (!runc) throw new NodeFailure(`${why} needs runc, which is not installed (\`apt-get install runc\`)`);
  return runc;
}

/** A containers/storage tool as the shared flow drives it. */
export interface StorageTool {
  readonly name: 'buildah' | 'podman';
  /** Executable and global flags that select the private storage in `work`. */
  global(work: WorkDirs): string[];
  /** The build subcommand with its isolation, network and limit flags (no per-request flags). */
  buildCommand(): string[];
  /** Longest run root the tool accepts, in characters (podman: 50); undefined for no limit. */
  readonly maxRunrootLength?: number;
}

/**
 * Build `req` with `tool` in a private vfs storage under `req.scratchDir` (steps in the module
 * comment), write the result to `req.outLayout`, and remove the storage.
 * @throws NodeFailure naming the failed step with the log's last lines; the signal's reason on abort.
 */
export async function buildInPrivateStorage(tool: StorageTool, req: DockerfileBuild, options: BuilderOptions): Promise<void> {
  req.signal.throwIfAborted();
  const runner: ProcessRunner = options.runner ?? new ExecaRunner();
  let work = prepareWork(req, tool.name);
  // podman refuses long run roots (its sockets live there and socket paths are short); a private
  // directory in /tmp stands in for WORK/runroot then, and goes with the rest.
  const shortRunroot = tool.maxRunrootLength !== undefined && work.runroot.length > tool.maxRunrootLength ? mkdtempSync('/tmp/graph-run-') : undefined;
  if (shortRunroot) work = { ...work, runroot: shortRunroot };
  const partial = partialLayoutPath(req.outLayout);
  try {
    // The host's storage.conf could add image stores or options that don't fit vfs; use only ours.
    const storageConf = path.join(work.dir, 'storage.conf');
    writeFileSync(storageConf, `[storage]\ndriver = "vfs"\ngraphroot = "${work.root}"\nrunroot = "${work.runroot}"\n`);
    const env = builderEnv(options, work, { CONTAINERS_STORAGE_CONF: storageConf });
    const g = tool.global(work);
    const build = tool.buildCommand();
    if (req.base) {
      const pinned = pinBaseImage(req.base, work.dir);
      const archive = path.join(work.dir, 'base.oci.tar');
      await runStep(archiveLayoutArgv(pinned.stageDir, archive), req, { runner, env, what: 'packing the base image layout' });
      await runStep([...g, 'pull', ...(req.platform ? ['--platform', req.platform] : []), `oci-archive:${archive}`], req, { runner, env, what: `${tool.name} pull (base image ${req.base.name})` });
    }
    await runStep(
      [
        ...g,
        ...build,
        '--format', 'oci',
        '--layers=false',
        '--pull=false',
        '--timestamp', String(req.sourceDateEpoch ?? 0),
        ...(req.platform ? ['--platform', req.platform] : []),
        '-f', req.dockerfile,
        ...argsAndTarget(req),
        '-t', RESULT_NAME,
        req.context,
      ],
      req,
      { runner, env, what: `${tool.name} ${build[0]}` },
    );
    await runStep([...g, 'push', RESULT_NAME, `oci:${partial}:latest`], req, { runner, env, what: `${tool.name} push` });
    commitLayout(partial, req.outLayout, tool.name);
  } catch (e) {
    // A builder killed mid-step cannot end RUN steps that runc started in their own session.
    const pids = killContainerProcesses(work.root);
    if (pids.length) appendFileSync(req.logFile, `# killed RUN processes the builder left running: ${pids.join(' ')}\n`);
    throw e;
  } finally {
    rmSync(partial, { recursive: true, force: true });
    rmSync(work.dir, { recursive: true, force: true });
    if (shortRunroot) rmSync(shortRunroot, { recursive: true, force: true });
  }
}

/**
 * buildah (`bud`), in a private vfs storage. Construct through `detectBuilder`, or directly with
 * options (a fake runner for tests; `network: 'none'` for RUN steps without network).
 */
export class BuildahBuilder implements DockerfileBuilder, StorageTool {
  readonly name = 'buildah' as const;
  #version: Promise<string> | undefined;

  constructor(private readonly options: BuilderOptions = {}) {}

  /** `buildah X.Y.Z`. @throws Error when buildah cannot run. */
  version(): Promise<string> {
    return (this.#version ??= captureOutput(['buildah', '--version']).then((out) => {
      const m = /^buildah version (\S+)/.exec(out.trim());
      if (!m) throw new Error(`cannot read buildah's version from: ${out.trim()}`);
      return `buildah ${m[1]}`;
    }));
  }

  /** @see DockerfileBuilder.build; steps in the module comment. */
  build(req: DockerfileBuild): Promise<void> {
    return buildInPrivateStorage(this, req, this.options);
  }

  /** `buildah --root R --runroot RR --storage-driver vfs`. */
  global(work: WorkDirs): string[] {
    return ['buildah', '--root', work.root, '--runroot', work.runroot, '--storage-driver', 'vfs'];
  }

  /** `bud --isolation chroot`, or with network `none`: `bud --isolation oci --runtime RUNC --network none`. */
  buildCommand(): string[] {
    if (this.options.network === 'none') {
      return ['bud', '--isolation', 'oci', '--runtime', findRunc(this.options, "buildah with network 'none'"), '--network', 'none'];
    }
    return ['bud', '--isolation', 'chroot'];
  }
}
