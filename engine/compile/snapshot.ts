/**
 * The compiled-graph cache: the nodes the rules expanded from validated declarations, kept in
 * `.graph/compiled.bin` and used again while nothing they were expanded from changed, so a plan of
 * unchanged declarations skips the rules' expansion and the graph's checks and ordering (at 4.5k
 * nodes the larger part of opening a workspace; bench/RESULTS.md).
 *
 * What the key covers (`compiledKey`), which is everything expansion reads:
 * - graph's own code (`out/build-id`, written by `npm run build`: a SHA-256 of every module; without
 *   it there is no cache) and each rule's kind and version;
 * - the workspace's absolute path and the working directory;
 * - the declaration files' bytes and the command line's setting overrides;
 * - the validated settings (the signing key's fingerprint, the GPUs found, the builder and sandbox
 *   chosen, …), every `GRAPH_*` environment variable, `process.arch` and `process.platform`;
 * - what each rule's expansion reads besides the declarations (`Rule.expandFacts`: the
 *   binfmt_misc entries, images.lock).
 *
 * Validation itself always runs (its diagnostics, the boundary checks, the settings are never
 * cached), so only declarations that validate reach the cache. The file is one JSON header line
 * (`{"format", "key", "nodes", "sum"}`), then the nodes without their declarations, then the
 * declarations in the same order (each part `v8.serialize` data; `nodes` the first part's length
 * in bytes, `sum` the SHA-256 of both). The declarations are deserialized only when one is first
 * asked for, which a plan whose keys come from the key memo never does.
 * Anything that does not match (another key, a torn or edited file, a tool probe no rule knows now)
 * is a miss: the graph is compiled as before and the file written again (temp file, rename). A
 * file that cannot be written is left out silently: the cache only saves time.
 *
 * Restored nodes are the rules' nodes without their closures: `at` (source spans) compiles the
 * declarations once more when first asked for (only diagnostics need a span), and each tool probe
 * comes back by name from its rule (`Rule.toolProbes`).
 */
import { createHash, hash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { deserialize, serialize } from 'node:v8';
import { writeFileAtomic } from '../atomic.js';
import type { Span } from '../diagnostics.js';
import type { ToolProbe } from '../key/tools.js';
import type { Json, NodeDef, NodeId, Rule } from '../rule.js';
import type { Declarations } from '../validate/declarations.js';
import { BuildGraph } from './graph.js';

/** Bumped when the file's layout or the nodes' stored form changes. */
const FORMAT = 'graph-compiled/1';

/** The cache file's name under `.graph/`. */
export const COMPILED_FILE = 'compiled.bin';

let buildIdMemo: string | null | undefined;

/**
 * graph's build id: the contents of `out/build-id` (scripts/build-id.ts, run by `npm run build`),
 * or null when there is none (then nothing is cached).
 */
export function buildId(): string | null {
  if (buildIdMemo !== undefined) return buildIdMemo;
  try {
    buildIdMemo = readFileSync(fileURLToPath(new URL('../../build-id', import.meta.url)), 'utf8').trim() || null;
  } catch {
    buildIdMemo = null;
  }
  return buildIdMemo;
}

/** JSON text of `v` with Maps as entry lists and functions left out (settings hold both). */
function factsText(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) => (x instanceof Map ? [...x.values()] : typeof x === 'function' ? undefined : x));
}

/**
 * The key of the compiled graph of `decls` (module comment), or undefined when graph has no build id.
 * @param env the environment (`GRAPH_*` variables are part of the key).
 */
export function compiledKey(decls: Declarations, rules: readonly Rule[], overrides: Readonly<Record<string, string | undefined>>, env: NodeJS.ProcessEnv): string | undefined {
  const build = buildId();
  if (!build) return undefined;
  const graphEnv = Object.keys(env)
    .filter((k) => k.startsWith('GRAPH_'))
    .sort()
    .map((k) => [k, env[k]]);
  const h = createHash('sha256');
  const part = (name: string, text: string) => h.update(`${name}\0${text.length}\0${text}\0`);
  part('format', FORMAT);
  part('build', build);
  part('rules', JSON.stringify(rules.map((r) => [r.kind, r.version, r.expandFacts?.(decls.root) ?? null])));
  part('root', decls.root);
  part('cwd', process.cwd());
  part('host', `${process.platform}/${process.arch}`);
  part('images', decls.imagesFile.digest);
  part('models', decls.modelsFile?.digest ?? '');
  part('overrides', JSON.stringify(Object.entries(overrides).filter((e) => e[1] !== undefined).sort()));
  part('env', JSON.stringify(graphEnv));
  part('settings', factsText(decls.settings));
  return h.digest('hex');
}

/** A node as stored: no closures, no declaration (kept apart, in order); tool probes by name. */
type StoredNode = Omit<NodeDef, 'at' | 'deps' | 'tools' | 'decl'> & { readonly deps: ReadonlyArray<{ readonly id: NodeId }>; readonly tools?: readonly string[] };


/**
 * The graph stored under `key` in `file`, its nodes' probes and spans restored (module comment);
 * undefined on any mismatch.
 * @param compile compiles the declarations afresh (for a restored node's `at`).
 */
export function readCompiled(file: string, key: string, rules: readonly Rule[], decls: Declarations, compile: () => BuildGraph): BuildGraph | undefined {
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch {
    return undefined;
  }
  const nl = bytes.indexOf(10);
  if (nl < 0) return undefined;
  let stored: readonly StoredNode[];
  let declBytes: Buffer;
  try {
    const header = JSON.parse(bytes.subarray(0, nl).toString('utf8')) as { format?: string; key?: string; nodes?: number; sum?: string };
    if (header.format !== FORMAT || header.key !== key || typeof header.nodes !== 'number') return undefined;
    const body = bytes.subarray(nl + 1);
    if (header.nodes > body.length || header.sum !== hash('sha256', body, 'hex')) return undefined;
    stored = deserialize(body.subarray(0, header.nodes)) as StoredNode[];
    // A copy: the file's bytes are not kept for the declarations' sake.
    declBytes = Buffer.from(body.subarray(header.nodes));
  } catch {
    return undefined;
  }
  const probes = new Map<string, ToolProbe>();
  for (const rule of rules) for (const p of rule.toolProbes?.(decls.settings) ?? []) probes.set(p.name, p);
  // Nodes named the same tools share one array, as the rules made them.
  const toolLists = new Map<readonly string[], readonly ToolProbe[]>();
  let fresh: BuildGraph | undefined;
  const spanOf = (id: NodeId) => (): Span => (fresh ??= compile()).node(id).at();
  let storedDecls: readonly Json[] | undefined;
  const declOf = (i: number) => (): Json => (storedDecls ??= deserialize(declBytes) as Json[])[i];
  const nodes = new Map<NodeId, NodeDef>();
  const order: NodeId[] = [];
  for (const s of stored) {
    const node = s as unknown as { -readonly [K in keyof NodeDef]: NodeDef[K] };
    if (s.tools) {
      let list = toolLists.get(s.tools);
      if (!list) {
        const found = s.tools.map((name) => probes.get(name));
        if (found.some((p) => p === undefined)) return undefined; // a probe no rule makes now
        toolLists.set(s.tools, (list = found as ToolProbe[]));
      }
      node.tools = list;
    }
    node.at = spanOf(s.id);
    Object.defineProperty(node, 'decl', { get: declOf(order.length), enumerable: true });
    nodes.set(s.id, node);
    order.push(s.id);
  }
  if (nodes.size !== order.length) return undefined;
  return BuildGraph.restore(nodes, order, rules, key);
}

/**
 * Store `graph` under `key` in `file` (temp file and rename). Never throws: a cache that cannot
 * be written (a read-only checkout, a full disk) only costs the next plan its time.
 */
export function writeCompiled(file: string, key: string, graph: BuildGraph): void {
  try {
    const names = new Map<readonly ToolProbe[], string[]>();
    const nodes: StoredNode[] = [];
    const decls: Json[] = [];
    for (const id of graph.order) {
      const n = graph.node(id);
      // Every field but the closures, whatever fields the rules set.
      const { at: _at, deps, tools, decl, ...data } = n;
      decls.push(decl);
      let toolNames: string[] | undefined;
      if (tools) {
        toolNames = names.get(tools);
        if (!toolNames) names.set(tools, (toolNames = tools.map((t) => t.name)));
      }
      nodes.push({ ...data, deps: deps.map((d) => ({ id: d.id })), ...(toolNames ? { tools: toolNames } : {}) });
    }
    const nodesBytes = serialize(nodes);
    const declBytes = serialize(decls);
    const sum = createHash('sha256').update(nodesBytes).update(declBytes).digest('hex');
    const header = JSON.stringify({ format: FORMAT, key, nodes: nodesBytes.length, sum });
    writeFileAtomic(file, [Buffer.from(`${header}\n`), nodesBytes, declBytes]);
  } catch {
    // only time lost (module comment)
  }
}

/** Where the compiled graph of the workspace whose state directory is `stateDir` is kept. */
export function compiledFile(stateDir: string): string {
  return path.join(stateDir, COMPILED_FILE);
}
