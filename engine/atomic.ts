/**
 * Atomic file writes: data goes to a temporary file in the same directory and is renamed over
 * the target, so a reader sees the old content or the new, never a torn write, and two processes
 * writing the same path leave one whole version.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/** A unique temp path beside `target` (same directory, so rename stays on one file system). */
export function tempPathFor(target: string): string {
  return path.join(path.dirname(target), `.tmp-${path.basename(target)}-${process.pid}-${randomBytes(4).toString('hex')}`);
}

/**
 * Write `data` to `target` atomically, creating parent directories.
 * @throws the fs error if the write or rename fails; the temp file is removed first.
 */
export function writeFileAtomic(target: string, data: string | Uint8Array): void {
  const tmp = tempPathFor(target);
  try {
    try {
      writeFileSync(tmp, data);
    } catch (e) {
      // The directory is usually there; create it only when it is not (saves a syscall per write).
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      mkdirSync(path.dirname(target), { recursive: true });
      writeFileSync(tmp, data);
    }
    renameSync(tmp, target);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
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
