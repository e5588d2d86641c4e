/**
 * Diagnostics: problems found in the user's declarations, each pointing at its source.
 *
 * A diagnostic has a stable code, a one-line message, the span it is about and optional related
 * spans (one per hop of a cycle, say). Stages collect every diagnostic before failing; `sortDiagnostics`
 * orders them by file and offset so output is deterministic. `formatDiagnostic` renders the
 * ninja/rustc shape:
 *
 *     images.yaml:4:5: error[unknown-key]: unknown key 'form' in image 'base' (did you mean 'from'?)
 *         4 |     form: scratch
 *           |     ^^^^
 */

/** A source file the diagnostics can point into: its display path and full text. */
export interface SourceText {
  /** Path as shown to the user (relative to the workspace when possible). */
  readonly path: string;
  readonly text: string;
  /** Offsets where each line starts, ascending; computed lazily by `lineStarts`. */
  lineStartsCache?: number[];
}

/** A half-open byte range [start, end) of UTF-16 code-unit offsets into `source.text`. */
export interface Span {
  readonly source: SourceText;
  readonly start: number;
  readonly end: number;
}

export interface Diagnostic {
  /** Stable kebab-case identifier, e.g. `yaml-syntax`, `schema`, `unknown-image`, `cycle`. */
  readonly code: string;
  readonly message: string;
  /** Where the problem is; absent only for problems with no file (e.g. a missing images.yaml). */
  readonly span?: Span;
  /** Further places that explain it, each with a short note. */
  readonly related?: ReadonlyArray<{ readonly span: Span; readonly note: string }>;
  /** A suggestion shown after the source excerpt. */
  readonly hint?: string;
}

/** Thrown by a stage that found one or more diagnostics; the CLI prints them and exits 2. */
export class DiagnosticError extends Error {
  readonly diagnostics: readonly Diagnostic[];
  constructor(diagnostics: readonly Diagnostic[]) {
    super(diagnostics.map((d) => d.message).join('\n'));
    this.name = 'DiagnosticError';
    this.diagnostics = sortDiagnostics(diagnostics);
  }
}

function lineStarts(source: SourceText): number[] {
  if (source.lineStartsCache) return source.lineStartsCache;
  const starts = [0];
  const text = source.text;
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) === 10) starts.push(i + 1);
  source.lineStartsCache = starts;
  return starts;
}

/** 1-based line and column of `offset` in `source` (column counts UTF-16 code units). */
export function lineColumn(source: SourceText, offset: number): { line: number; column: number } {
  const starts = lineStarts(source);
  let lo = 0;
  let hi = starts.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (starts[mid] <= offset) lo = mid;
    else hi = mid - 1;
  }
  return { line: lo + 1, column: offset - starts[lo] + 1 };
}

/** `path:line:col` of a span's start. */
export function formatLocation(span: Span): string {
  const { line, column } = lineColumn(span.source, span.start);
  return `${span.source.path}:${line}:${column}`;
}

function excerpt(span: Span, note?: string): string {
  const { line, column } = lineColumn(span.source, span.start);
  const starts = lineStarts(span.source);
  const lineStart = starts[line - 1];
  const next = line < starts.length ? starts[line] - 1 : span.source.text.length;
  const text = span.source.text.slice(lineStart, next).replace(/\r$/, '');
  const width = Math.max(1, Math.min(span.end, lineStart + text.length) - span.start);
  const gutter = String(line);
  const pad = ' '.repeat(gutter.length);
  const caret = ' '.repeat(column - 1) + '^'.repeat(width) + (note ? ` ${note}` : '');
  return `    ${gutter} | ${text}\n    ${pad} | ${caret}`;
}

/** Render one diagnostic as text: location, code, message, source line with a caret, related spans. */
export function formatDiagnostic(d: Diagnostic): string {
  const head = d.span ? `${formatLocation(d.span)}: ` : '';
  const lines = [`${head}error[${d.code}]: ${d.message}`];
  if (d.span) lines.push(excerpt(d.span));
  for (const r of d.related ?? []) {
    lines.push(`  ${formatLocation(r.span)}: note: ${r.note}`);
    lines.push(excerpt(r.span));
  }
  if (d.hint) lines.push(`  hint: ${d.hint}`);
  return lines.join('\n');
}

/** Sort by file path, then offset, then message: the order every stage reports in. */
export function sortDiagnostics(ds: readonly Diagnostic[]): Diagnostic[] {
  return [...ds].sort((a, b) => {
    const pa = a.span?.source.path ?? '';
    const pb = b.span?.source.path ?? '';
    if (pa !== pb) return pa < pb ? -1 : 1;
    const oa = a.span?.start ?? -1;
    const ob = b.span?.start ?? -1;
    if (oa !== ob) return oa - ob;
    return a.message < b.message ? -1 : a.message > b.message ? 1 : 0;
  });
}

/** Levenshtein distance, used for "did you mean" suggestions. */
export function editDistance(a: string, b: string): number {
  if (a === b) return 0;
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length];
}

/**
 * The closest candidate to `word` within a distance of max(2, a third of its length), or undefined.
 * Ties go to the lexicographically first candidate so suggestions are deterministic.
 */
export function didYouMean(word: string, candidates: Iterable<string>): string | undefined {
  const limit = Math.max(2, Math.floor(word.length / 3));
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const c of candidates) {
    if (Math.abs(c.length - word.length) > limit) continue;
    const d = editDistance(word.toLowerCase(), c.toLowerCase());
    if (d < bestDistance || (d === bestDistance && best !== undefined && c < best)) {
      best = c;
      bestDistance = d;
    }
  }
  return bestDistance <= limit ? best : undefined;
}
