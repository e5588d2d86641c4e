/**
 * The `dockerfile:` recipe: an external builder (settings.builder / --builder, else detected:
 * buildah, then podman, then docker) builds the Dockerfile; a base declared here reaches it pinned
 * by digest (`FROM <name>` resolves to exactly that image, see rules/dockerfile/builder.ts); the
 * result is imported into the store. The builder chosen and its version are in the key.
 */
import path from 'node:path';
import { DeclPart, stringMap, type Settings } from '../../engine/validate/declarations.js';
import type { Diagnostic } from '../../engine/diagnostics.js';
import { NodeFailure } from '../../engine/rule.js';
import { findExecutable, type ToolProbe } from '../../engine/key/tools.js';
import { composeImage } from '../oci/image.js';
import { importLayout, platformTag } from '../oci/layout.js';
import { BUILDER_NAMES } from '../dockerfile/names.js';
import { configChanges, imageOutputs, buildId, layoutInside, type Recipe } from './recipe.js';
import { hostPlatform, platformArchitecture } from './platform.js';

/** A `dockerfile:` recipe's decl; paths workspace-relative. */
export type DockerfileRecipe = {
  readonly kind: 'dockerfile';
  readonly dockerfile: string;
  readonly context: string;
  readonly args: Readonly<Record<string, string>>;
  readonly target?: string;
};

/** The builders `settings.builder` and `--builder` take. */
const BUILDERS = ['auto', ...BUILDER_NAMES];

/** The recipe's settings: the builder (`auto` detects one). */
export const builderSetting = new DeclPart<{ readonly builder: string }>('build (dockerfile:)');

/** The Dockerfile builder the settings choose: `auto` or a name. */
export function builderOf(settings: Settings): string {
  return builderSetting.of(settings).builder;
}

/**
 * The probe of the Dockerfile builder `choice` would pick (`auto`: the first usable of buildah,
 * podman, docker): which it is and its version go into the key, so a new builder is a new key.
 */
function builderProbe(choice: string): ToolProbe {
  return {
    name: `dockerfile-builder:${choice}`,
    executables: () => [
      ...BUILDER_NAMES.map((exe) => findExecutable(exe, process.env.PATH) ?? `${exe} (not on PATH)`),
      process.env.DOCKER_HOST ? `DOCKER_HOST=${process.env.DOCKER_HOST} (not a file)` : '/var/run/docker.sock',
    ],
    identify: async () => (await (await import('../dockerfile/builder.js')).detectBuilder(choice === 'auto' ? undefined : choice)).version(),
  };
}

/** The `dockerfile:` recipe, with its `builder` setting (`--builder`). */
export const dockerfileRecipe: Recipe<DockerfileRecipe> = {
  kind: 'dockerfile',
  properties: {
    dockerfile: { type: 'string', minLength: 1, description: 'Path of the Dockerfile.' },
    context: { type: 'string', minLength: 1, description: "Build context directory (default: the Dockerfile's directory); .dockerignore applies." },
    args: { $ref: '#/definitions/stringMap', description: 'Build arguments (--build-arg).' },
    target: { type: 'string', minLength: 1, description: 'Dockerfile stage to build.' },
  },
  normalize(raw, rel) {
    const dockerfile = rel(raw.dockerfile as string);
    return {
      kind: 'dockerfile',
      dockerfile,
      context: raw.context !== undefined ? rel(raw.context as string) : path.posix.dirname(dockerfile),
      args: stringMap(raw.args),
      target: raw.target as string | undefined,
    };
  },
  check(r, _image, raw, ctx) {
    const out: Diagnostic[] = [];
    const dockerfileOutside = ctx.outside(r.dockerfile, ['dockerfile'], `'${raw.dockerfile as string}'`);
    if (dockerfileOutside) out.push(dockerfileOutside);
    else if (!ctx.exists({ kind: 'file', path: r.dockerfile })) {
      out.push({ code: 'missing-file', message: `Dockerfile '${r.dockerfile}' does not exist`, span: ctx.at(['dockerfile']) });
    }
    const hasContext = raw.context !== undefined;
    const contextKey = hasContext ? 'context' : 'dockerfile';
    // The default context is the Dockerfile's directory: said once, for the Dockerfile.
    const contextOutside = hasContext || !dockerfileOutside ? ctx.outside(r.context, [contextKey], `'${raw[contextKey] as string}'`) : undefined;
    if (contextOutside) out.push(contextOutside);
    else if (!dockerfileOutside && !ctx.exists({ kind: 'dir', path: r.context })) {
      out.push({ code: 'missing-file', message: `build context directory '${r.context}' does not exist`, span: ctx.at([contextKey]) });
    }
    return out;
  },
  inputs: (r) => [
    { kind: 'file', path: r.dockerfile },
    { kind: 'dir', path: r.context, ignoreFile: '.dockerignore' },
  ],
  tool: (_r, settings) => `dockerfile-builder:${builderOf(settings)}`,
  tools: (settings) => [builderProbe(builderOf(settings))],
  async build({ decl, recipe, ctx, epoch, platform }) {
    const { root, boundary } = ctx.workspace;
    const choice = builderOf(ctx.workspace.settings);
    let builder;
    try {
      builder = await (await import('../dockerfile/builder.js')).detectBuilder(choice === 'auto' ? undefined : choice, { runner: ctx.runner });
    } catch (e) {
      throw new NodeFailure((e as Error).message);
    }
    if (choice !== 'auto' && builder.name !== choice) {
      throw new NodeFailure(`the builder '${choice}' chosen by settings.builder or --builder is not usable here (found ${builder.name} instead)`);
    }
    ctx.log.write(`builder: ${await builder.version()}\n`);
    let base: { layoutDir: string; tag: string; name: string } | undefined;
    const from = decl.from;
    if (from !== null && typeof from === 'object' && 'image' in from) {
      const result = ctx.deps.get(buildId(from.image));
      const dep = imageOutputs(buildId(from.image), result);
      // A multi-platform base: the manifest of the platform built (else the host's), by the tag its
      // layout gives it.
      const tag = result?.outputs.index !== undefined ? platformTag(dep.tag, platform ?? hostPlatform()) : dep.tag;
      base = { layoutDir: path.join(root, dep.layout), tag, name: from.image };
    } else if (from !== null && typeof from === 'object' && 'ociLayout' in from) {
      base = { layoutDir: layoutInside(boundary, root, from.ociLayout), tag: from.tag ?? 'latest', name: path.basename(from.ociLayout).toLowerCase() };
    } else if (from !== null) {
      throw new NodeFailure(`a dockerfile: image takes its base from the Dockerfile's FROM, or from an image declared here or an oci-layout: directory; remove 'from: ${typeof from === 'object' && 'registry' in from ? from.registry : 'scratch'}'`);
    }
    const outLayout = path.join(ctx.scratchDir(), 'result');
    // Checked again (validation did first), and the builder gets the real paths.
    boundary.realInside(path.join(root, recipe.context), recipe.context);
    // A staged copy with the modes git checks out: the image never depends on the umask.
    const context = (await import('../dockerfile/context.js')).stageContext(root, recipe.context, path.join(ctx.scratchDir(), 'context'));
    await builder.build({
      dockerfile: boundary.realInside(path.join(root, recipe.dockerfile), recipe.dockerfile),
      context,
      args: recipe.args,
      target: recipe.target,
      base,
      outLayout,
      scratchDir: ctx.scratchDir(),
      logFile: ctx.log.path,
      signal: ctx.signal,
      sourceDateEpoch: epoch,
      ...(platform ? { platform } : {}),
    });
    const built = await importLayout(ctx.store, outLayout, 'latest', platform ? platformArchitecture(platform) : undefined);
    if (platform && `${built.config.os}/${built.config.architecture}` !== platform) throw new NodeFailure(`the builder made a ${built.config.os}/${built.config.architecture} image, not ${platform}`);
    const changes = configChanges(decl);
    const changed = Object.keys(changes.env).length || changes.entrypoint || changes.cmd || changes.workdir || Object.keys(changes.labels).length;
    return changed ? composeImage(ctx.store, built, [], changes, epoch) : built;
  },
  settings: {
    entry: 'settings',
    part: builderSetting,
    schema: {
      properties: {
        builder: {
          description: 'The external builder for dockerfile: images (default auto: buildah, then podman, then docker).',
          enum: BUILDERS,
        },
      },
    },
    normalize: (raw, ctx) => ({ builder: ctx.overrides.builder ?? (raw.builder as string | undefined) ?? 'auto' }),
    options: [{ name: 'builder', values: BUILDERS, help: 'builder for dockerfile: images: auto (default), buildah, podman, docker' }],
  },
};
