/**
 * The dockerfile: recipe through the build rule with a real builder (buildah, vfs storage): the
 * base is an image declared here (Debian's busybox-static plus a /bin/sh link), passed pinned.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { graph, workspace } from './helpers.js';

const test = suite('build: dockerfile');

function zoo(dockerfile: string): string {
  const dir = workspace({
    'app/Dockerfile': dockerfile,
    'app/model.txt': 'model weights\n',
    'app/.dockerignore': 'junk/\n',
    'app/junk/big.tmp': 'ignored\n',
    'images.yaml': `version: 1
settings:
  builder: buildah
images:
  bb:
    debian: {packages: [busybox-static]}
  shell:
    from: bb
    layers: [{copy: sh, to: /bin/sh}]
  app:
    from: shell
    dockerfile: app/Dockerfile
    args: {GREETING: hello-from-args}
    env: {MODEL: /model.txt}
`,
  });
  symlinkSync('busybox', path.join(dir, 'sh'));
  return dir;
}

const inspect = (layout: string, config = false) =>
  JSON.parse(execFileSync('skopeo', ['inspect', ...(config ? ['--config'] : []), `oci:${layout}:latest`], { encoding: 'utf8' }));

test('a Dockerfile FROM a declared image: RUN, COPY, build args; the base pinned by its layers', () => {
  const dir = zoo('FROM shell\nARG GREETING\nRUN echo "$GREETING" > /greeting\nCOPY . /app/\n');
  const r = graph(dir, 'build', '--only', 'build', '--report', 'r.json');
  assert.is(r.code, 0, r.stderr);
  const log = readFileSync(path.join(dir, '.graph/logs/build:app.log'), 'utf8');
  assert.match(log, /builder: buildah \d/);
  const app = inspect(path.join(dir, '.graph/out/oci/app'), true);
  const shell = inspect(path.join(dir, '.graph/out/oci/shell'), true);
  assert.equal(app.rootfs.diff_ids.slice(0, 2), shell.rootfs.diff_ids, 'built on exactly the declared base');
  assert.ok(app.config.Env.includes('MODEL=/model.txt'));
  const bundle = path.join(mkdtempSync(path.join(tmpdir(), 'graph-df-')), 'b');
  execFileSync('umoci', ['unpack', '--rootless', '--image', `${path.join(dir, '.graph/out/oci/app')}:latest`, bundle], { stdio: 'pipe' });
  assert.is(readFileSync(path.join(bundle, 'rootfs/greeting'), 'utf8'), 'hello-from-args\n');
  assert.is(readFileSync(path.join(bundle, 'rootfs/app/model.txt'), 'utf8'), 'model weights\n');
  assert.throws(() => readFileSync(path.join(bundle, 'rootfs/app/junk/big.tmp')), '.dockerignore applied');

  // The key covers the context with .dockerignore applied, and the args.
  assert.match(graph(dir, 'plan', 'build:app').stdout, '0 nodes to run');
});

test('a failing RUN step fails the node with the builder\'s last lines and the log path', () => {
  const dir = zoo('FROM shell\nRUN echo about-to-fail && exit 3\n');
  const r = graph(dir, 'build', '--only', 'build');
  assert.is(r.code, 1);
  assert.match(r.stderr, 'failed build:app:');
  assert.match(r.stderr, 'about-to-fail');
  assert.match(r.stderr, 'log: .graph/logs/build:app.log');
  assert.match(r.stderr, 'FAILED: 2 ran, 0 cached, 1 failed, 0 skipped');
});

test.run();
