/**
 * The publish rule: the embedded default (dist/), a real registry, the publish barrier, and the
 * lineage lock (published.lock.json).
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { flipByte, graph, shellModelZoo, startRegistry } from './helpers.js';

const test = suite('publish');

/** Two small images on a shell base, one with a SIF; a group tested in both runtimes. */
const zoo = shellModelZoo;

/** The tags of a layout's index.json (its untagged entries are artifacts about the images). */
const tags = (index: { manifests: Array<{ annotations: Record<string, string> }> }) =>
  index.manifests.flatMap((m) => (m.annotations['org.opencontainers.image.ref.name'] ? [m.annotations['org.opencontainers.image.ref.name']] : []));

const sha256 = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');

test('default: dist/oci (a tag per image), dist/sif, published.lock.json; a second build is cached', () => {
  const dir = zoo();
  const r = graph(dir, 'build', '--report', 'r.json');
  assert.is(r.code, 0, r.stderr);
  const report = JSON.parse(readFileSync(path.join(dir, 'r.json'), 'utf8'));
  const model = report.nodes.find((n: { id: string }) => n.id === 'build:model').outputs;
  const index = JSON.parse(readFileSync(path.join(dir, 'dist/oci/index.json'), 'utf8'));
  assert.equal(tags(index), ['bb', 'model', 'shell']);
  const inspect = JSON.parse(execFileSync('skopeo', ['inspect', `oci:${path.join(dir, 'dist/oci')}:model`], { encoding: 'utf8' }));
  assert.is(inspect.Digest, model.manifest);
  const convert = report.nodes.find((n: { id: string }) => n.id === 'convert:model').outputs;
  assert.is(sha256(path.join(dir, 'dist/sif/model.sif')), convert.sha256);
  const lock = JSON.parse(readFileSync(path.join(dir, 'published.lock.json'), 'utf8'));
  assert.equal(Object.keys(lock.images), ['bb', 'model', 'shell']);
  assert.is(lock.images.model.manifest, model.manifest);
  assert.equal(lock.images.model.references, ['oci-layout:dist/oci:model']);
  assert.equal(lock.images.model.sif, { sha256: convert.sha256, md5: convert.md5, size: convert.size, partition: lock.images.model.sif.partition, references: ['dist/sif/model.sif'] });
  assert.match(lock.images.model.sif.partition, /^sha256:[0-9a-f]{64}$/);
  assert.equal(Object.keys(lock.images.model.keys), ['build:model', 'convert:model', 'publish:model']);
  assert.match(graph(dir, 'build').stderr, /ok: 0 ran, \d+ cached, 0 failed, 0 skipped/);
  // Edit the model: the plan says the lineage lock no longer matches what would be built.
  writeFileSync(path.join(dir, 'model/run.sh'), '#!/bin/sh\necho hi > /output/out.txt # v2\n');
  assert.match(graph(dir, 'plan').stdout, 'published.lock.json is out of date for:\n  model: build:model, convert:model changed since it was published\n');
});

test('dist/ never shares an inode with the store; a flipped store blob re-runs its node; a re-publish replaces corrupt dist/ files and leaves no temp file', () => {
  const dir = zoo();
  assert.is(graph(dir, 'build').code, 0);
  const cas = path.join(dir, '.graph', 'cas', 'sha256');
  const distBlobs = path.join(dir, 'dist', 'oci', 'blobs', 'sha256');
  const distSif = path.join(dir, 'dist', 'sif', 'model.sif');
  const storeInodes = new Set(readdirSync(cas).map((n) => statSync(path.join(cas, n)).ino));
  for (const f of [distSif, ...readdirSync(distBlobs).map((n) => path.join(distBlobs, n))]) assert.not.ok(storeInodes.has(statSync(f).ino), `${f} is a link into the store`);
  const sif = JSON.parse(readFileSync(path.join(dir, 'published.lock.json'), 'utf8')).images.model.sif.sha256 as string;

  // A byte flipped in the store's SIF: dist/ keeps good bytes, and the plan finds it.
  flipByte(path.join(cas, sif), 100);
  assert.is(sha256(distSif), sif);
  assert.match(graph(dir, 'plan').stdout, `1 node to run, 8 cached (9 nodes selected)\n  run    convert:model\n           output corrupt: sha256:${sif.slice(0, 12)} did not match its digest (removed from the store)\n`);
  const rebuilt = graph(dir, 'build');
  assert.match(rebuilt.stderr, 'ok: 1 ran, 8 cached, 0 failed, 0 skipped');
  assert.is(sha256(path.join(cas, sif)), sif);

  // Editing dist/ does not reach the store: still all cached.
  flipByte(distSif, 100);
  // The base's layer, which every image of the layout shares, so the next publish finds it by name.
  const index = JSON.parse(readFileSync(path.join(dir, 'dist', 'oci', 'index.json'), 'utf8')) as { manifests: Array<{ digest: string; annotations: Record<string, string> }> };
  const manifest = index.manifests.find((m) => m.annotations['org.opencontainers.image.ref.name'] === 'model')?.digest as string;
  const layer = (JSON.parse(readFileSync(path.join(distBlobs, manifest.slice(7)), 'utf8')).layers[0].digest as string).slice(7);
  flipByte(path.join(distBlobs, layer), 10);
  assert.match(graph(dir, 'plan').stdout, /^0 nodes to run, 9 cached/);
  assert.is(sha256(path.join(cas, sif)), sif);
  assert.is(sha256(path.join(cas, layer)), layer);

  // Publish again with the same SIF and layers (its record dropped): dist/ is whole again.
  const key = (JSON.parse(graph(dir, 'plan', '--format', 'json').stdout).nodes as Array<{ id: string; key: string }>).find((n) => n.id === 'publish:model')?.key as string;
  const records = path.join(dir, '.graph', 'ac', 'records.log');
  writeFileSync(records, readFileSync(records, 'utf8').split('\n').filter((l) => !l.startsWith(`${key} `)).join('\n'));
  const log = path.join(dir, '.graph', 'actions.log');
  writeFileSync(log, readFileSync(log, 'utf8').split('\n').filter((l) => !l.includes('"id":"publish:model"')).join('\n'));
  assert.match(graph(dir, 'build').stderr, 'ok: 1 ran, 8 cached, 0 failed, 0 skipped');
  assert.is(sha256(distSif), sif);
  for (const n of readdirSync(distBlobs)) assert.is(sha256(path.join(distBlobs, n)), n);
  assert.equal(readdirSync(path.join(dir, 'dist', 'sif')), ['model.sif']);
  assert.equal(readdirSync(distBlobs).filter((n) => n.startsWith('.')), []);
});

test('barrier: an image whose test fails is not published; others are', () => {
  const dir = zoo('', 'something else\n');
  const r = graph(dir, 'build');
  assert.is(r.code, 1);
  assert.match(r.stderr, 'skipped publish:model: dependency test:g/m@oci failed');
  const index = JSON.parse(readFileSync(path.join(dir, 'dist/oci/index.json'), 'utf8'));
  assert.equal(tags(index), ['bb', 'shell']);
  assert.not.ok(existsSync(path.join(dir, 'dist/sif/model.sif')));
});

test('a registry: the image and its SIF (as an ORAS artifact at TAG-sif) pushed, digests equal', async () => {
  const registry = await startRegistry();
  try {
    const dir = zoo(`    publish: [${registry.host}/zoo/model:v1]\n`);
    const r = graph(dir, 'build', '--report', 'r.json');
    assert.is(r.code, 0, r.stderr);
    const report = JSON.parse(readFileSync(path.join(dir, 'r.json'), 'utf8'));
    const model = report.nodes.find((n: { id: string }) => n.id === 'build:model').outputs;
    const inspect = JSON.parse(execFileSync('skopeo', ['inspect', '--tls-verify=false', `docker://${registry.host}/zoo/model:v1`], { encoding: 'utf8' }));
    assert.is(inspect.Digest, model.manifest);
    const raw = JSON.parse(execFileSync('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${registry.host}/zoo/model:v1-sif`], { encoding: 'utf8' }));
    const convert = report.nodes.find((n: { id: string }) => n.id === 'convert:model').outputs;
    assert.is(raw.layers[0].mediaType, 'application/vnd.sylabs.sif.layer.v1.sif');
    assert.is(raw.layers[0].digest, `sha256:${convert.sha256}`);
    const lock = JSON.parse(readFileSync(path.join(dir, 'published.lock.json'), 'utf8'));
    assert.equal(lock.images.model.references, [`${registry.host}/zoo/model:v1`]);
    assert.equal(lock.images.model.sif.references, [`oras://${registry.host}/zoo/model:v1-sif`]);

    // A fresh runner (no local cache): the plan asks the registry, which already holds this digest.
    rmSync(path.join(dir, '.graph'), { recursive: true, force: true });
    const plan = graph(dir, 'plan', 'image:model');
    assert.is(plan.code, 0, plan.stderr);
    assert.match(plan.stdout, `  cached publish:model\n           already in registry (${registry.host}/zoo/model:v1)\n`);
    rmSync(path.join(dir, '.graph'), { recursive: true, force: true });
    const offline = JSON.parse(graph(dir, 'plan', 'publish:model', '--offline', '--format', 'json').stdout);
    assert.is(offline.nodes.find((n: { id: string }) => n.id === 'publish:model').status, 'run');
  } finally {
    await registry.stop();
  }
});

test.run();
