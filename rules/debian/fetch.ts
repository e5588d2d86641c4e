/**
 * Downloads from a Debian mirror into a content-addressed cache: `CACHE/debs/<sha256>.deb` for
 * packages (and, through `downloadVerified`, `CACHE/index/<sha256>.<ext>` for package indexes).
 * Bytes are hashed while they stream to a temp file beside the target, and the temp file is renamed
 * into place only when its size and SHA-256 match what the Release file or the lock promises, so a
 * cache path always holds exactly the bytes its name says. Transient failures (connection errors,
 * HTTP 5xx) are retried with backoff; anything else fails at once with a sentence saying what to do.
 */
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createReadStream, createWriteStream, mkdirSync, renameSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { tempPathFor } from '../../engine/atomic.js';
import { ConnectionError, httpRequest, TransientError, withRetries } from '../../engine/http.js';
import type { DebianMirror } from './mirror.js';
import type { PackagePin } from './pin.js';

/** Retry policy and transport; tests shorten the delays. */
export interface DownloadOptions {
  /** Attempts in all, including the first; default 3. */
  readonly attempts?: number;
  /** Wait before the 2nd, 3rd, … attempt, in milliseconds; default [500, 2000]. */
  readonly backoffMs?: readonly number[];
}

/** What a download must be: its size in bytes and lowercase hex SHA-256 (from Release or a pin). */
export interface ExpectedContent {
  readonly size: number;
  readonly sha256: string;
}

/** A download whose bytes differ from what was promised. The temp file is already deleted. */
export class DigestMismatchError extends Error {
  override name = 'DigestMismatchError';
  constructor(
    readonly what: string,
    readonly url: string,
    readonly expected: ExpectedContent,
    readonly actual: ExpectedContent,
  ) {
    super(
      `${what}: ${url} has SHA-256 ${actual.sha256} (${actual.size} bytes), expected ${expected.sha256} (${expected.size} bytes); ` +
        `the mirror or a proxy served other bytes: retry, or resolve again if the mirror changed since images.lock was written`,
    );
  }
}

/** An HTTP answer that retrying will not fix (404, 403, …). */
export class HttpError extends Error {
  override name = 'HttpError';
  constructor(
    readonly url: string,
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}


/** Cache path of a package: `CACHE/debs/<sha256>.deb` (content-addressed, so versions never collide). */
export function debCachePath(cacheDir: string, pin: Pick<PackagePin, 'sha256'>): string {
  return path.join(cacheDir, 'debs', `${pin.sha256}.deb`);
}

/**
 * Download `pin` from `mirror` (URL `mirror.uri + pin.filename`, Debian's pool layout) into
 * `CACHE/debs/<sha256>.deb` and return that absolute path. A file already there is re-used after its
 * size and full SHA-256 are checked (re-hashing runs at ~500 MB/s, so a cached closure costs
 * milliseconds); a corrupt one is deleted and downloaded again.
 * @throws DigestMismatchError naming the package and both digests when the bytes are wrong;
 *   HttpError for a 4xx (a 404 usually means the mirror dropped that version: resolve again);
 *   the last connection error after `attempts` tries; an AbortError when `signal` aborts.
 */
export async function fetchDeb(
  mirror: DebianMirror,
  pin: PackagePin,
  cacheDir: string,
  signal?: AbortSignal,
  options: DownloadOptions = {},
): Promise<string> {
  const target = path.resolve(debCachePath(cacheDir, pin));
  const url = mirror.uri + pin.filename;
  await downloadVerified(url, target, pin, `${pin.name} ${pin.version} (${pin.architecture})`, signal, options);
  return target;
}

/**
 * `fetchDeb` for many pins, at most `concurrency` (default 4) at a time; paths in the order of `pins`.
 * @throws the first failure (other downloads still running are left to finish into the cache).
 */
export async function fetchDebs(
  mirror: DebianMirror,
  pins: readonly PackagePin[],
  cacheDir: string,
  signal?: AbortSignal,
  options: DownloadOptions & { readonly concurrency?: number } = {},
): Promise<string[]> {
  const out = new Array<string>(pins.length);
  let next = 0;
  const worker = async () => {
    while (next < pins.length) {
      const i = next++;
      out[i] = await fetchDeb(mirror, pins[i], cacheDir, signal, options);
    }
  };
  await Promise.all(Array.from({ length: Math.min(options.concurrency ?? 4, pins.length) }, worker));
  return out;
}

/**
 * Make `target` hold the bytes at `url` that have `expected` size and SHA-256: re-use it when it is
 * already there and verifies, else stream the download through a hash into a temp file beside it and
 * rename. `what` names the thing in errors (a package, an index).
 * @returns true when it downloaded, false when the cached file was re-used.
 * @throws as `fetchDeb`.
 */
export async function downloadVerified(
  url: string,
  target: string,
  expected: ExpectedContent,
  what: string,
  signal?: AbortSignal,
  options: DownloadOptions = {},
): Promise<boolean> {
  if (await fileMatches(target, expected)) return false;
  rmSync(target, { force: true });
  mkdirSync(path.dirname(target), { recursive: true });
  await retrying(
    url,
    async () => {
      const res = await get(url, signal);
      if (!res.body) throw new TransientError(`${url} answered without a body`);
      const tmp = tempPathFor(target);
      const hash = createHash('sha256');
      let size = 0;
      const file = createWriteStream(tmp);
      try {
        try {
          await pipeline(
            Readable.fromWeb(res.body as WebReadableStream<Uint8Array>),
            async function* (source: AsyncIterable<Buffer>) {
              for await (const chunk of source) {
                size += chunk.length;
                // Stop reading a body that is already too long: it cannot match.
                if (size > expected.size) break;
                hash.update(chunk);
                yield chunk;
              }
            },
            file,
            { signal },
          );
        } catch (e) {
          if (signal?.aborted) throw e;
          throw new TransientError(`download of ${url} broke off after ${size} bytes: ${describe(e)}`);
        }
        const actual = { size, sha256: size > expected.size ? '(not computed: too long)' : hash.digest('hex') };
        if (actual.size !== expected.size || actual.sha256 !== expected.sha256) {
          throw new DigestMismatchError(what, url, expected, actual);
        }
        renameSync(tmp, target);
      } finally {
        // An aborted pipeline can reject before the stream has opened the temp file, which would
        // then appear after its removal: wait for the stream to close first.
        file.destroy();
        if (!file.closed) await once(file, 'close').catch(() => undefined);
        rmSync(tmp, { force: true });
      }
    },
    signal,
    options,
  );
  return true;
}

/**
 * GET `url` once; 2xx gives the response. Used directly for small files with no known digest
 * (InRelease); wrapped in `withRetries` by callers.
 * @throws HttpError for 4xx and other non-5xx failures, TransientError for 5xx and connection errors.
 */
async function get(url: string, signal?: AbortSignal): Promise<Response> {
  let res: Response;
  try {
    // One attempt: the caller retries the whole download (the body can break off too).
    res = await httpRequest(url, {}, { attempts: 1, signal });
  } catch (e) {
    if (e instanceof ConnectionError) throw new TransientError(`cannot reach ${url}: ${e.code}`);
    throw e;
  }
  if (res.ok) return res;
  await res.body?.cancel().catch(() => undefined);
  const line = `${url} answered HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ''}`;
  if (res.status >= 500) throw new TransientError(line);
  throw new HttpError(url, res.status, line);
}

/**
 * Fetch a small text file (a Release file) with retries.
 * @returns its text, or undefined on HTTP 404 (so the caller can try another name).
 * @throws HttpError for other 4xx, the last error after all attempts, AbortError on abort.
 */
export async function fetchText(url: string, signal?: AbortSignal, options: DownloadOptions = {}): Promise<string | undefined> {
  return retrying(
    url,
    async () => {
      let res: Response;
      try {
        res = await get(url, signal);
      } catch (e) {
        if (e instanceof HttpError && e.status === 404) return undefined;
        throw e;
      }
      try {
        return await res.text();
      } catch (e) {
        if (signal?.aborted) throw e;
        throw new TransientError(`download of ${url} broke off: ${describe(e)}`);
      }
    },
    signal,
    options,
  );
}

/** The mirror's retry policy (3 attempts, 0.5 s then 2 s apart) around one attempt of `url`. */
function retrying<T>(url: string, attempt: () => Promise<T>, signal: AbortSignal | undefined, options: DownloadOptions): Promise<T> {
  return withRetries(attempt, { attempts: options.attempts ?? 3, backoffMs: options.backoffMs ?? [500, 2000], signal, hint: `check the network and the mirror ${new URL(url).origin}` });
}

async function fileMatches(file: string, expected: ExpectedContent): Promise<boolean> {
  try {
    if (statSync(file).size !== expected.size) return false;
  } catch {
    return false;
  }
  return (await sha256File(file)) === expected.sha256;
}

/** Lowercase hex SHA-256 of a file's bytes, read in 1 MiB chunks. @throws the fs error. */
export async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

function describe(e: unknown): string {
  if (!(e instanceof Error)) return String(e);
  const cause = (e as { cause?: unknown }).cause;
  return cause instanceof Error ? `${e.message} (${cause.message})` : e.message;
}
