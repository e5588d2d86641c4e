/**
 * Input files: expanding a node's declared inputs (files, directories with .dockerignore, globs)
 * into workspace-relative file lists, and digesting them with a stat memo so that a no-op run
 * reads no unchanged file's bytes.
 *
 * A file's fingerprint is `sha256:<hex>` of its bytes, with `+x` appended when any execute bit is
 * set (a copied file's mode is part of the image), or `symlink:<target>` for a symbolic link.
 * The memo maps path → (size, mtime, inode, fingerprint) and is trusted only for files whose mtime
 * is older than the moment they were hashed (git's "racy clean" rule): a file rewritten within the
 * same clock tick is hashed again. A file that turns out, when opened, to lie outside the workspace
 * boundary (boundary.ts; a directory on its way replaced by a link since validation) is not read:
 * its fingerprint is `outside-workspace:<real path>`, and the node that reads it fails.
 */
import { createHash } from 'node:crypto';
import { closeSync, lstatSync, readFileSync, readSync, readdirSync, readlinkSync, type Stats } from 'node:fs';
import path from 'node:path';
import type { Ignore as Dockerignore } from '@balena/dockerignore';
import type FastGlob from 'fast-glob';
import { readJsonFile, writeFileAtomic } from '../atomic.js';
import { Boundary, OutsideWorkspaceError } from '../validate/boundary.js';
import { lazyRequire } from '../lazy.js';

// @balena/dockerignore is CommonJS with `module.exports = factory`; its types say `export default`.
const createDockerignore = lazyRequire<() => Dockerignore>('@balena/dockerignore');
const fg = lazyRequire<typeof FastGlob>('fast-glob');

/** Characters fast-glob may read as pattern syntax; a path without any is plain (and fast-glob stays unloaded). */
const GLOB_SYNTAX = /[*?[\]{}()!+@\\]/;

/** fast-glob's `isDynamicPattern`, without loading fast-glob for plain paths. */
function isDynamic(pattern: string): boolean {
  return GLOB_SYNTAX.test(pattern) && fg().isDynamicPattern(pattern);
}

/** One declared input of a node; paths are workspace-relative, POSIX separators. */
export type InputSpec =
  | { readonly kind: 'file'; readonly path: string }
  /** Every file under `path`; `ignoreFile` (e.g. `.dockerignore`, relative to `path`) excludes some. */
  | { readonly kind: 'dir'; readonly path: string; readonly ignoreFile?: string }
  /** Files matching a glob (a directory match brings in every file under it). */
  | { readonly kind: 'glob'; readonly pattern: string };

/**
 * The directory part of a glob: its leading components without pattern syntax (`zoo/*.pwm` →
 * `zoo`, `**` → `.`), which fast-glob reads from, following a symbolic link there. A plain path is
 * its own base.
 */
export function globBase(pattern: string): string {
  if (!isDynamic(pattern)) return pattern;
  const parts = pattern.split('/');
  const fixed: string[] = [];
  for (const part of parts.slice(0, -1)) {
    if (isDynamic(part)) break;
    fixed.push(part);
  }
  return fixed.length ? fixed.join('/') || '/' : '.';
}

/** The directory of graph's own state, never an input. */
export const STATE_DIR = '.graph';

/** Does a workspace-relative path name something on disk? */
export function inputExists(root: string, spec: InputSpec): boolean {
  if (spec.kind === 'glob') return globFiles(root, spec.pattern).length > 0;
  try {
    const st = lstatSync(path.join(root, spec.path));
    return spec.kind === 'dir' ? st.isDirectory() : !st.isDirectory();
  } catch {
    return false;
  }
}

function globFiles(root: string, pattern: string): string[] {
  if (!isDynamic(pattern)) {
    try {
      const st = lstatSync(path.join(root, pattern));
      return st.isDirectory() ? walk(root, pattern, undefined) : [path.posix.normalize(pattern)];
    } catch {
      return [];
    }
  }
  const matches = fg().sync(pattern, { cwd: root, dot: true, onlyFiles: false, markDirectories: true, followSymbolicLinks: false });
  const out: string[] = [];
  for (const m of matches) {
    if (m.endsWith('/')) for (const f of walk(root, m.slice(0, -1), undefined)) out.push(f);
    else out.push(path.posix.normalize(m));
  }
  return out;
}

function walk(root: string, dir: string, ignore: Dockerignore | undefined): string[] {
  const out: string[] = [];
  const prune = ignore !== undefined;
  const visit = (rel: string) => {
    const abs = path.join(root, dir, rel);
    for (const entry of readdirSync(abs, { withFileTypes: true })) {
      const child = rel ? `${rel}/${entry.name}` : entry.name;
      if (!rel && entry.name === STATE_DIR && path.resolve(root, dir) === path.resolve(root)) continue;
      if (entry.isDirectory()) {
        // A directory excluded by .dockerignore may still have re-included files ("!dir/keep"),
        // so it is descended into; its files are tested one by one.
        visit(child);
      } else if (!prune || !ignore.ignores(child)) {
        out.push(dir === '.' ? child : `${path.posix.normalize(dir)}/${child}`);
      }
    }
  };
  visit('');
  return out;
}

/**
 * What a glob (or a plain path) matches, workspace-relative, sorted, directories not expanded;
 * for copying with Dockerfile COPY semantics.
 */
export function matchPaths(root: string, pattern: string): string[] {
  if (!isDynamic(pattern)) return inputExists(root, { kind: 'file', path: pattern }) || inputExists(root, { kind: 'dir', path: pattern }) ? [path.posix.normalize(pattern)] : [];
  return fg().sync(pattern, { cwd: root, dot: true, onlyFiles: false, followSymbolicLinks: false }).sort();
}

/** Whether a copy source is a glob (several matches land in a directory). */
export function isGlob(pattern: string): boolean {
  return isDynamic(pattern);
}

/**
 * Expand input specs into the sorted, de-duplicated list of workspace-relative files they cover.
 * Missing inputs expand to nothing (validation reports them earlier).
 */
export function expandInputs(root: string, specs: readonly InputSpec[]): string[] {
  const files = new Set<string>();
  for (const spec of specs) {
    try {
      if (spec.kind === 'file') files.add(path.posix.normalize(spec.path));
      else if (spec.kind === 'glob') for (const f of globFiles(root, spec.pattern)) files.add(f);
      else {
        let ignore: Dockerignore | undefined;
        if (spec.ignoreFile) {
          try {
            ignore = createDockerignore()().add(readFileSync(path.join(root, spec.path, spec.ignoreFile), 'utf8'));
          } catch {
            ignore = undefined;
          }
        }
        for (const f of walk(root, spec.path, ignore)) files.add(f);
      }
    } catch {
      // Unreadable or vanished: contributes nothing; the rule's own checks report it.
    }
  }
  return [...files].sort();
}

/** Counters for tests and benchmarks: proof that a warm run reads no file bytes. */
export interface DigestStats {
  filesHashed: number;
  bytesRead: number;
  memoHits: number;
}

type MemoEntry = [size: number, mtimeMs: number, ino: number, fingerprint: string, hashedAtMs: number];

const MEMO_VERSION = 1;
const CHUNK = 1 << 20;

/**
 * Digests workspace files, memoized by (path, size, mtime, inode) across runs in
 * `.graph/stat-memo.json`. Not safe for concurrent use by two objects in one process; two
 * processes may share the memo file (writes are atomic, last writer wins, entries are re-verified).
 */
export class FileDigester {
  readonly stats: DigestStats = { filesHashed: 0, bytesRead: 0, memoHits: 0 };
  private readonly memo: Map<string, MemoEntry>;
  private readonly run = new Map<string, string>();
  private dirty = false;
  private readonly buffer = Buffer.allocUnsafe(CHUNK);

  /**
   * @param root absolute workspace directory.
   * @param memoPath absolute path of the memo file, or undefined for no persistent memo.
   * @param boundary what may be read (the declarations' `boundary`); default: the workspace alone.
   */
  constructor(
    private readonly root: string,
    private readonly memoPath: string | undefined,
    private readonly boundary: Boundary = new Boundary(root),
  ) {
    const loaded = memoPath ? readJsonFile(memoPath) : undefined;
    const valid =
      loaded && typeof loaded === 'object' && (loaded as { version?: unknown }).version === MEMO_VERSION;
    this.memo = new Map(valid ? Object.entries((loaded as { entries: Record<string, MemoEntry> }).entries ?? {}) : []);
  }

  /**
   * Fingerprint of one workspace-relative file (see the module comment), or `missing` if it does
   * not exist. Never throws for a missing file; rethrows other I/O errors (EACCES, EIO).
   */
  fingerprint(rel: string): string {
    const cached = this.run.get(rel);
    if (cached !== undefined) return cached;
    const abs = path.join(this.root, rel);
    let st: Stats;
    try {
      st = lstatSync(abs);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR') {
        this.run.set(rel, 'missing');
        return 'missing';
      }
      throw e;
    }
    const m = this.memo.get(rel);
    let fp: string;
    if (m && m[0] === st.size && m[1] === st.mtimeMs && m[2] === st.ino && st.mtimeMs < m[4]) {
      this.stats.memoHits++;
      fp = m[3];
    } else {
      const hashedAt = Date.now();
      if (st.isSymbolicLink()) fp = `symlink:${readlinkSync(abs)}`;
      else fp = this.fileFingerprint(abs, rel, st);
      // An outside file is never remembered: the next run looks again.
      if (!fp.startsWith('outside-workspace:')) {
        this.memo.set(rel, [st.size, st.mtimeMs, st.ino, fp, hashedAt]);
        this.dirty = true;
      }
    }
    this.run.set(rel, fp);
    return fp;
  }

  /**
   * The fingerprint of what lstat saw as a regular file: `sha256:<hex>[+x]`, or, when it is now
   * outside the boundary, `outside-workspace:<real path>` without reading a byte; a link swapped in
   * since the lstat is not followed (`symlink:<target>`).
   */
  private fileFingerprint(abs: string, rel: string, st: Stats): string {
    let fd: number;
    try {
      fd = this.boundary.openFile(abs, rel, true);
    } catch (e) {
      if (e instanceof OutsideWorkspaceError) return `outside-workspace:${e.real}`;
      if ((e as NodeJS.ErrnoException).code === 'ELOOP') return `symlink:${readlinkSync(abs)}`;
      throw e;
    }
    return `sha256:${this.hashFd(fd)}${st.mode & 0o111 ? '+x' : ''}`;
  }

  /** SHA-256 hex of an open file's bytes; closes it. */
  private hashFd(fd: number): string {
    const hash = createHash('sha256');
    try {
      for (;;) {
        const n = readSync(fd, this.buffer, 0, CHUNK, null);
        if (n === 0) break;
        this.stats.bytesRead += n;
        hash.update(n === CHUNK ? this.buffer : this.buffer.subarray(0, n));
      }
    } finally {
      closeSync(fd);
    }
    this.stats.filesHashed++;
    return hash.digest('hex');
  }

  /** Persist the memo if anything changed (atomic write). */
  save(): void {
    if (!this.memoPath || !this.dirty) return;
    const entries: Record<string, MemoEntry> = {};
    for (const [k, v] of this.memo) entries[k] = v;
    writeFileAtomic(this.memoPath, JSON.stringify({ version: MEMO_VERSION, entries }));
    this.dirty = false;
  }
}
