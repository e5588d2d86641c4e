/**
 * Load stage: read a YAML declaration file into plain data, keeping a way back to source spans.
 *
 * Parsing with locations (yaml's Document API) is the slow part of planning a large zoo, so the
 * data of a validated file is cached by the digest of its text, and the document is parsed for
 * spans only when a later stage reports a problem.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { Document, Node as YamlNode } from 'yaml';
import { lazyRequire } from './lazy.js';
import { readJsonFile, writeFileAtomic } from './atomic.js';
import type { Diagnostic, SourceText, Span } from './diagnostics.js';

const yaml = lazyRequire<typeof import('yaml')>('yaml');

/** A path into parsed data: map keys and sequence indexes, as ajv's instancePath segments. */
export type DataPath = ReadonlyArray<string | number>;

/** One declaration file, parsed. */
export interface LoadedFile {
  readonly source: SourceText;
  /** Absolute path of the file. */
  readonly absPath: string;
  /** SHA-256 (hex) identifying the text for the parse cache; empty when not cacheable. */
  readonly digest: string;
  /** Whether `data` came from the parse cache. */
  readonly fromCache: boolean;
  /** The file's content as plain JSON-compatible data (undefined for an empty file). */
  readonly data: unknown;
  /** Syntax errors and warnings; `data` is undefined when there are errors. */
  readonly diagnostics: readonly Diagnostic[];
  /** Span of the key (`'key'`) or value (`'value'`) at `path`; the nearest existing ancestor if absent. */
  spanAt(path: DataPath, which?: 'key' | 'value'): Span;
}

/**
 * Read and parse `absPath` (YAML 1.2 core schema, duplicate keys rejected).
 * @param displayPath the path diagnostics show, usually relative to the workspace.
 * @param cache parsed data of earlier runs: when the file's text is unchanged its data comes from
 *   there and the YAML is parsed only if a span is asked for.
 * @throws the fs error (ENOENT, EACCES…) when the file cannot be read; syntax errors are returned
 *   as diagnostics, not thrown.
 */
export function loadYamlFile(absPath: string, displayPath: string, cache?: ParseCache): LoadedFile {
  const text = readFileSync(absPath, 'utf8');
  const digest = createHash('sha256').update(PARSE_FORMAT).update(text).digest('hex');
  const hit = cache?.get(displayPath, digest);
  if (hit !== undefined) return lazyFile(text, absPath, displayPath, digest, hit.data);
  return parseYamlText(text, absPath, displayPath, digest);
}

/** As `loadYamlFile`, for text already in memory (e.g. a file read from git at another revision). */
export function parseYamlText(text: string, absPath: string, displayPath: string, digest = ''): LoadedFile {
  const source: SourceText = { path: displayPath, text };
  const doc = yaml().parseDocument(text, { uniqueKeys: true, prettyErrors: false, strict: true });
  const diagnostics: Diagnostic[] = doc.errors.map((e) => ({
    code: 'yaml-syntax',
    message: cleanYamlMessage(e.message),
    span: { source, start: e.pos[0], end: Math.max(e.pos[1], e.pos[0] + 1) },
  }));
  const data = diagnostics.length ? undefined : (doc.toJS({ maxAliasCount: 1000 }) ?? undefined);
  return {
    source,
    absPath,
    digest,
    data,
    diagnostics,
    fromCache: false,
    spanAt: (path, which = 'value') => spanAt(doc, source, path, which),
  };
}

function lazyFile(text: string, absPath: string, displayPath: string, digest: string, data: unknown): LoadedFile {
  const source: SourceText = { path: displayPath, text };
  let doc: Document | undefined;
  return {
    source,
    absPath,
    digest,
    data,
    diagnostics: [],
    fromCache: true,
    spanAt: (path, which = 'value') => spanAt((doc ??= yaml().parseDocument(text, { uniqueKeys: true, prettyErrors: false })), source, path, which),
  };
}

/** Bumped when what the cache holds changes meaning. */
const PARSE_FORMAT = 'graph-parse-1\0';

/**
 * Parsed declaration data from earlier runs, one JSON file per declaration file
 * (`.graph/parsed/<name>.json`: `{digest, data}`), so an unchanged 1 MB models.yaml costs a
 * JSON.parse instead of a YAML parse. Only data that passed validation is stored.
 */
export class ParseCache {
  /** @param dir absolute directory of the cache. */
  constructor(private readonly dir: string) {}

  private file(name: string): string {
    return path.join(this.dir, `${name.replace(/[^A-Za-z0-9._-]/g, '_')}.json`);
  }

  get(name: string, digest: string): { data: unknown } | undefined {
    const entry = readJsonFile(this.file(name)) as { digest?: string; data?: unknown } | undefined;
    return entry && entry.digest === digest && entry.data !== undefined ? { data: entry.data } : undefined;
  }

  /** Remember a validated file's data (atomic write; a no-op for data that came from here). */
  put(file: LoadedFile): void {
    if (file.fromCache || !file.digest || file.data === undefined) return;
    writeFileAtomic(this.file(file.source.path), JSON.stringify({ digest: file.digest, data: file.data }));
  }
}

function cleanYamlMessage(message: string): string {
  // yaml appends " at line L, column C" plus an excerpt; we print our own location and excerpt.
  return message.replace(/ at line \d+, column \d+[\s\S]*$/, '').trim();
}

function rangeSpan(source: SourceText, node: YamlNode | undefined | null): Span | undefined {
  const r = node?.range;
  if (!r) return undefined;
  // For a block collection the value end may sit on the next line; trim trailing whitespace.
  let end = r[1];
  while (end > r[0] && /\s/.test(source.text[end - 1])) end--;
  return { source, start: r[0], end: Math.max(end, r[0] + 1) };
}

function spanAt(doc: Document, source: SourceText, path: DataPath, which: 'key' | 'value'): Span {
  let node: unknown = doc.contents;
  let best: Span = rangeSpan(source, doc.contents as YamlNode) ?? { source, start: 0, end: 1 };
  for (let i = 0; i < path.length; i++) {
    const seg = path[i];
    const last = i === path.length - 1;
    const { isMap, isPair, isScalar, isSeq } = yaml();
    if (isMap(node)) {
      const pair = node.items.find((p) => isPair(p) && isScalar(p.key) && String(p.key.value) === String(seg));
      if (!pair) return best;
      const keySpan = rangeSpan(source, pair.key as YamlNode);
      if (last && which === 'key' && keySpan) return keySpan;
      node = pair.value;
      best = rangeSpan(source, pair.value as YamlNode) ?? keySpan ?? best;
    } else if (isSeq(node) && typeof seg === 'number') {
      const item = node.items[seg];
      if (item === undefined) return best;
      node = item;
      best = rangeSpan(source, item as YamlNode) ?? best;
    } else {
      return best;
    }
  }
  return best;
}
