/**
 * The build rule's recipes: how an image entry says what goes into its image. Exactly one recipe
 * per image (`dockerfile:`, `layers:` or `debian:`); each is one module beside this one
 * (dockerfile.ts, layers.ts, debian.ts) behind the `Recipe` interface, and the build rule
 * (rules/build.ts) only dispatches. This module also holds what the recipes and the build rule
 * share: the build node's id, its `decl` and its outputs.
 */
import path from 'node:path';
import type { Boundary } from '../../engine/validate/boundary.js';
import { DeclPart, type BaseImage, type CheckContext, type ImageDecl, type JsonSchema, type Settings, type SettingsPart } from '../../engine/validate/declarations.js';
import type { Diagnostic } from '../../engine/diagnostics.js';
import type { InputSpec } from '../../engine/key/files.js';
import { NodeFailure, outputsReader, type ExecContext, type Json, type NodeDef, type NodeId, type NodeOutputs, type RuleCommand } from '../../engine/rule.js';
import type { ToolProbe } from '../../engine/key/tools.js';
import type { ConfigChanges, StoredImage } from '../oci/image.js';

/** Node id of an image's build. */
export const buildId = (image: string) => `build:${image}` as NodeId;

/**
 * The outputs of a build node: `manifest`, `config` and `layers` (digests), `layout` (the OCI
 * image layout directory, workspace-relative) and its `tag`.
 * @throws NodeFailure when a build's recorded outputs are missing or malformed.
 */
export const imageOutputs = outputsReader({ manifest: 'string', config: 'string', layers: 'string[]', layout: 'string', tag: 'string' });

/** A recipe's normalized declaration; `kind` names the recipe (its key in the image entry). */
export type RecipeDecl = { readonly kind: string };

/** The build rule's part of an image entry: its recipe and the config it sets. */
export interface BuildPart {
  readonly recipe: RecipeDecl;
  readonly env: Readonly<Record<string, string>>;
  readonly entrypoint?: readonly string[];
  readonly cmd?: readonly string[];
  readonly workdir?: string;
  readonly labels: Readonly<Record<string, string>>;
  /** `platforms:` as declared (`linux/amd64`, `linux/arm64`); undefined when absent (see platform.ts). */
  readonly platforms?: readonly string[];
}

/** The token of the build rule's part of image entries. */
export const buildPart = new DeclPart<BuildPart>('build');

/** An image's build part: its recipe and config. */
export function buildOf(image: ImageDecl): BuildPart {
  return buildPart.of(image);
}

/** The base of a build as its key records it: `{image}`, `{registry}`, `{ociLayout, tag}`, `scratch`, or null. */
export type BaseDecl = { readonly image: string } | { readonly registry: string } | { readonly ociLayout: string; readonly tag: string | null } | 'scratch' | null;

/**
 * A build node's `decl` (in its key): everything its execution reads. `lock` only for recipes
 * with a lock entry (`debian:`).
 */
export type BuildNodeDecl = {
  readonly from: BaseDecl;
  readonly recipe: RecipeDecl;
  readonly env: Readonly<Record<string, string>>;
  readonly entrypoint: readonly string[] | null;
  readonly cmd: readonly string[] | null;
  readonly workdir: string | null;
  readonly labels: Readonly<Record<string, string>>;
  readonly lock?: Json;
  /**
   * Only for a multi-platform image (platform.ts `isMultiPlatform`): its platforms, in index order.
   * Absent otherwise, so a single-platform image's key is what it was before platforms existed.
   */
  readonly platforms?: readonly string[];
};

/**
 * The extra outputs of a multi-platform build: `index` (the image index's digest), `platforms`
 * (`OS/ARCH`, index order) and `manifests` (each platform's manifest digest, same order).
 * @throws NodeFailure when they are missing or malformed.
 */
export const indexOutputs = outputsReader({ index: 'string', platforms: 'string[]', manifests: 'string[]' });

/**
 * The manifest digest of `platform` in a build's outputs: the plain `manifest` for a
 * single-platform build (`platform` null), else the platform's entry of `manifests`.
 * @throws NodeFailure when the build has no image for that platform.
 */
export function platformManifest(id: NodeId, result: Pick<NodeOutputs, 'outputs'> | undefined, platform: string | null): string {
  if (platform === null || result?.outputs.index === undefined) {
    const single = imageOutputs(id, result);
    if (platform === null) return single.manifest;
    throw new NodeFailure(`${id} is a single-platform image: it has no ${platform} manifest`);
  }
  const { platforms, manifests } = indexOutputs(id, result);
  const i = platforms.indexOf(platform);
  if (i === -1 || manifests[i] === undefined) throw new NodeFailure(`${id} has no ${platform} image (it has ${platforms.join(', ')})`);
  return manifests[i];
}

/** The key's form of a base image. */
export function baseDecl(from: BaseImage | undefined): BaseDecl {
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

/** The image config fields a build sets on top of what its recipe made. */
export function configChanges(decl: BuildNodeDecl): ConfigChanges {
  return { env: decl.env, entrypoint: decl.entrypoint ?? undefined, cmd: decl.cmd ?? undefined, workdir: decl.workdir ?? undefined, labels: decl.labels };
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
export function layoutInside(boundary: Boundary, root: string, dir: string): string {
  const real = boundary.realInside(path.join(root, dir), dir);
  boundary.checkTree(real, dir);
  return real;
}

/** One expansion of the build rule: the workspace root, and a memo for what its images share. */
export interface Expansion {
  readonly root: string;
  /** `make()` once per expansion for each `key` (e.g. reading images.lock once for every image). */
  once<T>(key: string, make: () => T): T;
  /** The image's platforms and whether it is multi-platform (build/platform.ts `imagePlatforms`). */
  platforms(image: ImageDecl): { readonly platforms: readonly string[]; readonly multi: boolean };
}

/** What a recipe's `build` gets: the node, its decl and recipe, the execution context. */
export interface RecipeBuild<D extends RecipeDecl> {
  readonly node: NodeDef<BuildNodeDecl>;
  readonly decl: BuildNodeDecl;
  readonly recipe: D;
  readonly ctx: ExecContext;
  /** `sourceDateEpoch(ctx.env)`. */
  readonly epoch: number;
  /**
   * The platform (`OS/ARCH`) this call builds, for a multi-platform image (the build rule calls
   * `build` once per platform); undefined for a single-platform image (the host's).
   */
  readonly platform?: string;
  /** The base image loaded into the store, for `platform` (undefined for scratch, and for no `from`). */
  base(): Promise<StoredImage | undefined>;
}

/** One recipe of the build rule. */
export interface Recipe<D extends RecipeDecl = RecipeDecl> {
  /** The key that selects it in an image entry (`layers`), also its decl's `kind`. */
  readonly kind: D['kind'];
  /** The image entry keys it owns (its own key first), with their schemas. */
  readonly properties: Readonly<Record<string, JsonSchema>>;
  /** Its decl from the image entry (which has this recipe's key). */
  normalize(raw: Readonly<Record<string, unknown>>, rel: (p: string) => string): D;
  /** Semantic checks (files that must exist inside the workspace, `from` it cannot take). */
  check?(recipe: D, image: ImageDecl, raw: Readonly<Record<string, unknown>>, ctx: CheckContext): Diagnostic[];
  /** The base when the entry has no `from` (`layers:` starts from scratch); default none. */
  readonly defaultFrom?: BaseImage;
  /** Workspace files that go into the key. */
  inputs(recipe: D): InputSpec[];
  /** `NodeDef.tool`, with the settings (the Dockerfile builder chosen). */
  tool(recipe: D, settings: Settings): string;
  /** External tools probed for the key. */
  tools?(settings: Settings): ToolProbe[];
  /** Extra fields of the node's decl (the lock entry of a `debian:` image). */
  keyFields?(recipe: D, image: ImageDecl, expansion: Expansion): Readonly<Record<string, Json>>;
  /** What `keyFields` reads besides the declarations (images.lock's text), as `Rule.expandFacts`. */
  expandFacts?(root: string): Json;
  /** Build the image (its config changes applied), for `job.platform`. @throws NodeFailure when it fails. */
  build(job: RecipeBuild<D>): Promise<StoredImage>;
  /** Settings the recipe owns (`builder`). */
  readonly settings?: SettingsPart<unknown>;
  /** Commands it adds (`graph lock`). */
  readonly commands?: readonly RuleCommand[];
}
