/**
 * build:IMAGE — produces an OCI image (image spec v1.1) from one of three recipes: `layers:`
 * (the embedded daemonless builder), `debian:` (a base from Debian packages) or `dockerfile:`
 * (an external builder). Outputs (in the `--report` JSON): `manifest` (digest), `config`,
 * `layers` (digests), `layout` (an OCI image layout directory, workspace-relative) and its `tag`.
 */
import path from 'node:path';
import type { Boundary } from '../engine/boundary.js';
import type { BaseImage, Declarations, ImageDecl, LayerCopy } from '../engine/declarations.js';
import { globBase, isGlob, matchPaths, type InputSpec } from '../engine/files.js';
import { findExecutable, type ToolProbe } from '../engine/tools.js';
import { NodeFailure, type ExecContext, type Json, type NodeDef, type NodeId, type NodeOutputs, type RestoreContext, type Rule } from '../engine/rule.js';
import { composeImage, imageBlobs, loadImage, type ConfigChanges, type StoredImage } from './oci/image.js';
import { entriesForCopy, writeLayer, type LayerEntry } from './oci/layer.js';
import { importLayout, writeLayout } from './oci/layout.js';
import { BUILDER_NAMES } from './dockerfile/names.js';
import { LOCK_FILE, readLock, type ImagesLock } from './debian/lock.js';

/** Node id of an image's build. */
export const buildId = (image: string) => `build:${image}` as NodeId;

function baseDecl(from: BaseImage | undefined): Json {
  if (!from) return null;
  switch (from.kind) {
    case 'image':
      return { image: from.name };
    case 'registry':
      return { registry: from.ref };
    case 'oci-layout':
      return { ociLayout: from.dir, tag: from.tag ?? null };
    case 'scratch':
      return 'scratch';
  }
}

function inputsOf(image: ImageDecl): InputSpec[] {
  const r = image.recipe;
  const inputs: InputSpec[] = [];
  if (r.kind === 'dockerfile') {
    inputs.push({ kind: 'file', path: r.dockerfile }, { kind: 'dir', path: r.context, ignoreFile: '.dockerignore' });
  } else if (r.kind === 'layers') {
    for (const l of r.layers) inputs.push({ kind: 'glob', pattern: l.copy });
  }
  if (image.from?.kind === 'oci-layout') inputs.push({ kind: 'dir', path: image.from.dir });
  return inputs;
}

/**
 * The tool that makes an image; a Dockerfile build names the builder chosen (see settings.builder).
 * Version 2 of the layer writers: gzip in parallel blocks (rules/oci/gzip.ts), other bytes and so
 * other digests than version 1's single zlib stream; the bump keeps version 1's records unused.
 */
function toolOf(image: ImageDecl, decls: Declarations): string {
  if (image.recipe.kind === 'layers') return 'graph-layers/2';
  if (image.recipe.kind === 'debian') return 'graph-debian/2';
  return `dockerfile-builder:${decls.settings.builder}`;
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
    identify: async () => (await (await import('./dockerfile/builder.js')).detectBuilder(choice === 'auto' ? undefined : choice)).version(),
  };
}

/**
 * Seconds since the epoch for layer times and config dates: SOURCE_DATE_EPOCH as the node's key
 * recorded it (`ExecContext.env`, never the process's own environment), else 0.
 */
export function sourceDateEpoch(env: ExecContext['env']): number {
  const v = Number(env.SOURCE_DATE_EPOCH ?? 0);
  return Number.isFinite(v) && v >= 0 ? Math.floor(v) : 0;
}

/**
 * The real path of a declared `oci-layout:` directory, checked again (validation did first) with
 * every symbolic link in it (`oci-layout`, `index.json`, blobs): the importer and the builders
 * follow them, and a JSON parse error would quote the first bytes of an outside file.
 * @throws OutsideWorkspaceError when the directory or a link in it leads outside.
 */
function layoutInside(boundary: Boundary, root: string, dir: string): string {
  const real = boundary.realInside(path.join(root, dir), dir);
  boundary.checkTree(real, dir);
  return real;
}

/** The base image of a build, loaded into the store (undefined for scratch and Debian bases). */
async function resolveBase(image: ImageDecl, ctx: ExecContext): Promise<StoredImage | undefined> {
  const from = image.from;
  if (!from || from.kind === 'scratch') return undefined;
  if (from.kind === 'image') {
    const dep = ctx.deps.get(buildId(from.name));
    const manifest = dep?.outputs.manifest;
    if (typeof manifest !== 'string') throw new NodeFailure(`base image '${from.name}' has no manifest output`);
    return loadImage(ctx.store, manifest);
  }
  if (from.kind === 'oci-layout') return importLayout(ctx.store, layoutInside(ctx.decls.boundary, ctx.decls.root, from.dir), from.tag);
  ctx.log.write(`pulling ${from.ref}\n`);
  return (await import('./registry/client.js')).pullImage(ctx.store, from.parsed, ctx.signal);
}

/**
 * The `layers:` recipe's entries, with Dockerfile COPY semantics: a glob's matches, or any source
 * copied to a destination ending in '/', land in that directory under their own names; a single
 * file or directory otherwise lands at the destination itself (a directory's contents under it).
 * Symbolic links in a copied directory or matched by a glob are copied as links, never followed.
 * @param boundary checked again here (validation did first): a plain path must resolve inside it,
 *   a glob's directory part and every match's directory too.
 * @throws OutsideWorkspaceError when one does not; NodeFailure when a copy matches nothing.
 */
export function layerEntries(root: string, copies: readonly LayerCopy[], boundary: Boundary): LayerEntry[] {
  const entries: LayerEntry[] = [];
  for (const c of copies) {
    const glob = isGlob(c.copy);
    boundary.realInside(path.join(root, glob ? globBase(c.copy) : c.copy), c.copy);
    const matches = matchPaths(root, c.copy);
    if (!matches.length) throw new NodeFailure(`layers: '${c.copy}' matches no file`);
    const intoDir = glob || c.to.endsWith('/');
    for (const m of matches) {
      if (glob) boundary.realInside(path.dirname(path.join(root, m)), m);
      const dest = intoDir ? path.posix.join(c.to, path.posix.basename(m)) : c.to;
      // A loop, not push(...list): a large directory has more entries than a call takes arguments.
      for (const e of entriesForCopy(path.join(root, m), dest, c.mode)) entries.push(e);
    }
  }
  return entries;
}

function configChanges(image: ImageDecl): ConfigChanges {
  return { env: image.env, entrypoint: image.entrypoint, cmd: image.cmd, workdir: image.workdir, labels: image.labels };
}

/**
 * The `dockerfile:` recipe: an external builder (settings.builder / --builder, else detected)
 * builds the Dockerfile; a base declared here reaches it pinned by digest (`FROM <name>` resolves
 * to exactly that image, see rules/dockerfile/builder.ts); the result is imported into the store.
 */
async function dockerfileImage(image: ImageDecl, recipe: Extract<ImageDecl['recipe'], { kind: 'dockerfile' }>, ctx: ExecContext, epoch: number): Promise<StoredImage> {
  const choice = ctx.decls.settings.builder;
  let builder;
  try {
    builder = await (await import('./dockerfile/builder.js')).detectBuilder(choice === 'auto' ? undefined : choice, { runner: ctx.runner });
  } catch (e) {
    throw new NodeFailure((e as Error).message);
  }
  if (choice !== 'auto' && builder.name !== choice) {
    throw new NodeFailure(`the builder '${choice}' chosen by settings.builder or --builder is not usable here (found ${builder.name} instead)`);
  }
  ctx.log.write(`builder: ${await builder.version()}\n`);
  let base: { layoutDir: string; tag: string; name: string } | undefined;
  if (image.from?.kind === 'image') {
    const dep = ctx.deps.get(buildId(image.from.name));
    base = { layoutDir: path.join(ctx.decls.root, String(dep?.outputs.layout)), tag: String(dep?.outputs.tag), name: image.from.name };
  } else if (image.from?.kind === 'oci-layout') {
    base = { layoutDir: layoutInside(ctx.decls.boundary, ctx.decls.root, image.from.dir), tag: image.from.tag ?? 'latest', name: path.basename(image.from.dir).toLowerCase() };
  } else if (image.from) {
    throw new NodeFailure(`a dockerfile: image takes its base from the Dockerfile's FROM, or from an image declared here or an oci-layout: directory; remove 'from: ${image.from.kind === 'registry' ? image.from.ref : 'scratch'}'`);
  }
  const outLayout = path.join(ctx.scratchDir(), 'result');
  // Checked again (validation did first), and the builder gets the real paths.
  const boundary = ctx.decls.boundary;
  boundary.realInside(path.join(ctx.decls.root, recipe.context), recipe.context);
  // A staged copy with the modes git checks out: the image never depends on the umask.
  const context = (await import('./dockerfile/context.js')).stageContext(ctx.decls.root, recipe.context, path.join(ctx.scratchDir(), 'context'));
  await builder.build({
    dockerfile: boundary.realInside(path.join(ctx.decls.root, recipe.dockerfile), recipe.dockerfile),
    context,
    args: recipe.args,
    target: recipe.target,
    base,
    outLayout,
    scratchDir: ctx.scratchDir(),
    logFile: ctx.log.path,
    signal: ctx.signal,
    sourceDateEpoch: epoch,
  });
  const built = await importLayout(ctx.store, outLayout, 'latest');
  const changes = configChanges(image);
  const changed = Object.keys(changes.env).length || changes.entrypoint || changes.cmd || changes.workdir || Object.keys(changes.labels).length;
  return changed ? composeImage(ctx.store, built, [], changes, epoch) : built;
}

/** The visible image layout of a cached build, written again from the store. */
export async function restoreBuild(node: NodeDef, result: NodeOutputs, ctx: RestoreContext): Promise<void> {
  const manifest = result.outputs.manifest;
  if (typeof manifest !== 'string') throw new Error(`${node.id} has no manifest output`);
  writeLayout(ctx.store, path.join(ctx.outDir, 'oci', node.image as string), [{ tag: 'latest', image: loadImage(ctx.store, manifest) }]);
}

/** Store the image as an OCI image layout under `.graph/out/oci/NAME` and describe it. */
function imageOutputs(ctx: ExecContext, name: string, image: StoredImage): NodeOutputs {
  const layout = path.join(ctx.outDir, 'oci', name);
  writeLayout(ctx.store, layout, [{ tag: 'latest', image }]);
  return {
    outputs: {
      manifest: image.manifestDescriptor.digest,
      config: image.manifest.config.digest,
      layers: image.manifest.layers.map((l) => l.digest),
      layout: path.relative(ctx.decls.root, layout),
      tag: 'latest',
    },
    artifacts: imageBlobs(image),
    files: [path.relative(ctx.decls.root, path.join(layout, 'index.json'))],
  };
}

export const buildRule: Rule = {
  kind: 'build',
  version: 1,
  restore: restoreBuild,
  expand(decls: Declarations): NodeDef[] {
    // A debian image's key holds its own images.lock entry (versions and SHA-256 of every
    // package), so re-locking one image rebuilds that image only.
    let lock: ImagesLock | undefined;
    const lockEntry = (name: string): Json => {
      try {
        lock ??= readLock(path.join(decls.root, LOCK_FILE));
      } catch {
        return 'unreadable'; // the build itself reports the lock's problem
      }
      return (lock.images[name] as unknown as Json) ?? null;
    };
    let builder: ToolProbe | undefined;
    return [...decls.images.values()].map((image) => {
      const deps = image.from?.kind === 'image' ? [{ id: buildId(image.from.name), at: () => image.at(['from']) }] : [];
      const decl = {
        from: baseDecl(image.from),
        recipe: image.recipe as unknown as Json,
        env: image.env,
        entrypoint: (image.entrypoint as Json) ?? null,
        cmd: (image.cmd as Json) ?? null,
        workdir: image.workdir ?? null,
        labels: image.labels,
        ...(image.recipe.kind === 'debian' ? { lock: lockEntry(image.name) } : {}),
      };
      return {
        id: buildId(image.name),
        kind: 'build',
        deps,
        decl,
        inputs: inputsOf(image),
        env: ['SOURCE_DATE_EPOCH'],
        tool: toolOf(image, decls),
        ...(image.recipe.kind === 'dockerfile' ? { tools: [(builder ??= builderProbe(decls.settings.builder))] } : {}),
        resources: {},
        image: image.name,
        at: () => image.at([], 'key'),
      };
    });
  },
  async execute(node, ctx) {
    const name = node.image as string;
    const image = ctx.decls.images.get(name) as ImageDecl;
    const recipe = image.recipe;
    const epoch = sourceDateEpoch(ctx.env);
    if (recipe.kind === 'layers') {
      const base = await resolveBase(image, ctx);
      const entries = layerEntries(ctx.decls.root, recipe.layers, ctx.decls.boundary);
      ctx.log.write(`layers: ${entries.length} entries from ${recipe.layers.map((l) => l.copy).join(', ')}\n`);
      const blob = await writeLayer(entries, ctx.store, { mtime: epoch, signal: ctx.signal, within: ctx.decls.boundary });
      ctx.log.write(`layer ${blob.digest} (${blob.size} bytes), diff_id ${blob.diffId}\n`);
      const createdBy = `graph layers: ${recipe.layers.map((l) => `${l.copy} -> ${l.to}`).join(', ')}`;
      const built = composeImage(ctx.store, base, [{ descriptor: blob, diffId: blob.diffId, createdBy }], configChanges(image), epoch);
      ctx.log.write(`image ${built.manifestDescriptor.digest}\n`);
      return imageOutputs(ctx, name, built);
    }
    if (recipe.kind === 'debian') {
      const rootfs = path.join(ctx.scratchDir(), 'rootfs');
      const { debianRootfs, rootfsModes } = await import('./debian/image.js');
      const got = await debianRootfs({
        name,
        request: recipe,
        lockFile: path.join(ctx.decls.root, LOCK_FILE),
        cacheDir: path.join(ctx.cacheDir, 'debian'),
        rootfs,
        runner: ctx.runner,
        logFile: ctx.log.path,
        signal: ctx.signal,
        note: (line) => ctx.log.write(line),
      });
      const blob = await writeLayer(entriesForCopy(rootfs, '/', undefined, rootfsModes(got.modes)), ctx.store, { mtime: epoch, signal: ctx.signal });
      ctx.log.write(`layer ${blob.digest} (${blob.size} bytes) from ${got.packages} packages\n`);
      const createdBy = `graph debian: ${recipe.suite} ${recipe.packages.join(' ')}`;
      const built = composeImage(ctx.store, undefined, [{ descriptor: blob, diffId: blob.diffId, createdBy }], configChanges(image), epoch);
      return imageOutputs(ctx, name, built);
    }
    return imageOutputs(ctx, name, await dockerfileImage(image, recipe, ctx, epoch));
  },
};
