/**
 * The publish rule: the embedded default (dist/), a real registry, the publish barrier, and the
 * lineage lock (published.lock.json).
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { graph, startRegistry, workspace } from './helpers.js';

const test = suite('publish');

/** Two small images on a shell base, one with a SIF; a group tested in oci. */
function zoo(publish = '', expectText = 'hi\n'): string {
  const dir = workspace({
    'bin/busybox-stub': '#!/bin/sh\n',
    'model/run.sh': '#!/bin/sh\necho hi > /output/out.txt\n',
    'expect/out.txt': expectText,
    'images.yaml': `version: 1
images:
  bb:
    debian: {packages: [busybox-static]}
  shell:
    from: bb
    layers: [{copy: sh, to: /bin/sh}]
  model:
    from: shell
    layers: [{copy: model/run.sh, to: /usr/local/bin/run, mode: 0o755}]
    convert: [sif]
${publish}`,
    'models.yaml': `version: 1
groups:
  g:
    image: model
    models: [m]
    test: {command: [run], expect: expect, runtimes: [oci, sif]}
`,
  });
  symlinkSync('busybox', path.join(dir, 'sh'));
  return dir;
}

const sha256 = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');

test('default: dist/oci (a tag per image), dist/sif, published.lock.json; a second build is cached', () => {
  const dir = zoo();
  const r = graph(dir, 'build', '--report', 'r.json');
  assert.is(r.code, 0, r.stderr);
  const report = JSON.parse(readFileSync(path.join(dir, 'r.json'), 'utf8'));
  const model = report.nodes.find((n: { id: string }) => n.id === 'build:model').outputs;
  const index = JSON.parse(readFileSync(path.join(dir, 'dist/oci/index.json'), 'utf8'));
  assert.equal(index.manifests.map((m: { annotations: Record<string, string> }) => m.annotations['org.opencontainers.image.ref.name']), ['bb', 'model', 'shell']);
  const inspect = JSON.parse(execFileSync('skopeo', ['inspect', `oci:${path.join(dir, 'dist/oci')}:model`], { encoding: 'utf8' }));
  assert.is(inspect.Digest, model.manifest);
  const convert = report.nodes.find((n: { id: string }) => n.id === 'convert:model').outputs;
  assert.is(sha256(path.join(dir, 'dist/sif/model.sif')), convert.sha256);
  const lock = JSON.parse(readFileSync(path.join(dir, 'published.lock.json'), 'utf8'));
  assert.equal(Object.keys(lock.images), ['bb', 'model', 'shell']);
  assert.is(lock.images.model.manifest, model.manifest);
  assert.equal(lock.images.model.references, ['oci-layout:dist/oci:model']);
  assert.equal(lock.images.model.sif, { sha256: convert.sha256, md5: convert.md5, size: convert.size, references: ['dist/sif/model.sif'] });
  assert.equal(Object.keys(lock.images.model.keys), ['build:model', 'convert:model', 'publish:model']);
  assert.match(graph(dir, 'build').stderr, /ok: 0 ran, \d+ cached, 0 failed, 0 skipped/);
  // Edit the model: the plan says the lineage lock no longer matches what would be built.
  writeFileSync(path.join(dir, 'model/run.sh'), '#!/bin/sh\necho hi > /output/out.txt # v2\n');
  assert.match(graph(dir, 'plan').stdout, 'published.lock.json is out of date for:\n  model: build:model, convert:model changed since it was published\n');
});

test('barrier: an image whose test fails is not published; others are', () => {
  const dir = zoo('', 'something else\n');
  const r = graph(dir, 'build');
  assert.is(r.code, 1);
  assert.match(r.stderr, 'skipped publish:model: dependency test:g/m@oci failed');
  const index = JSON.parse(readFileSync(path.join(dir, 'dist/oci/index.json'), 'utf8'));
  assert.equal(index.manifests.map((m: { annotations: Record<string, string> }) => m.annotations['org.opencontainers.image.ref.name']), ['bb', 'shell']);
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
