/**
 * Comparing a test command's outputs with the expected ones. Every file under the expect
 * directory must exist at the same relative path under the output directory with the same bytes;
 * with a tolerance, TSV and CSV files (by extension `.tsv`, `.csv`) are instead compared cell by
 * cell, numbers within the tolerance. Files the command wrote beyond the expected ones are allowed
 * and not listed (logs, caches); an output directory with no file at all is a failure of its own,
 * "the command wrote nothing to /output", since a command that crashed quietly would otherwise
 * pass an empty expectation.
 *
 * Differences are human lines in a fixed order (files in path order, directory by directory, then
 * by position in the file), at most {@link MAX_DIFFERENCES} of them, e.g.
 *
 *   missing: scores.tsv
 *   scores.tsv: line 3, column 2: 0.51 ≠ expected 0.5 (tolerance 0.001)
 *   scores.tsv: line 4: 2 columns, expected 3
 *   scores.tsv: 5 lines, expected 4
 *   model.bin: differs at byte 1024 (size 2048, expected 4096)
 *   scores.tsv: leads out of /output (to /etc/shadow); not read
 *
 * Nothing outside the two directories is read: the command may have left a symbolic link in
 * /output to a file of the host (the link is followed on the host, not in the sandbox), and the
 * expectations must stay inside the workspace boundary (boundary.ts).
 */
import { closeSync, fstatSync, openSync, readdirSync, readFileSync, readSync, statSync } from 'node:fs';
import path from 'node:path';
import { Boundary, OutsideWorkspaceError } from '../../engine/validate/boundary.js';

/**
 * Numeric tolerance of TSV/CSV cells: an output number `a` matches the expected number `b` when
 * |a − b| ≤ absolute + relative·|b|; an unset field counts as 0.
 */
export interface Tolerance {
  absolute?: number;
  relative?: number;
}

/** The verdict: `ok` exactly when `differences` is empty. */
export interface Comparison {
  ok: boolean;
  /** Human lines (module comment), at most {@link MAX_DIFFERENCES}, then one "… and N more" line. */
  differences: string[];
}

/** How many differences are listed before the rest are counted. */
export const MAX_DIFFERENCES = 10;

/** The one difference reported when the output directory holds no file. */
export const WROTE_NOTHING = 'the command wrote nothing to /output';

/**
 * Compare `outputDir` (what the command wrote to /output) with `expectDir` (module comment).
 * Symbolic links are followed while they stay inside their directory (for the expectations: inside
 * `expectWithin`); only regular files are compared.
 * @param expectWithin where expected files may lead (the workspace boundary); default: anywhere.
 * @throws Error when `expectDir` is not a readable directory; OutsideWorkspaceError when an
 *   expected file leads outside `expectWithin`. A missing `outputDir` counts as empty.
 */
export function compareOutputs(outputDir: string, expectDir: string, tolerance?: Tolerance, expectWithin?: Boundary): Comparison {
  if (!statSync(expectDir, { throwIfNoEntry: false })?.isDirectory()) throw new Error(`expected outputs ${expectDir} is not a directory`);
  const differences: string[] = [];
  let more = 0;
  const add = (line: string) => (differences.length < MAX_DIFFERENCES ? differences.push(line) : more++);
  if (listFiles(outputDir).length === 0) return { ok: false, differences: [WROTE_NOTHING] };
  const outputWithin = new Boundary(outputDir);
  for (const rel of listFiles(expectDir)) {
    const actual = path.join(outputDir, rel);
    const expected = path.join(expectDir, rel);
    if (!statSync(actual, { throwIfNoEntry: false })?.isFile()) {
      add(`missing: ${rel}`);
      continue;
    }
    let fa: number;
    try {
      fa = outputWithin.openFile(actual, rel);
    } catch (e) {
      if (!(e instanceof OutsideWorkspaceError)) throw e;
      add(`${rel}: leads out of /output (to ${e.real}); not read`);
      continue;
    }
    let fe: number | undefined;
    try {
      fe = expectWithin ? expectWithin.openFile(expected, expected) : openSync(expected, 'r');
      const ext = path.extname(rel).toLowerCase();
      if (tolerance !== undefined && (ext === '.tsv' || ext === '.csv')) {
        compareTables(rel, readFileSync(fa, 'utf8'), readFileSync(fe, 'utf8'), ext === '.tsv' ? splitTsv : splitCsv, tolerance, add);
      } else {
        const at = firstDifference(fa, fe);
        if (at !== undefined) add(`${rel}: differs at byte ${at} (size ${fstatSync(fa).size}, expected ${fstatSync(fe).size})`);
      }
    } finally {
      closeSync(fa);
      if (fe !== undefined) closeSync(fe);
    }
  }
  if (more > 0) differences.push(`… and ${more} more difference${more === 1 ? '' : 's'}`);
  return { ok: differences.length === 0, differences };
}

/** Relative paths ('/'-separated; each directory's entries sorted, a directory's files where its name sorts) of the regular files under `dir`; [] when it does not exist. */
function listFiles(dir: string, prefix = ''): string[] {
  let names: string[];
  try {
    names = readdirSync(path.join(dir, prefix)).sort();
  } catch {
    return [];
  }
  const files: string[] = [];
  for (const name of names) {
    const rel = prefix ? `${prefix}/${name}` : name;
    const st = statSync(path.join(dir, rel), { throwIfNoEntry: false });
    if (st?.isDirectory()) for (const f of listFiles(dir, rel)) files.push(f);
    else if (st?.isFile()) files.push(rel);
  }
  return files;
}

/** Chunk size of the byte comparison (model outputs can be large: never read whole). */
const CHUNK = 1 << 20;

/** Offset (0-based) of the first byte where two open files differ, counting a length difference; undefined when identical. */
function firstDifference(fa: number, fb: number): number | undefined {
  const ba = Buffer.alloc(CHUNK);
  const bb = Buffer.alloc(CHUNK);
  for (let offset = 0; ; offset += CHUNK) {
    const na = readFull(fa, ba, offset);
    const nb = readFull(fb, bb, offset);
    const n = Math.min(na, nb);
    for (let i = 0; i < n; i++) if (ba[i] !== bb[i]) return offset + i;
    if (na !== nb) return offset + n;
    if (na < CHUNK) return undefined;
  }
}


/** Fill `buf` from `fd` at `position` (short only at end of file); the bytes read. */
function readFull(fd: number, buf: Buffer, position: number): number {
  let n = 0;
  while (n < buf.length) {
    const r = readSync(fd, buf, n, buf.length - n, position + n);
    if (r === 0) break;
    n += r;
  }
  return n;
}

type SplitRow = (line: string) => string[];

/**
 * Compare two tables line by line: cells equal as text, or both numbers within `tolerance`;
 * then the column count of each line and the line count. One final newline (LF or CRLF) is ignored.
 */
function compareTables(rel: string, actualText: string, expectedText: string, split: SplitRow, tolerance: Tolerance, add: (line: string) => void): void {
  const actual = lines(actualText);
  const expected = lines(expectedText);
  for (let i = 0; i < Math.min(actual.length, expected.length); i++) {
    const a = split(actual[i]);
    const e = split(expected[i]);
    if (a.length !== e.length) {
      add(`${rel}: line ${i + 1}: ${a.length} column${a.length === 1 ? '' : 's'}, expected ${e.length}`);
      continue;
    }
    for (let j = 0; j < a.length; j++) {
      if (a[j] === e[j]) continue;
      const x = toNumber(a[j]);
      const y = toNumber(e[j]);
      if (x !== undefined && y !== undefined) {
        if (x === y || Math.abs(x - y) <= (tolerance.absolute ?? 0) + (tolerance.relative ?? 0) * Math.abs(y)) continue;
        add(`${rel}: line ${i + 1}, column ${j + 1}: ${a[j]} ≠ expected ${e[j]} (${describeTolerance(tolerance)})`);
      } else {
        add(`${rel}: line ${i + 1}, column ${j + 1}: ${showCell(a[j])} ≠ expected ${showCell(e[j])}`);
      }
    }
  }
  if (actual.length !== expected.length) add(`${rel}: ${actual.length} line${actual.length === 1 ? '' : 's'}, expected ${expected.length}`);
}

function lines(text: string): string[] {
  if (text === '') return [];
  const all = text.split('\n').map((l) => (l.endsWith('\r') ? l.slice(0, -1) : l));
  if (all[all.length - 1] === '') all.pop();
  return all;
}

const splitTsv: SplitRow = (line) => line.split('\t');

/** RFC 4180 fields: comma-separated, a field in double quotes may hold commas and `""` for a quote. */
const splitCsv: SplitRow = (line) => {
  const fields: string[] = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quoted) {
      if (c === '"' && line[i + 1] === '"') (field += '"'), i++;
      else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') fields.push(field), (field = '');
    else field += c;
  }
  fields.push(field);
  return fields;
};

/** A cell as a number: decimal or scientific notation, `inf`/`nan` spellings included; undefined otherwise. */
function toNumber(cell: string): number | undefined {
  const s = cell.trim();
  if (/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(s)) return Number(s);
  if (/^[+-]?(inf|infinity)$/i.test(s)) return s.startsWith('-') ? -Infinity : Infinity;
  return undefined;
}

/** `tolerance 0.001`, `relative tolerance 0.01`, `tolerance 0.001 + 0.01 relative`, `no tolerance`. */
function describeTolerance(t: Tolerance): string {
  const abs = t.absolute ?? 0;
  const rel = t.relative ?? 0;
  if (abs && rel) return `tolerance ${abs} + ${rel} relative`;
  if (rel) return `relative tolerance ${rel}`;
  if (abs) return `tolerance ${abs}`;
  return 'no tolerance';
}

/** A non-numeric cell as shown: JSON-quoted when blank or padded, so the difference is visible. */
function showCell(cell: string): string {
  return cell === '' || cell.trim() !== cell ? JSON.stringify(cell) : cell;
}
