/**
 * The root filesystem cache: a tree is checked against its manifest (stat only) before use, and an
 * edited, added or removed entry, or a damaged manifest, makes it unpacked again.
 */
import { appendFileSync, readdirSync, readFileSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { cachedRootfs, checkTree } from '../../rules/runtime/rootfs-cache.js';
import { graph, workspace, writeFiles } from '../helpers.js';

const test = suite('rootfs-cache');

/** A cache entry made by cachedRootfs from `files`; returns the entry and its tree. */
async function entry(files: Record<string, string>): Promise<{ dir: string; tree: string }> {
  const dir = path.join(workspace({}), 'cache', 'rootfs', 'abc');
  const tree = await cachedRootfs(dir, async (t) => writeFiles(t, files));
  return { dir, tree };
}

test('a fresh entry matches its manifest; each kind of change is named', async () => {
  const { dir, tree } = await entry({ 'usr/local/bin/run': 'echo hi\n', 'etc/os-release': 'x\n' });
  assert.is(tree, path.join(dir, 'rootfs'));
  assert.equal(readdirSync(dir).sort(), ['manifest', 'rootfs']);
  assert.is(checkTree(dir), undefined);

  writeFileSync(path.join(tree, 'usr/local/bin/run'), 'echo hi\n'); // same bytes, rewritten
  assert.is(checkTree(dir), 'usr/local/bin/run changed');
});

test('added, removed, a changed mode, a reset mtime: all found', async () => {
  const { dir, tree } = await entry({ 'a/b': '1', 'c': '2' });
  writeFileSync(path.join(tree, 'a/new'), '');
  assert.is(checkTree(dir), 'a changed'); // the directory's mtime comes first in path order
  const { dir: d2, tree: t2 } = await entry({ 'a/b': '1', 'c': '2' });
  rmSync(path.join(t2, 'c'));
  assert.is(checkTree(d2), '. changed');
  const { dir: d3, tree: t3 } = await entry({ 'a/b': '1' });
  const before = readFileSync(path.join(d3, 'manifest'), 'utf8');
  writeFileSync(path.join(t3, 'a/b'), '2');
  utimesSync(path.join(t3, 'a/b'), 0, Number(/ (\d+(?:\.\d+)?) [\d.]+ a\/b\n/.exec(before)?.[1]) / 1000); // mtime set back; ctime cannot be
  assert.is(checkTree(d3), 'a/b changed');
  const { dir: d4, tree: t4 } = await entry({ 'a/b': '1' });
  symlinkSync('b', path.join(t4, 'a/link'));
  assert.is(checkTree(d4), 'a changed');
});

test('a torn or edited manifest, or none: a mismatch', async () => {
  const { dir } = await entry({ 'x': '1' });
  const manifest = path.join(dir, 'manifest');
  const text = readFileSync(manifest, 'utf8');
  writeFileSync(manifest, text.slice(0, -10));
  assert.is(checkTree(dir), 'manifest corrupt');
  writeFileSync(manifest, text.replace(' x\n', ' y\n'));
  assert.is(checkTree(dir), 'manifest corrupt');
  appendFileSync(manifest, 'more\n');
  assert.is(checkTree(dir), 'manifest corrupt');
  rmSync(manifest);
  assert.is(checkTree(dir), 'no manifest');
});

test('a file edited inside the cached root filesystem never runs: the next test unpacks it again (oci and sif)', () => {
  const dir = workspace({
    'model/run.sh': '#!/bin/sh\necho pristine > /output/out.txt\n',
    'expect/out.txt': 'pristine\n',
    'input/n.txt': '1\n',
    'images.yaml': `version: 1
images:
  bb:
    debian: {packages: [busybox-static]}
  model:
    from: bb
    layers: [{copy: sh, to: /bin/sh}, {copy: model/run.sh, to: /usr/local/bin/run, mode: 0o755}]
    convert: [sif]
`,
    'models.yaml': `version: 1
groups:
  g:
    image: model
    models: [m]
    test: {command: [run], inputs: input, expect: expect, runtimes: [oci, sif]}
`,
  });
  symlinkSync('busybox', path.join(dir, 'sh'));
  let r = graph(dir, 'build');
  assert.is(r.code, 0, r.stderr);
  // Every cached copy of the script, whatever the layout of the cache.
  const cache = path.join(dir, '.graph', 'cache');
  const scripts = (readdirSync(cache, { recursive: true }) as string[]).filter((p) => p.endsWith('usr/local/bin/run')).map((p) => path.join(cache, p));
  assert.is(scripts.length, 2, scripts.join(', '));
  for (const s of scripts) writeFileSync(s, '#!/bin/sh\necho tampered > /output/out.txt\n');
  writeFiles(dir, { 'input/n.txt': '2\n' }); // the tests run again; their images do not change
  r = graph(dir, 'build');
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stderr, 'ok: 3 ran,');
  for (const [id, kind] of [['test:g%2Fm@oci', 'rootfs'], ['test:g%2Fm@sif', 'sif-rootfs']]) {
    const log = readFileSync(path.join(dir, '.graph', 'logs', `${id}.log`), 'utf8');
    assert.match(log, new RegExp(`root filesystem \\S+/\\.graph/cache/${kind}/[0-9a-f]{64}/rootfs does not match its manifest \\(usr/local/bin/run changed\\): unpacking it again\\n`));
    assert.is(readFileSync(path.join(dir, '.graph', 'out', 'test', id, 'output', 'out.txt'), 'utf8'), 'pristine\n');
  }
  for (const s of scripts) assert.is(readFileSync(s, 'utf8'), '#!/bin/sh\necho pristine > /output/out.txt\n');
});

test.run();
