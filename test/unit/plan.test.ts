/** Keys and explanations: what a change makes run, and the exact words for why. */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { ActionCache } from '../../engine/cache/action-cache.js';
import { FileDigester } from '../../engine/key/files.js';
import { canonicalJson, keyOf } from '../../engine/key/key.js';
import { planBuild, type Plan } from '../../engine/plan.js';
import { planJson, renderPlan, renderPlanChunks } from '../../engine/report/plan.js';
import { ContentStore } from '../../engine/cache/store.js';
import { resolveTools, type ToolIdentities } from '../../engine/key/tools.js';
import { openWorkspace } from '../../engine/workspace.js';
import { FakeRunner, fakeRules, REPO, runEngine, SMALL_ZOO, wideZoo, workspace, writeFiles } from '../helpers.js';

const test = suite('plan');

/**
 * Plan every node of `dir` as the CLI does: tools probed (and remembered where the CLI looks), or
 * given as `tools` (the golden file must not depend on this machine's tool versions).
 */
async function plan(dir: string, env: NodeJS.ProcessEnv = {}, tools?: ToolIdentities): Promise<Plan & { digester: FileDigester }> {
  const ws = openWorkspace(dir, fakeRules());
  const digester = new FileDigester(ws.root, path.join(ws.stateDir, 'stat-memo.json'));
  const p = planBuild(ws.graph, new Set(ws.graph.order), {
    root: ws.root,
    cache: new ActionCache(ws.stateDir),
    store: new ContentStore(path.join(ws.stateDir, 'cas')),
    digester,
    env,
    tools: tools ?? (await resolveTools(ws.graph.nodes(), path.join(ws.stateDir, 'tools.json'))),
  });
  return Object.assign(p, { digester });
}

/** `{id: reasons}` of the nodes that will run. */
function toRun(p: Plan): Record<string, readonly string[]> {
  return Object.fromEntries(p.nodes.filter((n) => n.status === 'run').map((n) => [n.node.id, n.reasons]));
}

const short = (text: string) => `sha256:${createHash('sha256').update(text).digest('hex').slice(0, 12)}`;

test('a fresh workspace: every node runs for want of a record', async () => {
  const p = await plan(workspace(SMALL_ZOO));
  assert.equal(p.nodes.length, 9);
  for (const n of p.nodes) assert.equal(n.reasons, ['no previous record']);
});

test('editing one motif file re-runs exactly its image and what is downstream, naming the file', async () => {
  const dir = workspace(SMALL_ZOO);
  await runEngine(dir, new FakeRunner());
  writeFiles(dir, { 'zoo/pwm/motifs/CTCF.pwm': 'A 0.9 0.9\n' });
  assert.equal(toRun(await plan(dir)), {
    'build:pwm': [`input file zoo/pwm/motifs/CTCF.pwm changed (${short('A 0.1 0.2\n')} → ${short('A 0.9 0.9\n')})`],
    'convert:pwm': ['dependency build:pwm will run'],
    'test:pwm/CTCF@oci': ['dependency build:pwm will run'],
    'test:pwm/GATA1@oci': ['dependency build:pwm will run'],
    'test:pwm/CTCF@sif': ['dependency convert:pwm will run'],
    'test:pwm/GATA1@sif': ['dependency convert:pwm will run'],
    // The publish attests its image's inputs (provenance), so they are its inputs too.
    'publish:pwm': [
      `input file zoo/pwm/motifs/CTCF.pwm changed (${short('A 0.1 0.2\n')} → ${short('A 0.9 0.9\n')})`,
      'dependency build:pwm will run',
      'dependency convert:pwm will run',
      'dependency test:pwm/CTCF@oci will run',
      'dependency test:pwm/CTCF@sif will run',
      'dependency test:pwm/GATA1@oci will run',
      'dependency test:pwm/GATA1@sif will run',
    ],
  });
});

test('a test expectation change re-runs only the tests and the publish', async () => {
  const dir = workspace(SMALL_ZOO);
  await runEngine(dir, new FakeRunner());
  writeFiles(dir, { 'zoo/pwm/test/expect/scores.tsv': 's1\t0.6\n', 'zoo/pwm/test/expect/new.tsv': 'x\n' });
  const run = toRun(await plan(dir));
  assert.equal(Object.keys(run).sort(), ['publish:pwm', 'test:pwm/CTCF@oci', 'test:pwm/CTCF@sif', 'test:pwm/GATA1@oci', 'test:pwm/GATA1@sif']);
  assert.equal(run['test:pwm/CTCF@oci'], [
    'input file zoo/pwm/test/expect/new.tsv added',
    `input file zoo/pwm/test/expect/scores.tsv changed (${short('s1\t0.5\n')} → ${short('s1\t0.6\n')})`,
  ]);
});

test('a declaration change names the field, old and new value', async () => {
  const dir = workspace(SMALL_ZOO);
  await runEngine(dir, new FakeRunner());
  writeFiles(dir, { 'images.yaml': SMALL_ZOO['images.yaml'].replace('    convert: [sif]', '    env: {MODE: fast}\n    convert: [sif]') });
  assert.equal(toRun(await plan(dir))['build:pwm'], ['declaration env.MODE changed (absent → "fast")']);
  writeFiles(dir, { 'models.yaml': SMALL_ZOO['models.yaml'].replace('/output/scores.tsv]', '/output/scores.tsv, --fast]') });
  const reasons = toRun(await plan(dir))['test:pwm/GATA1@oci'];
  assert.equal(reasons, ['declaration contract.command[4] added ("--fast")', 'dependency build:pwm will run']);
  // A run contract's field: named with its old and new value.
  writeFiles(dir, { 'models.yaml': SMALL_ZOO['models.yaml'].replace('      runtimes:', '      contract: tre\n      runtimes:') });
  assert.equal(toRun(await plan(dir))['test:pwm/CTCF@oci'], [
    'declaration contract.mounts[0].target changed ("/input" → "/safe_data")',
    'declaration contract.output changed ("/output" → "/safe_outputs")',
    'declaration contract.preset changed ("kipoi" → "tre")',
    'declaration contract.scratch[0] added ("/scratch")',
    'dependency build:pwm will run',
  ]);
});

test('an allow-listed environment variable is part of the build key', async () => {
  const dir = workspace(SMALL_ZOO);
  await runEngine(dir, new FakeRunner());
  const run = toRun(await plan(dir, { SOURCE_DATE_EPOCH: '1700000000', HOME: '/elsewhere' }));
  assert.equal(run['build:base'], ['environment variable SOURCE_DATE_EPOCH changed (unset → "1700000000")']);
  // HOME is not allow-listed: it changes nothing by itself.
  assert.equal(toRun(await plan(dir, { HOME: '/elsewhere' })), {});
});

test('.dockerignore: an ignored file in the build context changes nothing', async () => {
  const files = {
    'images.yaml': 'version: 1\nimages:\n  app:\n    dockerfile: app/Dockerfile\n',
    'app/Dockerfile': 'FROM scratch\nCOPY . /\n',
    'app/.dockerignore': 'notes/\n*.tmp\n!keep.tmp\n',
    'app/model.bin': 'weights',
    'app/notes/todo.md': 'later',
    'app/scratch.tmp': 'x',
    'app/keep.tmp': 'k',
  };
  const dir = workspace(files);
  await runEngine(dir, new FakeRunner());
  writeFiles(dir, { 'app/notes/todo.md': 'sooner', 'app/scratch.tmp': 'y' });
  assert.equal(toRun(await plan(dir)), {});
  writeFiles(dir, { 'app/keep.tmp': 'changed' });
  assert.equal(Object.keys(toRun(await plan(dir))), ['build:app', 'publish:app']);
  const record = (await plan(dir)).byId.get('build:app' as never)?.record;
  assert.equal(Object.keys(record?.files ?? {}), ['app/.dockerignore', 'app/Dockerfile', 'app/keep.tmp', 'app/model.bin']);
});

test('a no-op plan reads no file bytes; touching a file without changing it re-hashes only that file', async () => {
  const dir = workspace(SMALL_ZOO);
  await runEngine(dir, new FakeRunner());
  const warm = await plan(dir);
  assert.equal(warm.digester.stats.bytesRead, 0);
  assert.equal(toRun(warm), {});
  const later = new Date(Date.now() - 5000);
  utimesSync(path.join(dir, 'zoo/pwm/predict.py'), later, later);
  const touched = await plan(dir);
  assert.equal(touched.digester.stats.filesHashed, 1);
  assert.equal(touched.digester.stats.bytesRead, SMALL_ZOO['zoo/pwm/predict.py'].length);
  assert.equal(toRun(touched), {});
});

test('a torn or edited cache entry or log line is a miss, never served', async () => {
  const dir = workspace(SMALL_ZOO);
  await runEngine(dir, new FakeRunner());
  const p = await plan(dir);
  const key = p.byId.get('build:base' as never)?.key as string;
  // The entry: its line of ac/records.log (no entry file is made per node).
  const recordsFile = path.join(dir, '.graph', 'ac', 'records.log');
  const logFile = path.join(dir, '.graph', 'actions.log');
  const records = readFileSync(recordsFile, 'utf8');
  const entry = records.split('\n').find((l) => l.startsWith(`${key} `)) as string;
  assert.ok(entry, 'the entry is a line of records.log');
  assert.not.ok(existsSync(path.join(dir, '.graph', 'ac', key.slice(0, 2), key)), 'and no entry file');
  const withEntry = (e: string) => writeFileSync(recordsFile, records.replace(entry, e));
  const log = readFileSync(logFile, 'utf8');
  const line = log.split('\n').find((l) => l.includes('"id":"build:base"')) as string;

  // The log line serves a node whose key is unchanged, even with its entry torn.
  withEntry(entry.slice(0, entry.length / 2));
  assert.equal(toRun(await plan(dir)), {});
  // An edited log line fails its digest; the intact entry still serves.
  withEntry(entry);
  writeFileSync(logFile, log.replace(line, line.replace('"duration_ms":', '"duration_ms":1')));
  assert.equal(toRun(await plan(dir)), {});
  // Both gone bad: a miss, and the plan says the record was there but damaged.
  for (const [from, to] of [['"tool":"graph-debian/3"', '"tool":"graph-debian/4"'], ['"duration_ms":', '"duration_ms":1']]) {
    assert.ok(entry.includes(from));
    withEntry(entry.replace(from, to));
    assert.equal(toRun(await plan(dir))['build:base'], ['cache entry corrupt']);
  }
  // The entry gone and the log line damaged anywhere (its digest, its key, its id): still
  // known as this node's damaged record, not "no previous record".
  withEntry('');
  // Another hex digit than the one there (a digest or key may hold a '0' at that place by chance).
  const other = (c: string) => (c === '0' ? '1' : '0');
  for (const damaged of [`${other(line[0])}${line.slice(1)}`, line.replace(key, `${key.slice(0, 10)}${other(key[10])}${key.slice(11)}`), line.replace('"id":"build:base"', '"id":"build:basf"')]) {
    assert.is.not(damaged, line);
    writeFileSync(logFile, log.replace(line, damaged));
    assert.equal(toRun(await plan(dir))['build:base'], ['cache entry corrupt']);
  }
  // An intact entry with a damaged log line still serves.
  withEntry(entry);
  assert.equal(toRun(await plan(dir)), {});
  // Only the log line gone: no record at all.
  withEntry('');
  writeFileSync(logFile, log.replace(`${line}\n`, ''));
  assert.equal(toRun(await plan(dir))['build:base'], ['no previous record']);
  // A torn last log line (a crash mid-append) is skipped; earlier lines still count.
  withEntry(entry);
  writeFileSync(logFile, `${log}0123abc`);
  assert.equal(toRun(await plan(dir)), {});
  // An entry kept as a file (a cache from before records.log, or one compact moved) serves too.
  // `<key> <result sum> <record> <result>` → the file's three lines: record, result, result sum.
  const split = entry.indexOf(' {"format":', 130);
  const entryFile = path.join(dir, '.graph', 'ac', key.slice(0, 2), key);
  mkdirSync(path.dirname(entryFile), { recursive: true });
  writeFileSync(entryFile, `${entry.slice(130, split)}\n${entry.slice(split + 1)}\n${entry.slice(65, 129)}\n`);
  withEntry('');
  writeFileSync(logFile, log.replace(line, `${other(line[0])}${line.slice(1)}`));
  assert.equal(toRun(await plan(dir)), {});
});

test('a result whose output blob is gone runs again: output missing', async () => {
  const dir = workspace(SMALL_ZOO);
  await runEngine(dir, new FakeRunner());
  const digest = `sha256:${createHash('sha256').update('output of build:pwm').digest('hex')}`;
  rmSync(path.join(dir, '.graph', 'cas', 'sha256', digest.slice(7)));
  assert.equal(toRun(await plan(dir))['build:pwm'], [`output missing: sha256:${digest.slice(7, 19)} no longer in the store`]);
});

test('a result whose output blob was changed in place runs again: output corrupt; the rerun stores good bytes', async () => {
  const dir = workspace(SMALL_ZOO);
  await runEngine(dir, new FakeRunner());
  const digest = `sha256:${createHash('sha256').update('output of build:pwm').digest('hex')}`;
  const blob = path.join(dir, '.graph', 'cas', 'sha256', digest.slice(7));
  writeFileSync(blob, 'output of build:pwn'); // same size, new bytes
  assert.equal(toRun(await plan(dir)), {
    'build:pwm': [`output corrupt: sha256:${digest.slice(7, 19)} did not match its digest (removed from the store)`],
  });
  assert.is(existsSync(blob), false);
  const run = await runEngine(dir, new FakeRunner());
  // Its key is unchanged, so what depends on it stays cached: only the corrupt output is made again.
  assert.equal(run.runner.calls.map((c) => c.id), ['build:pwm']);
  assert.is(readFileSync(blob, 'utf8'), 'output of build:pwm');
  assert.equal(toRun(await plan(dir)), {});
});

test('a key is the SHA-256 of the canonical record, independent of key order', async () => {
  const a = { rule: 'build', ruleVersion: 1, decl: { b: 1, a: [1, { y: 2, x: 1 }] }, files: {}, env: {}, tool: 't', deps: {} };
  const b = { deps: {}, tool: 't', env: {}, files: {}, decl: { a: [1, { x: 1, y: 2 }], b: 1 }, ruleVersion: 1, rule: 'build' };
  assert.is(canonicalJson(a), canonicalJson(b));
  assert.is(keyOf(a), keyOf(b));
  assert.is(keyOf(a), createHash('sha256').update(canonicalJson(a)).digest('hex'));
});

test("the keyer's assembled record text is the canonical JSON of its record", async () => {
  const p = await plan(workspace(SMALL_ZOO), { SOURCE_DATE_EPOCH: '0' });
  for (const n of p.nodes) {
    assert.is(n.recordText, canonicalJson(n.record));
    assert.is(n.key, keyOf(n.record));
  }
});

test('plan --format json matches the golden file', async () => {
  const dir = workspace(SMALL_ZOO);
  const tools = new Map([
    ['sandbox:bubblewrap', 'bubblewrap (golden)'],
    ['squashfs', 'tar2sqfs (golden); mksquashfs (golden)'],
  ]);
  const actual = renderPlan(await plan(dir, {}, tools), 'json');
  const golden = path.join(REPO, 'test', 'golden', 'small-zoo.plan.json');
  if (process.env.UPDATE_GOLDEN) writeFileSync(golden, actual);
  assert.fixture(actual, readFileSync(golden, 'utf8'));
});

test('the JSON plan, written in pieces, is JSON.stringify\'s text: nodes, executors, a shard, notes, no nodes', async () => {
  const made = await plan(workspace(wideZoo(400)));
  const notes = [{ heading: 'stale', jsonKey: 'stale_published', lines: ['a "quoted"\nline', 'b'] }];
  const shard = { index: 1, count: 2, split: 'groups', groups: ['g0'], dependencies: 3 } as unknown as Parameters<typeof renderPlan>[4];
  const elsewhere = (kind: string) => (kind === 'test' ? 'slurm' : undefined);
  const whole = (p: Plan, withNotes: boolean, withShard: boolean) =>
    `${JSON.stringify({ ...planJson(p, elsewhere), ...(withShard ? { shard } : {}), ...(withNotes ? Object.fromEntries(notes.map((n) => [n.jsonKey, n.lines])) : {}) }, null, 2)}\n`;
  assert.ok(made.nodes.length > 800, 'enough nodes for several pieces');
  const chunks = [...renderPlanChunks(made, 'json', false, notes, shard, elsewhere)];
  assert.ok(chunks.length > 1, `${chunks.length} piece(s)`);
  assert.is(chunks.join(''), whole(made, true, true));
  assert.is(renderPlan(made, 'json', false, [], undefined, elsewhere), whole(made, false, false));
  const empty = { ...made, nodes: [], byId: new Map() };
  assert.is(renderPlan(empty, 'json', false, notes, undefined, elsewhere), whole(empty, true, false));
});

test('planning writes nothing into .graph but its own caches: the parsed declarations and the tool identities', async () => {
  const dir = workspace(SMALL_ZOO);
  await plan(dir);
  assert.equal(readdirSync(path.join(dir, '.graph')).sort(), ['parsed', 'tools.json']);
  assert.equal(readdirSync(path.join(dir, '.graph', 'parsed')).sort(), ['images.yaml.json', 'models.yaml.json']);
});

test('declarations from the parse cache give the same plan, and spans still resolve', async () => {
  const dir = workspace(SMALL_ZOO);
  const first = renderPlan(await plan(dir), 'json');
  const second = renderPlan(await plan(dir), 'json');
  assert.is(second, first);
  const ws = openWorkspace(dir, fakeRules());
  assert.ok(ws.decls.imagesFile.fromCache);
  const span = ws.graph.node('build:pwm' as never).deps[0].at?.();
  assert.is(span && ws.decls.imagesFile.source.text.slice(span.start, span.end), 'base');
});

test('an edited parse cache is not served: the data fails its sum and the YAML is parsed again', async () => {
  const dir = workspace(SMALL_ZOO);
  const first = renderPlan(await plan(dir), 'json');
  const cached = path.join(dir, '.graph', 'parsed', 'models.yaml.json');
  const text = readFileSync(cached, 'utf8');
  assert.ok(text.includes('"GATA1"'));
  // Same length, same header: what a flipped byte or a hand edit leaves.
  writeFileSync(cached, text.replace('"GATA1"', '"GATA2"'));
  const ws = openWorkspace(dir, fakeRules());
  assert.ok(ws.graph.has('test:pwm/GATA1@oci'), 'the declarations come from the YAML');
  assert.not.ok(ws.graph.has('test:pwm/GATA2@oci'));
  assert.is(renderPlan(await plan(dir), 'json'), first);
});

test.run();
