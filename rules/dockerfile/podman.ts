/**
 * The podman backend: `podman build` (buildah's code inside podman) through the same flow as
 * buildah (`buildInPrivateStorage`: private vfs storage, base pinned by digest and pulled from an
 * OCI archive, result pushed to an OCI layout). With G = `podman --root R --runroot RR
 * --storage-driver vfs --runtime RUNC --cgroup-manager cgroupfs --events-backend file --tmpdir
 * WORK/libpod`, the steps are:
 *
 *   tar -C WORK/base-layout --dereference -cf WORK/base.oci.tar oci-layout index.json blobs
 *   G pull oci-archive:WORK/base.oci.tar
 *   G build --network host --ulimit nofile=1024:1024 --ulimit nproc=1000:1000 --format oci
 *       --layers=false --pull=false --timestamp EPOCH -f DOCKERFILE [--build-arg K=V]…
 *       [--target T] -t localhost/graph-result:latest CONTEXT
 *   G push localhost/graph-result:latest oci:OUT.partial-…:latest      (then renamed to OUT)
 *
 * Why these flags: RUN steps run in runc containers (crun fails on these hosts' hybrid cgroups;
 * systemd cgroups and journald events are absent in CI), and root lacks CAP_SYS_RESOURCE, so
 * podman's default rlimits (nproc 32768, nofile 1048576) cannot be set: the build fails with
 * "error setting rlimit" unless lowered. `--network host` rather than podman's default bridge,
 * which would add a bridge and firewall rules to the host; `none` gives loopback only.
 * `--tmpdir` keeps libpod's state files in the private directory. podman refuses a run root
 * longer than 50 characters, so when WORK/runroot is longer, RR is a private `/tmp/graph-run-*`
 * directory instead, removed with WORK. Reproducibility is buildah's (see buildah.ts):
 * `--timestamp` and `--layers=false`.
 */
import path from 'node:path';
import { captureOutput } from '../../engine/process.js';
import { buildInPrivateStorage, findRunc, type StorageTool } from './buildah.js';
import type { BuilderOptions, DockerfileBuild, DockerfileBuilder, WorkDirs } from './builder.js';

/** Limits podman can set without CAP_SYS_RESOURCE (its defaults exceed the hard limits). */
export const PODMAN_ULIMITS = ['nofile=1024:1024', 'nproc=1000:1000'] as const;

/** podman (`build`), in a private vfs storage. Construct through `detectBuilder`, or directly with options. */
export class PodmanBuilder implements DockerfileBuilder, StorageTool {
  readonly name = 'podman' as const;
  /** podman: "the specified runroot is longer than 50 characters". */
  readonly maxRunrootLength = 50;
  #version: Promise<string> | undefined;

  constructor(private readonly options: BuilderOptions = {}) {}

  /** `podman X.Y.Z`. @throws Error when podman cannot run. */
  version(): Promise<string> {
    return (this.#version ??= captureOutput(['podman', '--version']).then((out) => {
      const m = /^podman version (\S+)/.exec(out.trim());
      if (!m) throw new Error(`cannot read podman's version from: ${out.trim()}`);
      return `podman ${m[1]}`;
    }));
  }

  /** @see DockerfileBuilder.build; steps in the module comment. */
  build(req: DockerfileBuild): Promise<void> {
    return buildInPrivateStorage(this, req, this.options);
  }

  /** `podman --root R --runroot RR --storage-driver vfs --runtime RUNC --cgroup-manager cgroupfs --events-backend file --tmpdir WORK/libpod`. */
  global(work: WorkDirs): string[] {
    return [
      'podman',
      '--root', work.root,
      '--runroot', work.runroot,
      '--storage-driver', 'vfs',
      '--runtime', findRunc(this.options, 'podman'),
      '--cgroup-manager', 'cgroupfs',
      '--events-backend', 'file',
      '--tmpdir', path.join(work.dir, 'libpod'),
    ];
  }

  /** `build --network host|none --ulimit nofile=1024:1024 --ulimit nproc=1000:1000`. */
  buildCommand(): string[] {
    return ['build', '--network', this.options.network ?? 'host', ...PODMAN_ULIMITS.flatMap((u) => ['--ulimit', u])];
  }
}
