/**
 * The action cache, in the workspace's `.graph/`:
 *
 * - `ac/<2 hex>/<key>`: one entry per action key, written (atomically) only after the node
 *   succeeded. Three lines: the key record as canonical JSON (so its SHA-256 is the key), the
 *   result `{"format": 1, "id", "outputs", "artifacts", "log", "duration_ms"}` as JSON, and the
 *   SHA-256 (hex) of that result line. An entry is served only if both digests match and the
 *   result has the right shape, so a torn or edited entry is a miss, never served. Checking needs
 *   only two hashes over the bytes read, no re-serialization: this is on every plan's path.
 * - `actions.log`: append-only JSON lines `{"id": NODE, "key": KEY}`, one per success, the last
 *   line for an id wins. It exists so the next plan can find a node's previous record and explain
 *   what changed. A torn last line (a crash mid-append) is skipped. Appends of one short line are
 *   atomic between processes (O_APPEND), so two `graph` processes can share it.
 */
import { appendFileSync, mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { writeFileAtomic } from './atomic.js';
import { canonicalJson, type KeyRecord } from './key.js';
import type { Json, NodeId } from './rule.js';

export interface CachedResult {
  readonly outputs: { readonly [k: string]: Json };
  readonly artifacts: readonly string[];
  /** Digest of the node's log in the content-addressed store. */
  readonly log?: string;
  /** Milliseconds the node took when it ran. */
  readonly duration_ms: number;
}

export interface CacheEntry {
  readonly id: NodeId;
  readonly key: string;
  readonly record: KeyRecord;
  readonly result: CachedResult;
}

const FORMAT = 1;

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

export class ActionCache {
  private lastKeysCache?: Map<string, string>;

  /** @param dir absolute `.graph` directory. */
  constructor(readonly dir: string) {}

  private entryPath(key: string): string {
    return path.join(this.dir, 'ac', key.slice(0, 2), key);
  }

  private get logPath(): string {
    return path.join(this.dir, 'actions.log');
  }

  /** The entry for `key` if present and intact; undefined otherwise (missing, torn, tampered). */
  get(key: string): CacheEntry | undefined {
    if (!/^[a-f0-9]{64}$/.test(key)) return undefined;
    let text: string;
    try {
      text = readFileSync(this.entryPath(key), 'utf8');
    } catch {
      return undefined;
    }
    const lines = text.split('\n');
    if (lines.length !== 4 || lines[3] !== '') return undefined;
    const [recordLine, resultLine, resultSum] = lines;
    if (sha256(resultLine) !== resultSum || sha256(recordLine) !== key) return undefined;
    let r: Partial<CachedResult & { format: number; id: string }>;
    try {
      r = JSON.parse(resultLine);
    } catch {
      return undefined;
    }
    if (r.format !== FORMAT || typeof r.id !== 'string' || typeof r.outputs !== 'object' || r.outputs === null) return undefined;
    if (!Array.isArray(r.artifacts) || typeof r.duration_ms !== 'number') return undefined;
    let record: KeyRecord | undefined;
    return {
      id: r.id as NodeId,
      key,
      // Parsed only when asked for (explanations); most plans never need it.
      get record(): KeyRecord {
        return (record ??= JSON.parse(recordLine) as KeyRecord);
      },
      result: { outputs: r.outputs, artifacts: r.artifacts, log: r.log, duration_ms: r.duration_ms },
    };
  }

  /** The key each node last succeeded with, from `actions.log`. */
  lastKeys(): ReadonlyMap<string, string> {
    if (this.lastKeysCache) return this.lastKeysCache;
    const map = new Map<string, string>();
    let text = '';
    try {
      text = readFileSync(this.logPath, 'utf8');
    } catch {
      // no log yet
    }
    for (const line of text.split('\n')) {
      if (!line) continue;
      try {
        const { id, key } = JSON.parse(line) as { id: unknown; key: unknown };
        if (typeof id === 'string' && typeof key === 'string') map.set(id, key);
      } catch {
        // a torn line from an interrupted append
      }
    }
    this.lastKeysCache = map;
    return map;
  }

  /**
   * Record a success: the entry first, then the log line, so the log never names a missing entry
   * written by this process.
   */
  put(id: NodeId, key: string, record: KeyRecord, result: CachedResult): void {
    const recordLine = canonicalJson(record);
    if (sha256(recordLine) !== key) throw new Error(`internal error: record of ${id} does not hash to its key`);
    const resultLine = JSON.stringify({ format: FORMAT, id, ...result });
    writeFileAtomic(this.entryPath(key), `${recordLine}\n${resultLine}\n${sha256(resultLine)}\n`);
    mkdirSync(this.dir, { recursive: true });
    appendFileSync(this.logPath, `${JSON.stringify({ id, key })}\n`);
    this.lastKeysCache?.set(id, key);
  }

  /**
   * Rewrite `actions.log` with one line per node when it has grown past twice that (atomic
   * rename; a line appended by another process during the rewrite can be lost, which only costs
   * that node's explanation, never correctness).
   */
  compact(): void {
    let lines = 0;
    try {
      lines = readFileSync(this.logPath, 'utf8').split('\n').length - 1;
    } catch {
      return;
    }
    const last = this.lastKeys();
    if (lines <= 2 * last.size + 1000) return;
    writeFileAtomic(this.logPath, [...last].map(([id, key]) => `${JSON.stringify({ id, key })}\n`).join(''));
  }
}
