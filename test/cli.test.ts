/** The `graph` binary end to end in temp workspaces (and a temp git repository). */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { ActionCache } from '../engine/cache/action-cache.js';
import { canonicalJson } from '../engine/key/key.js';
import type { NodeId } from '../engine/rule.js';
import { CLI, FakeRunner, graph, graphAsync, graphWith, runEngine, SMALL_ZOO, workspace, writeFiles } from './helpers.js';

const test = suite('cli');

function gitRepo(files: Record<string, string>): string {
  const dir = workspace(files);
  const git = (...args: string[]) => execFileSync('git', args, { cwd: dir, stdio: 'pipe' });
  git('init', '-q', '-b', 'main');
  git('-c', 'user.name=t', '-c', 'user.email=t@example.invalid', 'add', '-A');
  git('-c', 'user.name=t', '-c', 'user.email=t@example.invalid', 'commit', '-qm', 'zoo');
  return dir;
}

function planIds(dir: string, ...args: string[]): string[] {
  const r = graph(dir, 'plan', '--format', 'json', ...args);
  assert.is(r.code, 0, r.stderr);
  return (JSON.parse(r.stdout) as { nodes: Array<{ id: string; status: string }> }).nodes.filter((n) => n.status === 'run').map((n) => n.id).sort();
}

test('--help on every command, and the command list', () => {
  const top = graph('.', '--help');
  assert.is(top.code, 0);
  // The engine's commands, then the rules' (lock: the debian: recipe's; key, verify: publish's), clean last.
  const commands = ['plan', 'build', 'run-node', 'report', 'validate', 'query', 'explain', 'lock', 'key', 'verify', 'clean'];
  assert.equal([...top.stdout.matchAll(/^  ([a-z-]+) {2,}\S/gm)].map((m) => m[1]), commands);
  for (const c of commands) {
    assert.match(top.stdout, new RegExp(`\\n  ${c} +\\S`));
    const r = graph('.', c, '--help');
    assert.is(r.code, 0, c);
    assert.ok(r.stdout.startsWith(`graph ${c}`), `${c} --help starts with its usage`);
  }
  const bare = graph('.');
  assert.is(bare.code, 2, 'no command is a usage error');
  assert.is(bare.stdout, '');
  assert.is(bare.stderr, top.stdout, 'the usage, on stderr');
  assert.is(graph('.', '-C', '.').code, 2);
  assert.is(graph('.', 'help').code, 0);
  assert.is(graph('.', 'frobnicate').code, 2);
  const badFlag = graph('.', 'plan', '--bogus');
  assert.is(badFlag.code, 2);
  assert.match(badFlag.stderr, "Run 'graph plan --help' for usage.");
});

test('plan: text lists what runs and why', () => {
  const dir = workspace(SMALL_ZOO);
  const r = graph(dir, 'plan', 'test:pwm/CTCF@oci');
  assert.is(r.code, 0);
  assert.is(
    r.stdout,
    `3 nodes to run, 0 cached (3 nodes selected)
  run    build:base
           no previous record
  run    build:pwm
           no previous record
  run    test:pwm/CTCF@oci
           no previous record
`,
  );
});

test('plan: dot, mermaid and matrix formats', () => {
  const dir = workspace(SMALL_ZOO);
  const dot = graph(dir, 'plan', '--format', 'dot').stdout;
  assert.ok(dot.startsWith('digraph plan {\n'));
  assert.match(dot, '  "build:base" [label="build:base\\nrun", style=filled, fillcolor="#ffd8a8"];\n');
  assert.match(dot, '"build:base" -> "build:pwm";');
  assert.match(dot, '"convert:pwm" -> "test:pwm/CTCF@sif";');
  const mermaid = graph(dir, 'plan', '--format', 'mermaid').stdout;
  assert.ok(mermaid.startsWith('flowchart LR\n'));
  assert.match(mermaid, /n0\["build:base"\]:::run/);
  const matrix = JSON.parse(graph(dir, 'plan', '--format', 'matrix', 'image:base').stdout);
  assert.equal(matrix, { include: [{ image: 'base', targets: 'build:base publish:base' }] });
  const bad = graph(dir, 'plan', '--format', 'yaml');
  assert.is(bad.code, 2);
  assert.match(bad.stderr, "unknown --format 'yaml' (one of: text, json, dot, mermaid, matrix)");
});

test('plan --format dot is read by Graphviz: a label is the id and the status on two lines', () => {
  const hasDot = spawnSync('dot', ['-V']).status === 0;
  if (!hasDot) {
    console.warn('skipped: Graphviz `dot` is not installed (apt-get install graphviz)');
    return;
  }
  const dir = workspace(SMALL_ZOO);
  const dot = graph(dir, 'plan', '--format', 'dot').stdout;
  const svg = spawnSync('dot', ['-Tsvg'], { input: dot, encoding: 'utf8' });
  assert.is(svg.status, 0, svg.stderr);
  assert.is(svg.stderr, '');
  const texts = [...svg.stdout.matchAll(/<text[^>]*>([^<]*)<\/text>/g)].map((m) => m[1]);
  assert.equal(texts.slice(0, 4), ['build:base', 'run', 'build:pwm', 'run']);
  assert.is(texts.filter((t) => t === 'run').length, 9, 'every node is to run, on its own line');
  assert.not.ok(texts.some((t) => t.includes('\\')), 'no literal backslash in a label');
});

test('targets: image:, group:, globs, --only, and did-you-mean', () => {
  const dir = workspace(SMALL_ZOO);
  const q = (...args: string[]) => graph(dir, 'query', ...args).stdout.trim().split('\n');
  assert.equal(q('image:base'), ['build:base', 'publish:base']);
  assert.equal(q('group:pwm'), ['test:pwm/CTCF@oci', 'test:pwm/GATA1@oci', 'test:pwm/CTCF@sif', 'test:pwm/GATA1@sif']);
  assert.equal(q('test:pwm/*@sif'), ['test:pwm/CTCF@sif', 'test:pwm/GATA1@sif']);
  assert.equal(q('image:pwm', '--only', 'convert,publish'), ['convert:pwm', 'publish:pwm']);
  assert.equal(q('test:pwm/CTCF@sif', '--deps'), ['build:base', 'build:pwm', 'convert:pwm', 'test:pwm/CTCF@sif']);
  const bad = graph(dir, 'plan', 'test:pwm/CTFC@oci');
  assert.is(bad.code, 2);
  assert.match(bad.stderr, "unknown target 'test:pwm/CTFC@oci' (did you mean 'test:pwm/CTCF@oci'?)");
  const kind = graph(dir, 'query', '--only', 'tests');
  assert.is(kind.code, 2);
  assert.match(kind.stderr, "unknown node kind 'tests' in --only");
});

test('-C DIR works from anywhere; validate counts', () => {
  const dir = workspace(SMALL_ZOO);
  const r = graph(path.dirname(dir), '-C', dir, 'validate');
  assert.is(r.code, 0, r.stderr);
  assert.is(r.stdout, 'ok: 2 images, 1 groups, 2 models, 9 nodes\n');
});

test('build: exit 1 on a failed node, reports written, dependents skipped, exit codes for usage', () => {
  // A base directory that is not an OCI image layout: the build fails at run time.
  const dir = workspace({
    'not-a-layout/readme.txt': 'nothing here',
    'f.txt': 'x',
    'images.yaml': 'version: 1\nimages:\n  base:\n    from: oci-layout:not-a-layout\n    layers: [{copy: f.txt, to: /f}]\n',
  });
  const r = graph(dir, 'build', 'image:base', '--report', 'out/report.json', '--junit', 'out/junit.xml');
  assert.is(r.code, 1);
  assert.match(r.stderr, 'FAILED: 0 ran, 0 cached, 1 failed, 1 skipped');
  assert.match(r.stderr, 'log: .graph/logs/build:base.log');
  const why = `OCI image layout ${path.join(dir, 'not-a-layout')}: cannot read ${path.join(dir, 'not-a-layout', 'oci-layout')}: ENOENT: no such file or directory, open '${path.join(dir, 'not-a-layout', 'oci-layout')}'`;
  const report = JSON.parse(readFileSync(path.join(dir, 'out/report.json'), 'utf8'));
  assert.equal(
    report.nodes.map((n: { id: string; status: string; reasons: string[] }) => [n.id, n.status, n.reasons[0]]),
    [
      ['build:base', 'failed', why],
      ['publish:base', 'skipped', 'dependency build:base failed'],
    ],
  );
  assert.equal(Object.keys(report.nodes[0]), ['id', 'kind', 'status', 'duration_ms', 'reasons', 'failure', 'outputs', 'log']);
  assert.equal(report.nodes[0].failure, { type: 'error', message: why });
  assert.equal(report.nodes[1].failure, { type: 'dependency', dependency: 'build:base', cause: { type: 'error', message: why } });
  assert.match(readFileSync(path.join(dir, '.graph/logs/build:base.log'), 'utf8'), `# failed: ${why}`);
  const junit = readFileSync(path.join(dir, 'out/junit.xml'), 'utf8');
  assert.match(junit, '<testcase classname="build" name="build:base"');
  assert.match(junit, '<failure message="OCI image layout ');
  assert.match(junit, '<skipped message="dependency build:base failed"/>');
  assert.not.ok(existsSync(path.join(dir, '.graph/out/oci/base')), 'nothing half-written');
  assert.is(graph(dir, 'build', '--jobs', '0').code, 2);
  assert.is(graph(dir, 'build', '--limit', 'bogus=2').code, 2);
  assert.is(graph(dir, 'build', '--keep-going', '--fail-fast').code, 2);
});

test('build: with the action cache on a full disk, the image is built but nothing downstream runs and nothing is published', () => {
  const dir = workspace({
    'f.txt': 'x',
    'images.yaml': 'version: 1\nimages:\n  base:\n    layers: [{copy: f.txt, to: /f}]\n    convert: [sif]\n',
  });
  // A one-page tmpfs for the action cache's entries, filled up: the first record fails with ENOSPC.
  const ac = path.join(dir, '.graph', 'ac');
  mkdirSync(ac, { recursive: true });
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4k', 'tmpfs', ac], { stdio: 'pipe' });
  } catch (e) {
    assert.unreachable(`mounting a tmpfs needs root (the tests run as root in CI): ${(e as Error).message}`);
  }
  try {
    try {
      writeFileSync(path.join(ac, 'fill'), Buffer.alloc(64 * 1024));
    } catch {
      // full now
    }
    const r = graph(dir, 'build', '--report', 'report.json');
    assert.is(r.code, 1, r.stderr);
    const report = JSON.parse(readFileSync(path.join(dir, 'report.json'), 'utf8'));
    const byId = Object.fromEntries(report.nodes.map((n: { id: string }) => [n.id, n]));
    assert.is(byId['build:base'].status, 'failed');
    assert.is(byId['build:base'].failure.type, 'record');
    assert.match(byId['build:base'].failure.message, /^ENOSPC: no space left on device/);
    for (const id of ['convert:base', 'publish:base']) {
      assert.is(byId[id].status, 'skipped', id);
      assert.match(byId[id].reasons[0], /^dependency build:base failed \(could not record its result: ENOSPC: no space left on device/);
    }
    assert.not.ok(existsSync(path.join(dir, 'dist')), 'nothing published');
    assert.not.ok(existsSync(path.join(dir, '.graph', 'logs', 'convert:base.log')), 'convert never started');
  } finally {
    execFileSync('umount', [ac]);
  }
});

test('build: two graph processes on one workspace run each node once; the other waits and reuses the result', async () => {
  let images = 'version: 1\nimages:\n';
  const files: Record<string, string> = {};
  for (let i = 0; i < 4; i++) {
    images += `  img${i}:\n    layers: [{copy: f${i}.bin, to: /f}]\n    convert: [sif]\n`;
    files[`f${i}.bin`] = `${i}`.repeat(200_000);
  }
  const dir = workspace({ ...files, 'images.yaml': images });
  const [a, b] = await Promise.all([graphAsync(dir, 'build', '--report', 'a.json'), graphAsync(dir, 'build', '--report', 'b.json')]);
  assert.is(a.code, 0, a.stderr);
  assert.is(b.code, 0, b.stderr);
  const nodes = [...JSON.parse(readFileSync(path.join(dir, 'a.json'), 'utf8')).nodes, ...JSON.parse(readFileSync(path.join(dir, 'b.json'), 'utf8')).nodes];
  const ran = nodes.filter((n: { status: string }) => n.status === 'ran').map((n: { id: string }) => n.id).sort();
  assert.equal(ran, ['build:img0', 'build:img1', 'build:img2', 'build:img3', 'convert:img0', 'convert:img1', 'convert:img2', 'convert:img3', 'publish:img0', 'publish:img1', 'publish:img2', 'publish:img3']);
  // A node the other process recorded after this one planned is waited for and reused; one it had
  // recorded before this one planned is cached from the start (no reason). Which of the two a node
  // is depends on how the processes' starts interleave under load; execute.test.ts lines two runs
  // up after planning and asserts the waiting exactly.
  for (const n of nodes.filter((x: { status: string }) => x.status !== 'ran')) {
    assert.is(n.status, 'cached');
    if (n.reasons.length) assert.match(n.reasons[0], /^done meanwhile by another graph process/);
  }
  assert.equal(readdirSync(path.join(dir, '.graph', 'leases')), []);
  assert.is(graph(dir, 'plan').stdout.split('\n')[0], '0 nodes to run, 12 cached (12 nodes selected)');
});

/** Two images (one FROM the other), each converted to SIF and published into dist/. */
const SIF_PAIR = {
  'a.txt': 'a\n',
  'b.txt': 'b\n',
  'images.yaml': 'version: 1\nimages:\n  base:\n    layers: [{copy: a.txt, to: /a}]\n    convert: [sif]\n  top:\n    from: base\n    layers: [{copy: b.txt, to: /b}]\n    convert: [sif]\n',
};

test('build: visible outputs deleted from .graph/out are restored from the store, dist/ is published again; nothing else runs', () => {
  const dir = workspace(SIF_PAIR);
  assert.is(graph(dir, 'build').code, 0);
  const sif = readFileSync(path.join(dir, 'dist/sif/top.sif'));
  const manifest = (name: string) => JSON.parse(readFileSync(path.join(dir, 'published.lock.json'), 'utf8')).images[name].manifest.slice('sha256:'.length);
  rmSync(path.join(dir, '.graph', 'out'), { recursive: true });
  rmSync(path.join(dir, 'dist'), { recursive: true });
  const plan = graph(dir, 'plan', '-v');
  assert.is(plan.code, 0);
  assert.is(
    plan.stdout,
    `2 nodes to run, 4 cached (6 nodes selected)
  cached build:base
           restores .graph/out/oci/base/index.json from the store
  cached build:top
           restores .graph/out/oci/top/index.json from the store
  cached convert:base
           restores .graph/out/sif/base.sif from the store
  cached convert:top
           restores .graph/out/sif/top.sif from the store
  run    publish:base
           output missing: dist/oci/blobs/sha256/${manifest('base')}, dist/sif/base.sif no longer in the workspace
  run    publish:top
           output missing: dist/oci/blobs/sha256/${manifest('top')}, dist/sif/top.sif no longer in the workspace
`,
  );
  const r = graph(dir, 'build');
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stderr, 'ok: 2 ran, 4 cached, 0 failed, 0 skipped');
  assert.ok(existsSync(path.join(dir, '.graph/out/oci/top/index.json')));
  assert.ok(readFileSync(path.join(dir, '.graph/out/sif/top.sif')).equals(sif));
  assert.ok(readFileSync(path.join(dir, 'dist/sif/top.sif')).equals(sif));
  execFileSync('skopeo', ['inspect', `oci:${path.join(dir, '.graph/out/oci/top')}:latest`], { stdio: 'pipe' });
  assert.is(graph(dir, 'plan').stdout.split('\n')[0], '0 nodes to run, 6 cached (6 nodes selected)');
});

test('GRAPH_CACHE_DIR: a second checkout sharing the cache builds nothing; it restores the layouts and SIFs and publishes its dist/', () => {
  const shared = mkdtempSync(path.join(tmpdir(), 'graph-shared-cache-'));
  const a = workspace(SIF_PAIR);
  const b = workspace(SIF_PAIR);
  const env = { GRAPH_CACHE_DIR: shared };
  assert.is(graphWith(env, a, 'build').code, 0);
  assert.ok(existsSync(path.join(shared, 'actions.log')) && existsSync(path.join(shared, 'cas', 'sha256')));
  assert.not.ok(existsSync(path.join(a, '.graph', 'cas')), 'the store is in GRAPH_CACHE_DIR, not in .graph/');
  const r = graphWith(env, b, 'build', '--report', 'report.json');
  assert.is(r.code, 0, r.stderr);
  const report = JSON.parse(readFileSync(path.join(b, 'report.json'), 'utf8'));
  const ran = report.nodes.filter((n: { status: string }) => n.status === 'ran').map((n: { id: string }) => n.id);
  assert.equal(ran, ['publish:base', 'publish:top']);
  assert.ok(readFileSync(path.join(b, 'dist/sif/top.sif')).equals(readFileSync(path.join(a, 'dist/sif/top.sif'))));
  assert.equal(readFileSync(path.join(b, 'published.lock.json'), 'utf8'), readFileSync(path.join(a, 'published.lock.json'), 'utf8'));
});

/** Two model images on a Debian base whose tests pass: one with a SIF tested in both runtimes, one in oci only. */
const SHARD_ZOO = {
  'images.yaml': `version: 1
images:
  base:
    debian: {packages: [python3]}
  pwm:
    from: base
    layers: [{copy: zoo/pwm/predict, to: /usr/local/bin/predict, mode: 0o755}]
    convert: [sif]
  gc:
    from: base
    layers: [{copy: zoo/gc/gc, to: /usr/local/bin/gc, mode: 0o755}]
`,
  'models.yaml': `version: 1
groups:
  pwm:
    image: pwm
    models: [CTCF, GATA1]
    test:
      command: [predict, "{model}", /input/seqs.fa, /output/scores.tsv]
      inputs: zoo/input
      expect: zoo/pwm/expect/{model}
      runtimes: [oci, sif]
  gc:
    image: gc
    models: [gc_content]
    test:
      command: [gc, /input/seqs.fa, /output/gc.tsv]
      inputs: zoo/input
      expect: zoo/gc/expect
      runtimes: [oci]
`,
  'zoo/pwm/predict': '#!/usr/bin/python3\nimport sys\nmodel, seqs, out = sys.argv[1:4]\nopen(out, "w").write(f"{model}\\t{len(open(seqs).read())}\\n")\n',
  'zoo/gc/gc': '#!/usr/bin/python3\nimport sys\nseq = "".join(l.strip() for l in open(sys.argv[1]) if not l.startswith(">"))\nopen(sys.argv[2], "w").write(f"s1\\t{sum(c in \'GC\' for c in seq) / len(seq)}\\n")\n',
  'zoo/input/seqs.fa': '>s1\nACGT\n',
  'zoo/pwm/expect/CTCF/scores.tsv': 'CTCF\t9\n',
  'zoo/pwm/expect/GATA1/scores.tsv': 'GATA1\t9\n',
  'zoo/gc/expect/gc.tsv': 's1\t0.5\n',
};

/** The split digest `graph plan --shard 1/2 --format json` names. */
function planSplit(dir: string): string {
  return (JSON.parse(graph(dir, 'plan', '--shard', '1/2', '--format', 'json').stdout) as { shard: { split: string } }).shard.split;
}

test('shards: the matrix, two shards on fresh runners whose merged reports are the unsharded build', () => {
  type Report = { summary: Record<string, unknown>; nodes: Array<{ id: string; status: string }>; shard?: { index: number; count: number; split: string; groups: string[]; dependencies: string[] } };
  const read = (dir: string, file: string) => JSON.parse(readFileSync(path.join(dir, file), 'utf8')) as Report;
  const plan = workspace(SHARD_ZOO);
  // Three images with nodes to run: at most three shards.
  assert.is(graph(plan, 'plan', '--format', 'matrix', '--max-shards', '5').stdout, '{"include":[{"shard":"1/3"},{"shard":"2/3"},{"shard":"3/3"}]}\n');
  const matrix = graph(plan, 'plan', '--format', 'matrix', '--max-shards', '2');
  assert.is(matrix.stdout, '{"include":[{"shard":"1/2"},{"shard":"2/2"}]}\n', matrix.stderr);
  // What each shard will do, before it runs (no durations yet: node counts balance).
  const split = planSplit(plan);
  assert.is(graph(plan, 'plan', '--shard', '1/2').stdout.split('\n')[0], `shard 1/2 (split ${split}): 8 nodes; image pwm; a dependency owned by other shards: build:base`);
  assert.is(graphWith({ GRAPH_SHARD: '2/2' }, plan, 'plan').stdout.split('\n')[0], `shard 2/2 (split ${split}): 5 nodes; images base, gc`);

  // Each shard on a runner of its own (its own workspace and cache), as CI runs them.
  const one = workspace(SHARD_ZOO);
  const two = workspace(SHARD_ZOO);
  const r1 = graph(one, 'build', '--shard', '1/2', '--report', 'report.json');
  assert.is(r1.code, 0, r1.stderr);
  assert.ok(r1.stderr.startsWith(`shard 1/2 (split ${split}): 8 nodes;`), r1.stderr);
  const r2 = graphWith({ GRAPH_SHARD: '2/2' }, two, 'build', '--report', 'report.json');
  assert.is(r2.code, 0, r2.stderr);
  const [shard1, shard2] = [read(one, 'report.json'), read(two, 'report.json')];
  assert.equal(shard1.nodes.map((n) => n.id), ['build:base', 'build:pwm', 'convert:pwm', 'test:pwm/CTCF@oci', 'test:pwm/GATA1@oci', 'test:pwm/CTCF@sif', 'test:pwm/GATA1@sif', 'publish:pwm']);
  assert.equal(shard2.nodes.map((n) => n.id), ['build:base', 'build:gc', 'publish:base', 'test:gc/gc_content@oci', 'publish:gc']);
  assert.equal(shard1.shard, { index: 1, count: 2, split, groups: ['pwm'], dependencies: ['build:base'] }, 'the base is built where it is needed: no shared cache here');
  assert.equal(shard2.shard, { index: 2, count: 2, split, groups: ['base', 'gc'], dependencies: [] });

  const whole = workspace(SHARD_ZOO);
  const all = graph(whole, 'build', '--report', 'report.json');
  assert.is(all.code, 0, all.stderr);
  const unsharded = read(whole, 'report.json');

  // The shards' reports, merged where CI collects them.
  writeFileSync(path.join(plan, 'shard-1.json'), readFileSync(path.join(one, 'report.json')));
  writeFileSync(path.join(plan, 'shard-2.json'), readFileSync(path.join(two, 'report.json')));
  const merge = graph(plan, 'report', 'merge', 'merged.json', 'shard-2.json', 'shard-1.json', '--junit', 'merged.xml');
  assert.is(merge.code, 0, merge.stderr);
  assert.is(merge.stderr, 'merged 2 reports into merged.json: 12 ran, 0 cached, 0 failed, 0 skipped\n');
  const merged = read(plan, 'merged.json') as Report & { conflicts: unknown[]; merged_from: string[] };
  const statuses = (r: Report) => Object.fromEntries(r.nodes.map((n) => [n.id, n.status]));
  assert.equal(statuses(merged), statuses(unsharded), 'the same nodes, with the same results');
  assert.is(merged.nodes.length, unsharded.nodes.length);
  assert.equal(merged.conflicts, [], 'build:base, built on both runners, has one manifest digest');
  assert.equal(merged.merged_from, ['shard-2.json', 'shard-1.json']);
  assert.equal({ ...merged.summary, duration_ms: 0 }, { ...unsharded.summary, duration_ms: 0 });
  const junit = readFileSync(path.join(plan, 'merged.xml'), 'utf8');
  assert.is(junit.match(/<testcase /g)?.length, 12);
  assert.match(junit, '<testcase classname="test" name="test:gc/gc_content@oci"');

  // One shard's report alone is an incomplete merge; bad usage is exit 2.
  const alone = graph(plan, 'report', 'merge', 'half.json', 'shard-1.json');
  assert.is(alone.code, 1);
  assert.match(alone.stderr, 'incomplete: no report for shard 2/2: the nodes it owns are missing\n');
  assert.ok(existsSync(path.join(plan, 'half.json')), 'written all the same');
  assert.is(graph(plan, 'report', 'merge', 'out.json').code, 2);
  const missing = graph(plan, 'report', 'merge', 'out.json', 'nope.json');
  assert.is(missing.code, 2);
  assert.match(missing.stderr, 'graph report: cannot read nope.json: ENOENT\n');
  assert.match(graph(plan, 'report', 'frobnicate').stderr, "unknown report command 'frobnicate' (report commands: merge, html)");
});

test('shards: balanced by the durations actions.log recorded, node counts without', async () => {
  const files: Record<string, string> = { 'images.yaml': 'version: 1\nimages:\n' };
  for (const name of ['a', 'b', 'c']) {
    files['images.yaml'] += `  ${name}:\n    layers: [{copy: ${name}.txt, to: /${name}}]\n`;
    files[`${name}.txt`] = name;
  }
  const dir = workspace(files);
  const owned = (i: number) => (JSON.parse(graph(dir, 'plan', '--shard', `${i}/2`, '--format', 'json').stdout) as { shard: { groups: string[] } }).shard.groups;
  // Two nodes an image, no durations: by name.
  assert.equal([owned(1), owned(2)], [['a', 'c'], ['b']]);
  assert.is(graph(dir, 'build').code, 0);
  // Their runs recorded again with chosen durations: build:b took 10 minutes, the others 1 s.
  const cache = new ActionCache(path.join(dir, '.graph'));
  for (const name of ['a', 'b', 'c']) {
    for (const id of [`build:${name}`, `publish:${name}`] as NodeId[]) {
      const last = cache.last(id) as NonNullable<ReturnType<ActionCache['last']>>;
      const record = canonicalJson(last.record);
      await cache.put(id, last.key, record, { ...last.result, duration_ms: id === 'build:b' ? 600_000 : 1000 });
    }
  }
  // Cached nodes weigh nothing: every image changes, so every node runs.
  writeFiles(dir, { 'a.txt': 'A', 'b.txt': 'B', 'c.txt': 'C' });
  assert.equal([owned(1), owned(2)], [['b'], ['a', 'c']]);
  assert.match(graph(dir, 'plan', '--shard', '1/2').stdout, /^shard 1\/2 \(split [0-9a-f]{16}\): 2 nodes; image b\n2 nodes to run, 0 cached \(2 nodes selected\)\n  run    build:b\n           input file b.txt changed/);
});

test('shards: bad --shard, GRAPH_SHARD and --max-shards are usage errors (exit 2)', () => {
  const dir = workspace(SMALL_ZOO);
  const usage = 'takes i/n, shard i of n counted from 1 (1/3, 2/3, 3/3)';
  for (const [args, env, message] of [
    [['build', '--shard', '0/3'], {}, `graph build: --shard ${usage}, got '0/3'\n`],
    [['build', '--shard', '3/2'], {}, `graph build: --shard ${usage}, got '3/2': there is no shard 3 of 2\n`],
    [['plan', '--shard', 'x'], {}, `graph plan: --shard ${usage}, got 'x'\n`],
    [['build'], { GRAPH_SHARD: '2' }, `graph build: GRAPH_SHARD ${usage}, got '2'\n`],
    [['plan', '--format', 'matrix', '--max-shards', '0'], {}, "graph plan: --max-shards takes a positive integer, got '0'\n"],
    [['plan', '--max-shards', '3'], {}, 'graph plan: --max-shards goes with --format matrix\n'],
    [['plan', '--format', 'matrix', '--shard', '1/2'], {}, 'graph plan: --format matrix lists every image: it takes no --shard (use --max-shards N for a shards matrix)\n'],
  ] as const) {
    const r = graphWith(env, dir, ...args);
    assert.is(r.code, 2, args.join(' '));
    assert.is(r.stderr, `${message}Run 'graph ${args[0]} --help' for usage.\n`);
  }
  assert.not.ok(existsSync(path.join(dir, '.graph', 'logs')), 'nothing ran');
  // The matrix job ignores a GRAPH_SHARD meant for the build jobs; the flag wins over the variable.
  assert.is(graphWith({ GRAPH_SHARD: '1/2' }, dir, 'plan', '--format', 'matrix', '--max-shards', '4').stdout, '{"include":[{"shard":"1/2"},{"shard":"2/2"}]}\n');
  assert.match(graphWith({ GRAPH_SHARD: 'x' }, dir, 'plan', '--shard', '2/2').stdout, /^shard 2\/2 /);
});

test('build: an unwritable --report or --junit is exit 2 before anything runs', () => {
  const dir = workspace({ ...SMALL_ZOO, 'f.txt': 'a file', 'out/keep': '' });
  const underFile = graph(dir, 'build', '--report', 'f.txt/report.json');
  assert.is(underFile.code, 2);
  assert.is(underFile.stderr, `graph build: cannot write --report f.txt/report.json: ${path.join(dir, 'f.txt')} is not a directory\nRun 'graph build --help' for usage.\n`);
  const deeper = graph(dir, 'build', '--junit', 'f.txt/a/b/junit.xml');
  assert.is(deeper.stderr, `graph build: cannot write --junit f.txt/a/b/junit.xml: ${path.join(dir, 'f.txt')} is not a directory\nRun 'graph build --help' for usage.\n`);
  const directory = graph(dir, 'build', '--report', 'report.json', '--junit', 'out');
  assert.is(directory.code, 2);
  assert.is(directory.stderr, "graph build: cannot write --junit out: it is a directory\nRun 'graph build --help' for usage.\n");
  assert.not.ok(existsSync(path.join(dir, '.graph')), 'no node ran, nothing planned');
  assert.not.ok(existsSync(path.join(dir, 'report.json')));
  assert.equal(readdirSync(dir).sort(), ['f.txt', 'images.yaml', 'models.yaml', 'out', 'zoo'], 'no probe file left');
});

test('build: everything cached is exit 0, a one-line summary, and the outputs in the report', async () => {
  const dir = workspace(SMALL_ZOO);
  await runEngine(dir, new FakeRunner());
  const r = graph(dir, 'build', '--report', 'report.json');
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stderr, /^0 to run, 9 cached, 9 nodes; jobs \d+\nok: 0 ran, 9 cached, 0 failed, 0 skipped in \d+ms\n$/);
  const report = JSON.parse(readFileSync(path.join(dir, 'report.json'), 'utf8'));
  assert.equal(report.summary, { ran: 0, cached: 9, failed: 0, skipped: 0, interrupted_nodes: 0, duration_ms: report.summary.duration_ms, interrupted: false });
  const node = report.nodes.find((n: { id: string }) => n.id === 'convert:pwm');
  assert.equal(node.outputs, { digest: `sha256:${createHash('sha256').update('output of convert:pwm').digest('hex')}` });
});

test('--changed-since: exactly the nodes a file or a declaration change affects', () => {
  const dir = gitRepo(SMALL_ZOO);
  assert.equal(planIds(dir, '--changed-since', 'HEAD'), []);
  writeFiles(dir, { 'zoo/pwm/test/expect/scores.tsv': 's1\t0.7\n' });
  assert.equal(planIds(dir, '--changed-since', 'HEAD'), [
    'build:base',
    'build:pwm',
    'convert:pwm',
    'publish:pwm',
    'test:pwm/CTCF@oci',
    'test:pwm/CTCF@sif',
    'test:pwm/GATA1@oci',
    'test:pwm/GATA1@sif',
  ]);
  // Only the tests and publish are affected; the builds come along as dependencies.
  const matrix = JSON.parse(graph(dir, 'plan', '--format', 'matrix', '--changed-since', 'HEAD').stdout);
  assert.equal(matrix.include.map((e: { image: string; targets: string }) => [e.image, e.targets.split(' ').length]), [['base', 1], ['pwm', 7]]);

  const dir2 = gitRepo(SMALL_ZOO);
  writeFiles(dir2, { 'models.yaml': SMALL_ZOO['models.yaml'].replace('models: [CTCF, GATA1]', 'models: [CTCF, GATA1, REST]') });
  // A new model: its tests and the image's publish (which waits for every test of the image).
  assert.is(graph(dir2, 'query', '--changed-since', 'HEAD').stdout, 'test:pwm/REST@oci\ntest:pwm/REST@sif\npublish:pwm\n');
  const q = JSON.parse(graph(dir2, 'plan', '--format', 'json', '--changed-since', 'HEAD').stdout) as { nodes: Array<{ id: string }> };
  assert.not.ok(q.nodes.some((n) => n.id === 'publish:base'));

  const bad = graph(dir, 'plan', '--changed-since', 'no-such-ref');
  assert.is(bad.code, 2);
  assert.match(bad.stderr, "--changed-since: unknown git revision 'no-such-ref'");
});

test('clean removes .graph and only it', () => {
  const dir = workspace(SMALL_ZOO);
  graph(dir, 'build');
  assert.ok(existsSync(path.join(dir, '.graph')));
  const r = graph(dir, 'clean');
  assert.is(r.code, 0);
  assert.not.ok(existsSync(path.join(dir, '.graph')));
  assert.ok(existsSync(path.join(dir, 'images.yaml')));
  assert.is(graph(dir, 'clean').stdout, 'nothing to clean\n');
});

test('build: first removes the temp files that graph processes now gone left (kill -9)', async () => {
  const dir = workspace(SMALL_ZOO);
  await runEngine(dir, new FakeRunner());
  const gone = spawnSync('true').pid as number;
  const temps = [`.graph/tmp/${gone}-0123456789ab/rootfs/f`, `.graph/cas/sha256/.tmp-layer-${gone}-c144ed7f`, `dist/sif/.tmp-pwm.sif-${gone}-9abcdef0`];
  writeFiles(dir, Object.fromEntries(temps.map((t) => [t, 'x'])));
  const r = graph(dir, 'build');
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stderr, /^removed 3 temp files left by graph processes that are gone\n0 to run, 9 cached/);
  for (const t of temps) assert.not.ok(existsSync(path.join(dir, t)), t);
  assert.not.ok(existsSync(path.join(dir, `.graph/tmp/${gone}-0123456789ab`)));
  assert.equal(readdirSync(path.join(dir, '.graph/tmp')), [], "this build's own record went at its exit");
});

/**
 * A build whose one node packs a 48 MB layer (seconds of gzip), interrupted by `signals` (sent
 * `gapMs` apart) once the node has run for 300 ms.
 */
async function interruptedBuild(signals: NodeJS.Signals[], gapMs: number): Promise<{ code: number | null; stderr: string; dir: string }> {
  const dir = workspace({ 'images.yaml': 'version: 1\nimages:\n  big:\n    layers: [{copy: data, to: /data}]\n' });
  mkdirSync(path.join(dir, 'data'));
  for (let i = 0; i < 48; i++) writeFileSync(path.join(dir, 'data', `f${i}`), randomBytes(1 << 20));
  const child = spawn(process.execPath, [CLI, 'build'], { cwd: dir, env: { ...process.env, CI: 'true' }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  await new Promise<void>((resolve) =>
    child.stderr.on('data', (c: Buffer) => {
      stderr += c.toString();
      if (stderr.includes('start   build:big')) resolve();
    }),
  );
  await new Promise((r) => setTimeout(r, 300));
  for (const [i, signal] of signals.entries()) {
    if (i) await new Promise((r) => setTimeout(r, gapMs));
    child.kill(signal);
  }
  return { code: await exited, stderr, dir };
}

/** Temp files anywhere in `.graph/`. */
const tempsIn = (dir: string) => readdirSync(path.join(dir, '.graph'), { recursive: true }).map(String).filter((p) => /(^|\/)\.tmp-|^tmp\/./.test(p));

for (const [what, signals, gapMs] of [
  ['SIGINT', ['SIGINT'], 0],
  ['SIGTERM', ['SIGTERM'], 0],
  // One Ctrl-C under npx: the terminal's SIGINT and npm's forwarded copy, a moment apart.
  ['one Ctrl-C delivered twice (npx)', ['SIGINT', 'SIGINT'], 20],
] as const) {
  test(`build: ${what} while a layer is packed ends with exit 130, the interrupted summary and no temp file`, async () => {
    const r = await interruptedBuild([...signals], gapMs);
    assert.is(r.code, 130, r.stderr);
    assert.match(r.stderr, /\ninterrupt: stopping running nodes \(again to kill them at once\)\n/);
    assert.match(r.stderr, /\n\[1\/2\] interrupted build:big \([^)]+\)\n\[2\/2\] skipped publish:big: interrupted\ninterrupted: 0 ran, 0 cached, 0 failed, 1 interrupted, 1 skipped in [0-9.]+m?s\n$/);
    assert.not.match(r.stderr, /Error|\n\s+at /);
    assert.equal(tempsIn(r.dir), []);
  });
}

test('build: a second interrupt a second later, whether the nodes have stopped by then or not, still ends with exit 130', async () => {
  const r = await interruptedBuild(['SIGINT', 'SIGINT'], 1100);
  assert.is(r.code, 130, r.stderr);
  assert.match(r.stderr, /\ninterrupt: stopping running nodes \(again to kill them at once\)\n/);
});

test.run();
