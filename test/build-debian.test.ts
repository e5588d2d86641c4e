/**
 * The debian: recipe end to end against the Debian mirror the host's apt sources name: lock,
 * build, judge with skopeo and umoci, rebuild byte-identical from the lock; the packages'
 * update-alternatives links, judged by umoci and by the dynamic loader inside the test sandbox.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, lstatSync, mkdtempSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { graph, workspace } from './helpers.js';

const test = suite('build: debian');

const ZOO = {
  'hello.sh': '#!/bin/sh\necho hello from the zoo\n',
  'images.yaml': `version: 1
images:
  bb:
    debian: {suite: bookworm, packages: [busybox-static]}
    env: {PATH: /usr/local/bin:/usr/bin:/bin}
  app:
    from: bb
    layers: [{copy: hello.sh, to: /usr/local/bin/hello, mode: 0o755}]
    cmd: [hello]
`,
};

function manifestOf(dir: string, report: string, id: string): string {
  const r = JSON.parse(readFileSync(path.join(dir, report), 'utf8'));
  return r.nodes.find((n: { id: string }) => n.id === id).outputs.manifest;
}

test('lock, build, inspect, unpack, rebuild identical', () => {
  const dir = workspace(ZOO);
  const lock = graph(dir, 'lock');
  assert.is(lock.code, 0, lock.stderr);
  assert.match(lock.stdout, /^locked bb: \d+ packages\n$/);
  const locked = JSON.parse(readFileSync(path.join(dir, 'images.lock'), 'utf8'));
  assert.equal(locked.images.bb.requested, ['busybox-static']);
  assert.ok(locked.images.bb.packages.some((p: { name: string }) => p.name === 'busybox-static'));

  const built = graph(dir, 'build', '--only', 'build', '--report', 'r1.json');
  assert.is(built.code, 0, built.stderr);
  assert.match(readFileSync(path.join(dir, '.graph/logs/build:bb.log'), 'utf8'), 'packages pinned by images.lock');
  const layout = path.join(dir, '.graph/out/oci/app');
  const inspect = JSON.parse(execFileSync('skopeo', ['inspect', `oci:${layout}:latest`], { encoding: 'utf8' }));
  assert.is(inspect.Digest, manifestOf(dir, 'r1.json', 'build:app'));
  assert.is(inspect.Layers.length, 2);

  const bundle = path.join(mkdtempSync(path.join(tmpdir(), 'graph-deb-')), 'b');
  execFileSync('umoci', ['unpack', '--rootless', '--image', `${layout}:latest`, bundle], { stdio: 'pipe' });
  const rootfs = path.join(bundle, 'rootfs');
  assert.is(lstatSync(path.join(rootfs, 'bin/busybox')).mode & 0o777, 0o755);
  assert.match(readFileSync(path.join(rootfs, 'var/lib/dpkg/status'), 'utf8'), /^Package: busybox-static\nStatus: install ok installed\n/m);
  assert.match(readFileSync(path.join(rootfs, 'etc/passwd'), 'utf8'), /^root:x:0:0:/);
  assert.ok(existsSync(path.join(rootfs, 'usr/local/bin/hello')));
  // busybox runs the script: a real program from a Debian-package base.
  const out = execFileSync(path.join(rootfs, 'bin/busybox'), ['sh', path.join(rootfs, 'usr/local/bin/hello')], { encoding: 'utf8' });
  assert.is(out, 'hello from the zoo\n');

  graph(dir, 'clean');
  const again = graph(dir, 'build', '--only', 'build', '--report', 'r2.json');
  assert.is(again.code, 0, again.stderr);
  assert.is(manifestOf(dir, 'r2.json', 'build:bb'), manifestOf(dir, 'r1.json', 'build:bb'));
  assert.is(manifestOf(dir, 'r2.json', 'build:app'), manifestOf(dir, 'r1.json', 'build:app'));
});

test('changing the request makes the lock stale for that image only; the plan says why', () => {
  const dir = workspace(ZOO);
  assert.is(graph(dir, 'lock').code, 0);
  assert.is(graph(dir, 'build', 'build:bb').code, 0);
  const edited = ZOO['images.yaml'].replace('packages: [busybox-static]', 'packages: [busybox-static, zlib1g]');
  writeFileSync(path.join(dir, 'images.yaml'), edited);
  const plan = graph(dir, 'plan', 'build:bb');
  assert.match(plan.stdout, 'declaration recipe.packages[1] added ("zlib1g")');
  const r = graph(dir, 'build', 'build:bb');
  assert.is(r.code, 0, r.stderr);
  assert.match(readFileSync(path.join(dir, '.graph/logs/build:bb.log'), 'utf8'), "images.lock is stale for this image: run 'graph lock' to pin them");
  assert.is(graph(dir, 'lock', 'bb').code, 0);
  assert.match(graph(dir, 'plan', 'build:bb').stdout, 'declaration lock.requested[1] added ("zlib1g")');
});

test('an unknown package fails the node naming it; lock exits 1', () => {
  const dir = workspace({ 'images.yaml': 'version: 1\nimages:\n  bb:\n    debian: {packages: [busybox-statik]}\n' });
  const lock = graph(dir, 'lock');
  assert.is(lock.code, 1);
  assert.match(lock.stderr, "busybox-statik");
  assert.match(lock.stderr, "did you mean 'busybox-static'?");
  const build = graph(dir, 'build', '--only', 'build');
  assert.is(build.code, 1);
  assert.match(build.stderr, 'failed build:bb:');
  assert.match(build.stderr, 'busybox-statik');
  assert.not.ok(existsSync(path.join(dir, '.graph/out/oci/bb')));
});

test("the packages' alternatives: liblapack3's libblas.so.3 is found by the dynamic loader through the link libblas3's postinst registers", () => {
  const dir = workspace({
    'images.yaml': 'version: 1\nimages:\n  blas:\n    debian: {suite: bookworm, packages: [busybox-static, liblapack3]}\n    env: {PATH: /usr/bin:/bin}\n',
    'models.yaml': `version: 1
groups:
  loader:
    image: blas
    models: [lapack]
    test:
      command: [/bin/busybox, sh, -c, "/lib64/ld-linux-x86-64.so.2 --list /usr/lib/x86_64-linux-gnu/lapack/liblapack.so.3 | /bin/busybox grep -o 'libblas.so.3 => [^ ]*' > /output/loader.txt && /bin/busybox readlink /usr/lib/x86_64-linux-gnu/libblas.so.3 >> /output/loader.txt && /bin/busybox readlink /etc/alternatives/libblas.so.3-x86_64-linux-gnu >> /output/loader.txt"]
      inputs: in
      expect: expect
      runtimes: [oci]
`,
    'in/.keep': '',
    'expect/loader.txt': 'libblas.so.3 => /usr/lib/x86_64-linux-gnu/libblas.so.3\n/etc/alternatives/libblas.so.3-x86_64-linux-gnu\n/usr/lib/x86_64-linux-gnu/blas/libblas.so.3\n',
  });
  assert.is(graph(dir, 'lock').code, 0);
  const r = graph(dir, 'build', '--report', 'report.json');
  assert.is(r.code, 0, r.stderr);
  const log = readFileSync(path.join(dir, '.graph/logs/build:blas.log'), 'utf8');
  assert.match(log, '\nalternatives: libblas.so.3-x86_64-linux-gnu -> /usr/lib/x86_64-linux-gnu/blas/libblas.so.3 (libblas3): etc/alternatives/libblas.so.3-x86_64-linux-gnu, usr/lib/x86_64-linux-gnu/libblas.so.3\n');
  assert.match(log, '\nalternatives: liblapack.so.3-x86_64-linux-gnu -> /usr/lib/x86_64-linux-gnu/lapack/liblapack.so.3 (liblapack3): etc/alternatives/liblapack.so.3-x86_64-linux-gnu, usr/lib/x86_64-linux-gnu/liblapack.so.3\n');
  // umoci judges the layer: the links are in the image.
  const bundle = path.join(mkdtempSync(path.join(tmpdir(), 'graph-deb-')), 'b');
  execFileSync('umoci', ['unpack', '--rootless', '--image', `${path.join(dir, '.graph/out/oci/blas')}:latest`, bundle], { stdio: 'pipe' });
  const rootfs = path.join(bundle, 'rootfs');
  assert.is(readlinkSync(path.join(rootfs, 'usr/lib/x86_64-linux-gnu/liblapack.so.3')), '/etc/alternatives/liblapack.so.3-x86_64-linux-gnu');
  assert.is(readlinkSync(path.join(rootfs, 'etc/alternatives/liblapack.so.3-x86_64-linux-gnu')), '/usr/lib/x86_64-linux-gnu/lapack/liblapack.so.3');
});

test.run();
