/**
 * Validate stage: JSON Schema checks (ajv, against schema/*.schema.json, compiled to code at build
 * time) and the semantic checks a
 * schema cannot express (references between images and groups, files that must exist and lie
 * inside the workspace boundary (boundary.ts), resources that must be declared), turning loaded
 * YAML into typed `Declarations`.
 *
 * Every problem becomes a `Diagnostic` pointing at its span; all are collected, then thrown at
 * once as a `DiagnosticError`.
 */
import { statSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import type { ErrorObject, ValidateFunction } from 'ajv';
import {
  DEFAULT_TEST_TIMEOUT_MS,
  sampledModels,
  substituteVars,
  type BaseImage,
  type Declarations,
  type GroupDecl,
  type ImageDecl,
  type ModelDecl,
  type Recipe,
  type Runtime,
  type Settings,
  type TestDecl,
} from './declarations.js';
import { Boundary } from './boundary.js';
import { DiagnosticError, didYouMean, type Diagnostic, type Span } from './diagnostics.js';
import { globBase, inputExists, isGlob } from './files.js';
import type { DataPath, LoadedFile } from './load.js';
import { parseReference } from './reference.js';

// The schemas are compiled to code at build time (scripts/compile-schemas.ts), next to out/engine/.
const validators = createRequire(import.meta.url)('../schema/validators.cjs') as { images: ValidateFunction; models: ValidateFunction };

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

/** Messages for `oneOf` choices, by the last schema keyword before `/oneOf`. */
const oneOfMessages: Record<string, (p: DataPath, data: unknown) => string> = {
  image: (p, data) => {
    const present = ['dockerfile', 'layers', 'debian'].filter((k) => data && typeof data === 'object' && k in data);
    return present.length === 0
      ? `image '${p[1]}' has no recipe: give exactly one of dockerfile, layers or debian`
      : `image '${p[1]}' has ${present.length} recipes (${present.join(', ')}): give exactly one`;
  },
  models: (p) => `${describePath(p)} must be a list of model names or a map of model name to vars`,
  tolerance: (p) => `${describePath(p)} must be a number (absolute) or {absolute: N, relative: N}`,
  timeout: (p) => `${describePath(p)} must be a number of seconds or a duration such as 90s, 10m or 1h`,
  sample: (p) => `${describePath(p)} must be 'all' or a positive integer`,
};

function schemaDiagnostics(file: LoadedFile, errors: readonly ErrorObject[]): Diagnostic[] {
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
        const message = oneOfMessages[owner]?.(p, e.data) ?? `${describePath(p)} ${e.message}`;
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

/** Settings the command line can override. */
export interface SettingsOverrides {
  readonly builder?: string;
  readonly sandbox?: string;
}

/** Parse a duration (`90s`, `10m`, `1.5h`, `250ms`, or a number of seconds) into milliseconds. */
export function parseDuration(value: string | number): number {
  if (typeof value === 'number') return Math.round(value * 1000);
  const m = /^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)$/.exec(value);
  if (!m) throw new Error(`invalid duration '${value}'`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as 'ms' | 's' | 'm' | 'h'];
  return Math.round(Number(m[1]) * unit);
}

function stringMap(v: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, x] of Object.entries((v as Record<string, unknown>) ?? {})) out[k] = String(x);
  return out;
}

/**
 * Validate loaded declaration files and normalize them.
 * @param root absolute workspace directory; every path is resolved against it.
 * @param modelsFile undefined when the workspace has no models.yaml (no groups, no tests).
 * @param overrides settings given on the command line, which win over images.yaml's.
 * @throws DiagnosticError with every problem found, sorted by file and position.
 */
export function validateDeclarations(root: string, imagesFile: LoadedFile, modelsFile: LoadedFile | undefined, overrides: SettingsOverrides = {}): Declarations {
  const diagnostics: Diagnostic[] = [...imagesFile.diagnostics, ...(modelsFile?.diagnostics ?? [])];
  const v = validators;
  const emptyDoc = (f: LoadedFile) =>
    diagnostics.push({ code: 'schema', message: `${f.source.path} is empty: it needs 'version: 1'`, span: f.spanAt([]) });
  if (!imagesFile.diagnostics.length) {
    if (imagesFile.data === undefined) emptyDoc(imagesFile);
    else if (!v.images(imagesFile.data)) diagnostics.push(...schemaDiagnostics(imagesFile, v.images.errors ?? []));
  }
  if (modelsFile && !modelsFile.diagnostics.length) {
    if (modelsFile.data === undefined) emptyDoc(modelsFile);
    else if (!v.models(modelsFile.data)) diagnostics.push(...schemaDiagnostics(modelsFile, v.models.errors ?? []));
  }
  if (diagnostics.length) throw new DiagnosticError(diagnostics);

  const rawImages = (imagesFile.data as { images: Record<string, Record<string, unknown>> }).images ?? {};
  const rawSettings = (imagesFile.data as { settings?: { concurrency?: Record<string, number>; resources?: Record<string, number>; builder?: string; sandbox?: string; allow_outside?: string[]; remote_cache?: string } }).settings;
  const allowOutside = (rawSettings?.allow_outside ?? []).map((dir) => path.resolve(path.dirname(imagesFile.absPath), dir));
  allowOutside.forEach((dir, i) => {
    if (!isDirectory(dir)) {
      diagnostics.push({ code: 'missing-file', message: `settings.allow_outside[${i}]: directory '${dir}' does not exist`, span: imagesFile.spanAt(['settings', 'allow_outside', i]) });
    }
  });
  const settings: Settings = {
    concurrency: { ...rawSettings?.concurrency },
    resources: { ...rawSettings?.resources },
    builder: overrides.builder ?? rawSettings?.builder ?? 'auto',
    sandbox: overrides.sandbox ?? rawSettings?.sandbox ?? 'bubblewrap',
    allowOutside,
    ...(rawSettings?.remote_cache !== undefined ? { remoteCache: rawSettings.remote_cache } : {}),
  };
  // Validation resolves thousands of paths under a few directories: one pass, with a memo of
  // real directories. The declarations keep a boundary without one, for the checks at execution.
  const boundary = new Boundary(root, allowOutside, { memo: true });
  const rel = (file: LoadedFile, p: string) =>
    path.posix.normalize(path.relative(root, path.resolve(path.dirname(file.absPath), p)).split(path.sep).join('/'));

  const images = new Map<string, ImageDecl>();
  for (const [name, raw] of Object.entries(rawImages)) {
    const at = (p: DataPath, which: 'key' | 'value' = 'value') => imagesFile.spanAt(['images', name, ...p], which);
    images.set(name, {
      name,
      from: undefined, // resolved below, once every name is known
      recipe: recipeOf(raw, (p) => rel(imagesFile, p)),
      env: stringMap(raw.env),
      entrypoint: raw.entrypoint as string[] | undefined,
      cmd: raw.cmd as string[] | undefined,
      workdir: raw.workdir as string | undefined,
      labels: stringMap(raw.labels),
      convert: (raw.convert as 'sif'[] | undefined) ?? [],
      publish: (raw.publish as string[] | undefined) ?? [],
      at,
    });
  }

  for (const [name, raw] of Object.entries(rawImages)) {
    const image = images.get(name) as { -readonly [K in keyof ImageDecl]: ImageDecl[K] };
    const from = raw.from as string | undefined;
    if (from !== undefined) {
      const base = resolveBase(from, images, (p) => rel(imagesFile, p));
      if (typeof base === 'string') {
        diagnostics.push({ code: 'unknown-image', message: base, span: image.at(['from']), hint: hintForBase(from, images) });
      } else {
        image.from = base;
        if (image.recipe.kind === 'debian') {
          diagnostics.push({
            code: 'schema',
            message: `image '${name}' is built from Debian packages and is a base itself: remove 'from'`,
            span: image.at(['from'], 'key'),
          });
        }
        if (base.kind === 'oci-layout') {
          const outside = outsideProblem(boundary, base.dir, describePath(['images', name, 'from']), `'${from}'`, () => image.at(['from']));
          if (outside) diagnostics.push(outside);
          else if (!inputExists(root, { kind: 'dir', path: base.dir })) {
            diagnostics.push({ code: 'missing-file', message: `OCI image layout directory '${base.dir}' does not exist`, span: image.at(['from']) });
          }
        }
      }
    } else if (image.recipe.kind === 'layers') {
      image.from = { kind: 'scratch' };
    }
    diagnostics.push(...recipeFileProblems(boundary, image, raw));
    (raw.publish as string[] | undefined)?.forEach((ref, i) => {
      const parsed = parseReference(ref);
      if (typeof parsed === 'string') diagnostics.push({ code: 'bad-reference', message: parsed, span: image.at(['publish', i]) });
    });
  }

  const groups = new Map<string, GroupDecl>();
  const rawGroups = (modelsFile?.data as { groups?: Record<string, Record<string, unknown>> } | undefined)?.groups ?? {};
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
    const rawTest = raw.test as Record<string, unknown> | undefined;
    let test: GroupDecl['test'];
    if (rawTest) {
      const runtimes = (rawTest.runtimes as Runtime[] | undefined) ?? ['oci'];
      const resources = Object.fromEntries(Object.entries((rawTest.resources as Record<string, number>) ?? {}));
      test = {
        command: rawTest.command as string[],
        inputs: rawTest.inputs === undefined ? undefined : rel(modelsFile as LoadedFile, rawTest.inputs as string),
        expect: rawTest.expect === undefined ? undefined : rel(modelsFile as LoadedFile, rawTest.expect as string),
        runtimes,
        timeoutMs: rawTest.timeout === undefined ? DEFAULT_TEST_TIMEOUT_MS : parseDuration(rawTest.timeout as string | number),
        resources,
        tolerance: typeof rawTest.tolerance === 'number' ? { absolute: rawTest.tolerance } : (rawTest.tolerance as TestDecl['tolerance']),
        sample: (rawTest.sample as 'all' | number | undefined) ?? 'all',
      };
      for (const key of ['inputs', 'expect'] as const) {
        const pattern = test[key];
        if (pattern === undefined) continue;
        // With {model} in the path each sampled model has its own directory; report the first
        // outside the workspace, else the first missing.
        const sampled = sampledModels({ name, image, sif, models, test, at });
        const declared = `'${rawTest[key] as string}'`;
        let outside: Diagnostic | undefined;
        // Each directory once (models without {model} share one), named by its first model.
        const firstModel = new Map<string, string>();
        for (const m of sampled) {
          const dir = substituteVars(pattern, m);
          if (!firstModel.has(dir)) firstModel.set(dir, m.name);
        }
        for (const [dir, model] of firstModel) {
          outside ??= outsideProblem(boundary, dir, describePath(['groups', name, 'test', key]), dir === pattern ? declared : `${declared} (model '${model}')`, () => at(['test', key]));
          if (outside) break;
        }
        if (outside) {
          diagnostics.push(outside);
          continue;
        }
        const missing = [...firstModel.keys()].filter((dir) => !inputExists(root, { kind: 'dir', path: dir }));
        if (missing.length) {
          const more = missing.length > 1 ? ` (and ${missing.length - 1} more)` : '';
          diagnostics.push({ code: 'missing-file', message: `test ${key} directory '${missing[0]}' does not exist${more}`, span: at(['test', key]) });
        }
      }
      for (const [token, amount] of Object.entries(resources)) {
        const capacity = settings.resources[token];
        if (capacity === undefined) {
          const guess = didYouMean(token, Object.keys(settings.resources));
          diagnostics.push({
            code: 'unknown-resource',
            message: `resource '${token}' is not declared in images.yaml settings.resources${guess ? ` (did you mean '${guess}'?)` : ''}`,
            span: at(['test', 'resources', token], 'key'),
          });
        } else if (amount > capacity) {
          diagnostics.push({
            code: 'unknown-resource',
            message: `test claims ${amount} '${token}' but only ${capacity} exist: it could never run`,
            span: at(['test', 'resources', token]),
          });
        }
      }
      const sifImage = images.get(sif);
      if (runtimes.includes('sif') && sifImage && !sifImage.convert.includes('sif')) {
        diagnostics.push({
          code: 'no-sif',
          message: `group '${name}' tests the sif runtime, but image '${sif}' has no 'convert: [sif]'`,
          span: at(['test', 'runtimes', runtimes.indexOf('sif')]),
          hint: `add 'convert: [sif]' to image '${sif}' in images.yaml, or name another image with 'sif:'`,
        });
      }
    }
    groups.set(name, { name, image, sif, models, test, at });
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

function recipeOf(raw: Record<string, unknown>, rel: (p: string) => string): Recipe {
  if (raw.dockerfile !== undefined) {
    const dockerfile = rel(raw.dockerfile as string);
    return {
      kind: 'dockerfile',
      dockerfile,
      context: raw.context !== undefined ? rel(raw.context as string) : path.posix.dirname(dockerfile),
      args: stringMap(raw.args),
      target: raw.target as string | undefined,
    };
  }
  if (raw.layers !== undefined) {
    return {
      kind: 'layers',
      layers: (raw.layers as Array<{ copy: string; to: string; mode?: number }>).map((l) => ({ copy: rel(l.copy), to: l.to, mode: l.mode })),
    };
  }
  const debian = raw.debian as { suite?: string; packages: string[] };
  return { kind: 'debian', suite: debian.suite ?? 'bookworm', packages: [...debian.packages] };
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

function recipeFileProblems(boundary: Boundary, image: ImageDecl, raw: Record<string, unknown>): Diagnostic[] {
  const out: Diagnostic[] = [];
  const root = boundary.root;
  const r = image.recipe;
  const field = (...p: DataPath) => describePath(['images', image.name, ...p]);
  if (r.kind === 'dockerfile') {
    const dockerfileOutside = outsideProblem(boundary, r.dockerfile, field('dockerfile'), `'${raw.dockerfile as string}'`, () => image.at(['dockerfile']));
    if (dockerfileOutside) out.push(dockerfileOutside);
    else if (!inputExists(root, { kind: 'file', path: r.dockerfile })) {
      out.push({ code: 'missing-file', message: `Dockerfile '${r.dockerfile}' does not exist`, span: image.at(['dockerfile']) });
    }
    const hasContext = raw.context !== undefined;
    // The default context is the Dockerfile's directory: said once, for the Dockerfile.
    const contextOutside = hasContext || !dockerfileOutside ? outsideProblem(boundary, r.context, field(hasContext ? 'context' : 'dockerfile'), `'${(hasContext ? raw.context : raw.dockerfile) as string}'`, () => image.at([hasContext ? 'context' : 'dockerfile'])) : undefined;
    if (contextOutside) out.push(contextOutside);
    else if (!dockerfileOutside && !inputExists(root, { kind: 'dir', path: r.context })) {
      out.push({ code: 'missing-file', message: `build context directory '${r.context}' does not exist`, span: image.at([hasContext ? 'context' : 'dockerfile']) });
    }
  } else if (r.kind === 'layers') {
    const rawLayers = raw.layers as Array<{ copy: string }>;
    r.layers.forEach((l, i) => {
      const outside = outsideProblem(boundary, l.copy, field('layers', i, 'copy'), `'${rawLayers[i].copy}'`, () => image.at(['layers', i, 'copy']));
      if (outside) out.push(outside);
      else if (!inputExists(root, { kind: 'glob', pattern: l.copy })) {
        out.push({ code: 'missing-file', message: `'${l.copy}' matches no file`, span: image.at(['layers', i, 'copy']) });
      }
    });
  }
  return out;
}
