/**
 * The regular files of an image's root filesystem, read from its layers in memory: the layers are
 * applied in order (image spec v1.1 `layer.md` whiteouts: `.wh.NAME` deletes NAME, `.wh..wh..opq`
 * empties a directory of lower-layer content), nothing is unpacked to disk, and every file is
 * hashed (SHA-256 and SHA-1) as it streams past. The bytes of the files a caller asks for are
 * kept too (each at most `KEEP_LIMIT` bytes), for readers of package metadata (rules/sbom/).
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import path from 'node:path';
import type tar from 'tar-stream';
import { lazyRequire } from '../../engine/lazy.js';
import type { ContentStore } from '../../engine/cache/store.js';
import type { StoredImage } from './image.js';
import { CHUNK, entryName, feedLayer, OPAQUE, WHITEOUT } from './unpack.js';

const tarStream = lazyRequire<typeof tar>('tar-stream');

/** The most bytes of one kept file (a larger one is hashed but not kept). */
export const KEEP_LIMIT = 4 << 20;

/** A regular file of the image's root filesystem. */
export interface ImageFile {
  /** Path relative to the root, without a leading `/`. */
  readonly path: string;
  /** Hex SHA-256 of its bytes. */
  readonly sha256: string;
  /** Hex SHA-1 of its bytes (SPDX 2.3 requires it of every file). */
  readonly sha1: string;
  /** Index in the manifest's `layers` of the layer that wrote it last. */
  readonly layer: number;
}

/** What `readImageFiles` found: every regular file (sorted by path), and the kept files' text. */
export interface ImageFiles {
  readonly files: readonly ImageFile[];
  /** Path → UTF-8 text of each file `keep` chose that is in the final root filesystem. */
  readonly texts: ReadonlyMap<string, string>;
}

/**
 * Read every layer of `image` (bottom up) and list the resulting root filesystem's regular files.
 * @param keep which files' bytes to keep (by path relative to the root).
 * @throws UnpackError naming the layer when one cannot be read (zstd, corrupt gzip, a bad entry).
 */
export async function readImageFiles(store: ContentStore, image: StoredImage, keep: (path: string) => boolean, signal?: AbortSignal): Promise<ImageFiles> {
  const files = new Map<string, { sha256: string; sha1: string; layer: number }>();
  const texts = new Map<string, string>();
  /** Every directory some file was ever written below (a superset of the live ones). */
  const dirs = new Set<string>();
  const layers = image.manifest.layers;
  for (let index = 0; index < layers.length; index++) {
    const layer = layers[index];
    const extract = tarStream().extract();
    const input = feedLayer(createReadStream(store.pathOf(layer.digest), { highWaterMark: CHUNK }), layer, extract);
    // Deleting what is at a path: a subtree is walked only when something lies below it.
    const remove = (p: string) => {
      files.delete(p);
      texts.delete(p);
      if (!dirs.has(p)) return;
      for (const map of [files, texts] as Map<string, unknown>[]) for (const k of [...map.keys()]) if (k.startsWith(`${p}/`)) map.delete(k);
    };
    const writtenHere = new Set<string>();
    for await (const entry of extract) {
      signal?.throwIfAborted();
      const h = entry.header;
      const name = entryName(h.name, layer.digest);
      const base = path.posix.basename(name);
      const dir = path.posix.dirname(name) === '.' ? '' : path.posix.dirname(name);
      if (!name) {
        entry.resume();
        continue;
      }
      if (base === OPAQUE) {
        // Lower layers' content under dir goes; this layer's own entries stay.
        for (const map of [files, texts] as Map<string, unknown>[]) {
          for (const p of [...map.keys()]) if (p.startsWith(dir ? `${dir}/` : '') && !writtenHere.has(p)) map.delete(p);
        }
        entry.resume();
        continue;
      }
      if (base.startsWith(WHITEOUT)) {
        remove(path.posix.join(dir, base.slice(WHITEOUT.length)));
        entry.resume();
        continue;
      }
      // Whatever was at this path (a file, or a tree if this is not a directory) is replaced.
      if (h.type !== 'directory') remove(name);
      if (h.type === 'file' || h.type === 'contiguous-file') {
        const hash = createHash('sha256');
        const sha1 = createHash('sha1');
        const kept = keep(name) && (h.size ?? 0) <= KEEP_LIMIT;
        const chunks: Buffer[] = [];
        for await (const chunk of entry) {
          hash.update(chunk as Buffer);
          sha1.update(chunk as Buffer);
          if (kept) chunks.push(chunk as Buffer);
        }
        files.set(name, { sha256: hash.digest('hex'), sha1: sha1.digest('hex'), layer: index });
        for (let d = dir; d && !dirs.has(d); d = path.posix.dirname(d) === '.' ? '' : path.posix.dirname(d)) dirs.add(d);
        if (kept) texts.set(name, Buffer.concat(chunks).toString('utf8'));
        writtenHere.add(name);
      } else {
        entry.resume();
      }
    }
    await input;
  }
  return {
    files: [...files].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([p, f]) => ({ path: p, ...f })),
    texts,
  };
}

