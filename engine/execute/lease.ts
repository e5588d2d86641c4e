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
 *
 * Most runs have the cache to themselves, and a lease file per node (create, read back, remove)
 * then buys nothing: creating files is the dearest thing a node's bookkeeping does. So runs
 * announce themselves, and a run alone takes no lease files:
 *
 * - Before its first lease, a run writes `leases/run-<run>` (atomically; the holder line plus
 *   `"shared"`), refreshed like a lease, then lists the other announcements. Live ones (the same
 *   staleness rules as leases; stale ones are removed) make it *shared* from the start: it marks
 *   its announcement `"shared": true`, and takes no lease before every other run's announcement
 *   says shared too (or is gone).
 * - Alone, it holds its leases in memory and looks for announcements every `LOOK_MS`. When one
 *   appears, it takes a lease file for every key it holds (nobody else can hold one: the newcomer
 *   waits for the mark), then marks itself shared. From then on it is shared, as above.
 * - `leave` removes the announcement at the end of the run. Every process sharing a cache must
 *   announce itself (every `graph` does); `assumeShared` skips all this and always takes files.
 */
import { randomBytes } from 'node:crypto';
import { utimesSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import path from 'node:path';
import { writeFileAtomicAsync } from '../atomic.js';
import type { Clock } from './clock.js';

/** How often a holder refreshes its lease's mtime (ms). */
export const HEARTBEAT_MS = 10_000;
/** A lease from another host not refreshed for this long is stale (ms). */
export const STALE_MS = 60_000;
/** First and longest wait between looks at a lease held by someone else (ms). */
const POLL_MIN_MS = 50;
const POLL_MAX_MS = 1000;
/** How often a run alone looks for another run's announcement (ms). */
export const LOOK_MS = 50;
/** Name prefix of announcements in the lease directory (keys are 64 hex digits: no clash). */
const ANNOUNCEMENT = 'run-';

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
  /**
   * Take a lease file for every key, as when another run shares the cache, and announce nothing
   * (the per-key protocol alone). Default: false (module comment).
   */
  readonly assumeShared?: boolean;
}

/** A lease held in memory by a run alone; `file` once the run became shared and took its file. */
interface QuietLease {
  readonly key: string;
  released: boolean;
  file?: Lease;
}

export class KeyLeases {
  /** This run's identity in the lease files it writes. */
  readonly me: Holder;

  constructor(private readonly options: LeaseOptions) {
    this.me = { pid: process.pid, host: hostname(), run: randomBytes(6).toString('hex'), since: options.clock.now() };
  }

  /** This run's announcement, once written (until `leave`). */
  private joined?: Promise<void>;
  /** True while no other run shares the lease directory (leases are then held in memory). */
  private alone = false;
  private readonly quiet = new Set<QuietLease>();
  /** Ends the announcement's heartbeat and the looking for others (`leave`). */
  private leaving = new AbortController();
  private announceBeat?: ReturnType<typeof setInterval>;
  /** The look for other runs while alone (`look`), which `leave` waits for. */
  private looking?: Promise<void>;

  private file(key: string): string {
    return path.join(this.options.dir, key);
  }

  private get announcement(): string {
    return path.join(this.options.dir, `${ANNOUNCEMENT}${this.me.run}`);
  }

  /**
   * Take the lease on `key`, waiting while a live holder has it (`onWait` is told who, once per holder).
   * @returns the lease and, when someone else held it first, who (the caller then looks in the
   *   action cache: the other holder has probably recorded the result).
   * @throws the signal's reason when `signal` aborts while waiting; the fs error when the lease
   *   directory cannot be written.
   */
  async acquire(key: string, signal: AbortSignal, onWait?: (holder: Holder) => void): Promise<{ lease: Lease; waitedFor?: Holder }> {
    if (!this.options.assumeShared) {
      await untilAborted((this.joined ??= this.join()), signal);
      if (this.alone) return { lease: this.quietLease(key) };
    }
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

  /**
   * This run is done with the cache: its announcement goes, and it stops looking for others.
   * Leases still held stay valid; the next `acquire` announces the run again. Never rejects.
   */
  async leave(): Promise<void> {
    const joined = this.joined;
    if (!joined) return;
    this.joined = undefined;
    this.leaving.abort(new Error('left'));
    this.leaving = new AbortController();
    this.alone = false;
    await joined.catch(() => {});
    // A look that found another run just before the abort announces us shared at its end: let it
    // finish, or its announcement would outlive the run.
    await this.looking;
    this.looking = undefined;
    clearInterval(this.announceBeat);
    await rm(this.announcement, { force: true }).catch(() => {});
  }

  /** Announce this run, then learn whether it is alone (module comment). */
  private async join(): Promise<void> {
    const { leaving } = this;
    await mkdir(this.options.dir, { recursive: true });
    await this.announce(false);
    this.announceBeat = setInterval(() => {
      try {
        const now = new Date();
        utimesSync(this.announcement, now, now);
      } catch {
        // removed by a run that thought us gone: we only cost it a wait
      }
    }, HEARTBEAT_MS);
    this.announceBeat.unref();
    const others = await this.others();
    if (others.length === 0) {
      this.alone = true;
      this.looking = this.look(leaving.signal);
      return;
    }
    await this.announce(true);
    await this.waitShared(others, leaving.signal);
  }

  /** Write this run's announcement (atomically: a reader never sees half of it). */
  private async announce(shared: boolean): Promise<void> {
    await writeFileAtomicAsync(this.announcement, `${JSON.stringify({ ...this.me, shared })}\n`);
  }

  /** The other runs' live announcements' file names and whether each says shared; stale ones are removed. */
  private async others(): Promise<Array<{ name: string; shared: boolean }>> {
    let names: string[];
    try {
      names = await readdir(this.options.dir);
    } catch {
      return [];
    }
    const found: Array<{ name: string; shared: boolean }> = [];
    for (const name of names) {
      if (!name.startsWith(ANNOUNCEMENT) || name === `${ANNOUNCEMENT}${this.me.run}`) continue;
      const file = path.join(this.options.dir, name);
      const holder = await this.holder(file);
      if (holder === 'gone') continue;
      if (holder === 'stale') {
        await rm(file, { force: true });
        continue;
      }
      found.push({ name, shared: holder !== 'unreadable' && (holder as Holder & { shared?: unknown }).shared === true });
    }
    return found;
  }

  /** Wait until every one of `others` says shared, or is gone. @throws when `signal` aborts. */
  private async waitShared(others: Array<{ name: string; shared: boolean }>, signal: AbortSignal): Promise<void> {
    let pause = POLL_MIN_MS;
    for (;;) {
      const now = new Set((await this.others()).filter((o) => !o.shared).map((o) => o.name));
      if (!others.some((o) => now.has(o.name))) return;
      await this.options.clock.sleep(pause, signal);
      pause = Math.min(POLL_MAX_MS, pause * 2);
    }
  }

  /** While alone: look for another run's announcement; on one, become shared. */
  private async look(signal: AbortSignal): Promise<void> {
    try {
      for (;;) {
        await this.options.clock.sleep(LOOK_MS, signal);
        if ((await this.others()).length > 0) break;
      }
    } catch {
      return; // left
    }
    this.alone = false;
    // Take a file for every key held in memory: nobody else holds one (the newcomer waits for the
    // mark below before it takes any lease).
    for (const q of this.quiet) {
      const file = this.file(q.key);
      let lease: Lease | undefined;
      try {
        if (await this.tryCreate(file)) lease = this.held(file);
      } catch {
        // an unwritable lease directory: the node may run twice, which costs time only
      }
      if (q.released) void lease?.release();
      else q.file = lease;
    }
    this.quiet.clear();
    await this.announce(true).catch(() => {});
  }

  /** A lease held in memory while the run is alone. */
  private quietLease(key: string): Lease {
    const q: QuietLease = { key, released: false };
    this.quiet.add(q);
    return {
      release: () => {
        if (q.released) return Promise.resolve();
        q.released = true;
        this.quiet.delete(q);
        return q.file?.release() ?? Promise.resolve();
      },
    };
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

/** `promise`, or the signal's reason as soon as `signal` aborts. */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}
