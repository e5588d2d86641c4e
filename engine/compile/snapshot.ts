/**
 * The compiled-graph cache: the nodes the rules expanded from validated declarations, kept in
 * `.graph/compiled.bin` and used again while nothing they were expanded from changed, so a plan of
 * unchanged declarations skips the rules' expansion and the graph's checks and ordering (at 4.5k
 * nodes the larger part of opening a workspace; bench/RESULTS.md).
 *
 * What the key covers (`compiledKey`), which is everything expansion reads:
 * - graph's own code (`out/build-id`, written by `npm run build`: a SHA-256 of every module; without
 *   it there is no cache) and each rule's kind and version;
 * - the workspace's absolute path (expansion never reads the working directory: a test checks);
 * - the declaration files' bytes and the command line's setting overrides;
 * - the validated settings (the signing key's fingerprint, the GPUs found, the builder and sandbox
 *   chosen, …), every `GRAPH_*` environment variable, `process.arch` and `process.platform`;
 * - what each rule's expansion reads besides the declarations (`Rule.expandFacts`: the
 *   binfmt_misc entries, images.lock).
 *
 * Validation itself always runs (its diagnostics, the boundary checks, the settings are never
 * cached), so only declarations that validate reach the cache. The file is one JSON header line
 * (`{"format", "key", "nodes", "decls"}`, each part's length and SHA-256), then the nodes without
 * their declarations, then the declarations in the same order (each part `v8.serialize` data). The
 * declarations are read and deserialized only when one is first asked for, which a plan whose
 * keys come from the key memo never does (a declarations' part that no longer matches then gives
 * them by compiling again).
 *
 * Anything that does not match (another key, a torn or edited file, a tool probe no rule knows now)
 * is a miss: the graph is compiled as before and the file written again (temp file, rename). A
 * file that cannot be written, or a key that cannot be made, is left out silently: the cache only
 * saves time.
 *
 * Restored nodes are the rules' nodes without their closures: `at` (source spans) compiles the
 * declarations once more when first asked for (only diagnostics need a span), and each tool probe
 * comes back by name from its rule (`Rule.toolProbes`).
 */
import { createHash, hash } from 'node:crypto';
import { closeSync, openSync, readFileSync, readSync } from 'node:fs';
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
 * The key of the compiled graph of `decls` (module comment), or undefined when there is none to
 * use: graph has no build id, or a part of the key cannot be made (then nothing is cached).
 * @param env the environment (`GRAPH_*` variables are part of the key).
 */
export function compiledKey(decls: Declarations, rules: readonly Rule[], overrides: Readonly<Record<string, string | undefined>>, env: NodeJS.ProcessEnv): string | undefined {
  const build = buildId();
  if (!build) return undefined;
  try {
    return keyOf(build, decls, rules, overrides, env);
  } catch {
    return undefined;
  }
}

function keyOf(build: string, decls: Declarations, rules: readonly Rule[], overrides: Readonly<Record<string, string | undefined>>, env: NodeJS.ProcessEnv): string {
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

const DECLS = Symbol('decls');
const DECL_INDEX = Symbol('decl index');

/** The file's header line. */
interface Header {
  readonly format: string;
  readonly key: string;
  /** Length in bytes and SHA-256 of the nodes' part, then of the declarations' part. */
  readonly nodes: { readonly length: number; readonly sum: string };
  readonly decls: { readonly length: number; readonly sum: string };
}

/**
 * A restored graph's declarations: read from the file and deserialized when one is first asked
 * for. Should the file have changed since (another process wrote another graph), they come from
 * compiling the declarations afresh instead: the same nodes, so the same declarations.
 */
class StoredDecls {
  private decls?: readonly Json[] | BuildGraph;
  constructor(
    private readonly file: string,
    private readonly offset: number,
    private readonly part: Header['decls'],
    private readonly fresh: () => BuildGraph,
  ) {}

  get(i: number, id: NodeId): Json {
    this.decls ??= this.read() ?? this.fresh();
    return this.decls instanceof BuildGraph ? this.decls.node(id).decl : this.decls[i];
  }

  private read(): Json[] | undefined {
    try {
      const fd = openSync(this.file, 'r');
      let bytes: Buffer | undefined;
      try {
        bytes = readPart(fd, this.offset, this.part.length);
      } finally {
        closeSync(fd);
      }
      return bytes && hash('sha256', bytes, 'hex') === this.part.sum ? (deserialize(bytes) as Json[]) : undefined;
    } catch {
      return undefined;
    }
  }
}

/** `length` bytes of the open file `fd` from `offset`; undefined when the file is shorter. */
function readPart(fd: number, offset: number, length: number): Buffer | undefined {
  const out = Buffer.allocUnsafe(length);
  let got = 0;
  while (got < length) {
    const n = readSync(fd, out, got, length - got, offset + got);
    if (n === 0) return undefined;
    got += n;
  }
  return out;
}

/** `NodeDef.decl` of a restored node. */
function storedDecl(this: NodeDef & { [DECLS]: StoredDecls; [DECL_INDEX]: number }): Json {
  return this[DECLS].get(this[DECL_INDEX], this.id);
}

/** The header and the nodes' part of `file` when its header says `key`; undefined otherwise. */
function readNodes(file: string, key: string): { header: Header; offset: number; nodes: readonly StoredNode[] } | undefined {
  let fd: number | undefined;
  try {
    fd = openSync(file, 'r');
    const head = Buffer.allocUnsafe(4096);
    const nl = head.subarray(0, readSync(fd, head, 0, head.length, 0)).indexOf(10);
    if (nl < 0) return undefined;
    const header = JSON.parse(head.subarray(0, nl).toString('utf8')) as Partial<Header>;
    if (header.format !== FORMAT || header.key !== key || !header.nodes || !header.decls) return undefined;
    const bytes = readPart(fd, nl + 1, header.nodes.length);
    if (!bytes || hash('sha256', bytes, 'hex') !== header.nodes.sum) return undefined;
    return { header: header as Header, offset: nl + 1 + header.nodes.length, nodes: deserialize(bytes) as StoredNode[] };
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/**
 * The graph stored under `key` in `file`, its nodes' probes and spans restored (module comment);
 * undefined on any mismatch.
 * @param compile compiles the declarations afresh (for a restored node's `at`).
 */
export function readCompiled(file: string, key: string, rules: readonly Rule[], decls: Declarations, compile: () => BuildGraph): BuildGraph | undefined {
  const read = readNodes(file, key);
  if (!read) return undefined;
  const stored = read.nodes;
  let fresh: BuildGraph | undefined;
  const freshGraph = () => (fresh ??= compile());
  const probes = new Map<string, ToolProbe>();
  for (const rule of rules) for (const p of rule.toolProbes?.(decls.settings) ?? []) probes.set(p.name, p);
  // Nodes named the same tools share one array, as the rules made them.
  const toolLists = new Map<readonly string[], readonly ToolProbe[]>();
  const spanOf = (id: NodeId) => (): Span => freshGraph().node(id).at();
  const storedDecls = new StoredDecls(file, read.offset, read.header.decls, freshGraph);
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
    // One getter for every node (nodes then share their hidden class): the index says which.
    Object.defineProperty(node, DECLS, { value: storedDecls });
    Object.defineProperty(node, DECL_INDEX, { value: order.length });
    Object.defineProperty(node, 'decl', { get: storedDecl, enumerable: true });
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
      // Every field but the closures and the declaration, whatever fields the rules set (a
      // for…in copy: rest destructuring is three times slower).
      const data: Record<string, unknown> = {};
      for (const k in n) if (k !== 'at' && k !== 'decl' && k !== 'deps' && k !== 'tools') data[k] = n[k as keyof NodeDef];
      data.deps = n.deps.map((d) => ({ id: d.id }));
      if (n.tools) {
        let toolNames = names.get(n.tools);
        if (!toolNames) names.set(n.tools, (toolNames = n.tools.map((t) => t.name)));
        data.tools = toolNames;
      }
      decls.push(n.decl);
      nodes.push(data as unknown as StoredNode);
    }
    const nodesBytes = serialize(nodes);
    const declBytes = serialize(decls);
    const part = (b: Buffer) => ({ length: b.length, sum: hash('sha256', b, 'hex') });
    const header: Header = { format: FORMAT, key, nodes: part(nodesBytes), decls: part(declBytes) };
    writeFileAtomic(file, [Buffer.from(`${JSON.stringify(header)}\n`), nodesBytes, declBytes]);
  } catch {
    // only time lost (module comment)
  }
}

/** Where the compiled graph of the workspace whose state directory is `stateDir` is kept. */
export function compiledFile(stateDir: string): string {
  return path.join(stateDir, COMPILED_FILE);
}
