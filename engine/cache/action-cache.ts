/**
 * The action cache, in the workspace's `.graph/` (or `GRAPH_CACHE_DIR`):
 *
 * - An entry per action key, written only after the node succeeded: the key record as canonical
 *   JSON (so its SHA-256 is the key), the result line, and the SHA-256 (hex) of the result line.
 *   The result line is JSON `{"format": 1, "id", "outputs", "artifacts", "files"?, "log",
 *   "duration_ms"}`. An entry is served only if both digests match and the result has the right
 *   shape: a torn or edited entry is a miss, never served. Entries live in two places:
 *   - `ac/records.log`, append-only: a success appends its entry as one line,
 *     `<key> <sha256 of the result line> <record line> <result line>` (canonical JSON has no
 *     spaces outside strings and no raw quotes inside them, so ` {"format":` starts the result
 *     line). Each line is written with a newline before it as well as after it, so a line torn
 *     by a crash ends there and the next success's line stays whole; empty lines are skipped, and
 *     a last line without its newline is not read (yet). Appending to one
 *     file, not creating one per node: on these disks a file's creation costs about as much as
 *     the rest of the engine's work for a node (bench/RESULTS.md). The file is read only when an
 *     entry other than a node's last logged one is asked for (another key, an explanation), and
 *     then once, as an index of line offsets.
 *   - `ac/<2 hex>/<key>`: one file per entry, the three lines, written atomically. A cache in
 *     `GRAPH_CACHE_DIR` writes every entry so (`entryFiles`): machines may share it over a network
 *     file system, where two machines' appends to one file are not atomic. `compact`
 *     moves the entries a node's newer success superseded here when it rewrites records.log to
 *     the last entry of each node (so a revert or a branch switch still hits after compaction),
 *     and caches written before records.log have every entry here. Read when records.log has no
 *     intact line for the key.
 * - `actions.log`: the index, append-only. One line per success:
 *   `<sha256 of the rest, 64 hex> <key> <result line>`, the last line for a node id wins. A plan
 *   reads this one file instead of one entry per node: a node whose key equals its last logged key
 *   is served from the log line (after checking that line's digest). Entries are read only for
 *   other keys (a revert, a branch switch) and for explanations. A torn last line (a crash
 *   mid-append) or an edited line fails its digest and is skipped. Appends of one line are atomic
 *   between processes (O_APPEND), so two `graph` processes can share it; `compact` rewrites it
 *   and records.log (atomic renames) to one line per node when it has grown past twice that.
 *
 * Damage is remembered, not only skipped, so the plan can say "cache entry corrupt" rather than
 * "no previous record": an entry file that is there but fails its checks, and a log line that fails
 * its digest yet still shows whose it is (its key field, or its id). Noticing costs nothing extra:
 * only files and lines that are read anyway are looked at.
 */
import { hash } from 'node:crypto';
import { appendFileSync, closeSync, existsSync, fstatSync, mkdirSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
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
  /**
   * records.log as read (`recordsIndex`): per key its last line; `bytes` and `ino` say what of the
   * file that is, `own` how many bytes this object appended since (a miss reads the file again
   * only when it grew by more: another process appended).
   */
  private records?: { bytes: number; ino: number; own: number; lines: Map<string, string>; damaged: Set<string> };

  /**
   * @param dir absolute cache directory (`.graph`, or `GRAPH_CACHE_DIR`).
   * @param options `entryFiles`: write each entry as its own file (atomic rename), not as a line of
   *   records.log: for a cache that machines share over a network file system (`GRAPH_CACHE_DIR`
   *   with Slurm jobs), where appends from two machines are not atomic. Either way both are read.
   */
  constructor(
    readonly dir: string,
    private readonly options: { readonly entryFiles?: boolean } = {},
  ) {}

  private entryPath(key: string): string {
    return path.join(this.dir, 'ac', key.slice(0, 2), key);
  }

  private get logPath(): string {
    return path.join(this.dir, 'actions.log');
  }

  private get recordsPath(): string {
    return path.join(this.dir, 'ac', 'records.log');
  }

  /**
   * records.log as an index: key → its last line (checked when used). Lines whose key field is
   * not where it belongs are skipped; read once per cache object, then only what others append.
   */
  private recordsIndex(): NonNullable<ActionCache['records']> {
    if (this.records) return this.records;
    this.records = { bytes: 0, ino: 0, own: 0, lines: new Map(), damaged: new Set() };
    this.readMoreRecords();
    return this.records;
  }

  /**
   * Index what records.log holds past what was read: the lines other processes appended since
   * (and this object's own, again); all of it when the file was replaced (compacted) or shrank.
   * @returns whether anything new was read.
   */
  private readMoreRecords(): boolean {
    const index = this.records as NonNullable<ActionCache['records']>;
    // One stat when no other process appended (a build's check, after each lease, that no one
    // else recorded the node; a plan's miss for each node whose key is new).
    const seen = statSync(this.recordsPath, { throwIfNoEntry: false });
    if (!seen || (seen.ino === index.ino && seen.size === index.bytes + index.own)) return false; // no records.log (yet): every entry is a file
    let fd: number;
    try {
      fd = openSync(this.recordsPath, 'r');
    } catch {
      return false;
    }
    try {
      const st = fstatSync(fd);
      if (st.ino !== index.ino || st.size < index.bytes) Object.assign(index, { bytes: 0, ino: st.ino, lines: new Map() });
      if (st.size <= index.bytes) return false;
      const more = Buffer.allocUnsafe(st.size - index.bytes);
      const got = readSync(fd, more, 0, more.length, index.bytes);
      // Lines are whole up to the last newline; a partial line at the end is read again next time.
      const upTo = more.lastIndexOf(10, got - 1);
      if (upTo === -1) return false;
      // One string per read, lines sliced from it (never one growing string: each append would copy it).
      const text = more.toString('utf8', 0, upTo + 1);
      index.bytes += upTo + 1;
      index.own = 0;
      let start = 0;
      while (start < text.length) {
        const end = text.indexOf('\n', start);
        if (end - start > 130 && text[start + 64] === ' ' && text[start + 129] === ' ') index.lines.set(text.slice(start, start + 64), text.slice(start, end));
        start = end + 1;
      }
      return true;
    } finally {
      closeSync(fd);
    }
  }

  /** The intact records.log entry for `key`; undefined when it has none (a damaged one is remembered). */
  private readRecordsLine(key: string): { record: KeyRecord; resultLine: string } | undefined {
    const index = this.recordsIndex();
    let line = index.lines.get(key);
    if (line === undefined && this.readMoreRecords()) line = index.lines.get(key);
    if (line === undefined) return undefined;
    const parsed = parseRecordsLine(line, key);
    if (!parsed) index.damaged.add(key);
    return parsed;
  }

  /** Read the record of an entry, checking it hashes to `key`. */
  private readRecord(key: string): KeyRecord | undefined {
    return this.readEntryFile(key)?.record;
  }

  /**
   * An intact entry's record (parsed once, here) and result line, from records.log, else from its
   * entry file; undefined when missing, torn or tampered in both (then remembered as corrupt).
   */
  private readEntryFile(key: string): { record: KeyRecord; resultLine: string } | undefined {
    const logged = this.readRecordsLine(key);
    if (logged) return logged;
    let text: string;
    try {
      text = readFileSync(this.entryPath(key), 'utf8');
    } catch {
      if (this.records?.damaged.has(key)) this.corruptEntries.add(key);
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
   * Record a success: the entry first (a line of records.log), then the log line, so the log
   * never names a missing entry written by this process.
   * @param recordLine the record as canonical JSON, whose SHA-256 must be `key`.
   * @throws the file system's error (ENOSPC, EACCES) when either append fails: the result is then
   *   not recorded (a torn line is never served).
   */
  async put(id: NodeId, key: string, recordLine: string, result: CachedResult): Promise<void> {
    if (sha256(recordLine) !== key) throw new Error(`internal error: record of ${id} does not hash to its key`);
    const resultLine = JSON.stringify({ format: FORMAT, id, ...result });
    // Synchronous: two appends cost less than the thread pool's round trips, and dependents wait
    // for this record.
    if (this.options.entryFiles) writeFileAtomic(this.entryPath(key), `${recordLine}\n${resultLine}\n${sha256(resultLine)}\n`);
    else {
      const line = recordsLine(key, recordLine, resultLine);
      appendRecordsLine(this.recordsPath, line);
      // This object's index knows its own entries without reading them back.
      if (this.records) {
        this.records.lines.set(key, line.slice(1, -1));
        this.records.own += Buffer.byteLength(line);
      }
    }
    appendFileSync(this.logPath, logLine(key, resultLine));
    if (this.index) {
      this.logLines++;
      this.index.set(id, { key, resultLine });
    }
  }

  /**
   * Rewrite `actions.log` and `ac/records.log` with one line per node when actions.log has grown
   * past twice that; the entries records.log drops (superseded by a newer success of their node)
   * become entry files first, so every entry stays readable.
   */
  compact(): void {
    // Lines counted when the index was read (a plan has read it): the file is not read again.
    // Lines other processes appended since are not counted: they only delay a compaction.
    const last = this.lastEntries();
    if (this.logLines <= 2 * last.size + 1000) return;
    const lastKeys = new Set<string>();
    last.forEach((e) => lastKeys.add(e.key));
    const index = this.recordsIndex();
    const kept: string[] = [];
    index.lines.forEach((line, key) => {
      const entry = parseRecordsLine(line, key);
      if (!entry) return; // damaged: dropped (its entry file, if any, stays)
      if (lastKeys.has(key)) kept.push(`${line}\n`);
      else if (!existsSync(this.entryPath(key))) writeFileAtomic(this.entryPath(key), `${recordLineOf(line)}\n${entry.resultLine}\n${sha256(entry.resultLine)}\n`);
    });
    // Lines appended by another process during the rewrites can be lost: that costs the node's
    // fast path and its explanation (a miss: it runs again), never correctness.
    if (index.lines.size) writeFileAtomic(this.recordsPath, kept.join(''));
    this.records = undefined;
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

/** A records.log line, with a newline before it (see the module comment) and after it. */
function recordsLine(key: string, recordLine: string, resultLine: string): string {
  return `\n${key} ${sha256(resultLine)} ${recordLine} ${resultLine}\n`;
}

function appendRecordsLine(file: string, line: string): void {
  try {
    appendFileSync(file, line);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    mkdirSync(path.dirname(file), { recursive: true });
    appendFileSync(file, line);
  }
}

/** The record line of a checked records.log `line` (as written: its SHA-256 is the key). */
function recordLineOf(line: string): string {
  return line.slice(130, line.indexOf(RESULT_SEPARATOR, 130));
}

/** Between the record line and the result line of a records.log line. */
const RESULT_SEPARATOR = ` ${RESULT_PREFIX.slice(0, '{"format":'.length)}`;

/**
 * Parse and check a records.log line of `key`: record hashing to the key, a key record, a result
 * line hashing to its sum and of this format. Undefined when any check fails.
 */
function parseRecordsLine(line: string, key: string): { record: KeyRecord; resultLine: string } | undefined {
  if (line.length < 131 || line.slice(0, 64) !== key || line[64] !== ' ' || line[129] !== ' ') return undefined;
  const split = line.indexOf(RESULT_SEPARATOR, 130);
  if (split === -1) return undefined;
  const recordLine = line.slice(130, split);
  const resultLine = line.slice(split + 1);
  if (sha256(recordLine) !== key || sha256(resultLine) !== line.slice(65, 129)) return undefined;
  const record = parseJson(recordLine);
  if (!isKeyRecord(record) || !parseResult(resultLine)) return undefined;
  return { record, resultLine };
}

function logLine(key: string, resultLine: string): string {
  const rest = `${key} ${resultLine}`;
  return `${sha256(rest)} ${rest}\n`;
}
