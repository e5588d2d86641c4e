/**
 * The remote cache over the Bazel HTTP cache protocol (the protocol of bazel-remote, of nginx with
 * WebDAV, and of anything serving plain GET/PUT):
 *
 *     GET|PUT|HEAD {base}/ac/<64 hex action key>    an ActionResult protobuf (action-result.ts)
 *     GET|PUT|HEAD {base}/cas/<64 hex sha256>        a blob, named by the SHA-256 of its bytes
 *
 * Status codes as Bazel reads them: a GET answered 200 is a hit, 404 (and 204) a miss; a PUT
 * answered 200, 201, 202 or 204 succeeded; a HEAD answered 200 means the blob is there. Requests
 * go through the one HTTP client (engine/http.ts: keep-alive, retries with backoff on connection
 * errors, 429 and 5xx), at most `concurrency` at once, each with an idle timeout (no byte for
 * `idleTimeoutMs` is a failure worth another try, as is a body shorter than its Content-Length).
 * Every request body has a Content-Length. Blobs over `headThresholdBytes` are asked for with HEAD
 * before a PUT; the action-cache entry is PUT last, so it never names a blob not yet uploaded.
 *
 * Trust: an entry is a claim. Its key record must have the requested key as its digest, inlined
 * contents must match their digest, and every blob downloaded must hash to its name (the store
 * checks that before the blob becomes visible). A claim that fails is one warning naming the node,
 * and a miss.
 *
 * A cache never fails a build: the first failure of the server itself (no connection, 5xx or 429
 * after the retries, timeouts, a refused credential) is one warning with its cause, and the client
 * then answers every lookup with a miss and skips every upload, so the build goes on locally at
 * full speed. A refused write (401/403 on a PUT) stops uploads only. In `read` mode no PUT is sent.
 */
import { hash } from 'node:crypto';
import { createReadStream, statSync } from 'node:fs';
import { Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import type { CachedResult, RemoteCache } from '../action-cache.js';
import { ConnectionError, httpRequest, TransientError, withRetries, type BodyStream } from '../../http.js';
import type { NodeId } from '../../rule.js';
import { DigestError, type ContentStore } from '../store.js';
import { ARTIFACT_PREFIX, decodeActionResult, encodeActionResult, RECORD_PATH, RESULT_PATH, type OutputFile } from './action-result.js';
import type { RemoteCacheEndpoint } from './credentials.js';

/** `read`: look up and download only; `readwrite`: also upload successes. */
export type RemoteCacheMode = 'read' | 'readwrite';

export interface HttpCacheOptions {
  readonly endpoint: RemoteCacheEndpoint;
  readonly mode: RemoteCacheMode;
  /** Where warnings go (one line each, without a trailing newline). */
  readonly warn: (message: string) => void;
  /** Requests in flight at once; default 16. */
  readonly concurrency?: number;
  /** A request that receives nothing for this long is retried (ms); default 30 000. */
  readonly idleTimeoutMs?: number;
  /** Attempts per request, including the first; default 3. */
  readonly attempts?: number;
  /** Waits between attempts (ms); default 200, 400. */
  readonly backoffMs?: readonly number[];
  /** Blobs larger than this (bytes) are asked for with HEAD before a PUT; default 1 MiB. */
  readonly headThresholdBytes?: number;
}

/** What went over the wire: attempts per method, and body bytes each way. */
export interface TransferStats {
  readonly requests: Record<string, number>;
  bytesDown: number;
  bytesUp: number;
}

/** The server itself failed (unreachable, 5xx, timeouts, refused credentials): stop using it. */
class Unavailable extends Error {}
/** A claim that does not hold (a mismatching record, a tampered blob): not used. */
class Untrusted extends Error {}

const DIGEST = /^sha256:([a-f0-9]{64})$/;
/** Largest action-cache entry or record read into memory (bytes). */
const MAX_ENTRY_BYTES = 16 << 20;
const sha256 = (bytes: Uint8Array | string) => hash('sha256', bytes, 'hex');

export class HttpRemoteCache implements RemoteCache {
  readonly name: string;
  readonly stats: TransferStats = { requests: {}, bytesDown: 0, bytesUp: 0 };
  /** Why the server is not used any more (after the first failure of its own). */
  private down?: string;
  private writesRefused = false;
  private readonly warned = new Set<string>();
  /** Sizes of blobs named by entries looked up (hex → bytes), to check downloads. */
  private readonly sizes = new Map<string, number>();
  /** Blobs known on the server in this run, and uploads and downloads in flight, by hex. */
  private readonly present = new Set<string>();
  private readonly uploading = new Map<string, Promise<void>>();
  private readonly downloading = new Map<string, Promise<boolean>>();
  private readonly slots: Semaphore;

  constructor(private readonly options: HttpCacheOptions) {
    this.name = options.endpoint.display;
    this.slots = new Semaphore(options.concurrency ?? 16);
  }

  async lookup(id: NodeId, key: string, signal?: AbortSignal): Promise<CachedResult | undefined> {
    if (this.down || !/^[a-f0-9]{64}$/.test(key)) return undefined;
    try {
      const entry = await this.getSmall(`ac/${key}`, signal);
      if (!entry) return undefined;
      let files: readonly OutputFile[];
      try {
        files = decodeActionResult(entry).outputFiles;
      } catch (e) {
        throw new Untrusted(`its entry is not an ActionResult graph wrote (${(e as Error).message})`);
      }
      const record = files.find((f) => f.path === RECORD_PATH);
      if (!record) throw new Untrusted('its entry has no key record');
      if (record.digest.hash !== key) throw new Untrusted(`its entry holds the key record of another action (sha256:${record.digest.hash.slice(0, 12)})`);
      // The record's digest is the key; reading it proves the server holds what the entry claims.
      await this.contents(record, signal);
      const resultFile = files.find((f) => f.path === RESULT_PATH);
      if (!resultFile) throw new Untrusted('its entry has no result record');
      const result = parseResult(Buffer.from(await this.contents(resultFile, signal)).toString('utf8'));
      if (!result) throw new Untrusted('its result record is malformed');
      const artifacts = new Map(files.filter((f) => f.path.startsWith(ARTIFACT_PREFIX)).map((f) => [f.path.slice(ARTIFACT_PREFIX.length), f.digest]));
      for (const a of result.artifacts) {
        const d = artifacts.get(a.slice('sha256:'.length));
        if (!d || d.hash !== a.slice('sha256:'.length)) throw new Untrusted(`its result names ${a}, which the entry does not list`);
        this.sizes.set(d.hash, d.size);
      }
      return result;
    } catch (e) {
      this.failed(e, `entry for ${id} (key ${key.slice(0, 12)})`, signal);
      return undefined;
    }
  }

  async download(digests: readonly string[], store: ContentStore, signal?: AbortSignal): Promise<boolean> {
    const wanted = digests.filter((d) => store.check(d) !== 'intact');
    if (wanted.length && this.down) return false;
    const results = await Promise.all(
      wanted.map((d) => {
        const m = DIGEST.exec(d);
        if (!m) return false;
        let p = this.downloading.get(m[1]);
        if (!p) {
          p = this.getBlob(m[1], store, signal).then(
            () => true,
            (e) => {
              this.failed(e, `blob ${d}`, signal);
              return false;
            },
          );
          // A failure is kept too: one warning per blob, and no second try in this run.
          this.downloading.set(m[1], p);
        }
        return p;
      }),
    );
    return results.every(Boolean) && digests.every((d) => store.has(d));
  }

  async upload(id: NodeId, key: string, recordLine: string, result: CachedResult, store: ContentStore): Promise<void> {
    if (this.options.mode === 'read' || this.down || this.writesRefused) return;
    try {
      const resultLine = JSON.stringify({ format: 1, id, outputs: result.outputs, artifacts: result.artifacts, ...(result.files ? { files: result.files } : {}), duration_ms: result.duration_ms });
      const record = { path: RECORD_PATH, digest: { hash: sha256(recordLine), size: Buffer.byteLength(recordLine) }, contents: Buffer.from(recordLine) };
      const resultFile = { path: RESULT_PATH, digest: { hash: sha256(resultLine), size: Buffer.byteLength(resultLine) }, contents: Buffer.from(resultLine) };
      const stored = (digest: string) => {
        if (!store.has(digest)) throw new Error(`${digest} is not in the local store`);
        const file = store.pathOf(digest);
        return { hash: digest.slice('sha256:'.length), size: statSync(file).size, file };
      };
      const artifacts = result.artifacts.map(stored);
      const log = result.log && store.has(result.log) ? stored(result.log) : undefined;
      await Promise.all([
        this.putBlob(record.digest.hash, record.contents),
        this.putBlob(resultFile.digest.hash, resultFile.contents),
        ...[...artifacts, ...(log ? [log] : [])].map((b) => this.putBlob(b.hash, { file: b.file, size: b.size })),
      ]);
      const entry = encodeActionResult({
        outputFiles: [record, resultFile, ...artifacts.map((a) => ({ path: `${ARTIFACT_PREFIX}${a.hash}`, digest: { hash: a.hash, size: a.size } }))],
        ...(log ? { stdout: { hash: log.hash, size: log.size } } : {}),
      });
      await this.put(`ac/${key}`, Buffer.from(entry));
    } catch (e) {
      this.failed(e, `upload of ${id}`);
    }
  }

  /** Report a failure once: the server's own stops its use; a broken claim names what it was. */
  private failed(e: unknown, what: string, signal?: AbortSignal): void {
    if (signal?.aborted) return;
    const redact = this.options.endpoint.redact;
    if (e instanceof Untrusted) {
      this.options.warn(redact(`remote cache ${this.name}: ${what} not used: ${e.message}`));
      return;
    }
    if (e instanceof WriteRefused) {
      this.writesRefused = true;
      this.warnOnce('write', redact(`remote cache ${this.name}: uploads refused (${e.message}); nothing more is uploaded in this run`));
      return;
    }
    const cause = e instanceof Error ? e.message : String(e);
    if (!(e instanceof Unavailable)) {
      // Not the server's doing (a blob gone from the local store): this item only.
      this.options.warn(redact(`remote cache ${this.name}: ${what} skipped: ${cause}`));
      return;
    }
    this.down ??= cause;
    this.warnOnce('down', redact(`remote cache ${this.name} unavailable (${cause}): continuing without it`));
  }

  private warnOnce(what: string, message: string): void {
    if (this.warned.has(what)) return;
    this.warned.add(what);
    this.options.warn(message);
  }

  /** Inlined contents checked against their digest, else the CAS blob (checked). */
  private async contents(file: OutputFile, signal?: AbortSignal): Promise<Uint8Array> {
    if (file.contents) {
      if (sha256(file.contents) !== file.digest.hash) throw new Untrusted(`the inlined ${file.path} does not match its digest`);
      return file.contents;
    }
    const bytes = await this.getSmall(`cas/${file.digest.hash}`, signal);
    if (!bytes) throw new Untrusted(`${file.path} (sha256:${file.digest.hash.slice(0, 12)}) is missing from the server`);
    if (sha256(bytes) !== file.digest.hash) throw new Untrusted(`${file.path} (sha256:${file.digest.hash.slice(0, 12)}) did not match its digest`);
    return bytes;
  }

  /** GET a small body: its bytes, or undefined on 404/204. */
  private getSmall(rel: string, signal?: AbortSignal): Promise<Uint8Array | undefined> {
    return this.exchange('GET', rel, undefined, signal, async (res, touch) => {
      if (res.status === 404 || res.status === 204) return undefined;
      if (res.status !== 200) throw statusError(res.status);
      const declared = Number(res.headers.get('content-length') ?? 0);
      if (declared > MAX_ENTRY_BYTES) throw new Untrusted(`${rel} is larger than ${MAX_ENTRY_BYTES} bytes`);
      // One buffer, not a stream: a plan makes thousands of these requests.
      const bytes = new Uint8Array(await res.arrayBuffer());
      this.stats.bytesDown += bytes.length;
      checkLength(res, bytes.length);
      return bytes;
    });
  }

  /** GET a blob into the store, verified against its name (and its size when an entry gave it). */
  private getBlob(hex: string, store: ContentStore, signal?: AbortSignal): Promise<void> {
    return this.exchange('GET', `cas/${hex}`, undefined, signal, async (res, touch) => {
      if (res.status === 404 || res.status === 204) throw new Untrusted('missing from the server');
      if (res.status !== 200) throw statusError(res.status);
      let size = 0;
      const counted = Readable.from(
        (async function* (stats: TransferStats) {
          for await (const chunk of bodyOf(res)) {
            touch();
            size += chunk.length;
            stats.bytesDown += chunk.length;
            yield chunk;
          }
        })(this.stats),
      );
      try {
        await store.putStream(counted, `sha256:${hex}`, `remote blob sha256:${hex}`);
      } catch (e) {
        if (!(e instanceof DigestError)) throw e;
        checkLength(res, size);
        const expected = this.sizes.get(hex);
        if (expected !== undefined && size < expected) throw new TransientError(`blob sha256:${hex} ended after ${size} of ${expected} bytes`);
        throw new Untrusted('it did not match its digest (tampered with or damaged on the server)');
      }
      checkLength(res, size);
      this.present.add(hex);
    });
  }

  /** Upload a blob unless this run knows it is there (HEAD first when it is large). */
  private putBlob(hex: string, body: Buffer | { file: string; size: number }): Promise<void> {
    if (this.present.has(hex)) return Promise.resolve();
    let p = this.uploading.get(hex);
    if (!p) {
      p = (async () => {
        const size = Buffer.isBuffer(body) ? body.length : body.size;
        if (size > (this.options.headThresholdBytes ?? 1 << 20)) {
          const there = await this.exchange('HEAD', `cas/${hex}`, undefined, undefined, async (res) => {
            if (res.status >= 500 || res.status === 429) throw statusError(res.status);
            return res.status === 200;
          });
          if (there) {
            this.present.add(hex);
            return;
          }
        }
        await this.put(`cas/${hex}`, body);
        this.present.add(hex);
      })();
      this.uploading.set(hex, p);
      p.catch(() => this.uploading.delete(hex));
    }
    return p;
  }

  private put(rel: string, body: Buffer | { file: string; size: number }): Promise<void> {
    return this.exchange('PUT', rel, body, undefined, async (res) => {
      if (res.status === 200 || res.status === 201 || res.status === 202 || res.status === 204) {
        this.stats.bytesUp += Buffer.isBuffer(body) ? body.length : body.size;
        return;
      }
      if (res.status === 401 || res.status === 403 || res.status === 405) throw new WriteRefused(`HTTP ${res.status}`);
      if (res.status === 413) throw new Untrusted('the server refused it as too large (HTTP 413)');
      throw statusError(res.status);
    });
  }

  /**
   * One request, in a slot, with the client's retries (connection errors, 429, 5xx) and an idle
   * timeout; `read` handles the response (calling `touch` whenever bytes arrive). Timeouts and
   * bodies cut short are retried as a whole.
   */
  private exchange<T>(method: string, rel: string, body: Buffer | { file: string; size: number } | undefined, signal: AbortSignal | undefined, read: (res: Response, touch: () => void) => Promise<T>): Promise<T> {
    const idle = this.options.idleTimeoutMs ?? 30_000;
    const retry = { attempts: this.options.attempts ?? 3, backoffMs: this.options.backoffMs ?? [200, 400], signal };
    return withRetries(async () => {
      if (this.down) throw new Unavailable(this.down);
      await this.slots.acquire();
      const timeout = new AbortController();
      let timer: NodeJS.Timeout | undefined;
      const touch = () => {
        clearTimeout(timer);
        timer = setTimeout(() => timeout.abort(new TransientError(`no answer within ${idle} ms`)), idle);
        timer.unref?.();
      };
      const both = signal ? AbortSignal.any([signal, timeout.signal]) : timeout.signal;
      try {
        touch();
        this.stats.requests[method] = (this.stats.requests[method] ?? 0) + 1;
        const headers: Record<string, string> = { ...this.options.endpoint.headers };
        let payload: Buffer | (() => BodyStream) | undefined;
        if (body !== undefined) {
          headers['content-length'] = String(Buffer.isBuffer(body) ? body.length : body.size);
          headers['content-type'] = 'application/octet-stream';
          payload = Buffer.isBuffer(body) ? body : () => createReadStream(body.file, { highWaterMark: 1 << 20 });
        }
        // No redirects: a header meant for the cache must not follow one to another host.
        const res = await httpRequest(`${this.options.endpoint.base}/${rel}`, { method, headers, body: payload, redirect: 'error' }, { ...retry, signal: both });
        if (method === 'HEAD' || method === 'PUT') await res.body?.cancel().catch(() => undefined);
        return await read(res, touch);
      } catch (e) {
        if (signal?.aborted) throw signal.reason ?? e;
        if (timeout.signal.aborted) throw timeout.signal.reason;
        if (e instanceof ConnectionError) throw new Unavailable(e.code === 'ECONNREFUSED' || e.code === 'ECONNRESET' ? `cannot connect: ${e.code}` : e.code);
        if (e instanceof Untrusted || e instanceof Unavailable || e instanceof WriteRefused || e instanceof TransientError) throw e;
        // A body that broke off mid-way (the connection closed, a short read): worth another try.
        throw new TransientError(`the response broke off (${(e as Error).message})`);
      } finally {
        clearTimeout(timer);
        this.slots.release();
      }
    }, retry).catch((e) => {
      // Retries used up on a timeout or a broken body: the server is not usable now.
      if (e instanceof Untrusted || e instanceof Unavailable || e instanceof WriteRefused || signal?.aborted) throw e;
      throw new Unavailable((e as Error).message);
    });
  }
}

/** A PUT the server refused for lack of rights (401, 403, 405): stop uploading. */
class WriteRefused extends Error {}

function statusError(status: number): Error {
  if (status === 401 || status === 403) return new Unavailable(`HTTP ${status}: not authorized`);
  return new Unavailable(`HTTP ${status}`);
}

/** The response body as Node buffers. */
function bodyOf(res: Response): AsyncIterable<Buffer> {
  if (!res.body) return Readable.from([]);
  return Readable.fromWeb(res.body as unknown as WebReadableStream<Uint8Array>);
}

/** A body shorter (or longer) than its Content-Length was cut off: worth another try. */
function checkLength(res: Response, size: number): void {
  const declared = res.headers.get('content-length');
  if (declared !== null && Number(declared) !== size) throw new TransientError(`the body ended after ${size} of ${declared} bytes`);
}

/**
 * A result record (action-result.ts), checked: undefined unless it has the shape the local action
 * cache writes, artifacts are digests and files are workspace-relative paths that stay inside it.
 */
function parseResult(text: string): CachedResult | undefined {
  let r: { format?: unknown; id?: unknown; outputs?: unknown; artifacts?: unknown; files?: unknown; duration_ms?: unknown };
  try {
    r = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (r.format !== 1 || typeof r.id !== 'string' || typeof r.outputs !== 'object' || r.outputs === null || Array.isArray(r.outputs)) return undefined;
  if (!Array.isArray(r.artifacts) || !r.artifacts.every((a) => typeof a === 'string' && DIGEST.test(a))) return undefined;
  if (typeof r.duration_ms !== 'number') return undefined;
  const inside = (f: unknown) => typeof f === 'string' && f !== '' && !f.startsWith('/') && !f.split(/[\\/]/).includes('..');
  if (r.files !== undefined && !(Array.isArray(r.files) && r.files.every(inside))) return undefined;
  return { outputs: r.outputs as CachedResult['outputs'], artifacts: r.artifacts as string[], ...(r.files ? { files: r.files as string[] } : {}), duration_ms: r.duration_ms };
}

/** At most `n` holders at once; waiters are served in order. */
class Semaphore {
  private free: number;
  private readonly waiters: Array<() => void> = [];

  constructor(n: number) {
    this.free = n;
  }

  acquire(): Promise<void> {
    if (this.free > 0) {
      this.free--;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  release(): void {
    const next = this.waiters.shift();
    if (next) next();
    else this.free++;
  }
}
