/**
 * Image layers: deterministic gzip-compressed tar archives (OCI image spec v1.1, "Image Layer
 * Filesystem Changeset", media type `application/vnd.oci.image.layer.v1.tar+gzip`).
 *
 * Determinism: entries sorted by path, parents before children; every parent directory present;
 * mtime from SOURCE_DATE_EPOCH (or 0); uid/gid 0 and empty user/group names; modes normalized
 * (directories 0755, files 0644 or 0755 when executable, unless declared or given by the packages
 * a root filesystem came from), never read from the umask. The same inputs give the same bytes,
 * hence the same digests, on any machine with the same zlib: the tar is gzipped in 128 KiB blocks
 * compressed in parallel (rules/oci/gzip.ts), cut by byte count alone, with a fixed gzip header
 * (mtime 0, OS 3), so neither timing nor the number of cores changes a byte.
 *
 * The layer's diff_id (SHA-256 of the uncompressed tar, for the config's rootfs) and its digest
 * (SHA-256 of the compressed blob, for the manifest) are computed in one streaming pass while the
 * blob is written into the content-addressed store.
 */
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createReadStream, createWriteStream, lstatSync, readdirSync, readlinkSync, renameSync, rmSync, mkdirSync, type Stats } from 'node:fs';
import path from 'node:path';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type tar from 'tar-stream';
import { lazyRequire } from '../../engine/lazy.js';
import { tempPathFor } from '../../engine/atomic.js';
import type { Boundary } from '../../engine/validate/boundary.js';
import type { ContentStore } from '../../engine/cache/store.js';
import { gzipParallel } from './gzip.js';

const tarStream = lazyRequire<typeof tar>('tar-stream');

export const MEDIA_TYPE_LAYER_GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';
export const MEDIA_TYPE_LAYER_TAR = 'application/vnd.oci.image.layer.v1.tar';

/** One entry of a layer. `path` is relative to the image root, POSIX, no leading '/'. */
export type LayerEntry =
  | { readonly type: 'file'; readonly path: string; readonly mode: number; readonly source: string; readonly size: number }
  | { readonly type: 'data'; readonly path: string; readonly mode: number; readonly data: Buffer }
  | { readonly type: 'directory'; readonly path: string; readonly mode: number }
  | { readonly type: 'symlink'; readonly path: string; readonly target: string };

/** A layer written into the store. */
export interface LayerBlob {
  readonly mediaType: string;
  /** `sha256:<hex>` of the compressed blob (the manifest's layer descriptor). */
  readonly digest: string;
  /** Size of the compressed blob in bytes. */
  readonly size: number;
  /** `sha256:<hex>` of the uncompressed tar (the config's rootfs.diff_ids). */
  readonly diffId: string;
}

/** Thrown for a layer entry that cannot be placed in an image (bad path, unreadable source). */
export class LayerError extends Error {}

/** Normalize an in-image path: absolute or relative in, relative POSIX out; rejects `..`. */
export function imagePath(p: string): string {
  const norm = path.posix.normalize(`/${p}`).slice(1);
  if (norm.split('/').includes('..')) throw new LayerError(`path '${p}' leaves the image root`);
  return norm.replace(/\/$/, '');
}

/**
 * The permission bits to give `rel` (its in-image path) whose on-disk stats are `stats`, or
 * undefined for the normalised default. For `entriesForCopy`.
 */
export type ModeOf = (rel: string, stats: Stats) => number | undefined;

/**
 * Every file's and directory's permission bits as they are on disk (setuid, sticky, 0700…). Only
 * for trees whose every mode was set explicitly (chmod, never the umask), such as test fixtures.
 */
export const onDiskModes: ModeOf = (_rel, stats) => stats.mode & 0o7777;

/**
 * Entries for copying `source` (a file, symlink or directory tree) to `dest` in the image.
 * Modes never depend on the umask: `modeOf`'s answer, else normalised.
 * @param mode for files: the declared mode, or undefined for 0755 if any execute bit is set, else
 *   0644. Directories are 0755.
 * @param modeOf overrides those for the paths it answers (a root filesystem unpacked from
 *   packages gives the packages' own modes).
 * @throws LayerError when `source` does not exist.
 */
export function entriesForCopy(source: string, dest: string, mode?: number, modeOf?: ModeOf): LayerEntry[] {
  const out: LayerEntry[] = [];
  const visit = (abs: string, rel: string) => {
    let st;
    try {
      st = lstatSync(abs);
    } catch {
      throw new LayerError(`cannot read '${abs}'`);
    }
    if (st.isSymbolicLink()) out.push({ type: 'symlink', path: rel, target: readlinkSync(abs) });
    else if (st.isDirectory()) {
      if (rel) out.push({ type: 'directory', path: rel, mode: modeOf?.(rel, st) ?? 0o755 });
      for (const name of readdirSync(abs).sort()) visit(path.join(abs, name), rel ? `${rel}/${name}` : name);
    } else if (st.isFile()) {
      const fileMode = modeOf?.(rel, st) ?? mode ?? (st.mode & 0o111 ? 0o755 : 0o644);
      out.push({ type: 'file', path: rel, mode: fileMode, source: abs, size: st.size });
    }
    // sockets, fifos and devices are not copied into images
  };
  visit(source, imagePath(dest));
  return out;
}

/**
 * Sort entries (parents first), add missing parent directories (0755), and let a later entry for
 * the same path replace an earlier one (the last copy wins, as in a Dockerfile).
 */
export function normalizeEntries(entries: readonly LayerEntry[]): LayerEntry[] {
  const byPath = new Map<string, LayerEntry>();
  for (const e of entries) {
    if (!e.path) continue; // the root itself
    const p = imagePath(e.path);
    byPath.set(p, { ...e, path: p });
    for (let dir = path.posix.dirname(p); dir !== '.' && !byPath.has(dir); dir = path.posix.dirname(dir)) {
      byPath.set(dir, { type: 'directory', path: dir, mode: 0o755 });
    }
  }
  // Byte order of the path components, so a directory comes right before its contents.
  return [...byPath.values()].sort((a, b) => comparePaths(a.path, b.path));
}

function comparePaths(a: string, b: string): number {
  const pa = a.split('/');
  const pb = b.split('/');
  for (let i = 0; i < Math.min(pa.length, pb.length); i++) {
    if (pa[i] !== pb[i]) return pa[i] < pb[i] ? -1 : 1;
  }
  return pa.length - pb.length;
}

type TarHeader = Partial<tar.Header> & { name: string };

/** A transform that hashes and counts what passes through. */
class Digester extends Transform {
  private readonly hash = createHash('sha256');
  size = 0;
  _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.hash.update(chunk);
    this.size += chunk.length;
    done(null, chunk);
  }
  digest(): string {
    return `sha256:${this.hash.digest('hex')}`;
  }
}

export interface WriteLayerOptions {
  /** Seconds since the epoch for every entry's mtime (SOURCE_DATE_EPOCH); default 0. */
  readonly mtime?: number;
  /** gzip level, 1–9; default 6 (as `gzip -6`). */
  readonly level?: number;
  /** Blocks compressed at once (gzipParallel's concurrency); default: the available parallelism. Never changes the bytes. */
  readonly concurrency?: number;
  readonly signal?: AbortSignal;
  /**
   * Read files only inside this boundary: each file entry's source is opened without following a
   * link at its end, then checked on the open descriptor (boundary.ts), so a file replaced by a
   * link, or a directory on its way, since the entries were listed is refused, not read.
   */
  readonly within?: Boundary;
}

/**
 * Write entries as a gzip-compressed tar layer into the store.
 * @returns the layer's media type, digest, size and diff_id.
 * @throws LayerError for unsafe paths; OutsideWorkspaceError for a source outside `within`; fs
 *   errors for unreadable sources. Nothing is left in the store on failure (the blob is renamed
 *   into place only when complete).
 */
export async function writeLayer(entries: readonly LayerEntry[], store: ContentStore, options: WriteLayerOptions = {}): Promise<LayerBlob> {
  const mtime = new Date((options.mtime ?? 0) * 1000);
  const pack = tarStream().pack();
  const uncompressed = new Digester();
  const compressed = new Digester();
  const blobDir = path.join(store.dir, 'sha256');
  mkdirSync(blobDir, { recursive: true });
  const tmp = tempPathFor(path.join(blobDir, 'layer'));
  const header = { uid: 0, gid: 0, uname: '', gname: '', mtime };

  const feed = (async () => {
    for (const e of normalizeEntries(entries)) {
      options.signal?.throwIfAborted();
      if (e.type === 'directory') await addEntry(pack, { ...header, name: `${e.path}/`, type: 'directory', mode: e.mode });
      else if (e.type === 'symlink') await addEntry(pack, { ...header, name: e.path, type: 'symlink', linkname: e.target, mode: 0o777 });
      else if (e.type === 'data') await addEntry(pack, { ...header, name: e.path, type: 'file', mode: e.mode, size: e.data.length }, e.data);
      else await addFile(pack, { ...header, name: e.path, type: 'file', mode: e.mode, size: e.size }, e.source, options.within);
    }
    pack.finalize();
  })();
  feed.catch((err) => pack.destroy(err));

  const file = createWriteStream(tmp);
  try {
    await Promise.all([
      pipeline(pack, uncompressed, (source: AsyncIterable<Buffer>) => gzipParallel(source, options), compressed, file, { signal: options.signal }),
      feed,
    ]);
    const digest = compressed.digest();
    renameSync(tmp, store.pathOf(digest));
    return { mediaType: MEDIA_TYPE_LAYER_GZIP, digest, size: compressed.size, diffId: uncompressed.digest() };
  } catch (e) {
    // The pipeline rejects with its own AbortError; callers are promised the signal's reason.
    if (options.signal?.aborted) throw options.signal.reason;
    throw e;
  } finally {
    // A failed or aborted pipeline rejects before the file stream has finished opening and closing
    // the temp file: wait for that, or the file would appear after its removal.
    file.destroy();
    if (!file.closed) await once(file, 'close').catch(() => undefined);
    rmSync(tmp, { force: true });
  }
}

function addEntry(pack: tar.Pack, header: TarHeader, data?: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    pack.entry(header, data ?? Buffer.alloc(0), (err) => (err ? reject(err) : resolve()));
  });
}

function addFile(pack: tar.Pack, header: TarHeader, source: string, within: Boundary | undefined): Promise<void> {
  // Opened (and checked) before the entry starts, so a refusal leaves no half-written entry.
  const fd = within?.openFile(source, path.relative(within.root, source), true);
  return new Promise((resolve, reject) => {
    const sink = pack.entry(header, (err) => (err ? reject(err) : resolve()));
    const src = fd === undefined ? createReadStream(source, { highWaterMark: 1 << 20 }) : createReadStream('', { fd, highWaterMark: 1 << 20 });
    // pipeline, not pipe: when the pack is destroyed (an abort) the entry errors, and pipe would
    // re-emit that error with no listener (an uncaught exception) and leave the file open.
    pipeline(src, sink).catch(reject);
  });
}
