/**
 * The one HTTP client: Node's `fetch` (undici) with retries. Every HTTP request graph makes (OCI
 * registries, Debian mirrors) goes through `httpRequest`, so retry policy, backoff and the wording
 * of connection failures live in one place.
 *
 * Retried: connection errors (no answer at all), HTTP 429 and 5xx, with exponential backoff
 * (`backoffMs`, default 200 ms doubling), honouring `Retry-After` in seconds (capped at 30 s).
 * Everything else is the caller's: the response is returned as it is. A request body given as a
 * function is made afresh for every attempt (a stream cannot be replayed). Work that can break
 * after the response arrived (a body reset mid-stream) retries with `withRetries` around its own
 * attempt, throwing `TransientError` for what is worth another try.
 */
import { systemClock } from './execute/clock.js';

/** A failure worth another attempt (no connection, a reset body, HTTP 5xx). */
export class TransientError extends Error {
  override name = 'TransientError';
}

/** No answer from the server after every attempt (DNS, refused, reset, TLS). */
export class ConnectionError extends Error {
  override name = 'ConnectionError';
  constructor(
    readonly url: string,
    /** The low-level cause, e.g. `ECONNREFUSED`. */
    readonly code: string,
    readonly attempts: number,
  ) {
    super(`cannot reach ${new URL(url).host}: ${code}`);
  }
}

export interface RetryOptions {
  /** Attempts in all, including the first; default 4. */
  readonly attempts?: number;
  /** Wait before the 2nd, 3rd, … attempt (ms); the last entry repeats. Default 200, 400, 800. */
  readonly backoffMs?: readonly number[];
  readonly signal?: AbortSignal;
}

/** A streamed request body (e.g. a file range): destroyed after its attempt. */
export type BodyStream = AsyncIterable<Uint8Array> & { destroy(): void };

export interface HttpRequest extends Omit<RequestInit, 'body' | 'signal' | 'duplex'> {
  /** Bytes, or a function making a fresh stream for every attempt. */
  readonly body?: string | Uint8Array | (() => BodyStream);
}

const DEFAULT_ATTEMPTS = 4;
const DEFAULT_BACKOFF_MS = [200, 400, 800];
const MAX_RETRY_AFTER_S = 30;

/** Milliseconds to wait before attempt `attempt + 1`. */
function backoff(options: RetryOptions, attempt: number): number {
  const list = options.backoffMs ?? DEFAULT_BACKOFF_MS;
  return list[Math.min(attempt - 1, list.length - 1)] ?? 0;
}

/**
 * One request with retries on connection errors, 429 and 5xx.
 * @returns the response (any status; after the last attempt also a 429/5xx one).
 * @throws ConnectionError when no attempt got an answer; the signal's reason on abort.
 */
export async function httpRequest(url: string, init: HttpRequest = {}, options: RetryOptions = {}): Promise<Response> {
  const attempts = options.attempts ?? DEFAULT_ATTEMPTS;
  const { body: source, ...rest } = init;
  for (let attempt = 1; ; attempt++) {
    let stream: BodyStream | undefined;
    let res: Response;
    try {
      const body = typeof source === 'function' ? (stream = source()) : source;
      res = await fetch(url, {
        redirect: 'follow',
        ...rest,
        // Node's fetch sends any byte array or async iterable; the global types name fewer.
        body: body as RequestInit['body'],
        // undici needs half duplex to send a streamed body.
        ...(stream ? { duplex: 'half' as const } : {}),
        signal: options.signal,
      });
    } catch (e) {
      stream?.destroy();
      if (options.signal?.aborted) throw options.signal.reason ?? e;
      if (attempt >= attempts) throw new ConnectionError(url, causeOf(e), attempts);
      await systemClock.sleep(backoff(options, attempt), options.signal);
      continue;
    }
    // The server may answer without reading the whole body (an error, a 401): release the source.
    stream?.destroy();
    if ((res.status === 429 || res.status >= 500) && attempt < attempts) {
      const retryAfter = Number(res.headers.get('retry-after'));
      await res.body?.cancel().catch(() => undefined);
      await systemClock.sleep(Number.isFinite(retryAfter) && retryAfter > 0 ? Math.min(retryAfter, MAX_RETRY_AFTER_S) * 1000 : backoff(options, attempt), options.signal);
      continue;
    }
    return res;
  }
}

/**
 * Run `attempt` until it succeeds, retrying (with backoff) only when it throws `TransientError`.
 * @throws the first other error at once; after the last attempt, the last `TransientError`'s
 *   message with `(gave up after N attempts; HINT)`; the signal's reason on abort.
 */
export async function withRetries<T>(attempt: (n: number) => Promise<T>, options: RetryOptions & { readonly hint?: string } = {}): Promise<T> {
  const attempts = options.attempts ?? DEFAULT_ATTEMPTS;
  for (let i = 1; ; i++) {
    try {
      return await attempt(i);
    } catch (e) {
      if (options.signal?.aborted) throw options.signal.reason ?? e;
      if (!(e instanceof TransientError)) throw e;
      if (i >= attempts) throw new Error(`${e.message} (gave up after ${attempts} attempts${options.hint ? `; ${options.hint}` : ''})`);
      await systemClock.sleep(backoff(options, i), options.signal);
    }
  }
}

/** `ECONNREFUSED`, `ENOTFOUND`, … or the message: what went wrong below fetch. */
function causeOf(e: unknown): string {
  const cause = (e as { cause?: { code?: string; message?: string } }).cause;
  return cause?.code ?? cause?.message ?? (e as Error).message ?? String(e);
}
