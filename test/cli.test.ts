/** The `graph` binary end to end in temp workspaces (and a temp git repository). */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { CLI, FakeRunner, graph, runEngine, SMALL_ZOO, workspace, writeFiles } from './helpers.js';

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
  for (const c of ['plan', 'build', 'validate', 'query', 'clean']) {
    assert.match(top.stdout, new RegExp(`\\n  ${c} +\\S`));
    const r = graph('.', c, '--help');
    assert.is(r.code, 0, c);
    assert.ok(r.stdout.startsWith(`graph ${c}`), `${c} --help starts with its usage`);
  }
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
  assert.ok(dot.startsWith('digraph graph {'));
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
  assert.equal(Object.keys(report.nodes[0]), ['id', 'kind', 'status', 'duration_ms', 'reasons', 'outputs', 'log']);
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

test('build: everything cached is exit 0, a one-line summary, and the outputs in the report', async () => {
  const dir = workspace(SMALL_ZOO);
  await runEngine(dir, new FakeRunner());
  const r = graph(dir, 'build', '--report', 'report.json');
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stderr, /^0 to run, 9 cached, 9 nodes; jobs \d+\nok: 0 ran, 9 cached, 0 failed, 0 skipped in \d+ms\n$/);
  const report = JSON.parse(readFileSync(path.join(dir, 'report.json'), 'utf8'));
  assert.equal(report.summary, { ran: 0, cached: 9, failed: 0, skipped: 0, duration_ms: report.summary.duration_ms, interrupted: false });
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
    assert.match(r.stderr, /\n\[1\/2\] FAILED  build:big \([^)]+\): interrupted\n/);
    assert.match(r.stderr, /\ninterrupted: 0 ran, 0 cached, 1 failed, 1 skipped in [0-9.]+m?s\n  failed build:big: interrupted\n         log: \.graph\/logs\/build:big\.log\n$/);
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
