/**
 * Action keys. A node's key is the SHA-256 of the canonical JSON of its key record: every input
 * that can change its output, kept as data so a later plan can say which one changed.
 *
 * Key record fields, in this fixed order, and why each is there:
 * - `rule`, `ruleVersion`: a new rule implementation invalidates every key of its kind.
 * - `decl`:  the normalized declaration the node depends on (only the fields it reads).
 * - `files`: workspace-relative path → fingerprint (files.ts) of every input file.
 * - `env`:   allow-listed environment variables → value, or null when unset.
 * - `tool`:  identity and version of the code that produces the output: graph's own (the node's
 *            `tool`), then each external tool's as probed (engine/key/tools.ts).
 * - `deps`:  dependency node id → that dependency's key. Keys (not output digests) make a plan
 *            exact before anything runs: a dependency that will run changes its dependents' keys.
 */
import { createHash, hash } from 'node:crypto';
import type { FileDigester } from './files.js';
import { toolField, type ToolIdentities } from './tools.js';
import type { Json, NodeDef, NodeId } from '../rule.js';

export interface KeyRecord {
  readonly rule: string;
  readonly ruleVersion: number;
  readonly decl: Json;
  readonly files: Readonly<Record<string, string>>;
  readonly env: Readonly<Record<string, string | null>>;
  readonly tool: string;
  readonly deps: Readonly<Record<string, string>>;
}

/** Objects with at most this many keys have them sorted by insertion (see `canonicalJson`). */
const SMALL = 16;

/**
 * Is `x` shaped as a `KeyRecord`? A record read back from the cache hashes to its key, yet a
 * hand-edited or foreign entry can be any JSON: one that is not a record is treated as corrupt.
 */
export function isKeyRecord(x: unknown): x is KeyRecord {
  const r = x as Partial<Record<keyof KeyRecord, unknown>>;
  const isStringMap = (m: unknown, nullable = false) =>
    typeof m === 'object' && m !== null && !Array.isArray(m) && Object.values(m).every((v) => typeof v === 'string' || (nullable && v === null));
  return (
    typeof x === 'object' && x !== null && typeof r.rule === 'string' && typeof r.ruleVersion === 'number' && 'decl' in r &&
    typeof r.tool === 'string' && isStringMap(r.files) && isStringMap(r.env, true) && isStringMap(r.deps)
  );
}

/**
 * JSON with object keys sorted at every level and no whitespace: equal data, equal bytes.
 * Built by string concatenation (V8 joins such strings lazily): this runs for every node of
 * every plan, and was the plan's largest cost with a parts array joined at the end.
 * @throws TypeError for a non-finite number.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || value === undefined) return 'null';
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value);
    case 'number':
      if (!Number.isFinite(value)) throw new TypeError(`cannot key non-finite number ${value}`);
      return String(value);
    case 'boolean':
      return value ? 'true' : 'false';
  }
  if (Array.isArray(value)) {
    let out = '[';
    for (let i = 0; i < value.length; i++) out += (i ? ',' : '') + canonicalJson(value[i]);
    return `${out}]`;
  }
  const obj = value as Record<string, unknown>;
  const keys = Object.keys(obj);
  if (keys.length > SMALL) keys.sort();
  else {
    // In place: V8's sort copies the array first, and a plan sorts the keys of every node's
    // declaration (its largest source of garbage). Same order: UTF-16 code units, as sort().
    for (let i = 1; i < keys.length; i++) {
      const k = keys[i];
      let j = i - 1;
      for (; j >= 0 && keys[j] > k; j--) keys[j + 1] = keys[j];
      keys[j + 1] = k;
    }
  }
  let out = '{';
  let first = true;
  for (const k of keys) {
    const v = obj[k];
    if (v === undefined) continue;
    out += (first ? '' : ',') + JSON.stringify(k) + ':' + canonicalJson(v);
    first = false;
  }
  return `${out}}`;
}

/** The action key of a record: 64 lowercase hex digits. */
export function keyOf(record: KeyRecord): string {
  return createHash('sha256').update(canonicalJson(record)).digest('hex');
}

/** A key record with its canonical JSON text and its key (SHA-256 of the text). */
export interface KeyedRecord {
  readonly record: KeyRecord;
  readonly text: string;
  readonly key: string;
}

const NO_ENV: Record<string, string | null> = Object.freeze({}) as Record<string, string | null>;

/**
 * Computes key records for one plan. The canonical text is assembled from its parts (same bytes as
 * `canonicalJson(record)`), and the part for a list of input files is computed once per list:
 * every test of a group shares its inputs, and this runs for every node of every plan.
 */
export class Keyer {
  private readonly fileParts = new Map<string, { map: Record<string, string>; text: string }>();
  /** One string per distinct tool field: nodes of a kind share theirs (kept by every record). */
  private readonly toolFields = new Map<string, string>();

  /**
   * @param env the environment allow-listed variables are read from.
   * @param tools the identities of the external tools nodes name (`resolveTools`).
   */
  constructor(
    private readonly digester: FileDigester,
    private readonly env: NodeJS.ProcessEnv,
    private readonly tools?: ToolIdentities,
  ) {}

  /**
   * Key one node.
   * @param files the node's expanded input files (workspace-relative, sorted); `filesId`
   *   identifies that list (equal ids, equal lists).
   * @param depKeys the key of every dependency, already computed (callers go in topological order).
   */
  key(node: NodeDef, ruleVersion: number, files: readonly string[], filesId: string, depKeys: ReadonlyMap<NodeId, string>): KeyedRecord {
    const { files: part, env: envMap, envText, tool } = this.parts(node, files, filesId);
    const deps: Record<string, string> = {};
    for (const id of node.deps.length > 1 ? node.deps.map((d) => d.id).sort() : node.deps.map((d) => d.id)) deps[id] = depKeys.get(id) as string;
    // The common shape written directly (canonicalJson's bytes, without its key lists and sorts):
    // one dependency (every test, convert and publish node).
    const only = node.deps.length === 1 ? deps[node.deps[0].id] : undefined;
    const depsText = only === undefined ? canonicalJson(deps) : `{${JSON.stringify(node.deps[0].id)}:${JSON.stringify(only)}}`;
    const record: KeyRecord = { rule: node.kind, ruleVersion, decl: node.decl, files: part.map, env: envMap, tool, deps };
    // Fields in sorted order, as canonicalJson writes them.
    const text =
      `{"decl":${canonicalJson(node.decl)},"deps":${depsText},"env":${envText},` +
      `"files":${part.text},"rule":${JSON.stringify(node.kind)},"ruleVersion":${canonicalJson(ruleVersion)},"tool":${JSON.stringify(tool)}}`;
    return { record, text, key: hash('sha256', text, 'hex') };
  }

  /**
   * The parts of a node's record that come from outside the graph (its files' fingerprints, its
   * environment variables' values, its tools' identities), each text shared by the nodes that
   * have it: equal parts of equal nodes, equal records (what `KeyMemo` relies on).
   */
  parts(node: NodeDef, files: readonly string[], filesId: string): { files: { map: Record<string, string>; text: string }; env: Record<string, string | null>; envText: string; tool: string } {
    let part = this.fileParts.get(filesId);
    if (!part) {
      const map: Record<string, string> = {};
      for (const f of files) map[f] = this.digester.fingerprint(f);
      part = { map, text: canonicalJson(map) };
      this.fileParts.set(filesId, part);
    }
    // Most nodes read no environment variable: they share one empty map.
    const env: Record<string, string | null> = node.env.length ? {} : NO_ENV;
    for (const name of node.env.length > 1 ? [...node.env].sort() : node.env) env[name] = this.env[name] ?? null;
    let tool = toolField(node, this.tools);
    const known = this.toolFields.get(tool);
    if (known === undefined) this.toolFields.set(tool, tool);
    else tool = known;
    return { files: part, env, envText: env === NO_ENV ? '{}' : canonicalJson(env), tool };
  }
}

/** `sha256:0123456789ab`: a digest shortened for messages. */
export function shortDigest(fp: string): string {
  const m = /^(sha256:)?([a-f0-9]{64})(.*)$/.exec(fp);
  return m ? `${m[1] ?? ''}${m[2].slice(0, 12)}${m[3]}` : fp;
}

function show(v: Json | undefined): string {
  if (v === undefined) return 'absent';
  const s = JSON.stringify(v);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

/** Paths (`env.PATH`, `layers[0].to`) where two JSON values differ, with old and new values. */
function diffJson(a: Json | undefined, b: Json | undefined, at: string, out: string[]): void {
  if (canonicalJson(a) === canonicalJson(b)) return;
  const isObj = (x: unknown): x is Record<string, Json> => x !== null && typeof x === 'object' && !Array.isArray(x);
  if (isObj(a) && isObj(b)) {
    for (const k of [...new Set([...Object.keys(a), ...Object.keys(b)])].sort()) {
      diffJson(a[k], b[k], at ? `${at}.${k}` : k, out);
    }
  } else if (Array.isArray(a) && Array.isArray(b)) {
    for (let i = 0; i < Math.max(a.length, b.length); i++) {
      if (i >= a.length) out.push(`declaration ${at}[${i}] added (${show(b[i])})`);
      else if (i >= b.length) out.push(`declaration ${at}[${i}] removed (was ${show(a[i])})`);
      else diffJson(a[i], b[i], `${at}[${i}]`, out);
    }
  } else {
    out.push(`declaration ${at || 'value'} changed (${show(a)} → ${show(b)})`);
  }
}

/**
 * Explain why `current` differs from `previous`, most basic cause first: one line per changed
 * input, e.g. `input file models/x.pwm changed (sha256:0a1b… → sha256:9f8e…)`.
 * @param depWillRun tells whether a dependency is going to run in this plan.
 */
export function explainChange(previous: KeyRecord, current: KeyRecord, depWillRun: (id: string) => boolean): string[] {
  const out: string[] = [];
  if (previous.rule !== current.rule || previous.ruleVersion !== current.ruleVersion) {
    out.push(`rule ${current.rule} changed version (${previous.ruleVersion} → ${current.ruleVersion})`);
  }
  if (previous.tool !== current.tool) out.push(`tool changed (${previous.tool} → ${current.tool})`);
  diffJson(previous.decl, current.decl, '', out);
  for (const f of [...new Set([...Object.keys(previous.files), ...Object.keys(current.files)])].sort()) {
    const a = previous.files[f];
    const b = current.files[f];
    if (a === b) continue;
    if (a === undefined) out.push(`input file ${f} added`);
    else if (b === undefined || b === 'missing') out.push(`input file ${f} removed`);
    else out.push(`input file ${f} changed (${shortDigest(a)} → ${shortDigest(b)})`);
  }
  for (const name of [...new Set([...Object.keys(previous.env), ...Object.keys(current.env)])].sort()) {
    const a = previous.env[name] ?? null;
    const b = current.env[name] ?? null;
    if (a !== b) out.push(`environment variable ${name} changed (${a === null ? 'unset' : JSON.stringify(a)} → ${b === null ? 'unset' : JSON.stringify(b)})`);
  }
  for (const id of [...new Set([...Object.keys(previous.deps), ...Object.keys(current.deps)])].sort()) {
    if (previous.deps[id] === current.deps[id]) continue;
    if (!(id in current.deps)) out.push(`dependency ${id} removed`);
    else if (!(id in previous.deps)) out.push(`dependency ${id} added`);
    else if (depWillRun(id)) out.push(`dependency ${id} will run`);
    else out.push(`dependency ${id} changed (key ${current.deps[id].slice(0, 12)}, was ${previous.deps[id].slice(0, 12)})`);
  }
  return out;
}
