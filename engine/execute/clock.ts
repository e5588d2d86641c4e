/**
 * Time as the execute stage sees it: a millisecond clock, timeouts that abort, and sleeps.
 * Engine tests use `FakeClock` (test/helpers.ts) and move time by hand, so no test sleeps or polls.
 */
export interface Clock {
  /** Milliseconds since some fixed point (only differences are used). */
  now(): number;
  /**
   * A signal that aborts `ms` milliseconds from now, with a `TimeoutError` DOMException. It does
   * not keep the process alive (a node's timeout outlives the node).
   */
  timeout(ms: number): AbortSignal;
  /**
   * Resolve after `ms` milliseconds (keeping the process alive meanwhile).
   * @throws the signal's reason when `signal` aborts first.
   */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

/** The real clock: `Date.now`, `AbortSignal.timeout` and `setTimeout`. */
export const systemClock: Clock = {
  now: () => Date.now(),
  timeout: (ms) => AbortSignal.timeout(ms),
  sleep: (ms, signal) =>
    new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const onAbort = () => {
        clearTimeout(timer);
        reject(signal?.reason);
      };
      const timer = setTimeout(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      signal?.addEventListener('abort', onAbort, { once: true });
    }),
};
