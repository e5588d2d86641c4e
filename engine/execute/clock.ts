/**
 * Time as the execute stage sees it: a millisecond clock and timers that abort. Engine tests use
 * `FakeClock` (test/helpers.ts) and move time by hand, so no test sleeps or polls.
 */
export interface Clock {
  /** Milliseconds since some fixed point (only differences are used). */
  now(): number;
  /** A signal that aborts `ms` milliseconds from now, with a `TimeoutError` DOMException. */
  timeout(ms: number): AbortSignal;
}

/** The real clock: `Date.now` and `AbortSignal.timeout`. */
export const systemClock: Clock = {
  now: () => Date.now(),
  timeout: (ms) => AbortSignal.timeout(ms),
};
