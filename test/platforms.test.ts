/**
 * Multi-platform images end to end, with the real tools: a debian: image (busybox-static from the
 * mirror's binary-amd64 and binary-arm64 indexes) and a layers: image on it for linux/amd64 and
 * linux/arm64; skopeo and umoci judge the OCI image index, readelf the arm64 binaries, sifcheck
 * each platform's SIF; the tests run in both runtimes, arm64 under QEMU user emulation (`uname -m`
 * compared with expect), and end skipped on a host without it.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { ARCH_ZOO, graph, graphWith, SIFCHECK, startRegistry, workspace } from './helpers.js';

const test = suite('platforms');

const QEMU = existsSync('/proc/sys/fs/binfmt_misc/qemu-aarch64');

function report(dir: string, file: string): Map<string, { status: string; reasons: string[]; outputs?: Record<string, unknown> }> {
  const r = JSON.parse(readFileSync(path.join(dir, file), 'utf8'));
  return new Map(r.nodes.map((n: { id: string }) => [n.id, n]));
}

test('lock per architecture, build an image index, judge it with skopeo, umoci, readelf and sifcheck, test both platforms in both runtimes', () => {
  assert.ok(QEMU, 'this test needs qemu-user-static registered (bash .ci/run installs it)');
  const dir = workspace(ARCH_ZOO);
  const lock = graph(dir, 'lock');
  assert.is(lock.code, 0, lock.stderr);
  assert.is(lock.stdout, 'locked tiny@linux/amd64: 1 packages\nlocked tiny@linux/arm64: 1 packages\n');
  const locked = JSON.parse(readFileSync(path.join(dir, 'images.lock'), 'utf8'));
  assert.equal(Object.keys(locked.images), ['tiny@linux/amd64', 'tiny@linux/arm64']);
  assert.equal(locked.images['tiny@linux/arm64'].packages.map((p: { architecture: string }) => p.architecture), ['arm64']);
  assert.match(locked.images['tiny@linux/arm64'].packages[0].filename, /_arm64\.deb$/);

  const plan = graph(dir, 'plan');
  assert.is(plan.code, 0, plan.stderr);
  assert.match(plan.stdout, '  run    test:arch/uname@oci@linux/arm64\n           no previous record\n           runs under QEMU user emulation (binfmt_misc qemu-aarch64)\n');

  const built = graph(dir, 'build', '--report', 'r.json');
  assert.is(built.code, 0, built.stdout + built.stderr);
  const nodes = report(dir, 'r.json');
  assert.equal([...nodes.keys()].sort(), ['build:app', 'build:tiny', 'convert:app', 'convert:app@linux/arm64', 'publish:app', 'publish:tiny', 'test:arch/uname@oci', 'test:arch/uname@oci@linux/arm64', 'test:arch/uname@sif', 'test:arch/uname@sif@linux/arm64']);
  for (const [id, n] of nodes) assert.is(n.status, 'ran', id);

  // The layout: the index tagged latest, each platform's manifest latest-linux-ARCH.
  const layout = path.join(dir, '.graph/out/oci/app');
  const outputs = nodes.get('build:app')?.outputs as { index: string; platforms: string[]; manifests: string[] };
  assert.equal(outputs.platforms, ['linux/amd64', 'linux/arm64']);
  const index = JSON.parse(execFileSync('skopeo', ['inspect', '--raw', `oci:${layout}:latest`], { encoding: 'utf8' }));
  assert.is(index.mediaType, 'application/vnd.oci.image.index.v1+json');
  assert.equal(index.manifests.map((m: { platform: unknown; digest: string }) => [m.platform, m.digest]), [
    [{ architecture: 'amd64', os: 'linux' }, outputs.manifests[0]],
    [{ architecture: 'arm64', os: 'linux' }, outputs.manifests[1]],
  ]);
  const tmp = mkdtempSync(path.join(tmpdir(), 'graph-platforms-'));
  try {
    for (const arch of ['amd64', 'arm64']) {
      // skopeo picks the platform out of the index; its config says the architecture.
      const copied = path.join(tmp, `copy-${arch}`);
      execFileSync('skopeo', ['copy', '--override-arch', arch, `oci:${layout}:latest`, `dir:${copied}`], { stdio: 'pipe' });
      const manifest = JSON.parse(readFileSync(path.join(copied, 'manifest.json'), 'utf8'));
      const config = JSON.parse(readFileSync(path.join(copied, manifest.config.digest.slice('sha256:'.length)), 'utf8'));
      assert.is(config.architecture, arch);
      assert.is(config.os, 'linux');
      // umoci unpacks each platform's manifest; readelf says what the binaries are built for.
      const bundle = path.join(tmp, `bundle-${arch}`);
      execFileSync('umoci', ['unpack', '--rootless', '--image', `${layout}:latest-linux-${arch}`, bundle], { stdio: 'pipe' });
      const machine = /Machine:\s*(.*)/.exec(execFileSync('readelf', ['-h', path.join(bundle, 'rootfs/bin/busybox')], { encoding: 'utf8' }))?.[1].trim();
      assert.is(machine, arch === 'arm64' ? 'AArch64' : 'Advanced Micro Devices X86-64');
      assert.ok(existsSync(path.join(bundle, 'rootfs/app/run.sh')));
      assert.is(JSON.parse(execFileSync('skopeo', ['inspect', '--raw', `oci:${layout}:latest-linux-${arch}`], { encoding: 'utf8' })).config.digest, manifest.config.digest);
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }

  // One SIF per platform, each with its architecture in the header.
  for (const [sif, arch] of [['app.sif', 'amd64'], ['app.linux-arm64.sif', 'arm64']]) {
    const file = path.join(dir, '.graph/out/sif', sif);
    const check = execFileSync('python3', [SIFCHECK, '--arch', arch, '--expect', '/app/run.sh', '--expect', '/bin/busybox', file], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    assert.match(check, /"errors": \[\]/);
  }
  assert.is(nodes.get('convert:app@linux/arm64')?.outputs?.sif, '.graph/out/sif/app.linux-arm64.sif');

  // The tests ran each platform's binaries: uname -m inside the sandbox, compared with expect.
  for (const [id, want] of [['test:arch/uname@oci', 'x86_64'], ['test:arch/uname@sif', 'x86_64'], ['test:arch/uname@oci@linux/arm64', 'aarch64'], ['test:arch/uname@sif@linux/arm64', 'aarch64']]) {
    const out = path.join(dir, nodes.get(id)?.outputs?.output as string, 'arch.txt');
    assert.is(readFileSync(out, 'utf8'), `${want}\n`, id);
  }

  // Again: every node cached.
  const again = graph(dir, 'plan');
  assert.match(again.stdout, /^0 nodes to run, 10 cached/);

});

test('on a host without QEMU user emulation the arm64 tests end skipped with the reason, as the plan said, and the build succeeds', () => {
  const dir = workspace(ARCH_ZOO);
  const noQemu = { GRAPH_BINFMT_MISC: mkdtempSync(path.join(tmpdir(), 'graph-binfmt-')) }; // an empty binfmt_misc tree
  const reason = 'no QEMU user emulation for linux/arm64 on this host';
  const plan = graphWith(noQemu, dir, 'plan');
  assert.match(plan.stdout, `  skip   test:arch/uname@sif@linux/arm64\n           will be skipped: ${reason}\n`);
  const built = graphWith(noQemu, dir, 'build', '--report', 'r.json');
  assert.is(built.code, 0, built.stdout + built.stderr);
  const nodes = report(dir, 'r.json');
  const status = Object.fromEntries([...nodes].map(([id, n]) => [id, n.status]));
  assert.equal(status, {
    'build:tiny': 'ran',
    'publish:tiny': 'ran',
    'build:app': 'ran',
    'convert:app': 'ran',
    'convert:app@linux/arm64': 'ran',
    'test:arch/uname@oci': 'ran',
    'test:arch/uname@sif': 'ran',
    'test:arch/uname@oci@linux/arm64': 'skipped',
    'test:arch/uname@sif@linux/arm64': 'skipped',
    'publish:app': 'skipped',
  });
  assert.equal(nodes.get('test:arch/uname@oci@linux/arm64')?.reasons, [reason]);
  assert.equal(nodes.get('publish:app')?.reasons, [`dependency test:arch/uname@oci@linux/arm64 cannot run on this host: ${reason}`]);
  // Nothing was recorded for the skipped tests: with QEMU back they run.
  if (QEMU) assert.match(graph(dir, 'plan', 'test:arch/*').stdout, /^2 nodes to run, 6 cached \(8 nodes selected\)\n/);
});

test('publish: dist/ gets the index and one SIF per platform; a registry gets the index (skopeo picks each platform) and the arm64 SIF at TAG-sif-linux-arm64', async () => {
  assert.ok(QEMU, 'this test needs qemu-user-static registered (bash .ci/run installs it)');
  const dir = workspace(ARCH_ZOO);
  assert.is(graph(dir, 'lock').code, 0);
  const built = graph(dir, 'build', '--report', 'r.json');
  assert.is(built.code, 0, built.stdout + built.stderr);
  const index = (report(dir, 'r.json').get('build:app')?.outputs as { index: string }).index;
  const raw = JSON.parse(execFileSync('skopeo', ['inspect', '--raw', `oci:${path.join(dir, 'dist/oci')}:app`], { encoding: 'utf8' }));
  assert.equal(raw.manifests.map((m: { platform: { architecture: string } }) => m.platform.architecture), ['amd64', 'arm64']);
  const lock = JSON.parse(readFileSync(path.join(dir, 'published.lock.json'), 'utf8')).images.app;
  assert.is(lock.manifest, index);
  assert.equal(lock.sif.references, ['dist/sif/app.sif']);
  assert.equal(lock.platform_sifs['linux/arm64'].references, ['dist/sif/app.linux-arm64.sif']);
  const arm = readFileSync(path.join(dir, 'dist/sif/app.linux-arm64.sif'));
  assert.is(createHash('sha256').update(arm).digest('hex'), lock.platform_sifs['linux/arm64'].sha256);
  assert.is(execFileSync('siftool', ['header', path.join(dir, 'dist/sif/app.linux-arm64.sif')], { encoding: 'utf8' }).match(/Primary Architecture:\s*(\S+)/)?.[1], 'arm64');

  // Signed: the signature and the attestations are about the index, and graph verify agrees.
  assert.is(graph(dir, 'key', 'generate', '--out', 'k').code, 0);
  const signed = graph(dir, 'build', '--sign-key', 'k', 'publish:app');
  assert.is(signed.code, 0, signed.stdout + signed.stderr);
  const verified = graph(dir, 'verify', 'app', '--key', 'k.pub');
  assert.is(verified.code, 0, verified.stdout + verified.stderr);
  assert.match(verified.stdout, `ok    dist/oci:app: manifest ${index}\n`);
  const signedLock = JSON.parse(readFileSync(path.join(dir, 'published.lock.json'), 'utf8')).images.app.platform_sifs['linux/arm64'];
  assert.match(verified.stdout, `ok    dist/sif/app.linux-arm64.sif: sha256 ${signedLock.sha256} as published.lock.json records\n`);
  assert.match(verified.stdout, `ok    dist/sif/app.linux-arm64.sif: system partition ${signedLock.partition} as published.lock.json records\n`);
  assert.match(verified.stdout, /ok {4}dist\/sif\/app\.linux-arm64\.sif: signed by sha256:[0-9a-f]{64} \(DSSE, object group 1\)\n/);

  const registry = await startRegistry();
  try {
    writeFileSync(path.join(dir, 'images.yaml'), readFileSync(path.join(dir, 'images.yaml'), 'utf8').replace('    convert: [sif]\n', `    convert: [sif]\n    publish: [${registry.host}/zoo/app:v1]\n`));
    const pushed = graph(dir, 'build', 'publish:app');
    assert.is(pushed.code, 0, pushed.stdout + pushed.stderr);
    const remote = JSON.parse(execFileSync('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${registry.host}/zoo/app:v1`], { encoding: 'utf8' }));
    assert.is(remote.mediaType, 'application/vnd.oci.image.index.v1+json');
    const tmp = mkdtempSync(path.join(tmpdir(), 'graph-platforms-'));
    try {
      execFileSync('skopeo', ['copy', '--src-tls-verify=false', '--override-arch', 'arm64', `docker://${registry.host}/zoo/app:v1`, `dir:${tmp}/arm64`], { stdio: 'pipe' });
      const manifest = JSON.parse(readFileSync(path.join(tmp, 'arm64/manifest.json'), 'utf8'));
      assert.is(JSON.parse(readFileSync(path.join(tmp, 'arm64', manifest.config.digest.slice(7)), 'utf8')).architecture, 'arm64');
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
    const sifManifest = JSON.parse(execFileSync('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${registry.host}/zoo/app:v1-sif-linux-arm64`], { encoding: 'utf8' }));
    assert.is(sifManifest.layers[0].digest, `sha256:${createHash('sha256').update(arm).digest('hex')}`);
    assert.is(sifManifest.layers[0].mediaType, 'application/vnd.sylabs.sif.layer.v1.sif');
    const pushedLock = JSON.parse(readFileSync(path.join(dir, 'published.lock.json'), 'utf8')).images.app;
    assert.is(pushedLock.manifest, index);
    assert.equal(pushedLock.platform_sifs['linux/arm64'].references, [`oras://${registry.host}/zoo/app:v1-sif-linux-arm64`]);
    // Registry-aware planning on a fresh runner: the tag names the index the lock records, so the
    // publish is already done.
    rmSync(path.join(dir, '.graph'), { recursive: true, force: true });
    assert.match(graph(dir, 'plan', 'image:app').stdout, `  cached publish:app\n           already in registry (${registry.host}/zoo/app:v1)\n`);
  } finally {
    await registry.stop();
  }
});

test('a dockerfile: image FROM a multi-platform base is built per platform with buildah --platform, its RUN steps under QEMU', () => {
  assert.ok(QEMU, 'this test needs qemu-user-static registered (bash .ci/run installs it)');
  const dir = workspace({
    ...ARCH_ZOO,
    'df/Dockerfile': 'FROM tiny\nRUN ["/bin/busybox", "sh", "-c", "/bin/busybox uname -m > /arch"]\n',
    'images.yaml': `${ARCH_ZOO['images.yaml']}  df:\n    from: tiny\n    dockerfile: df/Dockerfile\n`,
  });
  assert.is(graph(dir, 'lock').code, 0);
  const built = graph(dir, 'build', 'build:df', '--report', 'r.json');
  assert.is(built.code, 0, built.stdout + built.stderr);
  const outputs = report(dir, 'r.json').get('build:df')?.outputs as { platforms: string[]; manifests: string[] };
  assert.equal(outputs.platforms, ['linux/amd64', 'linux/arm64']);
  const layout = path.join(dir, '.graph/out/oci/df');
  const tmp = mkdtempSync(path.join(tmpdir(), 'graph-platforms-'));
  try {
    for (const [arch, machine] of [['amd64', 'x86_64'], ['arm64', 'aarch64']]) {
      const bundle = path.join(tmp, arch);
      execFileSync('umoci', ['unpack', '--rootless', '--image', `${layout}:latest-linux-${arch}`, bundle], { stdio: 'pipe' });
      assert.is(readFileSync(path.join(bundle, 'rootfs/arch'), 'utf8'), `${machine}\n`, arch);
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  // Without emulation its RUN steps could not run: the plan says the build will be skipped.
  const noQemu = { GRAPH_BINFMT_MISC: mkdtempSync(path.join(tmpdir(), 'graph-binfmt-')) };
  writeFileSync(path.join(dir, 'df/Dockerfile'), 'FROM tiny\nRUN ["/bin/busybox", "true"]\n');
  assert.match(graphWith(noQemu, dir, 'plan', 'build:df').stdout, "  skip   build:df\n           will be skipped: no QEMU user emulation for linux/arm64 on this host (the Dockerfile's RUN steps need it)\n");
});

test.run();
