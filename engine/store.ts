/**
 * The content-addressed store: blobs under `.graph/cas/sha256/<hex>`, named by the SHA-256 of
 * their bytes (the same digest form as OCI descriptors, `sha256:<64 hex>`). Blobs are written to a
 * temp file, digested while written, and renamed into place, so a blob path always holds exactly
 * the bytes its name promises; `verify` re-reads to prove it.
 */
import { createHash, hash } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { tempPathFor, writeFileAtomic, writeFileAtomicAsync } from './atomic.js';

const DIGEST = /^sha256:([a-f0-9]{64})$/;

/** Thrown for a malformed digest or a blob whose bytes do not match its digest. */
export class DigestError extends Error {}

export class ContentStore {
  /** @param dir absolute directory of the store (`.graph/cas`). */
  constructor(readonly dir: string) {}

  /** Absolute path of a blob. @throws DigestError for a malformed digest. */
  pathOf(digest: string): string {
    const m = DIGEST.exec(digest);
    if (!m) throw new DigestError(`malformed digest '${digest}': expected sha256:<64 hex digits>`);
    return path.join(this.dir, 'sha256', m[1]);
  }

  /** Is the blob present? (A cheap stat; `verify` checks its bytes.) */
  has(digest: string): boolean {
    try {
      return existsSync(this.pathOf(digest));
    } catch {
      return false;
    }
  }

  /** Digests of every blob present (one directory listing). */
  digests(): Set<string> {
    try {
      // Blobs are the 64-character names; temp files start with `.tmp-`.
      const names = readdirSync(path.join(this.dir, 'sha256'));
      const digests = new Set<string>();
      for (const n of names) if (n.length === 64 && n[0] !== '.') digests.add(`sha256:${n}`);
      return digests;
    } catch {
      return new Set();
    }
  }

  /** Store bytes; returns `{digest, size}` with size in bytes. */
  putBytes(data: Uint8Array | string): { digest: string; size: number } {
    const { bytes, digest, target } = this.blobOf(data);
    if (!existsSync(target)) writeFileAtomic(target, bytes);
    return { digest, size: bytes.byteLength };
  }

  /** `putBytes` with the write on libuv's thread pool (for the scheduler's bookkeeping). */
  async putBytesAsync(data: string | Uint8Array): Promise<{ digest: string; size: number }> {
    const { bytes, digest, target } = this.blobOf(data);
    if (!existsSync(target)) await writeFileAtomicAsync(target, bytes);
    return { digest, size: bytes.byteLength };
  }

  /** Bytes, their digest and their blob path (one-shot SHA-256: these blobs are small). */
  private blobOf(data: string | Uint8Array): { bytes: Uint8Array; digest: string; target: string } {
    const bytes = typeof data === 'string' ? Buffer.from(data) : data;
    const digest = `sha256:${hash('sha256', bytes, 'hex')}`;
    return { bytes, digest, target: this.pathOf(digest) };
  }

  /**
   * Copy a file into the store by streaming it once through SHA-256.
   * @param expected when given, the digest the content must have.
   * @throws DigestError when `expected` does not match; nothing is stored then.
   */
  async putFile(file: string, expected?: string): Promise<{ digest: string; size: number }> {
    if (expected !== undefined && this.has(expected)) return { digest: expected, size: statSync(this.pathOf(expected)).size };
    return this.putStream(createReadStream(file), expected, file);
  }

  /**
   * Move a finished file into the store under `digest`, the SHA-256 its writer computed from the
   * bytes it wrote (as `completeSif` does): a rename, so the bytes are neither copied nor read
   * again. The file is gone afterwards (also when the blob was already there). On another file
   * system it is copied with `putFile`, which checks the digest.
   * @throws DigestError for a malformed digest, or a mismatch found while copying; the fs error when
   *   the file cannot be moved.
   */
  async moveFile(file: string, digest: string): Promise<{ digest: string; size: number }> {
    const target = this.pathOf(digest);
    const size = statSync(file).size;
    mkdirSync(path.dirname(target), { recursive: true });
    try {
      renameSync(file, target);
      return { digest, size };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EXDEV') throw e;
    }
    try {
      return await this.putFile(file, digest);
    } finally {
      rmSync(file, { force: true });
    }
  }

  /**
   * Store a stream's bytes (e.g. a blob arriving from a registry), digesting them on the way.
   * @param expected the digest the content must have, checked before the blob becomes visible.
   * @param what names the source in errors.
   * @throws DigestError on a mismatch; the stream's own error if it fails. Nothing is stored then.
   */
  async putStream(source: Readable, expected?: string, what = 'stream'): Promise<{ digest: string; size: number }> {
    mkdirSync(path.join(this.dir, 'sha256'), { recursive: true });
    const tmp = tempPathFor(path.join(this.dir, 'sha256', 'blob'));
    const hash = createHash('sha256');
    let size = 0;
    try {
      await pipeline(
        source,
        async function* (chunks: AsyncIterable<Buffer>) {
          for await (const chunk of chunks) {
            hash.update(chunk);
            size += chunk.length;
            yield chunk;
          }
        },
        createWriteStream(tmp),
      );
      const digest = `sha256:${hash.digest('hex')}`;
      if (expected !== undefined && expected !== digest) {
        throw new DigestError(`content of ${what} has digest ${digest}, expected ${expected}`);
      }
      renameSync(tmp, this.pathOf(digest));
      return { digest, size };
    } finally {
      rmSync(tmp, { force: true });
    }
  }

  /** Re-read a blob and check its digest; false when missing or corrupt. */
  async verify(digest: string): Promise<boolean> {
    let file: string;
    try {
      file = this.pathOf(digest);
      statSync(file);
    } catch {
      return false;
    }
    const hash = createHash('sha256');
    for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
    return `sha256:${hash.digest('hex')}` === digest;
  }
}
