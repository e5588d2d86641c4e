/**
 * The content-addressed store: blobs under `.graph/cas/sha256/<hex>`, named by the SHA-256 of
 * their bytes (the same digest form as OCI descriptors, `sha256:<64 hex>`). Blobs are written to a
 * temp file, digested while written, and renamed into place, so a blob path holds the bytes its
 * name promises when written; `has` and `verify` prove it later.
 *
 * The verified-stat memo, `.graph/cas/verified.log`, is what makes that proof cheap. One line per
 * blob written or verified, the last line for a blob wins:
 *
 *     <64 hex digest> <size> <inode> <mtimeMs> <ctimeMs>\n
 *
 * A blob whose `lstat` still matches its line was not touched since its bytes were known good, so
 * `has` answers with one stat and reads nothing; any difference (a byte flipped in place changes
 * mtime and ctime, and a process cannot set ctime back; a replaced file has another inode) makes
 * `has` read the blob and hash it again: good bytes are remembered with the new stat, bad ones are
 * removed, so the blob counts as absent and the next write puts good bytes back. Lines are appended
 * with O_APPEND (atomic between processes); a torn last line (no newline) or a line that does not
 * parse is ignored, and a line whose numbers were damaged only costs a re-read. The memo is
 * rewritten (temp file, rename) to one line per blob when it has grown past twice that. Time
 * stamps come from the kernel: with multigrain time stamps (Linux 6.13+, ext4/XFS/btrfs/tmpfs) a
 * write right after graph's stat still gets a new ctime; on older kernels a write within the same
 * clock tick (≈4 ms) as graph's own write can go unseen.
 *
 * A hard link to a blob changes its ctime, so store blobs get other names only through `linkTo`,
 * which remembers the new stat; published files (dist/) are copies (`copyFileAtomic`), never links.
 */
import { createHash, hash } from 'node:crypto';
import { once } from 'node:events';
import { appendFileSync, closeSync, createReadStream, createWriteStream, mkdirSync, openSync, readFileSync, readSync, renameSync, rmSync, statSync, type Stats } from 'node:fs';
import { appendFile, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { linkOrCopy, tempPathFor, writeFileAtomic, writeFileAtomicAsync } from '../atomic.js';

const DIGEST = /^sha256:([a-f0-9]{64})$/;
const MEMO_FILE = 'verified.log';

/** Thrown for a malformed digest or a blob whose bytes do not match its digest. */
export class DigestError extends Error {}

/** What the memo keeps of a blob's stat: size, inode, mtime and ctime (ms, with the fraction). */
const statLine = (st: Stats) => `${st.size} ${st.ino} ${st.mtimeMs} ${st.ctimeMs}`;

/** SHA-256 (hex) of a file, read synchronously in 1 MiB chunks. @throws the fs error. */
function hashFileSync(file: string): string {
  const h = createHash('sha256');
  const fd = openSync(file, 'r');
  try {
    const buf = Buffer.allocUnsafe(1 << 20);
    for (let n; (n = readSync(fd, buf, 0, buf.length, null)) > 0; ) h.update(buf.subarray(0, n));
  } finally {
    closeSync(fd);
  }
  return h.digest('hex');
}

export class ContentStore {
  /** The verified-stat memo: hex digest → `statLine`, loaded on first use. */
  private memo?: Map<string, string>;
  /** Memo lines waiting for `rememberAsync`'s next append, and that append. */
  private memoQueue: string[] = [];
  private memoFlush?: Promise<void>;
  /** Blobs this object found corrupt and removed: still `corrupt` (not `missing`) until written again. */
  private readonly removed = new Set<string>();

  /** `dir/sha256`, normalized. */
  private readonly blobDir: string;

  /** @param dir absolute directory of the store (`.graph/cas`). */
  constructor(readonly dir: string) {
    this.blobDir = path.join(dir, 'sha256');
  }

  /** Absolute path of a blob. @throws DigestError for a malformed digest. */
  pathOf(digest: string): string {
    if (!DIGEST.test(digest)) throw new DigestError(`malformed digest '${digest}': expected sha256:<64 hex digits>`);
    // Concatenated, not path.join: a plan asks for one path per artifact of every cached node.
    return `${this.blobDir}/${digest.slice(7)}`;
  }

  /**
   * Is the blob present with the bytes its digest names? One stat when it is unchanged since its
   * bytes were last known good (module comment); otherwise the blob is read and hashed, and a
   * corrupt one is removed (`check` says which).
   */
  has(digest: string): boolean {
    return this.check(digest) === 'intact';
  }

  /**
   * `has`, telling a missing blob from one found corrupt (and removed, so the next write of that
   * digest stores good bytes; until then this object keeps calling it `corrupt`, so every node
   * that shares the blob is told the same). A malformed digest is `missing`.
   */
  check(digest: string): 'intact' | 'missing' | 'corrupt' {
    let file: string;
    try {
      file = this.pathOf(digest);
    } catch {
      return 'missing';
    }
    return this.checkStat(digest, file, statSync(file, { throwIfNoEntry: false }));
  }

  /**
   * `check` with the stat on libuv's thread pool: for the scheduler's nodes, whose blobs are
   * written on the pool meanwhile (a stat waits for the directory while a create or rename in it
   * is under way: ≈0.3 ms each on this machine's ext4 when done on the event loop).
   */
  async checkAsync(digest: string): Promise<'intact' | 'missing' | 'corrupt'> {
    let file: string;
    try {
      file = this.pathOf(digest);
    } catch {
      return 'missing';
    }
    let st: Stats | undefined;
    try {
      st = await stat(file);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    return this.checkStat(digest, file, st);
  }

  /** `check`'s verdict from the blob's stat (undefined: absent). */
  private checkStat(digest: string, file: string, st: Stats | undefined): 'intact' | 'missing' | 'corrupt' {
    const hex = digest.slice('sha256:'.length);
    if (!st) return this.removed.has(hex) ? 'corrupt' : 'missing';
    const line = statLine(st);
    if (this.loadMemo().get(hex) === line) return 'intact';
    let actual: string | undefined;
    try {
      actual = hashFileSync(file);
    } catch {
      // unreadable: as good as corrupt
    }
    // Remembered only if the file did not change while it was read.
    if (actual === hex && statLine(statSync(file)) === line) {
      this.remember(hex, line);
      return 'intact';
    }
    if (actual === hex) return 'intact';
    // Renamed away first: another process may be reading it, and its name must go at once.
    const bad = tempPathFor(file);
    try {
      renameSync(file, bad);
      rmSync(bad, { force: true });
    } catch {
      // removed by another process meanwhile
    }
    this.removed.add(hex);
    return 'corrupt';
  }

  /** Store bytes (replacing a corrupt blob of that digest); returns `{digest, size}` with size in bytes. */
  putBytes(data: Uint8Array | string): { digest: string; size: number } {
    const { bytes, digest, target } = this.blobOf(data);
    if (!this.has(digest)) {
      writeFileAtomic(target, bytes);
      this.remember(digest.slice(7), statLine(statSync(target)));
    }
    return { digest, size: bytes.byteLength };
  }

  /** `putBytes` with the write on libuv's thread pool (for the scheduler's bookkeeping). */
  async putBytesAsync(data: string | Uint8Array): Promise<{ digest: string; size: number }> {
    const { bytes, digest, target } = this.blobOf(data);
    if ((await this.checkAsync(digest)) !== 'intact') {
      await writeFileAtomicAsync(target, bytes);
      await this.rememberAsync(digest.slice(7), statLine(await stat(target)));
    }
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
   * @param expected when given, the digest the content must have; an intact blob of that digest
   *   is kept and the file not read.
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
      this.remember(digest.slice(7), statLine(statSync(target)));
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
    const file = createWriteStream(tmp);
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
        file,
      );
      const digest = `sha256:${hash.digest('hex')}`;
      if (expected !== undefined && expected !== digest) {
        throw new DigestError(`content of ${what} has digest ${digest}, expected ${expected}`);
      }
      const target = this.pathOf(digest);
      renameSync(tmp, target);
      this.remember(digest.slice(7), statLine(statSync(target)));
      return { digest, size };
    } finally {
      // A pipeline that fails early rejects before the stream has opened the temp file, which
      // would then appear after its removal: wait for the stream to close first.
      file.destroy();
      if (!file.closed) await once(file, 'close').catch(() => undefined);
      rmSync(tmp, { force: true });
    }
  }

  /**
   * Give an intact blob another name inside graph's state (`.graph/out`: image layouts, SIFs): a
   * hard link (a copy across file systems), replaced atomically. The link changes the blob's
   * ctime, so its new stat is remembered. Never for published files: see `copyFileAtomic`.
   * @throws DigestError when the blob is missing or corrupt; the fs error when linking fails.
   */
  linkTo(digest: string, target: string): void {
    const state = this.check(digest);
    if (state !== 'intact') throw new DigestError(`blob ${digest} is ${state} in the store`);
    const file = this.pathOf(digest);
    const before = statSync(file);
    linkOrCopy(file, target);
    const after = statSync(file);
    // Only the link may have changed it (same bytes, new ctime); anything else is re-verified later.
    if (after.ino === before.ino && after.size === before.size && after.mtimeMs === before.mtimeMs) this.remember(digest.slice(7), statLine(after));
  }

  /** Re-read a blob and check its digest; false when missing or corrupt (a corrupt one is kept). */
  async verify(digest: string): Promise<boolean> {
    let file: string;
    let before: Stats;
    try {
      file = this.pathOf(digest);
      before = statSync(file);
    } catch {
      return false;
    }
    const hash = createHash('sha256');
    for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
    if (`sha256:${hash.digest('hex')}` !== digest) return false;
    const line = statLine(before);
    if (statLine(statSync(file)) === line) this.remember(digest.slice(7), line);
    return true;
  }

  private get memoPath(): string {
    return path.join(this.dir, MEMO_FILE);
  }

  /** Read the memo (module comment), compacting it when it has grown past twice its blobs. */
  private loadMemo(): Map<string, string> {
    if (this.memo) return this.memo;
    const memo = new Map<string, string>();
    let text = '';
    try {
      text = readFileSync(this.memoPath, 'latin1');
    } catch {
      // no memo yet
    }
    let lines = 0;
    // Only whole lines: a torn last one (a crash mid-append) has no newline.
    // Lines are not parsed further: a stat is compared with the text `statLine` makes, so a
    // damaged line matches nothing (and a plan of 10k cached nodes saves a regex per line).
    for (let start = 0, end = text.indexOf('\n'); end !== -1; start = end + 1, end = text.indexOf('\n', start)) {
      lines++;
      if (text.charCodeAt(start + 64) === 32) memo.set(text.slice(start, start + 64), text.slice(start + 65, end));
    }
    this.memo = memo;
    if (lines > 2 * memo.size + 1000) {
      // A line another process appends during the rewrite can be lost: that costs a re-read.
      try {
        writeFileAtomic(this.memoPath, [...memo].map(([hex, st]) => `${hex} ${st}\n`).join(''));
      } catch {
        // a read-only store still works, only slower
      }
    }
    return memo;
  }

  private remember(hex: string, line: string): void {
    this.removed.delete(hex);
    this.loadMemo().set(hex, line);
    try {
      appendFileSync(this.memoPath, `${hex} ${line}\n`);
    } catch {
      // unrecorded: the blob is re-read next time, never served unchecked
    }
  }

  /**
   * `remember` for the scheduler's writes: the lines of one turn of the event loop go out in one
   * append on the thread pool, so a burst of finishing nodes costs one open, write and close, not
   * one per blob. Resolves when the line is appended (or could not be: as in `remember`).
   */
  private rememberAsync(hex: string, line: string): Promise<void> {
    this.removed.delete(hex);
    this.loadMemo().set(hex, line);
    this.memoQueue.push(`${hex} ${line}\n`);
    this.memoFlush ??= (async () => {
      await new Promise((resolve) => setImmediate(resolve));
      const text = this.memoQueue.join('');
      this.memoQueue = [];
      this.memoFlush = undefined;
      try {
        await appendFile(this.memoPath, text);
      } catch {
        // as in remember
      }
    })();
    return this.memoFlush;
  }
}
