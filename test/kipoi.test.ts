/**
 * The Kipoi example (examples/kipoi/): the real Kipoi model zoo declared for graph. Every expected
 * count and node id is derived here, independently of graph and of generate.mjs, from the zoo's
 * data in the fixtures (test/fixtures/kipoi/, a copy of the shared ones: images.json, model-to-docker.json, docker-to-model.json,
 * model-to-singularity.json, ci-test-matrix.json); the headline numbers are pinned as well, so a
 * changed fixture is noticed. Plans run without network (in a network namespace where one can be
 * made) on a temp copy, so nothing is written into the repository.
 */
import { appendFileSync, cpSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { execFileSync, spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { NodeId } from '../engine/rule.js';
import { openWorkspace } from '../engine/workspace.js';
import { defaultRules } from '../rules/index.js';
import { CLI, graph, REPO } from './helpers.js';

const test = suite('kipoi');

const EXAMPLE = path.join(REPO, 'examples', 'kipoi');
// A copy of the shared fixtures, carried in the repository so a clone anywhere passes.
const FIXTURES = path.join(REPO, 'test', 'fixtures', 'kipoi');
const fixture = <T>(name: string): T => JSON.parse(readFileSync(path.join(FIXTURES, name), 'utf8')) as T;

// ---------------------------------------------------------------------------------------------
// The zoo as its data describes it.

interface ImageSpec {
  readonly from: readonly string[];
  readonly env_files: readonly string[];
  readonly slim: boolean;
}
const imagesJson = fixture<Record<string, ImageSpec>>('images.json');
const modelToDocker = fixture<Record<string, string>>('model-to-docker.json');
const dockerToModel = fixture<Record<string, string[]>>('docker-to-model.json');
const modelToSingularity = fixture<Record<string, unknown>>('model-to-singularity.json');
const ciModels = fixture<{ ci_matrix: string[] }>('ci-test-matrix.json').ci_matrix.flatMap((job) => job.split(','));

/** `kipoi/kipoi-docker:TAG` → `TAG`, the image's name in the example. */
const tag = (ref: string) => ref.slice(ref.lastIndexOf(':') + 1);
const images = Object.keys(imagesJson).map(tag);
const slimImages = Object.entries(imagesJson).filter(([, s]) => s.slim).map(([ref]) => tag(ref));

/** The group a model path belongs to: the longest model-to-docker.json group that prefixes it, else its first segment. */
function groupOf(model: string): string {
  const listed = Object.keys(modelToDocker).filter((g) => model === g || model.startsWith(`${g}/`));
  return listed.sort((a, b) => b.length - a.length)[0] ?? model.split('/')[0];
}
const groups = new Map<string, { image: string; models: string[] }>();
for (const [ref, models] of Object.entries(dockerToModel)) {
  for (const model of models) {
    const g = groupOf(model);
    if (!groups.has(g)) groups.set(g, { image: tag(ref), models: [] });
    groups.get(g)?.models.push(model);
  }
}
const modelCount = Object.values(dockerToModel).reduce((n, ms) => n + ms.length, 0);

/** One expected test node: its id, the node it runs on, and the kipoi model it tests. */
interface ExpectedTest {
  readonly id: string;
  readonly group: string;
  readonly dep: string;
  readonly kipoiModel: string;
}
/**
 * As the zoo's CI tested: per group as many models as ci-test-matrix.json lists for it, the first
 * in sorted (code-unit) order; in the image, and in the -slim image's SIF when the zoo served one.
 */
const expectedTests: ExpectedTest[] = [];
for (const [g, { image, models }] of groups) {
  const n = ciModels.filter((m) => groupOf(m) === g).length;
  const sampled = [...models].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)).slice(0, n);
  for (const model of sampled) {
    const name = model === g ? g : model.slice(g.length + 1);
    expectedTests.push({ id: `test:${g}/${name}@oci`, group: g, dep: `build:${image}`, kipoiModel: model });
    if (g in modelToSingularity) expectedTests.push({ id: `test:${g}/${name}@sif`, group: g, dep: `convert:${image}-slim`, kipoiModel: model });
  }
}
const expectedKinds = { build: images.length, convert: slimImages.length, test: expectedTests.length, publish: images.length };
const expectedTotal = Object.values(expectedKinds).reduce((a, b) => a + b, 0);

// ---------------------------------------------------------------------------------------------
// Running graph on a temp copy, without network.

/** A temp copy of the example (its .graph/ state left behind). */
function copyExample(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'graph-kipoi-'));
  cpSync(EXAMPLE, dir, { recursive: true, filter: (src) => path.basename(src) !== '.graph' });
  return dir;
}

/** Whether `unshare -rn` can give a command a network namespace with no interface but loopback. */
const canIsolate = spawnSync('unshare', ['-rn', 'true']).status === 0;

/** `graph ARGS` in `cwd`, in a network namespace of its own when one can be made. */
function graphOffline(cwd: string, ...args: string[]): { code: number; stdout: string; stderr: string } {
  if (!canIsolate) return graph(cwd, ...args);
  const env: NodeJS.ProcessEnv = { ...process.env, CI: 'true' };
  delete env.SOURCE_DATE_EPOCH;
  const r = spawnSync('unshare', ['-rn', process.execPath, CLI, ...args], { cwd, encoding: 'utf8', env });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** A temp copy of the example, committed to a new git repository (for --changed-since). */
function committedCopy(): string {
  const dir = copyExample();
  const git = (...args: string[]) => execFileSync('git', ['-c', 'user.name=t', '-c', 'user.email=t@example.invalid', ...args], { cwd: dir, stdio: 'pipe' });
  git('init', '-q', '-b', 'main');
  git('add', '-A');
  git('commit', '-qm', 'kipoi');
  return dir;
}

interface PlanJson {
  nodes: Array<{ id: string; kind: string; deps: string[]; status: string }>;
  summary: { total: number; run: number; cached: number };
}
function planJson(cwd: string, ...args: string[]): PlanJson {
  const r = graphOffline(cwd, 'plan', '--format', 'json', ...args);
  assert.is(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as PlanJson;
}

/** The node ids `graph query --changed-since HEAD` lists: what changed and what follows from it. */
function changedIds(cwd: string): string[] {
  const r = graphOffline(cwd, 'query', '--changed-since', 'HEAD');
  assert.is(r.code, 0, r.stderr);
  return r.stdout.split('\n').filter(Boolean).sort();
}

const sorted = (xs: Iterable<string>) => [...xs].sort();

// ---------------------------------------------------------------------------------------------

test('the fixtures describe the zoo the example declares', () => {
  assert.is(images.length, 39);
  assert.is(slimImages.length, 19);
  // model-to-docker.json's 39 groups, and a2z-chromatin, whose 2 models docker-to-model.json serves.
  assert.is(groups.size, 40);
  assert.is(modelCount, 2169);
  assert.equal(expectedKinds, { build: 39, convert: 19, test: 72, publish: 39 });
});

test('generate.mjs reproduces the committed declarations', () => {
  const r = spawnSync(process.execPath, [path.join(EXAMPLE, 'generate.mjs'), '--check', '--fixtures', FIXTURES], { encoding: 'utf8' });
  assert.is(r.status, 0, r.stderr);
});

test('graph validate reports every image, group and model of the zoo', () => {
  const r = graph(REPO, 'validate', '-C', 'examples/kipoi');
  assert.is(r.code, 0, r.stderr);
  assert.is(r.stdout, `ok: ${images.length} images, ${groups.size} groups, ${modelCount} models, ${expectedTotal} nodes\n`);
  assert.is(r.stdout, 'ok: 39 images, 40 groups, 2169 models, 169 nodes\n');
});

test('graph plan: every node, by kind, with the tests the CI ran, without network', () => {
  const dir = copyExample();
  const plan = planJson(dir);
  const kinds: Record<string, number> = {};
  for (const n of plan.nodes) kinds[n.kind] = (kinds[n.kind] ?? 0) + 1;
  assert.equal(kinds, expectedKinds);
  assert.equal(plan.summary, { total: expectedTotal, run: expectedTotal, cached: 0 });
  const tests = plan.nodes.filter((n) => n.kind === 'test');
  assert.equal(sorted(tests.map((n) => n.id)), sorted(expectedTests.map((t) => t.id)));
  for (const t of expectedTests) assert.equal(tests.find((n) => n.id === t.id)?.deps, [t.dep], t.id);
  // Non-slim images build on the base; -slim images start from their Dockerfile's FROM.
  const builds = new Map(plan.nodes.filter((n) => n.kind === 'build').map((n) => [n.id, n.deps]));
  for (const [ref, spec] of Object.entries(imagesJson)) {
    const base = spec.from.find((f) => f.startsWith('kipoi/kipoi-docker:'));
    assert.equal(builds.get(`build:${tag(ref)}`), base ? [`build:${tag(base)}`] : [], ref);
  }
});

test('each test runs `kipoi test MODEL --source=kipoi` on the kipoi model path', () => {
  const ws = openWorkspace(copyExample(), defaultRules);
  for (const t of expectedTests) {
    const decl = ws.graph.node(t.id as NodeId).decl as { contract: { command: string[] } };
    assert.equal(decl.contract.command, ['kipoi', 'test', t.kipoiModel, '--source=kipoi'], t.id);
  }
});

test('image:sharedpy3keras2tf2 selects its build, its tests in both runtimes, its publish, and their dependencies', () => {
  const image = 'sharedpy3keras2tf2';
  const ids = planJson(copyExample(), `image:${image}`).nodes.map((n) => n.id);
  const base = tag(imagesJson[`kipoi/kipoi-docker:${image}`].from[0]);
  const tests = expectedTests.filter((t) => groups.get(t.group)?.image === image).map((t) => t.id);
  assert.equal(sorted(ids), sorted([`build:${base}`, `build:${image}`, `build:${image}-slim`, `convert:${image}-slim`, `publish:${image}`, ...tests]));
  assert.is(tests.length, 21); // 10 groups in both runtimes, a2z-chromatin in oci only
});

test('--changed-since: an edited env file selects exactly the images that copy it, and what follows', () => {
  const dir = committedCopy();
  const envFile = 'sharedpy3keras2tf1.yml';
  appendFileSync(path.join(dir, 'envfiles', 'sharedpy3keras2tf1', envFile), '# edited\n');
  const changed = Object.entries(imagesJson).filter(([, s]) => s.env_files.includes(envFile)).map(([ref]) => tag(ref));
  const [image, slim] = [changed.find((i) => !i.endsWith('-slim')) as string, changed.find((i) => i.endsWith('-slim')) as string];
  const tests = expectedTests.filter((t) => groups.get(t.group)?.image === image).map((t) => t.id);
  assert.equal(changedIds(dir), sorted([...changed.map((i) => `build:${i}`), `convert:${slim}`, ...changed.map((i) => `publish:${i}`), ...tests]));
  assert.is(changedIds(dir).length, 17);
});

test('--changed-since: raising one group\'s sample selects the new tests and the publishes that wait for them', () => {
  const dir = committedCopy();
  // DeepSEA: the CI tested variantEffects, the third model in sorted order; sample: 1 tests the first.
  const group = 'DeepSEA';
  const { image, models } = groups.get(group) as { image: string; models: string[] };
  const text = readFileSync(path.join(dir, 'models.yaml'), 'utf8');
  const block = text.slice(text.indexOf(`\n  ${group}:\n`), text.indexOf('\n\n', text.indexOf(`\n  ${group}:\n`)));
  assert.match(block, /sample: 1 /);
  writeFileSync(path.join(dir, 'models.yaml'), text.replace(block, block.replace(/sample: 1 /, `sample: ${models.length} `)));
  const added = [...models].sort().slice(1).map((m) => m.slice(group.length + 1));
  const tests = added.flatMap((m) => [`test:${group}/${m}@oci`, `test:${group}/${m}@sif`]);
  assert.equal(changedIds(dir), sorted([...tests, `publish:${image}`, `publish:${image}-slim`]));
  assert.ok(tests.includes(`test:${group}/variantEffects@oci`));
});

test.run();
