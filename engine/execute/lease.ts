/**
 * Leases on action keys, so that two `graph` processes sharing a cache (one workspace, or one
 * `.graph/` on a shared filesystem) do not both run a node: the first takes the key's lease and
 * runs it; the other waits for the lease to go, then finds the result in the action cache.
 *
 * A lease is a file `leases/<key>` created exclusively (O_CREAT|O_EXCL), holding one JSON line
 * `{"pid", "host", "run", "since"}`. Its holder refreshes the file's mtime every
 * `HEARTBEAT_MS` and removes it when the node's result is recorded (or the node failed). A lease
 * whose holder is gone is taken over: on this host when its pid no longer runs, on another host
 * when its mtime is older than `STALE_MS` (the holder stopped refreshing it). A torn or unreadable
 * lease file counts as stale. Two processes taking over one stale lease at once can both run the
 * node: that costs time, never correctness (every record and blob write is atomic).
 */
import { randomBytes } from 'node:crypto';
import { utimesSync } from 'node:fs';
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import path from 'node:path';
import type { Clock } from './clock.js';

/** How often a holder refreshes its lease's mtime (ms). */
export const HEARTBEAT_MS = 10_000;
/** A lease from another host not refreshed for this long is stale (ms). */
export const STALE_MS = 60_000;
/** First and longest wait between looks at a lease held by someone else (ms). */
const POLL_MIN_MS = 50;
const POLL_MAX_MS = 1000;

/** Who holds a lease. */
export interface Holder {
  readonly pid: number;
  readonly host: string;
  /** Random id of the holder's run (two runs in one process are different holders). */
  readonly run: string;
  /** `clock.now()` when it was taken (ms). */
  readonly since: number;
}

/** A held lease. */
export interface Lease {
  /** Remove the lease file if it is still ours; idempotent; never rejects. */
  release(): Promise<void>;
}

export interface LeaseOptions {
  /** Directory of the lease files (`.graph/leases`). */
  readonly dir: string;
  readonly clock: Clock;
  /** Whether a process of this host runs; default: `process.kill(pid, 0)`. */
  readonly alive?: (pid: number) => boolean;
}

export class KeyLeases {
  /** This run's identity in the lease files it writes. */
  readonly me: Holder;

  constructor(private readonly options: LeaseOptions) {
    this.me = { pid: process.pid, host: hostname(), run: randomBytes(6).toString('hex'), since: options.clock.now() };
  }

  private file(key: string): string {
    return path.join(this.options.dir, key);
  }

  /**
   * Take the lease on `key`, waiting while a live holder has it (`onWait` is told who, once per holder).
   * @returns the lease and, when someone else held it first, who (the caller then looks in the
   *   action cache: the other holder has probably recorded the result).
   * @throws the signal's reason when `signal` aborts while waiting; the fs error when the lease
   *   directory cannot be written.
   */
  async acquire(key: string, signal: AbortSignal, onWait?: (holder: Holder) => void): Promise<{ lease: Lease; waitedFor?: Holder }> {
    const file = this.file(key);
    let waitedFor: Holder | undefined;
    let pause = POLL_MIN_MS;
    for (;;) {
      signal.throwIfAborted();
      if (await this.tryCreate(file)) return { lease: this.held(file), waitedFor };
      const holder = await this.holder(file);
      if (holder === 'gone') continue;
      if (holder === 'stale') {
        await rm(file, { force: true });
        continue;
      }
      if (holder !== 'unreadable') {
        if (waitedFor?.run !== holder.run) onWait?.(holder);
        waitedFor = holder;
      }
      await this.options.clock.sleep(pause, signal);
      pause = Math.min(POLL_MAX_MS, pause * 2);
    }
  }

  // File operations go to libuv's thread pool: the scheduler's event loop stays free.
  private async tryCreate(file: string): Promise<boolean> {
    const line = `${JSON.stringify({ ...this.me, since: this.options.clock.now() })}\n`;
    try {
      await writeFile(file, line, { flag: 'wx' });
      return true;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') {
        await mkdir(this.options.dir, { recursive: true });
        return this.tryCreate(file);
      }
      if (code === 'EEXIST') return false;
      throw e;
    }
  }

  /**
   * The live holder of `file`; 'stale' when it is gone for good; 'gone' when released meanwhile;
   * 'unreadable' for a torn lease younger than a heartbeat (being written, or its writer just died).
   */
  private async holder(file: string): Promise<Holder | 'stale' | 'gone' | 'unreadable'> {
    let text: string;
    let mtimeMs: number;
    try {
      mtimeMs = (await stat(file)).mtimeMs;
      text = await readFile(file, 'utf8');
    } catch {
      return 'gone';
    }
    let h: Partial<Holder>;
    try {
      h = JSON.parse(text) as Partial<Holder>;
    } catch {
      // A holder that died between creating the file and writing it; or one writing right now.
      return Date.now() - mtimeMs > HEARTBEAT_MS ? 'stale' : 'unreadable';
    }
    if (typeof h.pid !== 'number' || typeof h.host !== 'string' || typeof h.run !== 'string') return 'stale';
    if (h.host === this.me.host) return (this.options.alive ?? pidAlive)(h.pid) ? (h as Holder) : 'stale';
    return Date.now() - mtimeMs > STALE_MS ? 'stale' : (h as Holder);
  }

  private held(file: string): Lease {
    let released = false;
    const beat = setInterval(() => {
      try {
        const now = new Date();
        utimesSync(file, now, now);
      } catch {
        // taken over or removed: nothing to refresh
      }
    }, HEARTBEAT_MS);
    beat.unref();
    return {
      release: () => {
        if (released) return Promise.resolve();
        released = true;
        clearInterval(beat);
        // Remove it only if it is still ours (a stale-lease takeover may have replaced it).
        return readFile(file, 'utf8')
          .then(async (text) => {
            const h = JSON.parse(text) as Holder;
            if (h.run === this.me.run && h.pid === this.me.pid) await rm(file, { force: true });
          })
          .catch(() => {}); // gone already, or torn by a takeover: not ours
      },
    };
  }
}

/** Whether process `pid` of this host runs (signal 0 probes without sending anything). */
function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
