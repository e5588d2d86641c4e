/**
 * The compiled-graph cache (engine/compile/snapshot.ts) and the key memo (engine/key/key-memo.ts):
 * a restored graph is the compiled one, field by field; everything expansion reads is in the key
 * (checked by watching every file and variable expansion touches); each thing the keys cover
 * invalidates them; the keys a memo gives are the keys computed without it.
 */
import { createHash } from 'node:crypto';
import fs, { cpSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { ActionCache } from '../../engine/cache/action-cache.js';
import { ContentStore } from '../../engine/cache/store.js';
import { BuildGraph } from '../../engine/compile/graph.js';
import { COMPILED_FILE } from '../../engine/compile/snapshot.js';
import { FileDigester } from '../../engine/key/files.js';
import { KEYS_FILE } from '../../engine/key/key-memo.js';
import { planBuild, type Plan } from '../../engine/plan.js';
import type { NodeDef, NodeId, Rule } from '../../engine/rule.js';
import { loadYamlFile } from '../../engine/load.js';
import { validateDeclarations } from '../../engine/validate/validate.js';
import { openWorkspace, type Workspace } from '../../engine/workspace.js';
import { defaultRules } from '../../rules/index.js';
import { ARCH_ZOO, copyRepoZoo, REPO, workspace, writeFiles } from '../helpers.js';

const test = suite('snapshot');

const open = (dir: string, overrides = {}) => openWorkspace(dir, defaultRules, overrides, { compiledCache: true });
const compiledAt = (dir: string) => path.join(dir, '.graph', COMPILED_FILE);

/** A binfmt_misc tree with a qemu-aarch64 entry, enabled with the F flag or not. */
function binfmt(dir: string, flags: string): string {
  const tree = path.join(dir, `binfmt-${flags || 'none'}`);
  mkdirSync(tree, { recursive: true });
  writeFileSync(path.join(tree, 'qemu-aarch64'), `enabled\ninterpreter /usr/bin/qemu-aarch64-static\nflags: ${flags}\noffset 0\n`);
  return tree;
}

/** Run `fn` with GRAPH_BINFMT_MISC set to `tree` (restored after). */
function withBinfmt<T>(tree: string, fn: () => T): T {
  const before = process.env.GRAPH_BINFMT_MISC;
  process.env.GRAPH_BINFMT_MISC = tree;
  try {
    return fn();
  } finally {
    if (before === undefined) delete process.env.GRAPH_BINFMT_MISC;
    else process.env.GRAPH_BINFMT_MISC = before;
  }
}

/** A node's data as a plain object: closures dropped, tools by name, the span as text. */
function dump(n: NodeDef): unknown {
  const { at, deps, tools, ...data } = n;
  const span = at();
  return { ...data, deps: deps.map((d) => d.id), tools: tools?.map((t) => t.name), at: `${span.source.path}:${span.start}-${span.end}` };
}

const dumpGraph = (g: BuildGraph) => g.order.map((id) => dump(g.node(id)));

/**
 * Every file path and environment variable `fn` reads through node:fs and process.env, and whether
 * it asks for the working directory (noted as a variable named `(the working directory)`; paths
 * under the repository's build and node_modules, where lazily loaded modules live, left out).
 */
function watchReads<T>(fn: () => T): { result: T; paths: Set<string>; env: Set<string> } {
  const names = ['readFileSync', 'existsSync', 'statSync', 'lstatSync', 'readdirSync', 'openSync', 'realpathSync', 'accessSync', 'readlinkSync', 'opendirSync'] as const;
  const f = fs as unknown as Record<string, ((...a: unknown[]) => unknown) & { native?: (...a: unknown[]) => unknown }>;
  const saved = names.map((n) => f[n]);
  const paths = new Set<string>();
  const note = (p: unknown) => {
    if (typeof p !== 'string') return;
    const abs = path.resolve(p);
    if (!abs.startsWith(path.join(REPO, 'out')) && !abs.includes('/node_modules/')) paths.add(abs);
  };
  names.forEach((n, i) => {
    const real = saved[i];
    const wrapped = Object.assign((p: unknown, ...rest: unknown[]) => (note(p), real(p, ...rest)), real.native ? { native: (p: unknown, ...rest: unknown[]) => (note(p), (real.native as (...a: unknown[]) => unknown)(p, ...rest)) } : {});
    f[n] = wrapped;
  });
  syncBuiltinESMExports();
  const realEnv = process.env;
  const realCwd = process.cwd;
  const env = new Set<string>();
  process.cwd = () => {
    env.add('(the working directory)');
    return realCwd();
  };
  process.env = new Proxy(realEnv, {
    get(t, k) {
      if (typeof k === 'string') env.add(k);
      return Reflect.get(t, k);
    },
  });
  try {
    return { result: fn(), paths, env };
  } finally {
    names.forEach((n, i) => (f[n] = saved[i]));
    syncBuiltinESMExports();
    process.env = realEnv;
    process.cwd = realCwd;
  }
}

/** The repository's whole zoo (Debian images with images.lock, Dockerfiles, platforms) and the two-platform zoo. */
function zoos(): string[] {
  const repo = copyRepoZoo(workspace({}), ['py3-base', 'pwm-scanner', 'seq-features', 'kmer-classifier', 'torch-base', 'basset-cnn']);
  const arch = workspace(ARCH_ZOO);
  cpSync(path.join(REPO, 'images.lock'), path.join(arch, 'images.lock'));
  return [repo, arch];
}

test('expansion reads only what the rules name in expandFacts, and GRAPH_* variables, never the working directory', () => {
  for (const dir of zoos()) {
    withBinfmt(binfmt(dir, 'F'), () => {
      const imagesFile = loadYamlFile(path.join(dir, 'images.yaml'), 'images.yaml');
      const modelsFile = loadYamlFile(path.join(dir, 'models.yaml'), 'models.yaml');
      const decls = validateDeclarations(dir, imagesFile, modelsFile, defaultRules);
      const compiled = watchReads(() => BuildGraph.compile(decls, defaultRules));
      const facts = watchReads(() => defaultRules.map((r: Rule) => r.expandFacts?.(dir)));
      assert.ok(compiled.result.size > 5);
      assert.ok(compiled.paths.size > 0, 'expansion reads images.lock and binfmt_misc: the watch must see them');
      for (const p of compiled.paths) assert.ok(facts.paths.has(p), `expansion read ${p}, which no rule's expandFacts covers`);
      for (const name of compiled.env) assert.ok(name.startsWith('GRAPH_'), `expansion read the environment variable ${name}`);
    });
  }
});

test('a restored graph is the compiled graph: every node, field by field, spans and probes included', () => {
  for (const dir of zoos()) {
    withBinfmt(binfmt(dir, 'F'), () => {
      const first = open(dir);
      const written = statSync(compiledAt(dir)).mtimeMs;
      const second = open(dir);
      assert.is(statSync(compiledAt(dir)).mtimeMs, written, 'a hit does not write the file again');
      assert.is(second.graph.key, first.graph.key);
      assert.ok(second.graph.key);
      assert.equal(dumpGraph(second.graph), dumpGraph(first.graph));
      assert.equal(dumpGraph(second.graph), dumpGraph(openWorkspace(dir, defaultRules).graph));
      // Restored probes are the rules' own (they probe the same executables).
      const probed = [...second.graph.nodes()].flatMap((n) => n.tools ?? []);
      assert.ok(probed.length > 0);
      for (const p of probed) assert.type(p.executables, 'function');
    });
  }
});

test('what the key covers invalidates it: declarations, images.lock, binfmt_misc, GRAPH_* variables, overrides', () => {
  const [repo, arch] = zoos();
  withBinfmt(binfmt(repo, 'F'), () => {
    const base = open(repo).graph;
    // models.yaml: a new model makes new nodes.
    const models = path.join(repo, 'models.yaml');
    const text = readFileSync(models, 'utf8');
    for (const d of ['models', 'expect']) cpSync(path.join(repo, 'zoo/pwm', d, 'CTCF'), path.join(repo, 'zoo/pwm', d, 'ZNF9'), { recursive: true });
    writeFileSync(models, text.replace(/models: \[ *CTCF/, 'models: [ZNF9, CTCF'));
    assert.ok(open(repo).graph.has('test:pwm/ZNF9@oci' as never), 'an added model is planned');
    // Validation runs on every open, cached graph or not: a declared directory gone is an error.
    rmSync(path.join(repo, 'zoo/pwm/expect/ZNF9'), { recursive: true });
    assert.throws(() => open(repo), /test expect directory 'zoo\/pwm\/expect\/ZNF9' does not exist/);
    writeFileSync(models, text);
    assert.equal(dumpGraph(open(repo).graph), dumpGraph(base));
    // images.lock: the debian image's decl holds its entry.
    const lock = path.join(repo, 'images.lock');
    const lockText = readFileSync(lock, 'utf8');
    writeFileSync(lock, lockText.replace(/"python3"/, '"python3-changed"'));
    assert.not.equal(open(repo).graph.node('build:py3-base' as never).decl, base.node('build:py3-base' as never).decl);
    writeFileSync(lock, lockText);
    // A setting from the command line (the Dockerfile builder) is in the build's tool string.
    const buildah = open(repo, { builder: 'buildah' }).graph.node('build:seq-features' as never).tool;
    assert.ok(buildah.includes('buildah'), buildah);
  });
  // binfmt_misc: without the F flag, the arm64 test cannot run here.
  const testArm = 'test:arch/uname@oci@linux/arm64';
  const withF = withBinfmt(binfmt(arch, 'F'), () => open(arch).graph);
  const noF = withBinfmt(binfmt(arch, ''), () => open(arch).graph);
  const ids = [...withF.order].filter((id) => id.startsWith('test:') && id.includes('arm64'));
  assert.ok(ids.length > 0, `no arm64 test in ${withF.order.join(', ')} (expected ${testArm}-like ids)`);
  for (const id of ids) {
    assert.is(withF.node(id).skip, undefined);
    assert.ok(noF.node(id).skip?.includes('lacks the F flag'), noF.node(id).skip);
  }
  assert.not.equal(withF.key, noF.key);
});

test('a torn or edited cache file is a miss, never a wrong graph', () => {
  const [repo] = zoos();
  withBinfmt(binfmt(repo, 'F'), () => {
    const base = dumpGraph(open(repo).graph);
    const file = compiledAt(repo);
    const bytes = readFileSync(file);
    // A flipped byte in the nodes' part: compiled again, and written whole again.
    const header = JSON.parse(bytes.subarray(0, bytes.indexOf(10)).toString()) as { nodes: { length: number } };
    const flipped = Buffer.from(bytes);
    flipped[bytes.indexOf(10) + 10] ^= 0xff;
    writeFileSync(file, flipped);
    assert.equal(dumpGraph(open(repo).graph), base);
    assert.equal(readFileSync(file), bytes);
    // In the declarations' part (read when a declaration is first asked for): those come from
    // compiling again; the same when the file is replaced after the nodes were read.
    const inDecls = Buffer.from(bytes);
    inDecls[bytes.indexOf(10) + 1 + header.nodes.length + 5] ^= 0xff;
    writeFileSync(file, inDecls);
    assert.equal(dumpGraph(open(repo).graph), base);
    writeFileSync(file, bytes);
    const restored = open(repo).graph;
    writeFileSync(file, 'replaced');
    assert.equal(dumpGraph(restored), base);
    writeFileSync(file, bytes);
    writeFileSync(file, bytes.subarray(0, bytes.length >> 1));
    assert.equal(dumpGraph(open(repo).graph), base);
    writeFileSync(file, 'not a cache');
    assert.equal(dumpGraph(open(repo).graph), base);
  });
});

const TOOLS = new Map([
  ['sandbox:bubblewrap', 'bwrap 0.8.0'],
  ['tar2sqfs', 'tar2sqfs 1.2.0'],
]);

/** Plan every node of `ws`, with or without the key memo. */
function planAll(ws: Workspace, memo: boolean, env: NodeJS.ProcessEnv = {}, tools = TOOLS): Plan {
  return planSome(ws, new Set(ws.graph.order), memo, env, tools);
}

/** Plan `selection` (closed under dependencies), with or without the key memo. */
function planSome(ws: Workspace, selection: ReadonlySet<NodeId>, memo: boolean, env: NodeJS.ProcessEnv = {}, tools = TOOLS): Plan {
  return planBuild(ws.graph, selection, {
    root: ws.root,
    cache: new ActionCache(ws.stateDir),
    store: new ContentStore(path.join(ws.stateDir, 'cas')),
    digester: new FileDigester(ws.root, path.join(ws.stateDir, 'stat-memo.json')),
    env,
    tools,
    ...(memo ? { keyMemo: path.join(ws.stateDir, KEYS_FILE) } : {}),
  });
}

const keysOf = (p: Plan) => Object.fromEntries(p.nodes.map((n) => [n.node.id, n.key]));

/** The nodes of `p` whose key came from the memo (their record is made only when asked for). */
const fromMemo = (p: Plan) => p.nodes.filter((n) => Object.getOwnPropertyDescriptor(n, 'record')?.get !== undefined).map((n) => n.node.id);

test('the key memo gives the keys computed without it, and misses on each thing a record holds', async () => {
  const [repo] = zoos();
  await withBinfmt(binfmt(repo, 'F'), async () => {
    const ws = open(repo);
    const memoFile = path.join(ws.stateDir, KEYS_FILE);
    // Every node recorded (an empty result), so that plans find them cached.
    const first = planAll(ws, false);
    const cache = new ActionCache(ws.stateDir);
    for (const n of first.nodes) await cache.put(n.node.id, n.key, n.recordText, { outputs: {}, artifacts: [], duration_ms: 0 });
    const fresh = keysOf(first);
    assert.equal(keysOf(planAll(ws, true)), fresh);
    const written = statSync(memoFile).mtimeMs;
    const remembered = planAll(ws, true);
    assert.is(statSync(memoFile).mtimeMs, written, 'a hit leaves the memo as it is');
    assert.equal(keysOf(remembered), fresh);
    assert.is(fromMemo(remembered).length, remembered.nodes.length, 'every key from the memo');
    // Records made on demand are the records of those keys.
    for (const n of remembered.nodes) assert.is(n.recordText, planAll(ws, false).byId.get(n.node.id)?.recordText);

    // An input file: its model's tests and the image's publish are keyed again, every other node
    // keeps its remembered key.
    writeFiles(repo, { 'zoo/pwm/models/CTCF/motif.pwm': 'A 1 0 0 0\nC 0 1 0 0\nG 0 0 1 0\nT 0 0 0 1\n' });
    const editedPlan = planAll(ws, true);
    const edited = keysOf(editedPlan);
    assert.equal(edited, keysOf(planAll(ws, false)));
    const changed = Object.keys(fresh).filter((id) => fresh[id] !== edited[id]);
    assert.equal(changed.sort(), ['publish:pwm-scanner', 'test:pwm/CTCF@oci', 'test:pwm/CTCF@sif']);
    const rekeyed = editedPlan.nodes.map((n) => n.node.id).filter((id) => !fromMemo(editedPlan).includes(id));
    assert.equal(rekeyed.sort(), changed.sort(), 'only the nodes whose records changed are keyed again');
    // The next plan remembers them all (the memo is not written again); the three run, so their
    // records are made.
    const before = statSync(memoFile).mtimeMs;
    const next = planAll(ws, true);
    assert.is(statSync(memoFile).mtimeMs, before, 'every key remembered');
    assert.equal(fromMemo(next).sort(), next.nodes.filter((n) => n.status === 'cached').map((n) => n.node.id).sort());
    assert.is(fromMemo(next).length, next.nodes.length - 3);
    // An allow-listed variable (SOURCE_DATE_EPOCH, in every build's key), and a tool's identity.
    assert.equal(keysOf(planAll(ws, true, { SOURCE_DATE_EPOCH: '1' })), keysOf(planAll(ws, false, { SOURCE_DATE_EPOCH: '1' })));
    assert.not.equal(keysOf(planAll(ws, true, { SOURCE_DATE_EPOCH: '1' })), edited);
    const newer = new Map([['sandbox:bubblewrap', 'bwrap 0.9.0'], ['tar2sqfs', 'tar2sqfs 1.2.0']]);
    assert.equal(keysOf(planAll(ws, true, {}, newer)), keysOf(planAll(ws, false, {}, newer)));
    assert.not.equal(keysOf(planAll(ws, true, {}, newer)), edited);
    // Another selection (one image and what it needs), whose plan keeps the memo of the others.
    keysOf(planAll(ws, true));
    const some = ws.graph.withDependencies(['test:pwm/CTCF@oci' as never]);
    const plan = (memo: boolean) => planSome(ws, some, memo);
    assert.equal(keysOf(plan(true)), keysOf(plan(false)));
    assert.equal(keysOf(plan(true)), keysOf(plan(false)));
    assert.is(fromMemo(planAll(ws, true)).length, ws.graph.size - 3);
    // An edit seen first by a plan of some nodes: what depends on them and was not planned (the
    // image's publish) must not keep a key made with their old keys, even when that key is cached.
    for (const n of planAll(ws, false).nodes) await cache.put(n.node.id, n.key, n.recordText, { outputs: {}, artifacts: [], duration_ms: 0 });
    writeFiles(repo, { 'zoo/pwm/models/CTCF/motif.pwm': 'A 0 0 0 1\nC 0 0 1 0\nG 0 1 0 0\nT 1 0 0 0\n' });
    const bothTests = ws.graph.withDependencies(['test:pwm/CTCF@oci', 'test:pwm/CTCF@sif'] as never[]);
    const planBoth = (memo: boolean) => planSome(ws, bothTests, memo);
    assert.equal(keysOf(planBoth(true)), keysOf(planBoth(false)));
    assert.equal(keysOf(planAll(ws, true)), keysOf(planAll(ws, false)));
    // A torn memo is a miss.
    const now = keysOf(planAll(ws, false));
    writeFileSync(memoFile, readFileSync(memoFile).subarray(0, 100));
    assert.equal(keysOf(planAll(ws, true)), now);
    // A memo whose keys are not its records' (written by hand, its sum made to match): the first
    // node's key is the second's, both cached. The entry found is the other node's, which shows
    // it: the memo is dropped and the plan made without it (a node that runs would show it too:
    // its record is made).
    for (const n of planAll(ws, false).nodes) await cache.put(n.node.id, n.key, n.recordText, { outputs: {}, artifacts: [], duration_ms: 0 });
    assert.ok(planAll(ws, true).nodes.every((n) => n.status === 'cached'));
    const bytes = readFileSync(memoFile);
    const nl = bytes.indexOf(10);
    const header = JSON.parse(bytes.subarray(0, nl).toString()) as { count: number; texts: number; sum: string };
    const body = Buffer.from(bytes.subarray(nl + 1));
    const keysAt = header.texts + header.count * 16;
    body.copy(body, keysAt, keysAt + 64, keysAt + 128); // the first node's key is now the second's
    header.sum = createHash('sha256').update(body).digest('hex');
    const forged = Buffer.concat([Buffer.from(`${JSON.stringify(header)}\n`), body]);
    writeFileSync(memoFile, forged);
    const afterForge = planAll(ws, true);
    assert.equal(keysOf(afterForge), now);
    assert.ok(afterForge.nodes.every((n) => n.cached?.id === n.node.id));
    assert.not.equal(readFileSync(memoFile), forged, 'the forged memo is replaced');
    assert.equal(keysOf(planAll(ws, true)), now);
    rmSync(memoFile);
  });
});

test.run();
