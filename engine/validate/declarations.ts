/**
 * The validated, normalized declarations of a workspace: what `images.yaml` and `models.yaml` say,
 * with defaults applied and every path made relative to the workspace root (POSIX separators).
 * Produced by `validate.ts`; read by the rules to expand nodes.
 *
 * The engine owns only what every rule shares: image names and their `from`, group names with
 * their images and models, and the general settings (concurrency, resources, allow_outside). The
 * rest of an entry belongs to the rules: each rule declares its part (`DeclaredPart`: schema
 * fragment, normalization, checks) and reads it back, typed, through its `DeclPart` token.
 */
import type { Boundary } from './boundary.js';
import type { Diagnostic, Span } from '../diagnostics.js';
import type { ExecutorSettings } from '../execute/executor-settings.js';
import type { InputSpec } from '../key/files.js';
import type { DataPath, LoadedFile } from '../load.js';
import type { ImageReference } from './reference.js';
import type { Json } from '../rule.js';

/** The base an image starts from. */
export type BaseImage =
  | { readonly kind: 'image'; readonly name: string }
  | { readonly kind: 'registry'; readonly ref: string; readonly parsed: ImageReference }
  | { readonly kind: 'oci-layout'; readonly dir: string; readonly tag?: string }
  | { readonly kind: 'scratch' };

/**
 * The token of one rule's typed part of a declaration entry (an image, a group, the settings).
 * The rule that declares the part exports a reader built on it (`buildOf(image)`), so no other
 * code needs to know the part's shape.
 */
export class DeclPart<T> {
  /** @param owner the rule (or recipe) that declares the part, for error messages. */
  constructor(readonly owner: string) {}

  /**
   * This part of `entry`.
   * @throws Error when the entry has no such part (the rule that declares it is not loaded).
   */
  of(entry: { readonly parts: PartMap }): T {
    if (!entry.parts.has(this)) throw new Error(`the declarations have no part of the '${this.owner}' rule (is it loaded?)`);
    return entry.parts.get(this) as T;
  }
}

/** Rules' parts of one entry, by token. */
export type PartMap = ReadonlyMap<DeclPart<unknown>, unknown>;

/** An image entry of images.yaml: the engine's fields, and the rules' parts. */
export interface ImageDecl {
  readonly name: string;
  /** Undefined when the entry has no `from` (each recipe decides what that means). */
  readonly from?: BaseImage;
  /** The rules' parts (`DeclPart.of`). */
  readonly parts: PartMap;
  /** Span of `path` inside this image's entry of images.yaml. */
  at(path: DataPath, which?: 'key' | 'value'): Span;
}

/** A model of a group. */
export interface ModelDecl {
  readonly name: string;
  /** Values substituted for `{NAME}` in the test command, besides `{model}`. */
  readonly vars: Readonly<Record<string, string>>;
}

/** A group entry of models.yaml: the engine's fields, and the rules' parts. */
export interface GroupDecl {
  readonly name: string;
  readonly image: string;
  /** The image whose SIF the `sif` runtime tests (default: `image`). */
  readonly sif: string;
  /** Sorted by name. */
  readonly models: readonly ModelDecl[];
  /** The rules' parts (`DeclPart.of`). */
  readonly parts: PartMap;
  at(path: DataPath, which?: 'key' | 'value'): Span;
}

/** images.yaml's `settings:`: the engine's, and the rules' parts. */
export interface Settings {
  /** Per node kind: most nodes of that kind running at once. */
  readonly concurrency: Readonly<Record<string, number>>;
  /** Named tokens and how many of each exist. */
  readonly resources: Readonly<Record<string, number>>;
  /** Absolute directories outside the workspace that declarations may read (`allow_outside`). */
  readonly allowOutside: readonly string[];
  /** The shared remote cache's URL (`remote_cache`), unless the command line or environment names one. */
  readonly remoteCache?: string;
  /** The rules' settings (`DeclPart.of`), command-line overrides applied. */
  readonly parts: PartMap;
  /** Where nodes run (`executor`, `slurm`; `--executor` applied). */
  readonly executor: ExecutorSettings;
  /**
   * Tokens that stand for devices of this host (`gpu`), as rules found them (`SettingsPart.hostResources`).
   * Such a token's capacity in `resources` is the number found unless `settings.resources` declares
   * it; either way a node holds distinct devices of those found, and a node claiming more than were
   * found cannot run here (the plan skips it).
   */
  readonly hostResources?: Readonly<Record<string, HostResource>>;
}

/** A resource token that stands for devices of this host (GPUs). */
export interface HostResource {
  /** The devices found, by the ids nodes are handed (GPU indices or CDI device names), preferred first. */
  readonly ids: readonly string[];
  /** Why a node claiming `amount` cannot run here (more than `ids.length`), e.g. `no GPU on this host`. */
  unavailable(amount: number): string;
  /** Such a node fails instead of being skipped (`--require-gpu`). */
  readonly required: boolean;
}

/** Both files, validated and normalized. */
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

/** A JSON Schema (draft-07) object, as the declaration schemas are written. */
export type JsonSchema = { readonly [k: string]: Json };

/** The schema a part contributes to its entry's object schema. */
export interface SchemaFragment {
  /** The keys the part owns, in the order `allowed keys:` hints list them. */
  readonly properties: Readonly<Record<string, JsonSchema>>;
  /** Alternatives the entry must match exactly one of (at most one part per entry has them). */
  readonly oneOf?: readonly JsonSchema[];
  /** Shared definitions (`#/definitions/NAME`) the properties refer to. */
  readonly definitions?: Readonly<Record<string, JsonSchema>>;
}

/**
 * The message for a failed `oneOf` choice, by the key that owns the choice (`image` for an image
 * entry, `timeout` for `test.timeout`).
 * @param choice.path the data path of the value, `field` the same as text
 *   (`groups.g.test.timeout`), `data` the value itself.
 */
export type OneOfMessage = (choice: { readonly path: DataPath; readonly field: string; readonly data: unknown }) => string;

/** What normalizing a part of an entry may use. */
export interface NormalizeContext {
  /** Absolute workspace directory. */
  readonly root: string;
  /** The workspace-relative POSIX path of a path written in the declaring file. */
  rel(p: string): string;
  /** Command-line overrides of settings (`--builder`), by setting name; for settings parts. */
  readonly overrides: Readonly<Record<string, string>>;
}

/** What checking a part of an entry may use; every problem is returned as a diagnostic. */
export interface CheckContext {
  readonly root: string;
  readonly boundary: Boundary;
  readonly settings: Settings;
  /** Every image, by name (other rules' parts included, for cross-checks). */
  readonly images: ReadonlyMap<string, ImageDecl>;
  /** The span of `path` inside the entry checked. */
  at(path: DataPath, which?: 'key' | 'value'): Span;
  /** Whether an input exists (a glob: matches something). */
  exists(spec: InputSpec): boolean;
  /**
   * The `outside-workspace` diagnostic when workspace-relative `rel` (a glob: its directory part)
   * resolves outside the boundary, else undefined.
   * @param field the path of the field inside the entry; `shown` the value as written, quoted.
   */
  outside(rel: string, field: DataPath, shown: string, span?: () => Span): Diagnostic | undefined;
}

interface PartBase<T> {
  /** Where the rule reads it back. */
  readonly part: DeclPart<T>;
  readonly schema: SchemaFragment;
  /** Messages for `oneOf` choices inside the fragment, by owning key (`OneOfMessage`). */
  readonly messages?: Readonly<Record<string, OneOfMessage>>;
}

/** A rule's part of every image entry of images.yaml. */
export interface ImagePart<T> extends PartBase<T> {
  readonly entry: 'image';
  /** @param raw the entry as the schema accepted it. */
  normalize(raw: Readonly<Record<string, unknown>>, ctx: NormalizeContext): T;
  /** Semantic checks, after every image is normalized and every `from` resolved. */
  check?(part: T, image: ImageDecl, raw: Readonly<Record<string, unknown>>, ctx: CheckContext): Diagnostic[];
}

/** A rule's part of every group entry of models.yaml. */
export interface GroupPart<T> extends PartBase<T> {
  readonly entry: 'group';
  normalize(raw: Readonly<Record<string, unknown>>, ctx: NormalizeContext): T;
  check?(part: T, group: GroupDecl, raw: Readonly<Record<string, unknown>>, ctx: CheckContext): Diagnostic[];
}

/** A setting the command line can override (`--builder NAME`). */
export interface SettingOption {
  /** The setting's key in `settings:`, and the option's name. */
  readonly name: string;
  /** Allowed values; anything else is a usage error. Absent: any value (a file name). */
  readonly values?: readonly string[];
  /** The value's name in the help (`--sign-key FILE`); default `NAME`. */
  readonly metavar?: string;
  /** A flag without a value (`--require-gpu`): given, the setting's override is `'true'`. */
  readonly flag?: boolean;
  /** One line for the commands' help. */
  readonly help: string;
}

/** A rule's part of images.yaml's `settings:`. */
export interface SettingsPart<T> extends PartBase<T> {
  readonly entry: 'settings';
  /** @param raw `settings:` as the schema accepted it (empty when absent); overrides in `ctx`. */
  normalize(raw: Readonly<Record<string, unknown>>, ctx: NormalizeContext): T;
  /** The settings the command line can override. */
  readonly options?: readonly SettingOption[];
  /**
   * Tokens the rule finds on this host (GPUs), from the normalized part; validation sets their
   * capacity (`Settings.hostResources`).
   */
  hostResources?(part: T): Readonly<Record<string, HostResource>>;
}

/**
 * A part of the declarations a rule owns. `T` is the normalized part's type; the engine treats
 * it as opaque.
 */
export type DeclaredPart<T = unknown> = ImagePart<T> | GroupPart<T> | SettingsPart<T>;

/** Identity for a part's definition with its type checked (a `DeclaredPart<unknown>` list keeps no `T`). */
export function declarePart<T>(part: DeclaredPart<T>): DeclaredPart {
  return part;
}

/** A map of YAML scalars as strings (`env:`, `labels:`, `args:`, a model's vars). */
export function stringMap(v: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, x] of Object.entries((v as Record<string, unknown>) ?? {})) out[k] = String(x);
  return out;
}
