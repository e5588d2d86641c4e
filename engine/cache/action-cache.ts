/**
 * The action cache, in the workspace's `.graph/` (or `GRAPH_CACHE_DIR`):
 *
 * - `ac/<2 hex>/<key>`: one entry per action key, written (atomically) only after the node
 *   succeeded. Three lines: the key record as canonical JSON (so its SHA-256 is the key), the
 *   result line, and the SHA-256 (hex) of the result line. The result line is JSON
 *   `{"format": 1, "id", "outputs", "artifacts", "files"?, "log", "duration_ms"}`. An entry is served only
 *   if both digests match and the result has the right shape: a torn or edited entry is a miss,
 *   never served.
 * - `actions.log`: the index, append-only. One line per success:
 *   `<sha256 of the rest, 64 hex> <key> <result line>`, the last line for a node id wins. A plan
 *   reads this one file instead of one entry per node: a node whose key equals its last logged key
 *   is served from the log line (after checking that line's digest). Entries are read only for
 *   other keys (a revert, a branch switch) and for explanations. A torn last line (a crash
 *   mid-append) or an edited line fails its digest and is skipped. Appends of one line are atomic
 *   between processes (O_APPEND), so two `graph` processes can share it; `compact` rewrites it
 *   (atomic rename) to one line per node when it has grown past twice that.
 *
 * Damage is remembered, not only skipped, so the plan can say "cache entry corrupt" rather than
 * "no previous record": an entry file that is there but fails its checks, and a log line that fails
 * its digest yet still shows whose it is (its key field, or its id). Noticing costs nothing extra:
 * only files and lines that are read anyway are looked at.
 */
import { hash } from 'node:crypto';
import { appendFileSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { writeFileAtomic } from '../atomic.js';
import { isKeyRecord, type KeyRecord } from '../key/key.js';
import type { ContentStore } from './store.js';
import type { Json, NodeId } from '../rule.js';

export interface CachedResult {
  readonly outputs: { readonly [k: string]: Json };
  /** Digests (`sha256:<hex>`) of blobs in the content-addressed store the result needs. */
  readonly artifacts: readonly string[];
  /** Workspace-relative paths of the node's visible files (`NodeOutputs.files`). */
  readonly files?: readonly string[];
  /**
   * Digest of the node's log in the content-addressed store; absent when the log held nothing
   * but its header (node, key, why: all in the record already), and for results from elsewhere.
   */
  readonly log?: string;
  /** Milliseconds the node took when it ran. */
  readonly duration_ms: number;
}

export interface CacheEntry {
  readonly id: NodeId;
  readonly key: string;
  /** The key record, read on demand; undefined when its entry file is gone or corrupt. */
  readonly record: KeyRecord | undefined;
  readonly result: CachedResult;
}

/**
 * A second tier of the action cache, shared between machines (e.g. the Bazel HTTP cache protocol:
 * `ac/` and `cas/` on a server). The local `ActionCache` is always the first tier, and the two
 * compose: a plan looks locally first, then asks the remote about the nodes that would run
 * (`checkRemote` in plan.ts). A hit is cached without its bytes: its artifacts are downloaded
 * (verified against their digests) only when a node that runs needs them
 * (engine/cache/remote/materialize.ts), and then it is recorded locally, so the next plan needs
 * no network. Every success is recorded locally, then uploaded (`CacheRecorder`).
 *
 * A remote cache never fails a build and never serves a wrong result: an unreachable server, a
 * timeout, a truncated or mismatching body are a miss (`lookup` resolves undefined, `download`
 * false) or a skipped upload, reported by the implementation as one warning.
 */
export interface RemoteCache {
  /** For messages: where it is (never with credentials). */
  readonly name: string;
  /**
   * The result recorded under `key`, checked: its key record hashes to `key`. Its artifacts are
   * not fetched. Undefined on a miss, on any failure, or with `signal` aborted. Never rejects.
   */
  lookup(id: NodeId, key: string, signal?: AbortSignal): Promise<CachedResult | undefined>;
  /**
   * Bring blobs (`sha256:<hex>`, as a looked-up result names them) into `store`, each verified
   * against its digest. True when every one is intact in the store afterwards. Never rejects.
   */
  download(digests: readonly string[], store: ContentStore, signal?: AbortSignal): Promise<boolean>;
  /**
   * Upload a success: its key record (`recordLine`, whose SHA-256 is `key`), its result and the
   * artifacts it names from `store`. Never rejects.
   */
  upload(id: NodeId, key: string, recordLine: string, result: CachedResult, store: ContentStore): Promise<void>;
  /**
   * Optional: why a hit `lookup` answered for `key` is cached, for the plan and the report (the
   * registry tier says `from registry REF (sha256:…)`); undefined, or absent, for the default
   * `from remote cache NAME`.
   */
  hitReason?(key: string): string | undefined;
}

const FORMAT = 1;
const KEY = /^[a-f0-9]{64}$/;

// One-shot hashing: a plan checks one log line per node, and a Hash object per line costs more than the hashing.
const sha256 = (text: string) => hash('sha256', text, 'hex');

/** JSON.parse, or undefined for text that is not JSON. */
function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** Parse and check a result line; undefined when it is not a result of this format. */
function parseResult(line: string): (CachedResult & { id: NodeId }) | undefined {
  let r: Partial<CachedResult & { format: number; id: string }>;
  try {
    r = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (r.format !== FORMAT || typeof r.id !== 'string' || typeof r.outputs !== 'object' || r.outputs === null) return undefined;
  if (!Array.isArray(r.artifacts) || typeof r.duration_ms !== 'number') return undefined;
  if (r.files !== undefined && !(Array.isArray(r.files) && r.files.every((f) => typeof f === 'string'))) return undefined;
  shareOutputStrings(r.artifacts as string[], r.outputs);
  return { id: r.id as NodeId, outputs: r.outputs, artifacts: r.artifacts, ...(r.files ? { files: r.files } : {}), log: r.log, duration_ms: r.duration_ms };
}

/**
 * Artifacts are usually outputs too (an image's manifest digest is both): JSON.parse makes two
 * equal strings, and a plan keeps every cached result, so an artifact equal to a top-level output
 * becomes that output's string (≈9 MB at 100k nodes).
 */
function shareOutputStrings(artifacts: string[], outputs: { readonly [k: string]: Json }): void {
  for (const k in outputs) {
    const v = outputs[k];
    if (typeof v !== 'string') continue;
    for (let i = 0; i < artifacts.length; i++) if (artifacts[i] === v) artifacts[i] = v;
  }
}

export class ActionCache {
  private index?: Map<string, { key: string; resultLine: string }>;
  /** Lines of `actions.log` when the index was read, plus those this object appended since. */
  private logLines = 0;
  /** Keys whose entry file was read and found torn or tampered. */
  private readonly corruptEntries = new Set<string>();
  /** Keys and node ids named by log lines that failed their digest. */
  private readonly corruptLines = { keys: new Set<string>(), ids: new Set<string>() };

  /** @param dir absolute cache directory (`.graph`, or `GRAPH_CACHE_DIR`). */
  constructor(readonly dir: string) {}

  private entryPath(key: string): string {
    return path.join(this.dir, 'ac', key.slice(0, 2), key);
  }

  private get logPath(): string {
    return path.join(this.dir, 'actions.log');
  }

  /** Read the record of an entry file, checking it hashes to `key`. */
  private readRecord(key: string): KeyRecord | undefined {
    return this.readEntryFile(key)?.record;
  }

  /** An intact entry file's record (parsed once, here) and result line; undefined when missing, torn or tampered. */
  private readEntryFile(key: string): { record: KeyRecord; resultLine: string } | undefined {
    let text: string;
    try {
      text = readFileSync(this.entryPath(key), 'utf8');
    } catch {
      return undefined;
    }
    const lines = text.split('\n');
    const [recordLine, resultLine, resultSum] = lines;
    const record = lines.length === 4 && lines[3] === '' && sha256(resultLine) === resultSum && sha256(recordLine) === key ? parseJson(recordLine) : undefined;
    if (!isKeyRecord(record) || !parseResult(resultLine)) {
      this.corruptEntries.add(key);
      return undefined;
    }
    return { record, resultLine };
  }

  /**
   * The entry for a result line, or undefined when the line is not a result of this format.
   * @param record the key record when already read (else read on demand from the entry file).
   * @param knownId the node's id when the caller has it (the entry then keeps that string, not a copy).
   */
  private entry(key: string, resultLine: string, record?: KeyRecord, knownId?: NodeId): CacheEntry | undefined {
    const result = parseResult(resultLine);
    if (!result) return undefined;
    const { id, ...rest } = result;
    return new Entry(this, knownId === id ? knownId : id, key, rest, record ?? null);
  }

  /** @internal `Entry`'s way to its record (the entry file). */
  recordOf(key: string): KeyRecord | undefined {
    return this.readRecord(key);
  }

  /**
   * The intact entry for `key`, or undefined (missing, torn, tampered).
   * @param id when given and the log's last line for `id` has this key, that line serves it
   *   without opening the entry file.
   */
  get(key: string, id?: NodeId): CacheEntry | undefined {
    if (!KEY.test(key)) return undefined;
    if (id !== undefined) {
      const last = this.lastEntries().get(id);
      if (last?.key === key) {
        const e = this.entry(key, last.resultLine, undefined, id);
        if (e) return e;
      }
    }
    const file = this.readEntryFile(key);
    return file ? this.entry(key, file.resultLine, file.record) : undefined;
  }

  /**
   * Was the record of `key` (or the last one of `id`) there but damaged? True when `get(key)` found
   * its entry file torn or tampered, or `actions.log` holds a line for `key` (or, when no intact
   * line for `id` follows, for `id`) that fails its digest. Reads nothing `get` has not read.
   */
  isCorrupt(key: string, id: NodeId): boolean {
    const intact = this.lastEntries(); // fills corruptLines
    return this.corruptEntries.has(key) || this.corruptLines.keys.has(key) || (this.corruptLines.ids.has(id) && !intact.has(id));
  }

  /** The key `id` last succeeded with, from `actions.log`; undefined when it never did. */
  lastKey(id: NodeId): string | undefined {
    return this.lastEntries().get(id)?.key;
  }

  /** The last logged success of `id`, if any. */
  last(id: NodeId): CacheEntry | undefined {
    const e = this.lastEntries().get(id);
    return e ? this.entry(e.key, e.resultLine) : undefined;
  }

  private lastEntries(): Map<string, { key: string; resultLine: string }> {
    if (this.index) return this.index;
    const map = new Map<string, { key: string; resultLine: string }>();
    let text = '';
    try {
      text = readFileSync(this.logPath, 'utf8');
    } catch {
      // no log yet
    }
    let start = 0;
    while (start < text.length) {
      let end = text.indexOf('\n', start);
      if (end === -1) end = text.length; // a torn last line fails its digest below
      const line = text.slice(start, end);
      if (end < text.length) this.logLines++;
      start = end + 1;
      // `<64 hex sum> <64 hex key> <result line>`
      if (line.length < 131 || line[64] !== ' ' || line[129] !== ' ') continue;
      const rest = line.slice(65);
      const key = rest.slice(0, 64);
      const resultLine = rest.slice(65);
      const id = idOf(resultLine);
      if (sha256(rest) !== line.slice(0, 64)) {
        if (KEY.test(key)) this.corruptLines.keys.add(key);
        if (id !== undefined) this.corruptLines.ids.add(id);
        continue;
      }
      if (id === undefined) continue;
      map.set(id, { key, resultLine });
    }
    this.index = map;
    return map;
  }

  /**
   * Record a success: the entry first, then the log line, so the log never names a missing entry
   * written by this process.
   * @param recordLine the record as canonical JSON, whose SHA-256 must be `key`.
   */
  async put(id: NodeId, key: string, recordLine: string, result: CachedResult): Promise<void> {
    if (sha256(recordLine) !== key) throw new Error(`internal error: record of ${id} does not hash to its key`);
    const resultLine = JSON.stringify({ format: FORMAT, id, ...result });
    // Synchronous: two small writes cost less than the thread pool's round trips (open, write,
    // close, rename: about six of them), and dependents wait for this record.
    writeFileAtomic(this.entryPath(key), `${recordLine}\n${resultLine}\n${sha256(resultLine)}\n`);
    appendFileSync(this.logPath, logLine(key, resultLine));
    if (this.index) {
      this.logLines++;
      this.index.set(id, { key, resultLine });
    }
  }

  /** Rewrite `actions.log` with one line per node when it has grown past twice that. */
  compact(): void {
    // Lines counted when the index was read (a plan has read it): the file is not read again.
    // Lines other processes appended since are not counted: they only delay a compaction.
    const last = this.lastEntries();
    if (this.logLines <= 2 * last.size + 1000) return;
    // A line appended by another process during the rewrite can be lost: that costs the node's
    // fast path and its explanation (the entry file still serves it), never correctness.
    writeFileAtomic(this.logPath, [...last.values()].map((e) => logLine(e.key, e.resultLine)).join(''));
  }
}

/**
 * A cache entry whose record is read from its entry file when first asked for. A class, not an
 * object literal with a closure: a plan keeps one per cached node (100k at the largest zoos).
 */
class Entry implements CacheEntry {
  constructor(
    private readonly cache: ActionCache,
    readonly id: NodeId,
    readonly key: string,
    readonly result: CachedResult,
    /** null: not read yet. */
    private known: KeyRecord | undefined | null,
  ) {}

  get record(): KeyRecord | undefined {
    if (this.known === null) this.known = this.cache.recordOf(this.key);
    return this.known;
  }
}

const RESULT_PREFIX = '{"format":1,"id":"';

/** The node id a result line names (read without parsing the rest); undefined when damaged. */
function idOf(resultLine: string): string | undefined {
  if (!resultLine.startsWith(RESULT_PREFIX)) return undefined;
  const end = resultLine.indexOf('"', RESULT_PREFIX.length);
  if (end === -1) return undefined;
  const raw = resultLine.slice(RESULT_PREFIX.length, end);
  if (!raw.includes('\\')) return raw;
  // An escape in the id: the closing quote may be further on; JSON reads it.
  const m = /^\{"format":1,"id":("(?:[^"\\]|\\.)*")/.exec(resultLine);
  try {
    return m ? (JSON.parse(m[1]) as string) : undefined;
  } catch {
    return undefined;
  }
}

function logLine(key: string, resultLine: string): string {
  const rest = `${key} ${resultLine}`;
  return `${sha256(rest)} ${rest}\n`;
}
