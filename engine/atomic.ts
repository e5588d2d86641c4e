/**
 * Atomic file writes: data goes to a temporary file in the same directory and is renamed over
 * the target, so a reader sees the old content or the new, never a torn write, and two processes
 * writing the same path leave one whole version.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, constants, copyFileSync, linkSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';

/**
 * This process's part of temp names: its pid, then a random word (pids repeat across hosts sharing
 * a directory) to which a counter is appended (one random draw per process, not per file).
 */
const TEMP_TAG = `${process.pid}-${randomBytes(4).toString('hex')}`;
let tempCount = 0;

/**
 * A unique temp path beside `target` (same directory, so rename stays on one file system):
 * `.tmp-NAME-PID-HEX`, the form the temp sweep (engine/tmp.ts) knows.
 */
export function tempPathFor(target: string): string {
  return path.join(path.dirname(target), `.tmp-${path.basename(target)}-${TEMP_TAG}${(tempCount++).toString(16)}`);
}

/**
 * Write `data` to `target` atomically, creating parent directories. `data` may be a list of
 * chunks, written one after the other (no copy joins them first).
 * @throws the fs error if the write or rename fails; the temp file is removed first.
 */
export function writeFileAtomic(target: string, data: string | Uint8Array | readonly Uint8Array[]): void {
  const tmp = tempPathFor(target);
  const write = () => {
    if (typeof data === 'string' || data instanceof Uint8Array) return writeFileSync(tmp, data);
    const fd = openSync(tmp, 'w');
    try {
      for (const chunk of data) for (let at = 0; at < chunk.length; ) at += writeSync(fd, chunk, at);
    } finally {
      closeSync(fd);
    }
  };
  try {
    try {
      write();
    } catch (e) {
      // The directory is usually there; create it only when it is not (saves a syscall per write).
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      mkdirSync(path.dirname(target), { recursive: true });
      write();
    }
    renameSync(tmp, target);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}

/**
 * `writeFileAtomic` on libuv's thread pool: the event loop stays free while the file is created
 * (creating a file costs ≈0.5 ms on these machines, and the scheduler finishes a node with three).
 * @throws the fs error if the write or rename fails; the temp file is removed first.
 */
export async function writeFileAtomicAsync(target: string, data: string | Uint8Array): Promise<void> {
  const tmp = tempPathFor(target);
  try {
    try {
      await writeFile(tmp, data);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      await mkdir(path.dirname(target), { recursive: true });
      await writeFile(tmp, data);
    }
    await rename(tmp, target);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

/**
 * Run `fill(tmp)` on a temp path beside `target`, then rename it to `target`; on failure the temp
 * file is removed and `target` is untouched. Creates `target`'s directory.
 */
export async function withTempFile<T>(target: string, fill: (tmp: string) => Promise<T>): Promise<T> {
  const tmp = tempPathFor(target);
  mkdirSync(path.dirname(target), { recursive: true });
  try {
    const result = await fill(tmp);
    renameSync(tmp, target);
    return result;
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}

/**
 * Make `target` a hard link to `source` (a copy when they are on different file systems),
 * replacing any previous file atomically (temp name beside it, then rename); creates parents.
 * For names inside graph's state only (`ContentStore.linkTo`): a hard link shares its bytes, so
 * published files are copies (`copyFileAtomic`).
 * @throws the fs error when neither link nor copy works; no temp file is left.
 */
export function linkOrCopy(source: string, target: string): void {
  const tmp = tempPathFor(target);
  mkdirSync(path.dirname(target), { recursive: true });
  try {
    try {
      linkSync(source, tmp);
    } catch {
      copyFileSync(source, tmp);
    }
    renameSync(tmp, target);
  } finally {
    // rename(2) onto a name for the same inode does nothing and succeeds: the temp name stays.
    rmSync(tmp, { force: true });
  }
}

/**
 * Copy `source` to `target` atomically (temp file beside it, then rename), as a reflink where the
 * file system has them (btrfs, XFS: no bytes copied, yet writes to one never reach the other) and
 * a plain copy elsewhere; creates parents. Never shares an inode with `source`: for published
 * files, whose editing must not reach the store, and vice versa.
 * @throws the fs error when the copy fails; no temp file is left.
 */
export function copyFileAtomic(source: string, target: string): void {
  const tmp = tempPathFor(target);
  mkdirSync(path.dirname(target), { recursive: true });
  try {
    copyFileSync(source, tmp, constants.COPYFILE_FICLONE);
    renameSync(tmp, target);
  } finally {
    rmSync(tmp, { force: true });
  }
}

/** Parse a JSON file; undefined when it is missing, unreadable or not valid JSON (a torn write). */
export function readJsonFile(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** How long a lock may be held before another process treats it as abandoned (ms). */
const STALE_LOCK_MS = 10 * 60 * 1000;

/**
 * Whether the lock directory `lock` was left by a process that is gone: its `owner` file names
 * this host and a pid that no longer runs (a `kill -9` while it held the lock), or it is older
 * than STALE_LOCK_MS (an owner on another host, or one that died before writing its name).
 */
function lockAbandoned(lock: string): boolean {
  try {
    const [host, pid] = readFileSync(path.join(lock, 'owner'), 'utf8').trim().split(' ');
    if (host === hostname() && !pidRuns(Number(pid))) return true;
  } catch {
    // no owner yet (being written), or released meanwhile
  }
  try {
    return Date.now() - statSync(lock).mtimeMs > STALE_LOCK_MS;
  } catch {
    return false;
  }
}

/** Whether process `pid` of this host runs (signal 0 only probes). */
function pidRuns(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Run `fn` holding an inter-process lock on `target` (a directory `TARGET.lock`, created
 * atomically by mkdir): for read-modify-write updates of a file several nodes or processes share,
 * such as a layout's index.json or published.lock.json. The lock names its owner (host and pid):
 * a lock whose owner on this host no longer runs, or one older than 10 minutes, is broken.
 * @throws Error when the lock cannot be had within `timeoutMs` (default 60 s); `fn`'s errors.
 */
export async function withLock<T>(target: string, fn: () => T | Promise<T>, timeoutMs = 60_000): Promise<T> {
  const lock = `${target}.lock`;
  mkdirSync(path.dirname(lock), { recursive: true });
  const start = Date.now();
  for (;;) {
    try {
      mkdirSync(lock);
      writeFileSync(path.join(lock, 'owner'), `${hostname()} ${process.pid}\n`);
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      if (lockAbandoned(lock)) rmSync(lock, { recursive: true, force: true });
      if (Date.now() - start > timeoutMs) throw new Error(`could not lock ${target} within ${timeoutMs / 1000} s (held by another graph process? remove ${lock} if none runs)`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }
  try {
    return await fn();
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
}
