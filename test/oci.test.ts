/**
 * OCI layers, images, layouts and unpacking, judged by independent tools: skopeo reads every
 * layout we write, umoci unpacks it.
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, existsSync, lstatSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { Readable } from 'node:stream';
import tar from 'tar-stream';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { ContentStore } from '../engine/cache/store.js';
import { composeImage, loadImage } from '../rules/oci/image.js';
import { BLOCK_SIZE } from '../rules/oci/gzip.js';
import { entriesForCopy, writeLayer, MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_LAYER_TAR } from '../rules/oci/layer.js';
import { importLayout, writeLayout } from '../rules/oci/layout.js';
import { unpackImage, unpackLayer, UnpackError } from '../rules/oci/unpack.js';
import { graph, uncaughtDuring, workspace } from './helpers.js';

const test = suite('oci');
const tmp = (prefix = 'graph-oci-') => mkdtempSync(path.join(tmpdir(), prefix));
const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

const TREE = { 'bin/tool': '#!/bin/sh\necho tool\n', 'share/model.bin': 'weights v1\n', 'share/deep/x.txt': 'x\n' };

test('a layer is deterministic: same content, any mtimes, modes (0600, 0700 directories) and bits but x, same digest', async () => {
  const a = workspace(TREE);
  const b = workspace(TREE);
  chmodSync(path.join(a, 'bin/tool'), 0o755);
  chmodSync(path.join(b, 'bin/tool'), 0o700);
  chmodSync(path.join(b, 'share/model.bin'), 0o600);
  chmodSync(path.join(b, 'share/deep'), 0o700); // as a checkout under umask 077 makes them
  utimesSync(path.join(b, 'share/model.bin'), new Date(2001, 1, 1), new Date(2001, 1, 1));
  const store = new ContentStore(tmp());
  const la = await writeLayer([...entriesForCopy(path.join(a, 'bin'), '/opt/bin'), ...entriesForCopy(path.join(a, 'share'), '/opt/share')], store);
  const lb = await writeLayer([...entriesForCopy(path.join(b, 'share'), '/opt/share'), ...entriesForCopy(path.join(b, 'bin'), '/opt/bin')], store);
  assert.equal(la, lb);
  const blob = readFileSync(store.pathOf(la.digest));
  assert.is(sha(blob), la.digest);
  assert.is(blob.length, la.size);
  assert.is(sha(gunzipSync(blob)), la.diffId);
  assert.is(la.mediaType, MEDIA_TYPE_LAYER_GZIP);
  // The entries, in order, with parents first and normalized headers.
  const names = (await tarHeaders(gunzipSync(blob))).map((h) => `${h.name} ${h.type} ${(h.mode ?? 0).toString(8)} ${h.uid}:${h.gid} ${h.mtime?.getTime()}`);
  assert.equal(names, [
    'opt/ directory 755 0:0 0',
    'opt/bin/ directory 755 0:0 0',
    'opt/bin/tool file 755 0:0 0',
    'opt/share/ directory 755 0:0 0',
    'opt/share/deep/ directory 755 0:0 0',
    'opt/share/deep/x.txt file 644 0:0 0',
    'opt/share/model.bin file 644 0:0 0',
  ]);
});

test('SOURCE_DATE_EPOCH sets every mtime (and so the digest)', async () => {
  const a = workspace(TREE);
  const store = new ContentStore(tmp());
  const zero = await writeLayer(entriesForCopy(a, '/x'), store);
  const later = await writeLayer(entriesForCopy(a, '/x'), store, { mtime: 1_700_000_000 });
  assert.is.not(zero.digest, later.digest);
  const mtimes = async (digest: string) => (await tarHeaders(gunzipSync(readFileSync(store.pathOf(digest))))).map((h) => `${h.name} ${h.mtime?.getTime()}`);
  const names = ['x/', 'x/bin/', 'x/bin/tool', 'x/share/', 'x/share/deep/', 'x/share/deep/x.txt', 'x/share/model.bin'];
  assert.equal(await mtimes(zero.digest), names.map((n) => `${n} 0`));
  assert.equal(await mtimes(later.digest), names.map((n) => `${n} 1700000000000`));
});

/** The headers of a tar archive, in order. */
async function tarHeaders(archive: Buffer): Promise<tar.Header[]> {
  const headers: tar.Header[] = [];
  const extract = tar.extract();
  extract.on('entry', (h, stream, next) => {
    headers.push(h);
    stream.resume();
    stream.on('end', next);
  });
  await new Promise((resolve, reject) => {
    extract.on('finish', () => resolve(undefined));
    extract.on('error', reject);
    extract.end(archive);
  });
  return headers;
}

test('an interrupt while a layer is packed rejects with its reason, leaves no temp blob and raises nothing uncaught', async () => {
  // 200 files of 200 kB: packing takes long enough to be aborted at each of these moments.
  const src = tmp();
  for (let i = 0; i < 200; i++) writeFileSync(path.join(src, `f${i}`), Buffer.alloc(200_000, i));
  const entries = entriesForCopy(src, '/data');
  const store = new ContentStore(tmp());
  // -1: aborted before the call (the write stream's file is not even open when the pipeline fails).
  for (const afterMs of [-1, 0, 1, 5, 20, 60]) {
    const interrupt = new AbortController();
    const reason = new Error('interrupted');
    if (afterMs < 0) interrupt.abort(reason);
    else setTimeout(() => interrupt.abort(reason), afterMs);
    let rejected: unknown;
    const uncaught = await uncaughtDuring(() => writeLayer(entries, store, { signal: interrupt.signal }).catch((e) => (rejected = e)));
    assert.equal(uncaught, [], `aborted after ${afterMs} ms`);
    assert.is(rejected, reason, `aborted after ${afterMs} ms`);
    assert.equal(readdirSync(path.join(store.dir, 'sha256')), [], `aborted after ${afterMs} ms`);
  }
});

/** A file of `length` bytes spanning compression blocks: text, then noise (a vocabulary, weights). */
function modelFile(length: number): Buffer {
  const text = Buffer.from(Array.from({ length: 20_000 }, (_, i) => `token_${i % 997}\t${i % 13}\n`).join(''));
  return Buffer.concat([text, randomBytes(Math.max(0, length - text.length))]).subarray(0, length);
}

test('a layer over several compression blocks (a cut inside a file): gzip -t passes, gzip -dc is the tar of its diff_id, the same bytes at any concurrency', async () => {
  const src = workspace({ 'a.txt': 'small\n' });
  const big = modelFile(3 * BLOCK_SIZE + 1000);
  writeFileSync(path.join(src, 'big.bin'), big);
  const entries = entriesForCopy(src, '/data');
  const store = new ContentStore(tmp());
  const one = await writeLayer(entries, store, { concurrency: 1 });
  const four = await writeLayer(entries, new ContentStore(tmp()), { concurrency: 4 });
  assert.equal(four, one);
  const blob = readFileSync(store.pathOf(one.digest));
  execFileSync('gzip', ['-t'], { input: blob });
  const tarBytes = execFileSync('gzip', ['-dc'], { input: blob, maxBuffer: 1 << 28 });
  assert.is(sha(tarBytes), one.diffId);
  assert.ok(tarBytes.length > 3 * BLOCK_SIZE);
  const out = tmp();
  execFileSync('tar', ['-x', '-C', out], { input: tarBytes });
  assert.ok(readFileSync(path.join(out, 'data/big.bin')).equals(big), 'tar -x gives the file back');
  assert.is(readFileSync(path.join(out, 'data/a.txt'), 'utf8'), 'small\n');
});

test('an interrupt while a layer is compressed rejects with its reason, leaves no temp blob, and the next layer builds', async () => {
  // 32 MB of noise: seconds of deflate, so each moment falls while blocks are being compressed.
  const src = tmp();
  for (let i = 0; i < 4; i++) writeFileSync(path.join(src, `weights${i}.bin`), randomBytes(8_000_000));
  const store = new ContentStore(tmp());
  for (const afterMs of [20, 100, 300]) {
    const interrupt = new AbortController();
    const reason = new Error('interrupted');
    setTimeout(() => interrupt.abort(reason), afterMs);
    let rejected: unknown;
    const uncaught = await uncaughtDuring(() => writeLayer(entriesForCopy(src, '/w'), store, { signal: interrupt.signal }).catch((e) => (rejected = e)));
    assert.equal(uncaught, [], `aborted after ${afterMs} ms`);
    assert.is(rejected, reason, `aborted after ${afterMs} ms`);
    assert.equal(readdirSync(path.join(store.dir, 'sha256')), [], `aborted after ${afterMs} ms`);
  }
  const small = workspace(TREE);
  const layer = await writeLayer(entriesForCopy(small, '/x'), store);
  assert.is(sha(readFileSync(store.pathOf(layer.digest))), layer.digest);
});

test('build: a layers image that skopeo reads and umoci unpacks, byte-identical when rebuilt', () => {
  const weights = modelFile(2 * BLOCK_SIZE + 4321);
  const dir = workspace({
    ...TREE,
    'images.yaml': `version: 1
images:
  tools:
    layers: [{copy: bin/tool, to: /usr/local/bin/tool, mode: 0o755}]
    env: {PATH: /usr/local/bin:/usr/bin:/bin}
    entrypoint: [tool]
  model:
    from: tools
    layers:
      - {copy: share, to: /opt/model}
      - {copy: "share/*.bin", to: /weights/}
    env: {MODEL: v1}
    cmd: [--fast]
    workdir: /opt/model
    labels: {org.opencontainers.image.title: model}
`,
  });
  writeFileSync(path.join(dir, 'share/weights.bin'), weights);
  const r = graph(dir, 'build', '--only', 'build', '--report', 'report.json');
  assert.is(r.code, 0, r.stderr);
  const report = JSON.parse(readFileSync(path.join(dir, 'report.json'), 'utf8'));
  const model = report.nodes.find((n: { id: string }) => n.id === 'build:model').outputs;
  assert.is(model.layout, '.graph/out/oci/model');
  const inspect = JSON.parse(execFileSync('skopeo', ['inspect', `oci:${path.join(dir, model.layout)}:latest`], { encoding: 'utf8' }));
  assert.is(inspect.Digest, model.manifest);
  assert.is(inspect.Layers.length, 2);
  assert.equal(inspect.Env, ['PATH=/usr/local/bin:/usr/bin:/bin', 'MODEL=v1']);
  const config = JSON.parse(execFileSync('skopeo', ['inspect', '--config', `oci:${path.join(dir, model.layout)}:latest`], { encoding: 'utf8' }));
  assert.equal(config.config.Entrypoint, ['tool']);
  assert.equal(config.config.Cmd, ['--fast']);
  assert.is(config.config.WorkingDir, '/opt/model');
  assert.is(config.created, '1970-01-01T00:00:00Z');

  const bundle = path.join(tmp(), 'bundle');
  execFileSync('umoci', ['unpack', '--rootless', '--image', `${path.join(dir, model.layout)}:latest`, bundle], { stdio: 'pipe' });
  const rootfs = path.join(bundle, 'rootfs');
  assert.is(readFileSync(path.join(rootfs, 'usr/local/bin/tool'), 'utf8'), TREE['bin/tool']);
  assert.is(lstatSync(path.join(rootfs, 'usr/local/bin/tool')).mode & 0o777, 0o755);
  assert.is(readFileSync(path.join(rootfs, 'opt/model/deep/x.txt'), 'utf8'), 'x\n');
  assert.is(readFileSync(path.join(rootfs, 'weights/model.bin'), 'utf8'), 'weights v1\n');
  assert.ok(readFileSync(path.join(rootfs, 'weights/weights.bin')).equals(weights), 'a file across compression blocks');
  assert.ok(readFileSync(path.join(rootfs, 'opt/model/weights.bin')).equals(weights));
  for (const layer of inspect.Layers as string[]) {
    execFileSync('gzip', ['-t', path.join(dir, model.layout, 'blobs', 'sha256', layer.slice(7))]);
  }

  // Unchanged inputs: cached. A clean store: the same digest again.
  const again = graph(dir, 'build', '--only', 'build');
  assert.match(again.stderr, 'ok: 0 ran, 2 cached');
  graph(dir, 'clean');
  graph(dir, 'build', '--only', 'build', '--report', 'report2.json');
  const second = JSON.parse(readFileSync(path.join(dir, 'report2.json'), 'utf8'));
  assert.is(second.nodes.find((n: { id: string }) => n.id === 'build:model').outputs.manifest, model.manifest);
});

test('an OCI image layout written by graph imports back, and serves as a base', async () => {
  const src = workspace(TREE);
  const store = new ContentStore(tmp());
  const layer = await writeLayer(entriesForCopy(src, '/app'), store);
  const image = composeImage(store, undefined, [{ descriptor: layer, diffId: layer.diffId, createdBy: 'test' }], { env: { A: '1' }, labels: {} }, 0);
  const layoutDir = path.join(tmp(), 'layout');
  writeLayout(store, layoutDir, [{ tag: 'v1', image }]);
  execFileSync('skopeo', ['inspect', `oci:${layoutDir}:v1`], { stdio: 'pipe' });

  const other = new ContentStore(tmp());
  const imported = await importLayout(other, layoutDir, 'v1');
  assert.is(imported.manifestDescriptor.digest, image.manifestDescriptor.digest);
  assert.equal(loadImage(other, image.manifestDescriptor.digest).config, image.config);
  try {
    await importLayout(other, layoutDir, 'v2');
    assert.unreachable();
  } catch (e) {
    assert.is((e as Error).message, `OCI image layout ${layoutDir} has no image tagged 'v2' (tags: v1)`);
  }

  // The layout lies outside the workspace: images.yaml lets it be read.
  const dir = workspace({ 'extra.txt': 'more\n', 'images.yaml': `version: 1\nsettings:\n  allow_outside: [${path.dirname(layoutDir)}]\nimages:\n  top:\n    from: oci-layout:${layoutDir}:v1\n    layers: [{copy: extra.txt, to: /app/extra.txt}]\n` });
  const r = graph(dir, 'build', '--only', 'build');
  assert.is(r.code, 0, r.stderr);
  const inspect = JSON.parse(execFileSync('skopeo', ['inspect', `oci:${path.join(dir, '.graph/out/oci/top')}:latest`], { encoding: 'utf8' }));
  assert.is(inspect.Layers[0], layer.digest, 'the base layer is reused by digest');
  assert.equal(inspect.Env, ['A=1']);
});

/** A raw (uncompressed) tar layer from header/content pairs. */
async function rawLayer(entries: Array<{ name: string; type?: string; linkname?: string; data?: string; mode?: number }>): Promise<Buffer> {
  const pack = tar.pack();
  for (const e of entries) {
    pack.entry({ name: e.name, type: (e.type ?? 'file') as 'file', linkname: e.linkname, mode: e.mode ?? 0o644, mtime: new Date(0) }, e.data ?? '');
  }
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const c of pack) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

async function apply(root: string, entries: Parameters<typeof rawLayer>[0], privileged = false): Promise<void> {
  const bytes = await rawLayer(entries);
  await unpackLayer(Readable.from([bytes]), { mediaType: MEDIA_TYPE_LAYER_TAR, digest: sha(bytes), size: bytes.length }, root, { privileged });
}

test('whiteouts: .wh.NAME deletes, an opaque directory keeps only its own layer', async () => {
  const root = path.join(tmp(), 'rootfs');
  await apply(root, [
    { name: 'etc/', type: 'directory', mode: 0o755 },
    { name: 'etc/keep', data: 'keep' },
    { name: 'etc/gone', data: 'gone' },
    { name: 'data/', type: 'directory' },
    { name: 'data/old1', data: '1' },
    { name: 'data/sub/', type: 'directory' },
    { name: 'data/sub/old2', data: '2' },
  ]);
  await apply(root, [
    { name: 'etc/.wh.gone' },
    { name: 'data/new', data: 'n' },
    { name: 'data/.wh..wh..opq' },
  ]);
  assert.ok(existsSync(path.join(root, 'etc/keep')));
  assert.not.ok(existsSync(path.join(root, 'etc/gone')));
  assert.not.ok(existsSync(path.join(root, 'etc/.wh.gone')));
  assert.is(readFileSync(path.join(root, 'data/new'), 'utf8'), 'n');
  assert.not.ok(existsSync(path.join(root, 'data/old1')));
  assert.not.ok(existsSync(path.join(root, 'data/sub')));
});

test('an opaque directory keeps the directories its own layer made without entries, with a fresh mode', async () => {
  const root = path.join(tmp(), 'rootfs');
  await apply(root, [
    { name: 'c/', type: 'directory' },
    { name: 'c/a/', type: 'directory', mode: 0o700 },
    { name: 'c/a/old', data: 'lower' },
  ]);
  await apply(root, [{ name: 'c/a/b/new', data: 'upper' }, { name: 'c/.wh..wh..opq' }]);
  assert.is(readFileSync(path.join(root, 'c/a/b/new'), 'utf8'), 'upper');
  assert.not.ok(existsSync(path.join(root, 'c/a/old')));
  assert.is(lstatSync(path.join(root, 'c/a')).mode & 0o7777, 0o755, "the lower layer's mode is hidden too");
});

test('unpacking keeps setuid and setgid bits (owner set before mode) and makes directories without entries 0755, under umask 077', async () => {
  const root = path.join(tmp(), 'rootfs');
  const umask = process.umask(0o077);
  try {
    await apply(
      root,
      [
        { name: 'usr/bin/su-tool', data: '#!/bin/sh\n', mode: 0o4755 },
        { name: 'usr/bin/sg-tool', data: '#!/bin/sh\n', mode: 0o2711 },
        { name: 'srv/', type: 'directory', mode: 0o2775 },
        { name: 'srv/private', data: 'p', mode: 0o600 },
        { name: 'tmp/', type: 'directory', mode: 0o1777 },
      ],
      true,
    );
  } finally {
    process.umask(umask);
  }
  const modeOf = (rel: string) => `${rel || '/'} ${(lstatSync(path.join(root, rel)).mode & 0o7777).toString(8)}`;
  assert.equal(['', 'usr', 'usr/bin', 'usr/bin/su-tool', 'usr/bin/sg-tool', 'srv', 'srv/private', 'tmp'].map(modeOf), [
    '/ 755', 'usr 755', 'usr/bin 755', 'usr/bin/su-tool 4755', 'usr/bin/sg-tool 2711', 'srv 2775', 'srv/private 600', 'tmp 1777',
  ]);
});

test('unsafe entries are rejected, naming the layer and the entry', async () => {
  const cases: Array<[Parameters<typeof rawLayer>[0], RegExp]> = [
    [[{ name: '/etc/passwd', data: 'x' }], /entry '\/etc\/passwd' has an absolute path$/],
    [[{ name: 'a/../../escape', data: 'x' }], /entry 'a\/..\/..\/escape' contains '..'$/],
    [[{ name: 'a/link', type: 'symlink', linkname: '../../../etc' }], /symbolic link 'a\/link' -> '..\/..\/..\/etc' leaves the image root$/],
    [[{ name: 'hard', type: 'link', linkname: '../outside' }], /entry '..\/outside' contains '..'$/],
    [[{ name: 'dev/null', type: 'character-device' }], /entry 'dev\/null' is a character-device, which needs privileges to create$/],
  ];
  for (const [entries, message] of cases) {
    const root = path.join(tmp(), 'rootfs');
    try {
      await apply(root, entries);
      assert.unreachable(`accepted ${entries[0].name}`);
    } catch (e) {
      assert.instance(e, UnpackError);
      assert.match((e as Error).message, /^layer sha256:[a-f0-9]{64}: /);
      assert.match((e as Error).message, message);
    }
  }
});

test('a symbolic link cannot carry a later write outside the root', async () => {
  const outside = tmp('graph-outside-');
  const root = path.join(tmp(), 'rootfs');
  await apply(root, [{ name: 'evil', type: 'symlink', linkname: outside }]);
  await apply(root, [{ name: 'evil/pwned', data: 'x' }]);
  assert.not.ok(existsSync(path.join(outside, 'pwned')), 'nothing written on the host');
  assert.ok(existsSync(path.join(root, outside, 'pwned')), 'written inside the root instead');
  assert.is(readlinkSync(path.join(root, 'evil')), outside);
});

test('unpackImage applies every layer of an image in order', async () => {
  const store = new ContentStore(tmp());
  const a = workspace({ 'f.txt': 'one\n', 'first.txt': 'only in the first layer\n' });
  const b = workspace({ 'f.txt': 'two\n', 'second.txt': 'only in the second layer\n' });
  const l1 = await writeLayer(entriesForCopy(a, '/'), store);
  const l2 = await writeLayer(entriesForCopy(b, '/'), store);
  const image = composeImage(
    store,
    undefined,
    [
      { descriptor: l1, diffId: l1.diffId, createdBy: '1' },
      { descriptor: l2, diffId: l2.diffId, createdBy: '2' },
    ],
    { env: {}, labels: {} },
    0,
  );
  const root = path.join(tmp(), 'rootfs');
  await unpackImage(store, image, root);
  assert.equal(readdirSync(root).sort(), ['f.txt', 'first.txt', 'second.txt']);
  assert.is(readFileSync(path.join(root, 'first.txt'), 'utf8'), 'only in the first layer\n');
  assert.is(readFileSync(path.join(root, 'second.txt'), 'utf8'), 'only in the second layer\n');
  assert.is(readFileSync(path.join(root, 'f.txt'), 'utf8'), 'two\n', 'the later layer wins');
});

test.run();
