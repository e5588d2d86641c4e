/** Pulling base images from a real registry (Debian's docker-registry on 127.0.0.1). */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { parseChallenge } from '../rules/registry/client.js';
import { freePort, graph, graphWith, startRegistry, workspace, type Registry } from './helpers.js';

const test = suite('registry');

/** Build a small base image with graph and push it with skopeo (the independent client). */
function pushBase(registry: Registry, repoTag: string, creds?: string): { manifest: string; layer: string } {
  const dir = workspace({ 'tool.sh': '#!/bin/sh\necho base\n', 'images.yaml': 'version: 1\nimages:\n  base:\n    layers: [{copy: tool.sh, to: /bin/tool, mode: 0o755}]\n    env: {FROM_BASE: "yes"}\n' });
  const r = graph(dir, 'build', '--only', 'build', '--report', 'r.json');
  assert.is(r.code, 0, r.stderr);
  const out = JSON.parse(readFileSync(path.join(dir, 'r.json'), 'utf8')).nodes[0].outputs;
  execFileSync('skopeo', ['copy', '--quiet', '--dest-tls-verify=false', ...(creds ? ['--dest-creds', creds] : []), `oci:${path.join(dir, out.layout)}:latest`, `docker://${registry.host}/${repoTag}`], { stdio: 'pipe' });
  return { manifest: out.manifest, layer: out.layers[0] };
}

function topImage(from: string): string {
  return workspace({ 'extra.txt': 'top\n', 'images.yaml': `version: 1\nimages:\n  top:\n    from: ${from}\n    layers: [{copy: extra.txt, to: /extra.txt}]\n` });
}

test('a base pulled anonymously by tag or digest: its layers reused by digest', async () => {
  const registry = await startRegistry();
  try {
    const base = pushBase(registry, 'zoo/base:v1');
    for (const from of [`${registry.host}/zoo/base:v1`, `${registry.host}/zoo/base@${base.manifest}`]) {
      const dir = topImage(from);
      const r = graph(dir, 'build', '--only', 'build');
      assert.is(r.code, 0, r.stderr);
      const inspect = JSON.parse(execFileSync('skopeo', ['inspect', `oci:${path.join(dir, '.graph/out/oci/top')}:latest`], { encoding: 'utf8' }));
      assert.is(inspect.Layers.length, 2);
      assert.is(inspect.Layers[0], base.layer);
      assert.equal(inspect.Env, ['FROM_BASE=yes']);
    }
  } finally {
    await registry.stop();
  }
});

test('basic auth from ~/.docker/config.json; denied without, never printing the password', async () => {
  const registry = await startRegistry({ user: 'zoo', password: 's3cret-pw' });
  try {
    pushBase(registry, 'zoo/private:v1', 'zoo:s3cret-pw');
    const dockerConfig = mkdtempSync(path.join(tmpdir(), 'graph-docker-'));
    const auth = Buffer.from('zoo:s3cret-pw').toString('base64');
    writeFileSync(path.join(dockerConfig, 'config.json'), JSON.stringify({ auths: { [registry.host]: { auth } } }));
    const ok = graphWith({ DOCKER_CONFIG: dockerConfig }, topImage(`${registry.host}/zoo/private:v1`), 'build', '--only', 'build');
    assert.is(ok.code, 0, ok.stderr);

    const empty = mkdtempSync(path.join(tmpdir(), 'graph-docker-'));
    const anon = graphWith({ DOCKER_CONFIG: empty }, topImage(`${registry.host}/zoo/private:v1`), 'build', '--only', 'build');
    assert.is(anon.code, 1);
    assert.match(anon.stderr, `registry ${registry.host} denied access to zoo/private (401, anonymously): log in (docker login) or set GRAPH_REGISTRY_USERNAME and GRAPH_REGISTRY_PASSWORD`);

    const wrong = graphWith({ GRAPH_REGISTRY_USERNAME: 'zoo', GRAPH_REGISTRY_PASSWORD: 'wrong-pw' }, topImage(`${registry.host}/zoo/private:v1`), 'build', '--only', 'build');
    assert.is(wrong.code, 1);
    assert.match(wrong.stderr, 'denied access to zoo/private (401, with the configured credentials)');
    for (const r of [ok, anon, wrong]) {
      assert.not.match(r.stderr, 's3cret-pw');
      assert.not.match(r.stderr, 'wrong-pw');
      assert.not.match(r.stderr, auth);
    }
  } finally {
    await registry.stop();
  }
});

test('an unknown tag and an unreachable registry are clear node failures', async () => {
  const registry = await startRegistry();
  try {
    pushBase(registry, 'zoo/base:v1');
    const missing = graph(topImage(`${registry.host}/zoo/base:nope`), 'build', '--only', 'build');
    assert.is(missing.code, 1);
    assert.match(missing.stderr, `failed build:top: registry ${registry.host} has no manifest zoo/base:nope`);
  } finally {
    await registry.stop();
  }
  const port = await freePort();
  const down = graph(topImage(`127.0.0.1:${port}/zoo/base:v1`), 'build', '--only', 'build');
  assert.is(down.code, 1);
  assert.match(down.stderr, `failed build:top: cannot reach registry 127.0.0.1:${port}: ECONNREFUSED`);
});

test('a blob whose bytes do not match its digest is refused; nothing enters the store', async () => {
  const registry = await startRegistry();
  try {
    const base = pushBase(registry, 'zoo/base:v1');
    // Flip the registry's stored copy of the layer (same size): a disk fault, or a lying server.
    const data = path.join(registry.dataDir, 'docker/registry/v2/blobs/sha256', base.layer.slice(7, 9), base.layer.slice(7), 'data');
    const bytes = readFileSync(data);
    bytes[bytes.length - 1] ^= 0xff;
    writeFileSync(data, bytes);
    const dir = topImage(`${registry.host}/zoo/base:v1`);
    const r = graph(dir, 'build', '--only', 'build');
    assert.is(r.code, 1);
    assert.match(r.stderr, new RegExp(`failed build:top: registry ${registry.host}: content of blob ${base.layer} from ${registry.host}/zoo/base has digest sha256:[a-f0-9]{64}, expected ${base.layer}`));
    const blobs = path.join(dir, '.graph/cas/sha256');
    assert.not.ok(existsSync(path.join(blobs, base.layer.slice(7))), 'the bad blob is not stored');
    assert.equal(readdirSync(blobs).filter((f) => f.startsWith('.tmp')), [], 'no temp file left');
  } finally {
    await registry.stop();
  }
});

test('WWW-Authenticate challenges parse into scheme and parameters', () => {
  assert.equal(parseChallenge('Bearer realm="https://auth.example.invalid/token",service="registry.example.invalid",scope="repository:a/b:pull"'), {
    scheme: 'bearer',
    params: { realm: 'https://auth.example.invalid/token', service: 'registry.example.invalid', scope: 'repository:a/b:pull' },
  });
  assert.equal(parseChallenge('Basic realm="test"'), { scheme: 'basic', params: { realm: 'test' } });
});

test.run();
