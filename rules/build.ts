/**
 * build:IMAGE — produces an OCI image (image spec v1.1) from one of three recipes: `layers:`
 * (the embedded daemonless builder), `debian:` (a base from Debian packages) or `dockerfile:`
 * (an external builder), each a module of rules/build/ behind the `Recipe` interface. Outputs (in
 * the `--report` JSON; read them with `imageOutputs`): `manifest` (digest), `config`, `layers`
 * (digests), `layout` (an OCI image layout directory, workspace-relative) and its `tag`.
 */
import path from 'node:path';
import { declarePart, stringMap, type ImageDecl } from '../engine/validate/declarations.js';
import type { InputSpec } from '../engine/key/files.js';
import { NodeFailure, type ExecContext, type NodeDef, type NodeOutputs, type RestoreContext, type Rule } from '../engine/rule.js';
import { parseReference } from '../engine/validate/reference.js';
import { ACTION_KEY_ANNOTATION, annotateImage, composeIndex, imageBlobs, indexBlobs, loadImage, loadImageIndex, type StoredImage, type StoredIndex } from './oci/image.js';
import { importLayout, writeIndexLayout, writeLayout } from './oci/layout.js';
import { emulationFacts, emulationFor, hostPlatform, imagePlatforms, PER_PLATFORM_RECIPES, platformArchitecture, platformsOf, PLATFORMS } from './build/platform.js';
import type { Diagnostic, Span } from '../engine/diagnostics.js';
import { debianRecipe } from './build/debian.js';
import { dockerfileRecipe } from './build/dockerfile.js';
import { layersRecipe } from './build/layers.js';
import {
  baseDecl,
  buildId,
  buildOf,
  buildPart,
  imageOutputs,
  indexOutputs,
  layoutInside,
  platformManifest,
  sourceDateEpoch,
  type BuildNodeDecl,
  type BuildPart,
  type Expansion,
  type Recipe,
  type RecipeDecl,
} from './build/recipe.js';

// What the other rules read of builds lives in build/recipe.ts; exported here, with the rule.
export { buildId, buildOf, imageOutputs, platformManifest, sourceDateEpoch };

/** The recipes, in the order the schema lists their keys. */
const RECIPES: readonly Recipe[] = [dockerfileRecipe, layersRecipe, debianRecipe];
const recipeByKind = new Map(RECIPES.map((r) => [r.kind, r]));

function recipeOf(kind: string): Recipe {
  const recipe = recipeByKind.get(kind);
  if (!recipe) throw new NodeFailure(`unknown recipe '${kind}'`);
  return recipe;
}

const stringList = { type: 'array', items: { type: 'string' } } as const;

/**
 * The base image of a build, loaded into the store (undefined for scratch and no base): for
 * `platform` (`OS/ARCH`) of a multi-platform build, else the host's.
 */
async function resolveBase(decl: BuildNodeDecl, ctx: ExecContext, platform?: string): Promise<StoredImage | undefined> {
  const from = decl.from;
  if (from === null || from === 'scratch') return undefined;
  if ('image' in from) {
    const id = buildId(from.image);
    const result = ctx.deps.get(id);
    // A multi-platform base gives each platform's build its image, and a single-platform build
    // (a dockerfile: image) the host's; a single-platform base serves only the platform it has.
    const multiBase = result?.outputs.index !== undefined;
    const manifest = multiBase ? platformManifest(id, result, platform ?? hostPlatform()) : imageOutputs(id, result).manifest;
    const base = loadImage(ctx.store, manifest);
    if (platform && `${base.config.os}/${base.config.architecture}` !== platform) throw new NodeFailure(`base ${id} is ${base.config.os}/${base.config.architecture}: it has no ${platform} image`);
    return base;
  }
  if ('ociLayout' in from) return importLayout(ctx.store, layoutInside(ctx.workspace.boundary, ctx.workspace.root, from.ociLayout), from.tag ?? undefined, platform ? platformArchitecture(platform) : undefined);
  if (platform) throw new NodeFailure(`a multi-platform build cannot pull its base ${from.registry} yet: build the base here, or use oci-layout:`);
  ctx.log.write(`pulling ${from.registry}\n`);
  const parsed = parseReference(from.registry);
  if (typeof parsed === 'string') throw new NodeFailure(parsed);
  return (await import('./registry/client.js')).pullImage(ctx.store, parsed, ctx.signal);
}

/** The visible image layout of a cached build, written again from the store. */
export async function restoreBuild(node: NodeDef<BuildNodeDecl>, result: NodeOutputs, ctx: RestoreContext): Promise<void> {
  if (result.outputs.index !== undefined) {
    writeIndexLayout(ctx.store, path.join(ctx.outDir, 'oci', node.image as string), 'latest', loadImageIndex(ctx.store, indexOutputs(node.id, result).index));
    return;
  }
  const { manifest } = imageOutputs(node.id, result);
  writeLayout(ctx.store, path.join(ctx.outDir, 'oci', node.image as string), [{ tag: 'latest', image: loadImage(ctx.store, manifest) }]);
}

/** Store the image as an OCI image layout under `.graph/out/oci/NAME` and describe it. */
function storedOutputs(ctx: ExecContext, name: string, built: StoredImage): NodeOutputs {
  // The build's action key in the manifest: the registry it is pushed to can say which key built
  // it, and a fresh checkout checks it before taking the image as this build (rules/registry/source.ts).
  const image = annotateImage(ctx.store, built, { [ACTION_KEY_ANNOTATION]: ctx.keys.node });
  const layout = path.join(ctx.outDir, 'oci', name);
  writeLayout(ctx.store, layout, [{ tag: 'latest', image }]);
  return {
    outputs: {
      manifest: image.manifestDescriptor.digest,
      config: image.manifest.config.digest,
      layers: image.manifest.layers.map((l) => l.digest),
      layout: path.relative(ctx.workspace.root, layout),
      tag: 'latest',
    },
    artifacts: imageBlobs(image),
    files: [path.relative(ctx.workspace.root, path.join(layout, 'index.json'))],
  };
}

/**
 * Store a multi-platform image as an OCI image layout under `.graph/out/oci/NAME` (the index
 * tagged `latest`, each platform's manifest `latest-OS-ARCH`) and describe it: the outputs of a
 * single-platform build for its first platform's image (what a reader of `manifest` gets), plus
 * `index`, `platforms` and `manifests` (`indexOutputs`).
 */
function storedIndexOutputs(ctx: ExecContext, name: string, stored: StoredIndex): NodeOutputs {
  const layout = path.join(ctx.outDir, 'oci', name);
  writeIndexLayout(ctx.store, layout, 'latest', stored);
  const first = stored.images[0].image;
  return {
    outputs: {
      manifest: first.manifestDescriptor.digest,
      config: first.manifest.config.digest,
      layers: first.manifest.layers.map((l) => l.digest),
      layout: path.relative(ctx.workspace.root, layout),
      tag: 'latest',
      index: stored.indexDescriptor.digest,
      platforms: stored.images.map((i) => i.platform),
      manifests: stored.images.map((i) => i.image.manifestDescriptor.digest),
    },
    artifacts: indexBlobs(stored),
    files: [path.relative(ctx.workspace.root, path.join(layout, 'index.json'))],
  };
}

/**
 * The checks of `platforms:`: only recipes that can build for another platform take it, a
 * registry base cannot be pulled per platform yet, and a declared base must have every platform.
 */
function checkPlatforms(part: BuildPart, image: ImageDecl, images: ReadonlyMap<string, ImageDecl>, at: (p: (string | number)[], which?: 'key' | 'value') => Span): Diagnostic[] {
  const declared = part.platforms;
  if (!declared) return [];
  if (!PER_PLATFORM_RECIPES.has(part.recipe.kind)) {
    return [{ code: 'schema', message: `image '${image.name}': platforms: is supported on layers: and debian: images only`, span: at(['platforms'], 'key') }];
  }
  if (image.from?.kind === 'registry') {
    return [{ code: 'schema', message: `image '${image.name}': a multi-platform image cannot pull its base from a registry yet: build the base here (debian:) or use oci-layout:`, span: at(['from']) }];
  }
  if (image.from?.kind === 'image') {
    const base = images.get(image.from.name);
    if (!base) return [];
    const has = platformsOf(base, images);
    return declared.flatMap((p, i) =>
      has.includes(p) ? [] : [{ code: 'schema', message: `image '${image.name}' is built for ${p}, but its base '${image.from && 'name' in image.from ? image.from.name : ''}' has only ${has.join(', ')}`, span: at(['platforms', i]) }],
    );
  }
  return [];
}

/** A fresh expansion of the build rule for the workspace at `root` and its `images` (its memo empty). */
export function newExpansion(root: string, images: ReadonlyMap<string, ImageDecl>): Expansion {
  const memo = new Map<string, unknown>();
  return {
    root,
    platforms: (image) => imagePlatforms(image, { images }),
    once: <T>(key: string, make: () => T): T => {
      if (!memo.has(key)) memo.set(key, make());
      return memo.get(key) as T;
    },
  };
}

/**
 * The `decl` of an image's build node (everything its build reads, the images.lock entry of a
 * `debian:` image included) and its input files: what the publish rule's provenance states as the
 * image's declaration and inputs.
 */
export function buildDeclOf(image: ImageDecl, expansion: Expansion): { decl: BuildNodeDecl; inputs: InputSpec[] } {
  const part = buildOf(image);
  const recipe = recipeOf(part.recipe.kind);
  const from = image.from ?? recipe.defaultFrom;
  const decl = {
    from: baseDecl(from),
    recipe: part.recipe,
    env: part.env,
    entrypoint: part.entrypoint ?? null,
    cmd: part.cmd ?? null,
    workdir: part.workdir ?? null,
    labels: part.labels,
    ...recipe.keyFields?.(part.recipe, image, expansion),
  } satisfies BuildNodeDecl;
  const { platforms, multi } = expansion.platforms(image);
  if (multi) Object.assign(decl, { platforms: [...platforms] });
  const inputs = recipe.inputs(part.recipe);
  if (from?.kind === 'oci-layout') inputs.push({ kind: 'dir', path: from.dir });
  return { decl, inputs };
}

const recipeKeys = RECIPES.map((r) => r.kind);

/** The build rule: its part of image entries (a recipe and config), the recipes' settings and commands. */
export const buildRule: Rule<BuildNodeDecl, ReturnType<typeof imageOutputs>> = {
  kind: 'build',
  // 2: the manifest carries the action key (dev.graph.action-key).
  version: 2,
  restore: restoreBuild,
  outputs: imageOutputs,
  declares: [
    declarePart<BuildPart>({
      entry: 'image',
      part: buildPart,
      schema: {
        definitions: {
          stringMap: { type: 'object', additionalProperties: { type: ['string', 'number', 'boolean'] } },
          stringList,
        },
        oneOf: recipeKeys.map((k) => ({ required: [k] })),
        properties: {
          ...Object.assign({}, ...RECIPES.map((r) => r.properties)),
          env: { $ref: '#/definitions/stringMap' },
          entrypoint: { $ref: '#/definitions/stringList' },
          cmd: { $ref: '#/definitions/stringList' },
          workdir: { type: 'string', pattern: '^/' },
          labels: { $ref: '#/definitions/stringMap' },
          platforms: {
            type: 'array',
            minItems: 1,
            uniqueItems: true,
            items: { enum: [...PLATFORMS] },
            description: 'Platforms (OS/ARCH) to build for, one manifest each in an OCI image index; layers: and debian: images. Default: the host platform, or the base image\'s platforms.',
          },
        },
      },
      messages: {
        image: ({ path: p, data }) => {
          const present = recipeKeys.filter((k) => data && typeof data === 'object' && k in data);
          return present.length === 0
            ? `image '${p[1]}' has no recipe: give exactly one of ${recipeKeys.slice(0, -1).join(', ')} or ${recipeKeys[recipeKeys.length - 1]}`
            : `image '${p[1]}' has ${present.length} recipes (${present.join(', ')}): give exactly one`;
        },
      },
      normalize(raw, ctx) {
        const recipe = RECIPES.find((r) => raw[r.kind] !== undefined) as Recipe;
        return {
          recipe: recipe.normalize(raw, ctx.rel),
          env: stringMap(raw.env),
          entrypoint: raw.entrypoint as string[] | undefined,
          cmd: raw.cmd as string[] | undefined,
          workdir: raw.workdir as string | undefined,
          labels: stringMap(raw.labels),
          ...(raw.platforms === undefined ? {} : { platforms: [...(raw.platforms as string[])] }),
        };
      },
      check: (part, image, raw, ctx) => [...checkPlatforms(part, image, ctx.images, ctx.at), ...(recipeOf(part.recipe.kind).check?.(part.recipe, image, raw, ctx) ?? [])],
    }),
    ...RECIPES.flatMap((r) => (r.settings ? [r.settings] : [])),
  ],
  commands: RECIPES.flatMap((r) => r.commands ?? []),
  // A multi-platform Dockerfile build is skipped without emulation; recipes read their files (images.lock).
  expandFacts: (root) => ({ emulation: emulationFacts(), recipes: RECIPES.map((r) => r.expandFacts?.(root) ?? null) }),
  toolProbes: (settings) => RECIPES.flatMap((r) => r.tools?.(settings) ?? []),
  expand(decls): NodeDef<BuildNodeDecl>[] {
    const expansion = newExpansion(decls.root, decls.images);
    return [...decls.images.values()].map((image: ImageDecl) => {
      const part = buildOf(image);
      const recipe = recipeOf(part.recipe.kind);
      const from = image.from ?? recipe.defaultFrom;
      const deps = from?.kind === 'image' ? [{ id: buildId(from.name), at: () => image.at(['from']) }] : [];
      const { decl, inputs } = buildDeclOf(image, expansion);
      const tools = recipe.tools && expansion.once(`tools:${recipe.kind}`, () => recipe.tools?.(decls.settings) ?? []);
      // A Dockerfile's RUN steps execute the platform's binaries: a foreign one needs emulation.
      const { platforms, multi } = expansion.platforms(image);
      const cannot = recipe.kind === 'dockerfile' && multi ? platforms.map((p) => emulationFor(p)).find((e) => e.kind === 'none') : undefined;
      return {
        id: buildId(image.name),
        kind: 'build',
        deps,
        decl,
        inputs,
        env: ['SOURCE_DATE_EPOCH'],
        tool: recipe.tool(part.recipe, decls.settings),
        ...(tools ? { tools } : {}),
        resources: {},
        ...(cannot?.kind === 'none' ? { skip: `${cannot.reason} (the Dockerfile's RUN steps need it)` } : {}),
        image: image.name,
        at: () => image.at([], 'key'),
      };
    });
  },
  async execute(node, ctx) {
    const name = node.image as string;
    const decl = node.decl;
    const recipe: Recipe<RecipeDecl> = recipeOf(decl.recipe.kind);
    const epoch = sourceDateEpoch(ctx.env);
    if (!decl.platforms) return storedOutputs(ctx, name, await recipe.build({ node, decl, recipe: decl.recipe, ctx, epoch, base: () => resolveBase(decl, ctx) }));
    // One image per platform, in the declared order, then the index over them (image-index.md).
    const images: Array<{ platform: string; image: StoredImage }> = [];
    for (const platform of decl.platforms) {
      ctx.log.write(`platform ${platform}\n`);
      const built = await recipe.build({ node, decl, recipe: decl.recipe, ctx, epoch, platform, base: () => resolveBase(decl, ctx, platform) });
      images.push({ platform, image: annotateImage(ctx.store, built, { [ACTION_KEY_ANNOTATION]: ctx.keys.node }) });
    }
    const stored = composeIndex(ctx.store, images);
    ctx.log.write(`image index ${stored.indexDescriptor.digest}: ${images.map((i) => `${i.platform} ${i.image.manifestDescriptor.digest}`).join(', ')}\n`);
    return storedIndexOutputs(ctx, name, stored);
  },
};
