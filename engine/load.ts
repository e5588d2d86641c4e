/**
 * Load stage: read a YAML declaration file into plain data, keeping a way back to source spans.
 *
 * Parsing with locations (yaml's Document API) is the slow part of planning a large zoo, so the
 * document is kept and asked for spans only when a later stage reports a problem.
 */
import { readFileSync } from 'node:fs';
import { isMap, isPair, isScalar, isSeq, parseDocument, type Document, type Node as YamlNode } from 'yaml';
import type { Diagnostic, SourceText, Span } from './diagnostics.js';

/** A path into parsed data: map keys and sequence indexes, as ajv's instancePath segments. */
export type DataPath = ReadonlyArray<string | number>;

/** One declaration file, parsed. */
export interface LoadedFile {
  readonly source: SourceText;
  /** Absolute path of the file. */
  readonly absPath: string;
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
 * @throws the fs error (ENOENT, EACCES…) when the file cannot be read; syntax errors are returned
 *   as diagnostics, not thrown.
 */
export function loadYamlFile(absPath: string, displayPath: string): LoadedFile {
  return parseYamlText(readFileSync(absPath, 'utf8'), absPath, displayPath);
}

/** As `loadYamlFile`, for text already in memory (e.g. a file read from git at another revision). */
export function parseYamlText(text: string, absPath: string, displayPath: string): LoadedFile {
  const source: SourceText = { path: displayPath, text };
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: false, strict: true });
  const diagnostics: Diagnostic[] = doc.errors.map((e) => ({
    code: 'yaml-syntax',
    message: cleanYamlMessage(e.message),
    span: { source, start: e.pos[0], end: Math.max(e.pos[1], e.pos[0] + 1) },
  }));
  const data = diagnostics.length ? undefined : (doc.toJS({ maxAliasCount: 1000 }) ?? undefined);
  return {
    source,
    absPath,
    data,
    diagnostics,
    spanAt: (path, which = 'value') => spanAt(doc, source, path, which),
  };
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
