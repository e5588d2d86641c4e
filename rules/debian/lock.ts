/**
 * `images.lock`: the exact Debian packages of every `debian:` image, so a build downloads the same
 * bytes until the lock is updated. JSON, for exactness; object keys sorted and packages sorted by
 * name, two-space indent and a final newline, so a diff shows only what changed. Written atomically.
 *
 *     {
 *       "images": {
 *         "base": {
 *           "architecture": "amd64",
 *           "requested": ["busybox-static"],
 *           "packages": [
 *             { "architecture": "amd64", "filename": "pool/main/…", "name": "busybox-static",
 *               "sha256": "…", "size": 928188, "version": "1:1.35.0-4+deb12u1+b1" }
 *           ],
 *           "suite": "bookworm"
 *         }
 *       },
 *       "version": 1
 *     }
 *
 * A multi-platform image (`platforms:`, rules/build/platform.ts) has one entry per platform, named
 * `NAME@OS/ARCH` (`"base@linux/arm64"`), each of the form above with its own `architecture`; a
 * single-platform image keeps the one entry `NAME`, so locks written before platforms still read.
 */
import { readFileSync } from 'node:fs';
import { writeFileAtomic } from '../../engine/atomic.js';
import type { PackagePin } from './resolve.js';

/** The lock file's name, beside `images.yaml`. */
export const LOCK_FILE = 'images.lock';

/** The lock format's version; a reader refuses any other. */
export const LOCK_VERSION = 1;

/** One image's pinned packages. */
export interface LockedImage {
  /** Debian suite, e.g. `bookworm`. */
  readonly suite: string;
  /** Debian architecture, e.g. `amd64`. */
  readonly architecture: string;
  /** The package names the image asked for, sorted: the lock is stale when they change. */
  readonly requested: readonly string[];
  /** The whole closure, sorted by name. */
  readonly packages: readonly PackagePin[];
}

/** The whole lock: image name → its packages. */
export interface ImagesLock {
  readonly version: typeof LOCK_VERSION;
  readonly images: Readonly<Record<string, LockedImage>>;
}

/** A lock file that cannot be used; the message names the file and the bad field. */
export class LockError extends Error {
  override name = 'LockError';
}

/** A lock with no images. */
export function emptyLock(): ImagesLock {
  return { version: LOCK_VERSION, images: {} };
}

/**
 * Read and check a lock file.
 * @returns the lock, or an empty lock when the file does not exist.
 * @throws LockError for invalid JSON, another format version, or a malformed entry (naming its path
 *   in the JSON, e.g. `images.base.packages[2].sha256`), saying to fix or delete the file and resolve again.
 */
export function readLock(file: string): ImagesLock {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return emptyLock();
    throw e;
  }
  return parseLock(text, file);
}

/**
 * Parse and check lock text (see `readLock`); `file` is only for messages.
 * @throws LockError as `readLock`.
 */
export function parseLock(text: string, file: string = LOCK_FILE): ImagesLock {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (e) {
    throw new LockError(`${file} is not valid JSON (${(e as Error).message}): fix it, or delete it and resolve the images again`);
  }
  const bad = (where: string, what: string): never => {
    throw new LockError(`${file}: ${where} ${what}: fix it, or delete it and resolve the images again`);
  };
  if (!isObject(data)) return bad('the top level', 'must be an object');
  if (data.version !== LOCK_VERSION) bad('version', `is ${JSON.stringify(data.version)}, this graph reads version ${LOCK_VERSION}`);
  if (!isObject(data.images)) return bad('images', 'must be an object');
  const images: Record<string, LockedImage> = {};
  for (const [name, image] of Object.entries(data.images)) {
    const at = `images.${name}`;
    if (!isObject(image)) return bad(at, 'must be an object');
    if (typeof image.suite !== 'string' || !image.suite) bad(`${at}.suite`, 'must be a suite name');
    if (typeof image.architecture !== 'string' || !image.architecture) bad(`${at}.architecture`, 'must be an architecture name');
    if (!Array.isArray(image.requested) || !image.requested.every((r) => typeof r === 'string' && r)) {
      return bad(`${at}.requested`, 'must be a list of package names');
    }
    if (!Array.isArray(image.packages)) return bad(`${at}.packages`, 'must be a list');
    const packages = image.packages.map((p: unknown, i: number): PackagePin => {
      const pat = `${at}.packages[${i}]`;
      if (!isObject(p)) return bad(pat, 'must be an object');
      for (const key of ['name', 'version', 'architecture', 'filename'] as const) {
        if (typeof p[key] !== 'string' || !p[key]) bad(`${pat}.${key}`, 'must be a non-empty string');
      }
      if (typeof p.size !== 'number' || !Number.isSafeInteger(p.size) || p.size < 0) bad(`${pat}.size`, 'must be a byte count');
      if (typeof p.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(p.sha256)) bad(`${pat}.sha256`, 'must be 64 lowercase hex digits');
      const { name, version, architecture, filename, size, sha256 } = p as unknown as PackagePin;
      return { name, version, architecture, filename, size, sha256 };
    });
    images[name] = { suite: image.suite as string, architecture: image.architecture as string, requested: [...(image.requested as string[])].sort(), packages };
  }
  return { version: LOCK_VERSION, images };
}

/**
 * The lock's canonical text: keys sorted at every level, packages sorted by name, 2-space indent,
 * final newline. Equal locks give byte-equal text.
 */
export function formatLock(lock: ImagesLock): string {
  const images: Record<string, LockedImage> = {};
  for (const [name, image] of Object.entries(lock.images)) {
    images[name] = { ...image, packages: [...image.packages].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)) };
  }
  return `${JSON.stringify(sortKeys({ version: lock.version, images }), null, 2)}\n`;
}

/**
 * Write `lock` to `file` atomically (temp file + rename) in canonical form (`formatLock`).
 * @throws the fs error when the directory is not writable.
 */
export function writeLock(file: string, lock: ImagesLock): void {
  writeFileAtomic(file, formatLock(lock));
}

/** A copy of `lock` with `image` set to `entry` (or removed when `entry` is undefined). */
export function withLockedImage(lock: ImagesLock, image: string, entry: LockedImage | undefined): ImagesLock {
  const images = { ...lock.images };
  if (entry) images[image] = entry;
  else delete images[image];
  return { version: LOCK_VERSION, images };
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (!isObject(value)) return value;
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(value).sort()) out[key] = sortKeys(value[key]);
  return out;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
