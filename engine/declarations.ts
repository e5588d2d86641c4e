/**
 * The validated, normalized declarations of a workspace: what `images.yaml` and `models.yaml` say,
 * with defaults applied and every path made relative to the workspace root (POSIX separators).
 * Produced by `validate.ts`; read by the rules to expand nodes.
 */
import type { Boundary } from './boundary.js';
import type { Span } from './diagnostics.js';
import type { DataPath, LoadedFile } from './load.js';
import type { ImageReference } from './reference.js';

/** The base an image starts from. */
export type BaseImage =
  | { readonly kind: 'image'; readonly name: string }
  | { readonly kind: 'registry'; readonly ref: string; readonly parsed: ImageReference }
  | { readonly kind: 'oci-layout'; readonly dir: string; readonly tag?: string }
  | { readonly kind: 'scratch' };

export interface LayerCopy {
  /** File, directory or glob, workspace-relative. */
  readonly copy: string;
  /** Absolute destination inside the image. */
  readonly to: string;
  /** File mode bits, e.g. 0o755; undefined keeps the source file's permission bits. */
  readonly mode?: number;
}

/** Exactly one recipe per image. */
export type Recipe =
  | {
      readonly kind: 'dockerfile';
      readonly dockerfile: string;
      readonly context: string;
      readonly args: Readonly<Record<string, string>>;
      readonly target?: string;
    }
  | { readonly kind: 'layers'; readonly layers: readonly LayerCopy[] }
  | { readonly kind: 'debian'; readonly suite: string; readonly packages: readonly string[] };

export interface ImageDecl {
  readonly name: string;
  /** Undefined for `debian:` images (they are bases) and Dockerfiles that name their own FROM. */
  readonly from?: BaseImage;
  readonly recipe: Recipe;
  readonly env: Readonly<Record<string, string>>;
  readonly entrypoint?: readonly string[];
  readonly cmd?: readonly string[];
  readonly workdir?: string;
  readonly labels: Readonly<Record<string, string>>;
  /** Extra formats to produce; today only `sif`. */
  readonly convert: readonly 'sif'[];
  /** References publish pushes to. */
  readonly publish: readonly string[];
  /** Span of `path` inside this image's entry of images.yaml. */
  at(path: DataPath, which?: 'key' | 'value'): Span;
}

export type Runtime = 'oci' | 'sif';

export interface ModelDecl {
  readonly name: string;
  /** Values substituted for `{NAME}` in the test command, besides `{model}`. */
  readonly vars: Readonly<Record<string, string>>;
}

export interface TestDecl {
  readonly command: readonly string[];
  /** Directory mounted at /input; may contain `{model}` and vars (see `substituteVars`). */
  readonly inputs?: string;
  /** Directory of expected outputs; may contain `{model}` and vars. */
  readonly expect?: string;
  readonly runtimes: readonly Runtime[];
  /** Milliseconds. */
  readonly timeoutMs: number;
  readonly resources: Readonly<Record<string, number>>;
  /** Tolerance for numbers in expected TSV/CSV files; undefined for exact bytes. */
  readonly tolerance?: { readonly absolute?: number; readonly relative?: number };
  /** Models tested, the first N in sorted order, or all. */
  readonly sample: 'all' | number;
}

export interface GroupDecl {
  readonly name: string;
  readonly image: string;
  /** The image whose SIF the `sif` runtime tests (default: `image`). */
  readonly sif: string;
  /** Sorted by name. */
  readonly models: readonly ModelDecl[];
  readonly test?: TestDecl;
  at(path: DataPath, which?: 'key' | 'value'): Span;
}

export interface Settings {
  /** Per node kind: most nodes of that kind running at once. */
  readonly concurrency: Readonly<Record<string, number>>;
  /** Named tokens and how many of each exist. */
  readonly resources: Readonly<Record<string, number>>;
  /** The external builder for Dockerfile builds: `auto` (detect) or a name. */
  readonly builder: string;
  /** Where test commands run: `bubblewrap` (default), `podman`, `docker`, `apptainer`. */
  readonly sandbox: string;
  /** Absolute directories outside the workspace that declarations may read (`allow_outside`). */
  readonly allowOutside: readonly string[];
  /** The shared remote cache's URL (`remote_cache`), unless the command line or environment names one. */
  readonly remoteCache?: string;
}

export interface Declarations {
  /** Absolute workspace directory (where images.yaml lives). */
  readonly root: string;
  readonly settings: Settings;
  /** What declarations may read: the workspace and `settings.allow_outside` (boundary.ts). */
  readonly boundary: Boundary;
  /** In declaration order. */
  readonly images: ReadonlyMap<string, ImageDecl>;
  /** In declaration order. */
  readonly groups: ReadonlyMap<string, GroupDecl>;
  readonly imagesFile: LoadedFile;
  readonly modelsFile?: LoadedFile;
}

/** Default per-test time limit when `test.timeout` is absent: 30 minutes. */
export const DEFAULT_TEST_TIMEOUT_MS = 30 * 60 * 1000;

/** The models of a group that are tested: all, or the first N by name. */
export function sampledModels(group: GroupDecl): readonly ModelDecl[] {
  const sample = group.test?.sample ?? 'all';
  return sample === 'all' ? group.models : group.models.slice(0, sample);
}

/**
 * Substitute `{model}` and the model's vars into a test command argument or a test path
 * (`expect: tests/expect/{model}`); unknown names stay as written.
 */
export function substituteVars(text: string, model: ModelDecl): string {
  if (!text.includes('{')) return text; // most arguments and paths name no variable
  return text.replace(/\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (all, name: string) => (name === 'model' ? model.name : (model.vars[name] ?? all)));
}
