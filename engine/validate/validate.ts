/**
 * Validate stage: JSON Schema checks (ajv, against the schemas engine/validate/schema.ts composes from the
 * engine's skeleton and the rules' fragments, compiled to code at build time) and the semantic
 * checks a schema cannot express, turning loaded YAML into typed `Declarations`. The checks every
 * rule shares are made here (names, `from` references and `oci-layout:` directories, a group's
 * images and models, `settings.allow_outside`); each rule's part of an entry is normalized and
 * checked by the rule (`DeclaredPart`), with the helpers of a `CheckContext`.
 *
 * Every problem becomes a `Diagnostic` pointing at its span; all are collected, then thrown at
 * once as a `DiagnosticError`.
 */
import { readExecutorSettings } from '../execute/executor-settings.js';
import { statSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import type { ErrorObject, ValidateFunction } from 'ajv';
import type { BaseImage, CheckContext, Declarations, DeclaredPart, GroupDecl, HostResource, ImageDecl, ModelDecl, NormalizeContext, OneOfMessage, Settings } from './declarations.js';
import { stringMap } from './declarations.js';
import { Boundary } from './boundary.js';
import { DiagnosticError, didYouMean, type Diagnostic, type Span } from '../diagnostics.js';
import { globBase, inputExists, isGlob } from '../key/files.js';
import type { DataPath, LoadedFile } from '../load.js';
import { parseReference } from './reference.js';
import type { Rule } from '../rule.js';
import { oneOfMessages } from './schema.js';

// The schemas are compiled to code at build time (scripts/compile-schemas.ts), next to out/engine/.
const validators = createRequire(import.meta.url)('../../schema/validators.cjs') as { images: ValidateFunction; models: ValidateFunction };

/** `images.base.layers[0].to`-style text for a data path. */
export function describePath(p: DataPath): string {
  let out = '';
  for (const seg of p) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else if (/^[A-Za-z_][A-Za-z0-9_-]*$/.test(seg)) out += out ? `.${seg}` : seg;
    else out += `[${JSON.stringify(seg)}]`;
  }
  return out || 'the document';
}

function pointerToPath(pointer: string): Array<string | number> {
  if (!pointer) return [];
  return pointer
    .slice(1)
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'))
    .map((s) => (/^(0|[1-9][0-9]*)$/.test(s) ? Number(s) : s));
}

function schemaDiagnostics(file: LoadedFile, errors: readonly ErrorObject[], messages: Readonly<Record<string, OneOfMessage>>): Diagnostic[] {
  const out: Diagnostic[] = [];
  // Errors inside a oneOf's branches are noise once the oneOf itself is reported.
  const oneOfs = errors.filter((e) => e.keyword === 'oneOf').map((e) => `${e.schemaPath}/`);
  for (const e of errors) {
    if (oneOfs.some((prefix) => e.schemaPath.startsWith(prefix))) continue;
    const p = pointerToPath(e.instancePath);
    switch (e.keyword) {
      case 'oneOf': {
        // An image entry is `images.NAME`; other choices are named by their key.
        const owner = p.length === 2 && p[0] === 'images' ? 'image' : String(p[p.length - 1]);
        const message = messages[owner]?.({ path: p, field: describePath(p), data: e.data }) ?? `${describePath(p)} ${e.message}`;
        out.push({ code: 'schema', message, span: file.spanAt(p, owner === 'image' ? 'key' : 'value') });
        break;
      }
      case 'required': {
        const missing = (e.params as { missingProperty: string }).missingProperty;
        out.push({
          code: 'schema',
          message: `${p.length ? describePath(p) : 'the document'} is missing required key '${missing}'`,
          span: file.spanAt(p, 'key'),
        });
        break;
      }
      case 'additionalProperties': {
        const key = (e.params as { additionalProperty: string }).additionalProperty;
        const known = Object.keys((e.parentSchema as { properties?: object })?.properties ?? {});
        const guess = didYouMean(key, known);
        out.push({
          code: 'unknown-key',
          message: `unknown key '${key}' in ${describePath(p)}${guess ? ` (did you mean '${guess}'?)` : ''}`,
          span: file.spanAt([...p, key], 'key'),
          hint: guess ? undefined : `allowed keys: ${known.join(', ')}`,
        });
        break;
      }
      case 'propertyNames': {
        const name = (e.params as { propertyName: string }).propertyName;
        out.push({
          code: 'schema',
          message: `invalid name '${name}' in ${describePath(p)}: use letters, digits, '.', '_' and '-'${p[0] === 'groups' ? " (and '/' between parts)" : ''}`,
          span: file.spanAt([...p, name], 'key'),
        });
        break;
      }
      case 'pattern':
        // propertyNames sub-errors carry the name in params; the propertyNames error covers them.
        if ((e.params as { propertyName?: string }).propertyName !== undefined) break;
        out.push({ code: 'schema', message: `${describePath(p)} ${patternMessage(e)}`, span: file.spanAt(p) });
        break;
      case 'const':
        out.push({ code: 'schema', message: `${describePath(p)} must be ${JSON.stringify((e.params as { allowedValue: unknown }).allowedValue)}`, span: file.spanAt(p) });
        break;
      case 'enum':
        out.push({
          code: 'schema',
          message: `${describePath(p)} must be one of: ${(e.params as { allowedValues: unknown[] }).allowedValues.map(String).join(', ')}`,
          span: file.spanAt(p),
        });
        break;
      default:
        out.push({ code: 'schema', message: `${describePath(p)} ${e.message ?? 'is invalid'}`, span: file.spanAt(p) });
    }
  }
  return out;
}

function patternMessage(e: ErrorObject): string {
  const pattern = (e.params as { pattern: string }).pattern;
  if (pattern === '^/') return 'must be an absolute path (starting with /)';
  return `must match ${pattern}`;
}

/** Settings the command line can override, by setting name (`builder`, `sandbox`). */
export type SettingsOverrides = Readonly<Record<string, string | undefined>>;

/**
 * Validate loaded declaration files and normalize them.
 * @param root absolute workspace directory; every path is resolved against it.
 * @param modelsFile undefined when the workspace has no models.yaml (no groups, no tests).
 * @param rules whose parts of the entries are normalized and checked (their schema fragments are
 *   the ones compiled at build time: the default rules').
 * @param overrides settings given on the command line, which win over images.yaml's.
 * @throws DiagnosticError with every problem found, sorted by file and position.
 */
export function validateDeclarations(root: string, imagesFile: LoadedFile, modelsFile: LoadedFile | undefined, rules: readonly Rule[], overrides: SettingsOverrides = {}): Declarations {
  const diagnostics: Diagnostic[] = [...imagesFile.diagnostics, ...(modelsFile?.diagnostics ?? [])];
  const v = validators;
  const messages = oneOfMessages(rules);
  const emptyDoc = (f: LoadedFile) =>
    diagnostics.push({ code: 'schema', message: `${f.source.path} is empty: it needs 'version: 1'`, span: f.spanAt([]) });
  if (!imagesFile.diagnostics.length) {
    if (imagesFile.data === undefined) emptyDoc(imagesFile);
    else if (!v.images(imagesFile.data)) diagnostics.push(...schemaDiagnostics(imagesFile, v.images.errors ?? [], messages));
  }
  if (modelsFile && !modelsFile.diagnostics.length) {
    if (modelsFile.data === undefined) emptyDoc(modelsFile);
    else if (!v.models(modelsFile.data)) diagnostics.push(...schemaDiagnostics(modelsFile, v.models.errors ?? [], messages));
  }
  if (diagnostics.length) throw new DiagnosticError(diagnostics);

  const parts = rules.flatMap((r) => r.declares ?? []);
  const partsFor = <E extends DeclaredPart['entry']>(entry: E) => parts.filter((p): p is Extract<DeclaredPart, { entry: E }> => p.entry === entry);
  const definedOverrides = Object.fromEntries(Object.entries(overrides).filter((e): e is [string, string] => e[1] !== undefined));
  const normalizeContext = (file: LoadedFile): NormalizeContext => ({ root, overrides: definedOverrides, rel: (p) => rel(file, p) });
  const rel = (file: LoadedFile, p: string) =>
    path.posix.normalize(path.relative(root, path.resolve(path.dirname(file.absPath), p)).split(path.sep).join('/'));

  const rawImages = (imagesFile.data as { images: Record<string, Record<string, unknown>> }).images ?? {};
  const rawSettings = (imagesFile.data as { settings?: Record<string, unknown> & { concurrency?: Record<string, number>; resources?: Record<string, number>; allow_outside?: string[]; remote_cache?: string } }).settings;
  const allowOutside = (rawSettings?.allow_outside ?? []).map((dir) => path.resolve(path.dirname(imagesFile.absPath), dir));
  allowOutside.forEach((dir, i) => {
    if (!isDirectory(dir)) {
      diagnostics.push({ code: 'missing-file', message: `settings.allow_outside[${i}]: directory '${dir}' does not exist`, span: imagesFile.spanAt(['settings', 'allow_outside', i]) });
    }
  });
  const imagesContext = normalizeContext(imagesFile);
  const settingsParts = new Map(partsFor('settings').map((p) => [p.part, p.normalize(rawSettings ?? {}, imagesContext)]));
  // Tokens that stand for host devices (GPUs): as many as were found, unless declared (then the
  // declared number limits how many are in use at once; the devices found still limit which).
  const resources: Record<string, number> = { ...rawSettings?.resources };
  const hostResources: Record<string, HostResource> = {};
  for (const p of partsFor('settings')) {
    for (const [token, found] of Object.entries(p.hostResources?.(settingsParts.get(p.part)) ?? {})) {
      hostResources[token] = found;
      resources[token] ??= found.ids.length;
    }
  }
  const settings: Settings = {
    concurrency: { ...rawSettings?.concurrency },
    resources,
    allowOutside,
    ...(rawSettings?.remote_cache !== undefined ? { remoteCache: rawSettings.remote_cache } : {}),
    parts: settingsParts,
    executor: readExecutorSettings(rawSettings, definedOverrides.executor),
    ...(Object.keys(hostResources).length ? { hostResources } : {}),
  };
  // Validation resolves thousands of paths under a few directories: one pass, with a memo of
  // real directories. The declarations keep a boundary without one, for the checks at execution.
  const boundary = new Boundary(root, allowOutside, { memo: true });

  const images = new Map<string, ImageDecl>();
  for (const [name, raw] of Object.entries(rawImages)) {
    const at = (p: DataPath, which: 'key' | 'value' = 'value') => imagesFile.spanAt(['images', name, ...p], which);
    images.set(name, {
      name,
      from: undefined, // resolved below, once every name is known
      parts: new Map(partsFor('image').map((p) => [p.part, p.normalize(raw, imagesContext)])),
      at,
    });
  }

  const checkContext = (at: CheckContext['at'], prefix: DataPath): CheckContext => ({
    root,
    boundary,
    settings,
    images,
    at,
    exists: (spec) => inputExists(root, spec),
    outside: (relPath, field, shown, span) => outsideProblem(boundary, relPath, describePath([...prefix, ...field]), shown, span ?? (() => at(field))),
  });

  for (const [name, raw] of Object.entries(rawImages)) {
    const image = images.get(name) as { -readonly [K in keyof ImageDecl]: ImageDecl[K] };
    const from = raw.from as string | undefined;
    if (from !== undefined) {
      const base = resolveBase(from, images, (p) => rel(imagesFile, p));
      if (typeof base === 'string') {
        diagnostics.push({ code: 'unknown-image', message: base, span: image.at(['from']), hint: hintForBase(from, images) });
      } else {
        image.from = base;
        if (base.kind === 'oci-layout') {
          const outside = outsideProblem(boundary, base.dir, describePath(['images', name, 'from']), `'${from}'`, () => image.at(['from']));
          if (outside) diagnostics.push(outside);
          else if (!inputExists(root, { kind: 'dir', path: base.dir })) {
            diagnostics.push({ code: 'missing-file', message: `OCI image layout directory '${base.dir}' does not exist`, span: image.at(['from']) });
          }
        }
      }
    }
  }
  for (const [name, raw] of Object.entries(rawImages)) {
    const image = images.get(name) as ImageDecl;
    const ctx = checkContext(image.at, ['images', name]);
    for (const p of partsFor('image')) if (p.check) diagnostics.push(...p.check(p.part.of(image), image, raw, ctx));
  }

  const groups = new Map<string, GroupDecl>();
  const rawGroups = (modelsFile?.data as { groups?: Record<string, Record<string, unknown>> } | undefined)?.groups ?? {};
  const modelsContext = modelsFile && normalizeContext(modelsFile);
  for (const [name, raw] of Object.entries(rawGroups)) {
    const at = (p: DataPath, which: 'key' | 'value' = 'value') => (modelsFile as LoadedFile).spanAt(['groups', name, ...p], which);
    const image = raw.image as string;
    const sif = (raw.sif as string | undefined) ?? image;
    for (const [key, ref] of [['image', image], ['sif', sif]] as const) {
      if (key === 'sif' && raw.sif === undefined) continue;
      if (!images.has(ref)) {
        const guess = didYouMean(ref, images.keys());
        diagnostics.push({
          code: 'unknown-image',
          message: `group '${name}' names image '${ref}', which images.yaml does not declare${guess ? ` (did you mean '${guess}'?)` : ''}`,
          span: at([key]),
        });
      }
    }
    const models = modelsOf(raw.models);
    const seen = new Map<string, number>();
    if (Array.isArray(raw.models)) {
      (raw.models as string[]).forEach((m, i) => {
        if (seen.has(m)) diagnostics.push({ code: 'duplicate', message: `model '${m}' is listed twice in group '${name}'`, span: at(['models', i]), related: [{ span: at(['models', seen.get(m) as number]), note: 'first listed here' }] });
        else seen.set(m, i);
      });
    }
    const group: GroupDecl = {
      name,
      image,
      sif,
      models,
      parts: new Map(partsFor('group').map((p) => [p.part, p.normalize(raw, modelsContext as NormalizeContext)])),
      at,
    };
    const ctx = checkContext(at, ['groups', name]);
    for (const p of partsFor('group')) if (p.check) diagnostics.push(...p.check(p.part.of(group), group, raw, ctx));
    groups.set(name, group);
  }

  if (diagnostics.length) throw new DiagnosticError(diagnostics);
  return { root, settings, boundary: new Boundary(root, allowOutside), images, groups, imagesFile, modelsFile };
}

function modelsOf(raw: unknown): ModelDecl[] {
  const list: ModelDecl[] = Array.isArray(raw)
    ? [...new Set(raw as string[])].map((name) => ({ name, vars: {} }))
    : Object.entries(raw as Record<string, Record<string, unknown> | null>).map(([name, vars]) => ({ name, vars: stringMap(vars ?? {}) }));
  return list.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

function resolveBase(from: string, images: ReadonlyMap<string, unknown>, rel: (p: string) => string): BaseImage | string {
  if (images.has(from)) return { kind: 'image', name: from };
  if (from === 'scratch') return { kind: 'scratch' };
  if (from.startsWith('oci-layout:')) {
    const rest = from.slice('oci-layout:'.length);
    const colon = rest.lastIndexOf(':');
    const [dir, tag] = colon > 0 ? [rest.slice(0, colon), rest.slice(colon + 1)] : [rest, undefined];
    if (!dir) return `'${from}' names no directory: write oci-layout:DIR[:TAG]`;
    return { kind: 'oci-layout', dir: rel(dir), tag };
  }
  // A bare word is meant as one of our images; a registry reference has a '/', ':' or '@'.
  if (!/[/:@]/.test(from)) return `image '${from}' is not declared in images.yaml`;
  const parsed = parseReference(from);
  return typeof parsed === 'string' ? parsed : { kind: 'registry', ref: from, parsed };
}

function hintForBase(from: string, images: ReadonlyMap<string, unknown>): string {
  const guess = /[/:@]/.test(from) ? undefined : didYouMean(from, images.keys());
  return guess
    ? `did you mean '${guess}'?`
    : "'from' takes an image declared here, a registry reference (REGISTRY/REPO:TAG), oci-layout:DIR[:TAG] or scratch";
}

const OUTSIDE_HINT =
  'declarations read only inside the workspace (the directory of images.yaml): move the files in, or list their directory under settings.allow_outside in images.yaml';

/**
 * The `outside-workspace` diagnostic for a declared path that leads outside the boundary, or
 * undefined. A glob is judged by its directory part (what fast-glob reads from).
 * @param rel the workspace-relative path (validate's `rel`); `field` and `shown` (the value as
 *   written, quoted) name it in the message.
 */
function outsideProblem(boundary: Boundary, rel: string, field: string, shown: string, span: () => Span): Diagnostic | undefined {
  const abs = path.resolve(boundary.root, isGlob(rel) ? globBase(rel) : rel);
  const real = boundary.outside(abs);
  if (real === undefined) return undefined;
  const via = boundary.linkOnTheWay(abs);
  return {
    code: 'outside-workspace',
    message: `${field} ${shown} resolves to ${real}, outside the workspace${via ? ` (${via.link} is a symbolic link to ${via.target})` : ''}`,
    span: span(),
    hint: OUTSIDE_HINT,
  };
}

function isDirectory(abs: string): boolean {
  try {
    return statSync(abs).isDirectory();
  } catch {
    return false;
  }
}
