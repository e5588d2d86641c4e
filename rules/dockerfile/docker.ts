/**
 * The docker backend: the docker CLI against whatever engine DOCKER_HOST (or the default socket)
 * names, which may be a real Docker engine or podman's Docker-compatible service. With
 * D = `docker [--host DOCKER_HOST]`:
 *
 * With buildx (`docker buildx version` succeeds), BuildKit takes the pinned base directly:
 *   D buildx build --progress plain --output type=oci,dest=WORK/result.oci.tar
 *       [--build-context NAME=oci-layout://WORK/base-layout@DIGEST] [--network none]
 *       --build-arg SOURCE_DATE_EPOCH=EPOCH [--build-arg K=V]… [--target T] -f DOCKERFILE CONTEXT
 *   tar -C OUT.partial-… -xf WORK/result.oci.tar                      (then renamed to OUT)
 * BuildKit's `oci` exporter needs a builder that supports it (the docker-container driver, or
 * the engine's containerd image store); the default docker driver refuses, and the failure
 * message quotes that. SOURCE_DATE_EPOCH sets the config and history times (BuildKit >= 0.11).
 * This path is untested here: buildx is not packaged for Debian 12.
 *
 * Without buildx (the classic builder), the base goes through the engine's image store, and the
 * result comes back as a `docker save` archive that skopeo converts to an OCI layout:
 *   skopeo copy oci:WORK/base-layout docker-archive:WORK/base.docker.tar:NAME:latest
 *   D load -i WORK/base.docker.tar
 *   D build --network host|none [--build-arg K=V]… [--target T] -t graph-result-RANDOM:latest
 *       -f DOCKERFILE CONTEXT
 *   D save -o WORK/result.docker.tar graph-result-RANDOM:latest
 *   D image rm graph-result-RANDOM:latest
 *   skopeo copy docker-archive:WORK/result.docker.tar oci:OUT.partial-…:latest   (then renamed)
 * A docker-archive rather than an OCI archive for the base because engines before Docker 25
 * load only that format. `--network host` as with podman: RUN steps reach what the engine's
 * host reaches, and no bridge is set up per step. Limits of this path: the engine's NAME:latest
 * is left pointing at the base (a concurrent build on the same engine with another image of the
 * same name would race for that name); there is no `--timestamp`, so results are not
 * reproducible; and aborting ends the CLI's process group only: the engine decides what happens
 * to a build whose client went away (podman 4.3's compatible service lets the running RUN step
 * go on to its end; tried here).
 */
import { mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { captureOutput, ExecaRunner, type ProcessRunner } from '../../engine/process.js';
import { NodeFailure } from '../../engine/rule.js';
import { findExecutable } from '../../engine/key/tools.js';
import {
  argsAndTarget,
  builderEnv,
  commitLayout,
  partialLayoutPath,
  pinBaseImage,
  prepareWork,
  runStep,
  type BuilderOptions,
  type DockerfileBuild,
  type DockerfileBuilder,
} from './builder.js';

/** The docker CLI (classic builder or buildx). Construct through `detectBuilder`, or directly with options. */
export class DockerBuilder implements DockerfileBuilder {
  readonly name = 'docker' as const;
  #version: Promise<string> | undefined;
  #buildx: Promise<string | undefined> | undefined;

  constructor(private readonly options: BuilderOptions = {}) {}

  /** `docker` and global flags: `--host` when the options name an engine (so version probes and builds talk to the same one). */
  private cli(): string[] {
    const host = (this.options.env ?? process.env).DOCKER_HOST;
    return host ? ['docker', '--host', host] : ['docker'];
  }

  /** buildx's version (`v0.12.1`), or undefined when the plugin is absent. */
  private buildx(): Promise<string | undefined> {
    return (this.#buildx ??= captureOutput([...this.cli(), 'buildx', 'version']).then(
      (out) => /\bv?\d+\.\d+\.\d+\S*/.exec(out)?.[0] ?? 'unknown',
      () => undefined,
    ));
  }

  /**
   * `docker CLIENT (engine SERVER)`, plus `, buildx V` when buildx is used: the engine does the
   * building, so its version belongs in the key as much as the CLI's.
   * @throws Error when the CLI cannot run or reach the engine.
   */
  version(): Promise<string> {
    return (this.#version ??= (async () => {
      const out = (await captureOutput([...this.cli(), 'version', '--format', '{{.Client.Version}} {{.Server.Version}}'])).trim();
      const [client, server] = out.split(' ');
      const buildx = await this.buildx();
      return `docker ${client} (engine ${server ?? 'unknown'}${buildx ? `, buildx ${buildx}` : ''})`;
    })());
  }

  /** @see DockerfileBuilder.build; steps in the module comment. */
  async build(req: DockerfileBuild): Promise<void> {
    req.signal.throwIfAborted();
    if (req.platform) throw new NodeFailure(`the docker backend builds for the host's platform only; building for ${req.platform} needs buildah or podman (settings.builder)`);
    const runner: ProcessRunner = this.options.runner ?? new ExecaRunner();
    const work = prepareWork(req, 'docker');
    const env = builderEnv(this.options, work);
    const partial = partialLayoutPath(req.outLayout);
    try {
      if (await this.buildx()) await this.buildWithBuildx(req, runner, env, work.dir, partial);
      else await this.buildClassic(req, runner, env, work.dir, partial);
      commitLayout(partial, req.outLayout, 'docker');
    } finally {
      rmSync(partial, { recursive: true, force: true });
      rmSync(work.dir, { recursive: true, force: true });
    }
  }

  private async buildWithBuildx(req: DockerfileBuild, runner: ProcessRunner, env: Record<string, string | undefined>, workDir: string, partial: string): Promise<void> {
    const archive = path.join(workDir, 'result.oci.tar');
    const base: string[] = [];
    if (req.base) {
      const pinned = pinBaseImage(req.base, workDir);
      base.push('--build-context', `${req.base.name}=oci-layout://${pinned.stageDir}@${pinned.descriptor.digest}`);
    }
    // The request's own SOURCE_DATE_EPOCH argument, if any, wins (it comes later).
    const epoch = 'SOURCE_DATE_EPOCH' in req.args ? [] : ['--build-arg', `SOURCE_DATE_EPOCH=${req.sourceDateEpoch ?? 0}`];
    await runStep(
      [
        ...this.cli(), 'buildx', 'build', '--progress', 'plain',
        '--output', `type=oci,dest=${archive}`,
        ...base,
        ...(this.options.network === 'none' ? ['--network', 'none'] : []),
        ...epoch,
        ...argsAndTarget(req),
        '-f', req.dockerfile,
        req.context,
      ],
      req,
      { runner, env, what: 'docker buildx build' },
    );
    mkdirSync(partial, { recursive: true });
    await runStep(['tar', '-C', partial, '-xf', archive], req, { runner, env, what: 'unpacking the OCI archive from buildx' });
  }

  private async buildClassic(req: DockerfileBuild, runner: ProcessRunner, env: Record<string, string | undefined>, workDir: string, partial: string): Promise<void> {
    const skopeo = findExecutable('skopeo', env.PATH);
    if (!skopeo) {
      throw new NodeFailure('the docker backend without buildx converts images with skopeo, which is not installed (`apt-get install skopeo`)');
    }
    // The classic builder, also where the environment asks for BuildKit (which would need buildx).
    env = { ...env, DOCKER_BUILDKIT: '0' };
    if (req.base) {
      const pinned = pinBaseImage(req.base, workDir);
      const archive = path.join(workDir, 'base.docker.tar');
      await runStep(['skopeo', 'copy', `oci:${pinned.stageDir}`, `docker-archive:${archive}:${req.base.name}:latest`], req, { runner, env, what: `skopeo copy (base image ${req.base.name})` });
      await runStep([...this.cli(), 'load', '-i', archive], req, { runner, env, what: 'docker load (base image)' });
    }
    const tag = `graph-result-${path.basename(workDir).replace(/^docker-/, '').toLowerCase()}:latest`;
    const saved = path.join(workDir, 'result.docker.tar');
    try {
      await runStep(
        [
          ...this.cli(), 'build',
          '--network', this.options.network ?? 'host',
          ...argsAndTarget(req),
          '-t', tag,
          '-f', req.dockerfile,
          req.context,
        ],
        req,
        { runner, env, what: 'docker build' },
      );
      await runStep([...this.cli(), 'save', '-o', saved, tag], req, { runner, env, what: 'docker save' });
    } finally {
      // The tag is ours alone; drop it so repeated builds don't pile up images in the engine.
      if (!req.signal.aborted) {
        await runStep([...this.cli(), 'image', 'rm', tag], req, { runner, env, what: 'docker image rm', okExitCodes: [0, 1] }).catch(() => undefined);
      }
    }
    await runStep(['skopeo', 'copy', `docker-archive:${saved}`, `oci:${partial}:latest`], req, { runner, env, what: 'skopeo copy (result)' });
  }
}
