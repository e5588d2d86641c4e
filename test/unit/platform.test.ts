/**
 * Platforms (rules/build/platform.ts): how the host runs a foreign platform's binaries, from fake
 * binfmt_misc trees; and a multi-platform zoo through the real rules' expansion with fake
 * execution: its node names, the plan's notes, and the skip path on a host without emulation.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { emulationFor, hostPlatform, platformSuffix } from '../../rules/build/platform.js';
import { convertId } from '../../rules/convert.js';
import { composeImage, composeIndex, ImageError, loadImageIndex } from '../../rules/oci/image.js';
import { ContentStore } from '../../engine/cache/store.js';
import { testId } from '../../rules/test.js';
import { ARCH_ZOO, FakeRunner, graph, runEngine, statuses, workspace } from '../helpers.js';

const test = suite('platform');

const QEMU_AARCH64 = 'enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: PF\noffset 0\nmagic 7f454c460201010000000000000000000200b700\n';

function binfmt(entries: Record<string, string>): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'graph-binfmt-'));
  for (const [name, text] of Object.entries(entries)) writeFileSync(path.join(dir, name), text);
  return dir;
}

test('the host platform runs natively; a foreign one through an enabled qemu entry with the F flag, else not, saying why', () => {
  assert.is(hostPlatform(), 'linux/amd64'); // these machines; the rest of the suite assumes it
  assert.equal(emulationFor('linux/amd64', binfmt({})), { kind: 'native' });
  assert.equal(emulationFor('linux/arm64', binfmt({ 'qemu-aarch64': QEMU_AARCH64 })), { kind: 'qemu', entry: 'qemu-aarch64' });
  assert.equal(emulationFor('linux/arm64', binfmt({})), { kind: 'none', reason: 'no QEMU user emulation for linux/arm64 on this host' });
  assert.equal(emulationFor('linux/arm64', binfmt({ 'qemu-aarch64': QEMU_AARCH64.replace('enabled', 'disabled') })), {
    kind: 'none',
    reason: 'no QEMU user emulation for linux/arm64 on this host (binfmt_misc entry qemu-aarch64 is disabled)',
  });
  assert.equal(emulationFor('linux/arm64', binfmt({ 'qemu-aarch64': QEMU_AARCH64.replace('flags: PF', 'flags: P') })), {
    kind: 'none',
    reason: 'no QEMU user emulation for linux/arm64 on this host (binfmt_misc entry qemu-aarch64 lacks the F flag, so it cannot work inside the sandbox)',
  });
});

test('node names: the host platform keeps the plain name, another adds @OS/ARCH', () => {
  assert.is(platformSuffix(undefined), '');
  assert.is(platformSuffix('linux/amd64'), '');
  assert.is(platformSuffix('linux/arm64'), '@linux/arm64');
  assert.is(convertId('app', 'linux/arm64'), 'convert:app@linux/arm64');
  assert.is(convertId('app', 'linux/amd64'), 'convert:app');
  assert.is(testId('g', 'm', 'sif', 'linux/arm64'), 'test:g/m@sif@linux/arm64');
  assert.is(testId('g', 'm', 'oci'), 'test:g/m@oci');
});

async function runWith(binfmtDir: string) {
  const before = process.env.GRAPH_BINFMT_MISC;
  process.env.GRAPH_BINFMT_MISC = binfmtDir;
  try {
    return await runEngine(workspace(ARCH_ZOO), new FakeRunner());
  } finally {
    if (before === undefined) delete process.env.GRAPH_BINFMT_MISC;
    else process.env.GRAPH_BINFMT_MISC = before;
  }
}

test('with QEMU: one SIF and one test per platform, the foreign tests noted in the plan, all run', async () => {
  const run = await runWith(binfmt({ 'qemu-aarch64': QEMU_AARCH64 }));
  assert.equal(statuses(run), {
    'build:tiny': 'ran',
    'publish:tiny': 'ran',
    'build:app': 'ran',
    'convert:app': 'ran',
    'convert:app@linux/arm64': 'ran',
    'test:arch/uname@oci': 'ran',
    'test:arch/uname@oci@linux/arm64': 'ran',
    'test:arch/uname@sif': 'ran',
    'test:arch/uname@sif@linux/arm64': 'ran',
    'publish:app': 'ran',
  });
  const ids = run.plan.nodes.map((p) => p.node.id).sort();
  assert.equal(ids, ['build:app', 'build:tiny', 'convert:app', 'convert:app@linux/arm64', 'publish:app', 'publish:tiny', 'test:arch/uname@oci', 'test:arch/uname@oci@linux/arm64', 'test:arch/uname@sif', 'test:arch/uname@sif@linux/arm64']);
  const reasons = (id: string) => run.plan.byId.get(id as never)?.reasons;
  assert.equal(reasons('test:arch/uname@oci@linux/arm64'), ['no previous record', 'runs under QEMU user emulation (binfmt_misc qemu-aarch64)']);
  assert.equal(reasons('test:arch/uname@oci'), ['no previous record']);
  // The platform is in every per-platform node's key; {arch} picks each platform's expect directory.
  const decl = (id: string) => run.plan.byId.get(id as never)?.node.decl as Record<string, unknown>;
  assert.equal(decl('build:tiny').platforms, ['linux/amd64', 'linux/arm64']);
  assert.equal(decl('build:app').platforms, ['linux/amd64', 'linux/arm64']);
  assert.equal(decl('convert:app'), { format: 'sif', platform: 'linux/amd64' });
  assert.equal(decl('convert:app@linux/arm64'), { format: 'sif', platform: 'linux/arm64' });
  assert.is(decl('test:arch/uname@sif@linux/arm64').platform, 'linux/arm64');
  assert.is(decl('test:arch/uname@sif@linux/arm64').expect, 'expect/arm64');
  assert.is(decl('test:arch/uname@oci').expect, 'expect/amd64');
  assert.equal(run.summary.counts, { ran: 10, cached: 0, failed: 0, interrupted: 0, skipped: 0 });
});

test('without QEMU: the foreign tests end skipped with the reason (the plan says so), and so does the publish that needs them; nothing fails', async () => {
  const run = await runWith(binfmt({}));
  const reason = 'no QEMU user emulation for linux/arm64 on this host';
  assert.equal(run.plan.byId.get('test:arch/uname@oci@linux/arm64' as never)?.reasons, [`will be skipped: ${reason}`]);
  assert.equal(run.plan.byId.get('test:arch/uname@oci@linux/arm64' as never)?.unavailable, { reason, required: false });
  const byId = new Map(run.summary.results.map((r) => [r.id, r]));
  for (const id of ['test:arch/uname@oci@linux/arm64', 'test:arch/uname@sif@linux/arm64']) {
    assert.is(byId.get(id as never)?.status, 'skipped', id);
    assert.equal(byId.get(id as never)?.reasons, [reason]);
    assert.equal(byId.get(id as never)?.failure, { type: 'unavailable', message: reason, required: false });
  }
  assert.is(byId.get('publish:app' as never)?.status, 'skipped');
  assert.equal(byId.get('publish:app' as never)?.reasons, [`dependency test:arch/uname@oci@linux/arm64 cannot run on this host: ${reason}`]);
  // The arm64 SIF is still made: converting needs no emulation.
  assert.is(byId.get('convert:app@linux/arm64' as never)?.status, 'ran');
  assert.equal(run.summary.counts, { ran: 7, cached: 0, failed: 0, interrupted: 0, skipped: 3 });
  assert.not.ok(run.runner.started.some((id) => id.includes('@linux/arm64') && id.startsWith('test:')));
});

test('bad platforms: an unknown platform, a registry base, a platform the base lacks; each at its place', () => {
  const dir = workspace({
    'a.txt': 'a\n',
    'images.yaml': `version: 1
images:
  base:
    debian: {packages: [busybox-static]}
    platforms: [linux/amd64]
  pulled:
    from: example.org/x:1
    layers: [{copy: a.txt, to: /a}]
    platforms: [linux/arm64]
  app:
    from: base
    layers: [{copy: a.txt, to: /a}]
    platforms: [linux/amd64, linux/arm64]
`,
  });
  const r = graph(dir, 'validate');
  assert.is(r.code, 2);
  assert.match(r.stderr, "images.yaml:7:11: error[schema]: image 'pulled': a multi-platform image cannot pull its base from a registry yet: build the base here (debian:) or use oci-layout:\n");
  assert.match(r.stderr, "images.yaml:13:30: error[schema]: image 'app' is built for linux/arm64, but its base 'base' has only linux/amd64\n");
  const bad = workspace({ 'images.yaml': 'version: 1\nimages:\n  base:\n    debian: {packages: [busybox-static]}\n    platforms: [linux/s390x]\n' });
  const r2 = graph(bad, 'validate');
  assert.is(r2.code, 2);
  assert.match(r2.stderr, 'images.yaml:5:17: error[schema]: images.base.platforms[0] must be one of: linux/amd64, linux/arm64\n');
});

test('an image index lists each platform with its config\'s os and architecture, and refuses an image under another platform', () => {
  const store = new ContentStore(mkdtempSync(path.join(tmpdir(), 'graph-cas-')));
  const changes = { env: {}, labels: {} };
  const amd = composeImage(store, undefined, [], changes, 0, { os: 'linux', architecture: 'amd64' });
  const arm = composeImage(store, undefined, [], changes, 0, { os: 'linux', architecture: 'arm64' });
  const stored = composeIndex(store, [
    { platform: 'linux/amd64', image: amd },
    { platform: 'linux/arm64', image: arm },
  ]);
  assert.equal(stored.index, {
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests: [
      { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: amd.manifestDescriptor.digest, size: amd.manifestDescriptor.size, platform: { architecture: 'amd64', os: 'linux' } },
      { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: arm.manifestDescriptor.digest, size: arm.manifestDescriptor.size, platform: { architecture: 'arm64', os: 'linux' } },
    ],
  });
  const loaded = loadImageIndex(store, stored.indexDescriptor.digest);
  assert.equal(loaded.images.map((i) => [i.platform, i.image.config.architecture]), [['linux/amd64', 'amd64'], ['linux/arm64', 'arm64']]);
  assert.throws(() => composeIndex(store, [{ platform: 'linux/arm64', image: amd }]), (e: Error) => e instanceof ImageError && e.message === `image ${amd.manifestDescriptor.digest} is linux/amd64, not linux/arm64`);
});

test.run();
