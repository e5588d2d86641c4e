/**
 * Load stage: read a YAML declaration file into plain data, keeping a way back to source spans.
 *
 * Parsing with locations (yaml's Document API) is the slow part of planning a large zoo, so the
 * data of a validated file is cached by the digest of its text, and the document is parsed for
 * spans only when a later stage reports a problem.
 *
 * Hostile input is a diagnostic, never a crash or a hang: bytes that are not UTF-8 (reported where
 * they are, not replaced), an alias with no anchor before it, an alias inside its own anchor, and
 * aliases that would grow the data by more than {@link MAX_ALIAS_EXPANSION} nodes (a "billion
 * laughs" bomb: nine aliases of nine aliases of … make gigabytes from a few lines).
 */
import { createHash, hash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { Document, Node as YamlNode } from 'yaml';
import { lazyRequire } from './lazy.js';
import { writeFileAtomic } from './atomic.js';
import type { Diagnostic, SourceText, Span } from './diagnostics.js';

const yaml = lazyRequire<typeof import('yaml')>('yaml');

/**
 * Most nodes that aliases may add to a document, counted as if every alias were written out: far
 * above any zoo's needs (an alias of a 20-node test block in each of 10,000 models adds 200,000),
 * far below what makes validation or the parse cache slow.
 */
export const MAX_ALIAS_EXPANSION = 1_000_000;

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
  const bytes = readFileSync(absPath);
  const decoded = decodeUtf8(bytes, displayPath);
  if (typeof decoded !== 'string') return brokenFile(decoded.source, absPath, [decoded.diagnostic]);
  const text = decoded;
  const digest = createHash('sha256').update(PARSE_FORMAT).update(text).digest('hex');
  const hit = cache?.get(displayPath, digest);
  if (hit !== undefined) return lazyFile(text, absPath, displayPath, digest, hit.data);
  return parseYamlText(text, absPath, displayPath, digest);
}

/** As `loadYamlFile`, for text already in memory (e.g. a file read from git at another revision). */
export function parseYamlText(text: string, absPath: string, displayPath: string, digest = ''): LoadedFile {
  const source: SourceText = { path: displayPath, text };
  let doc: Document;
  try {
    doc = yaml().parseDocument(text, { uniqueKeys: true, prettyErrors: false, strict: true });
  } catch (e) {
    // The parser recurses once per nesting level: [[[[…]]]] deep enough exhausts the stack.
    return brokenFile(source, absPath, [{ code: 'yaml-syntax', message: `cannot parse: ${(e as Error).message}`, span: { source, start: 0, end: 1 } }]);
  }
  const diagnostics: Diagnostic[] = doc.errors.map((e) => ({
    code: 'yaml-syntax',
    message: cleanYamlMessage(e.message),
    span: { source, start: e.pos[0], end: Math.max(e.pos[1], e.pos[0] + 1) },
  }));
  if (!diagnostics.length) diagnostics.push(...aliasProblems(doc, source));
  // Aliases are checked above (aliasProblems), so yaml's own heuristic count is not needed.
  const data = diagnostics.length ? undefined : (doc.toJS({ maxAliasCount: -1 }) ?? undefined);
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

/** A file that could not be parsed: no data, its diagnostics, spans at the start of the file. */
function brokenFile(source: SourceText, absPath: string, diagnostics: Diagnostic[]): LoadedFile {
  return { source, absPath, digest: '', data: undefined, diagnostics, fromCache: false, spanAt: () => ({ source, start: 0, end: 1 }) };
}

/**
 * The text of a declaration file (WHATWG UTF-8 decoder, fatal: a byte that is not part of a UTF-8
 * character is an error, not U+FFFD), or a diagnostic at the first such byte with the source shown
 * with replacement characters. A byte order mark is kept for the YAML parser, which skips it.
 */
export function decodeUtf8(bytes: Uint8Array, displayPath: string): string | { source: SourceText; diagnostic: Diagnostic } {
  try {
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    const lossy = new TextDecoder('utf-8', { ignoreBOM: true });
    const bad = firstInvalidUtf8(bytes);
    const source: SourceText = { path: displayPath, text: lossy.decode(bytes) };
    const start = lossy.decode(bytes.subarray(0, bad)).length;
    return {
      source,
      diagnostic: {
        code: 'encoding',
        message: `byte 0x${bytes[bad].toString(16).padStart(2, '0')} is not UTF-8: ${displayPath} must be UTF-8 text`,
        span: { source, start, end: start + 1 },
        hint: 'save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)',
      },
    };
  }
}

/**
 * Offset of the first byte that does not belong to a well-formed UTF-8 sequence (RFC 3629: no
 * overlong forms, no surrogates, nothing above U+10FFFF), or -1 when every byte does.
 */
function firstInvalidUtf8(b: Uint8Array): number {
  for (let i = 0; i < b.length; ) {
    const c = b[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    const more = c >= 0xc2 && c <= 0xdf ? 1 : c >= 0xe0 && c <= 0xef ? 2 : c >= 0xf0 && c <= 0xf4 ? 3 : 0;
    if (more === 0) return i;
    // The second byte's range is narrower after E0, ED, F0 and F4 (Unicode Table 3-7).
    const lo = c === 0xe0 ? 0xa0 : c === 0xf0 ? 0x90 : 0x80;
    const hi = c === 0xed ? 0x9f : c === 0xf4 ? 0x8f : 0xbf;
    if (i + 1 >= b.length || b[i + 1] < lo || b[i + 1] > hi) return i;
    for (let k = 2; k <= more; k++) if (i + k >= b.length || (b[i + k] & 0xc0) !== 0x80) return i;
    i += more + 1;
  }
  return -1;
}

/**
 * Problems with a document's aliases, before any data is built from it: an alias whose anchor is
 * not set before it, an alias inside the node its anchor names (data that contains itself), and
 * aliases that add more than {@link MAX_ALIAS_EXPANSION} nodes in all. Each points at the alias;
 * the expansion is reported at the alias where the running total, in document order, passes the
 * limit.
 */
function aliasProblems(doc: Document, source: SourceText): Diagnostic[] {
  const { isAlias, isCollection, isNode, isPair, isScalar, visit } = yaml();
  const targets = new Map<unknown, YamlNode | undefined>();
  const aliases: YamlNode[] = [];
  const anchors = new Map<string, YamlNode>();
  // Document order, a node before its children: an anchor names the last node set with it so far.
  visit(doc, (_key, node) => {
    if (isAlias(node)) {
      targets.set(node, anchors.get(node.source));
      aliases.push(node);
    } else if (isNode(node) && node.anchor) {
      anchors.set(node.anchor, node);
    }
  });
  if (!aliases.length) return [];
  const out: Diagnostic[] = [];
  const spanOf = (node: YamlNode) => rangeSpan(source, node) ?? { source, start: 0, end: 1 };
  const sizes = new Map<unknown, number>();
  const open = new Set<unknown>();
  // Nodes the data would have with every alias written out (a pair counts its key and value).
  // An alias inside its own anchor's node is reported below; `open` only stops the recursion.
  const size = (node: unknown): number => {
    if (node === null || node === undefined || isScalar(node)) return 1;
    const known = sizes.get(node);
    if (known !== undefined) return known;
    if (open.has(node)) return 1;
    open.add(node);
    let n = 1;
    if (isAlias(node)) {
      const target = targets.get(node);
      n = target ? size(target) : 1;
    } else if (isPair(node)) {
      n = size(node.key) + size(node.value);
    } else if (isCollection(node)) {
      for (const item of node.items) n += size(item);
    }
    open.delete(node);
    sizes.set(node, n);
    return n;
  };
  let added = 0;
  let reported = false;
  for (const alias of aliases) {
    const name = (alias as unknown as { source: string }).source;
    const target = targets.get(alias);
    if (!target) {
      out.push({ code: 'yaml-alias', message: `alias *${name} has no anchor: &${name} must be set on a node before it`, span: spanOf(alias) });
      continue;
    }
    const [from, , to] = target.range ?? [0, 0, 0];
    if (alias.range && alias.range[0] >= from && alias.range[0] < to) {
      out.push({ code: 'yaml-alias', message: `alias *${name} is inside the node it names (&${name}): the data would contain itself`, span: spanOf(alias) });
      continue;
    }
    added += size(alias) - 1;
    if (added > MAX_ALIAS_EXPANSION && !reported) {
      reported = true;
      out.push({
        code: 'yaml-alias',
        message: `aliases would add more than ${MAX_ALIAS_EXPANSION.toLocaleString('en-US')} nodes to the data (an alias bomb?); this *${name} passes the limit`,
        span: spanOf(alias),
        hint: 'each alias copies the whole node of its anchor, aliases in it included; write the data out, or nest fewer aliases',
      });
    }
  }
  return out;
}

/** Bumped when what the cache holds changes meaning. */
const PARSE_FORMAT = 'graph-parse-1\0';

/**
 * Parsed declaration data from earlier runs, one file per declaration file
 * (`.graph/parsed/<name>.json`), so an unchanged 1 MB models.yaml costs a JSON.parse instead of a
 * YAML parse. Only data that passed validation is stored. The file is one header line
 * `{"digest": <the declaration file's digest>, "sum": <SHA-256 of the data line>}` and the data as
 * one JSON line: data whose bytes changed since (a flipped byte, an edit) fails its sum and is
 * parsed again from the YAML, never served.
 */
export class ParseCache {
  /** @param dir absolute directory of the cache. */
  constructor(private readonly dir: string) {}

  private file(name: string): string {
    return path.join(this.dir, `${name.replace(/[^A-Za-z0-9._-]/g, '_')}.json`);
  }

  get(name: string, digest: string): { data: unknown } | undefined {
    let text: string;
    try {
      text = readFileSync(this.file(name), 'utf8');
    } catch {
      return undefined;
    }
    const nl = text.indexOf('\n');
    if (nl < 0) return undefined;
    try {
      const header = JSON.parse(text.slice(0, nl)) as { digest?: string; sum?: string };
      const dataText = text.slice(nl + 1);
      if (header.digest !== digest || header.sum !== hash('sha256', dataText, 'hex')) return undefined;
      return { data: JSON.parse(dataText) };
    } catch {
      return undefined;
    }
  }

  /** Remember a validated file's data (atomic write; a no-op for data that came from here). */
  put(file: LoadedFile): void {
    if (file.fromCache || !file.digest || file.data === undefined) return;
    const dataText = JSON.stringify(file.data);
    writeFileAtomic(this.file(file.source.path), `${JSON.stringify({ digest: file.digest, sum: hash('sha256', dataText, 'hex') })}\n${dataText}`);
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
