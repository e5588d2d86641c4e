/**
 * The registry as source of truth, end to end: the real `graph` binary, a real docker-registry
 * behind a counting proxy on 127.0.0.1 (every request is logged; the proxy can also be stopped or
 * made to answer garbage). Clone A builds and publishes a small zoo, writing published.lock.json;
 * fresh clones with the same declarations and that lock build and convert nothing: the builds and
 * the conversion are cached "from registry", and only the blobs a running test needs are fetched,
 * each once. A tampered registry blob is detected (one warning, the node runs); a registry that is
 * down, answers garbage or refuses anonymous access is one warning, and the build finishes locally
 * with exit 0; with the publish rule's credentials it is used, and they are never printed.
 */
import { cpSync, existsSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { flipByte, graphAsyncWith, startRegistry, workspace, type Registry } from './helpers.js';

const test = suite('registry-source');

interface Report {
  summary: { ran: number; cached: number; failed: number };
  nodes: Array<{ id: string; status: string; reasons: string[]; outputs: Record<string, unknown> | null }>;
}

const ran = (r: Report) => r.nodes.filter((n) => n.status === 'ran').map((n) => n.id).sort();
const warnings = (stderr: string) => stderr.split('\n').filter((l) => l.startsWith('warning: '));
const readReport = (dir: string): Report => JSON.parse(readFileSync(path.join(dir, 'report.json'), 'utf8'));

/** `graph ARGS` in `cwd` as a child (the proxy lives in this process, so never spawnSync). */
function graphRun(cwd: string, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return graphRunWith({}, cwd, ...args);
}

/** As `graphRun`, with extra environment variables; no remote cache, registry credentials or docker config from this machine. */
function graphRunWith(extraEnv: NodeJS.ProcessEnv, cwd: string, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return graphAsyncWith({ GRAPH_REMOTE_CACHE: undefined, GRAPH_REGISTRY_USERNAME: undefined, GRAPH_REGISTRY_PASSWORD: undefined, ...extraEnv, DOCKER_CONFIG: '/nonexistent' }, cwd, ...args);
}

interface Proxy {
  readonly host: string;
  /** Every request so far: method and path. */
  readonly requests: Array<{ method: string; path: string }>;
  /** `garbage`: every manifest GET answers 200 with bytes that are not the manifest. */
  mode: 'pass' | 'garbage';
  stop(): Promise<void>;
}

/** A logging HTTP proxy in front of `registry` (its own port, so a lock names the proxy). */
async function startProxy(registry: Registry): Promise<Proxy> {
  const [targetHost, targetPort] = registry.host.split(':');
  const proxy: Proxy = {
    host: '',
    requests: [],
    mode: 'pass',
    stop: () => new Promise((resolve) => server.close(() => resolve())),
  };
  const server = http.createServer((req, res) => {
    proxy.requests.push({ method: req.method as string, path: req.url as string });
    if (proxy.mode === 'garbage' && req.method === 'GET' && req.url?.includes('/manifests/')) {
      res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json' });
      res.end('<html>not a manifest</html>');
      return;
    }
    const up = http.request({ host: targetHost, port: Number(targetPort), path: req.url, method: req.method, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode as number, r.headers);
      r.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  server.keepAliveTimeout = 1000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  (proxy as { host: string }).host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  const stop = proxy.stop;
  proxy.stop = () => {
    server.closeAllConnections();
    return stop();
  };
  return proxy;
}

/** The zoo's committed files: a busybox base, a shell image, a model image with a SIF, all published to `host`. */
function zooFiles(host: string): Record<string, string> {
  return {
    'model/run.sh': '#!/bin/sh\ncat /input/x.txt > /output/out.txt\n',
    'inputs/m1/x.txt': 'one\n',
    'inputs/m2/x.txt': 'two\n',
    'expect/m1/out.txt': 'one\n',
    'expect/m2/out.txt': 'two\n',
    'images.yaml': `version: 1
images:
  bb:
    debian: {packages: [busybox-static]}
    publish: [${host}/zoo/bb:v1]
  shell:
    from: bb
    layers: [{copy: sh, to: /bin/sh}]
    publish: [${host}/zoo/shell:v1]
  model:
    from: shell
    layers: [{copy: model/run.sh, to: /usr/local/bin/run, mode: 0o755}]
    convert: [sif]
    publish: [${host}/zoo/model:v1]
`,
    'models.yaml': `version: 1
groups:
  g:
    image: model
    models: [m1, m2]
    test: {command: [run], inputs: 'inputs/{model}', expect: 'expect/{model}', runtimes: [oci, sif]}
`,
  };
}

/** A checkout: the zoo's files, the `sh` link, and (when given) clone A's published.lock.json and images.lock. */
function checkout(host: string, from?: string): string {
  const dir = workspace(zooFiles(host));
  symlinkSync('busybox', path.join(dir, 'sh'));
  for (const f of ['published.lock.json', 'images.lock']) if (from && existsSync(path.join(from, f))) cpSync(path.join(from, f), path.join(dir, f));
  return dir;
}

/** Blob GETs in `requests` since `since`: digest → how many times. */
function blobGets(requests: Proxy['requests'], since = 0): Map<string, number> {
  const counts = new Map<string, number>();
  for (const r of requests.slice(since)) {
    const m = /^\/v2\/.+\/blobs\/(sha256:[0-9a-f]{64})$/.exec(r.path);
    if (r.method === 'GET' && m) counts.set(m[1], (counts.get(m[1]) ?? 0) + 1);
  }
  return counts;
}

/** Where docker-registry keeps a blob's bytes. */
const blobFile = (registry: Registry, digest: string) => path.join(registry.dataDir, 'docker/registry/v2/blobs/sha256', digest.slice(7, 9), digest.slice(7), 'data');

test('a fresh clone builds and converts nothing: cached from registry, only the blobs running tests need are fetched; a tampered blob, a registry down, garbage: one warning, the node runs', async () => {
  const registry = await startRegistry();
  const proxy = await startProxy(registry);
  try {
    // Clone A builds and publishes everything; the lock names every image and the SIF.
    const a = checkout(proxy.host);
    const first = await graphRun(a, 'build', '--report', 'report.json');
    assert.is(first.code, 0, first.stderr);
    assert.equal(warnings(first.stderr), []);
    const built = readReport(a);
    const out = (id: string) => built.nodes.find((n) => n.id === id)?.outputs as Record<string, unknown>;
    const model = out('build:model');
    const sif = `sha256:${out('convert:model').sha256 as string}`;
    const lock = JSON.parse(readFileSync(path.join(a, 'published.lock.json'), 'utf8'));
    assert.equal(Object.keys(lock.images), ['bb', 'model', 'shell']);
    const keys = new Map((JSON.parse((await graphRun(a, 'plan', '--format', 'json', '--offline')).stdout).nodes as Array<{ id: string; key: string }>).map((n) => [n.id, n.key]));
    // The pushed manifest names the build's action key.
    const manifest = JSON.parse(readFileSync(blobFile(registry, model.manifest as string), 'utf8'));
    assert.equal(manifest.annotations, { 'dev.graph.action-key': keys.get('build:model') });

    // Clone B: the committed files and lock, no .graph/. The plan: builds and convert from the registry.
    const b = checkout(proxy.host, a);
    const beforePlan = proxy.requests.length;
    const fromRegistry = (name: string, digest: string, sifTag = false) => `from registry ${sifTag ? `oras://${proxy.host}/zoo/${name}:v1-sif` : `${proxy.host}/zoo/${name}:v1`} (${digest.slice(0, 19)}, as published.lock.json records)`;
    const text = await graphRun(b, 'plan');
    assert.is(text.code, 0, text.stderr);
    assert.match(text.stdout, `  cached build:model\n           ${fromRegistry('model', model.manifest as string)}\n`);
    assert.match(text.stdout, `  cached publish:model\n           already in registry (${proxy.host}/zoo/model:v1)\n`);

    // graph explain, on a fresh clone: cached, and why.
    const explained = await graphRun(checkout(proxy.host, a), 'explain', 'build:model');
    assert.is(explained.code, 0, explained.stderr);
    assert.match(explained.stdout, `build:model (build): cached\n  key ${keys.get('build:model')}\n`);
    assert.match(explained.stdout, `  why:\n    ${fromRegistry('model', model.manifest as string)}\n`);

    // The same in JSON, on another fresh clone (a plan records the publishes it found done).
    const plan = await graphRun(checkout(proxy.host, a), 'plan', '--format', 'json');
    assert.is(plan.code, 0, plan.stderr);
    const planned = new Map((JSON.parse(plan.stdout).nodes as Array<{ id: string; status: string; reasons: string[] }>).map((n) => [n.id, n]));
    assert.equal(planned.get('build:model'), { ...planned.get('build:model'), status: 'cached', reasons: [fromRegistry('model', model.manifest as string)] });
    assert.equal(planned.get('convert:model'), { ...planned.get('convert:model'), status: 'cached', reasons: [fromRegistry('model', sif, true)] });
    for (const name of ['bb', 'shell']) assert.is(planned.get(`build:${name}`)?.status, 'cached', name);
    assert.equal(
      [...planned.values()].filter((n) => n.status === 'run').map((n) => n.id).sort(),
      ['test:g/m1@oci', 'test:g/m1@sif', 'test:g/m2@oci', 'test:g/m2@sif'],
    );
    assert.equal(blobGets(proxy.requests, beforePlan).size, 0, 'the plan downloads no blob');
    // B builds: no build and no convert runs; the tests fetch the model image's blobs (its bases'
    // layers included) and the SIF from the registry, each once.
    let since = proxy.requests.length;
    const second = await graphRun(b, 'build', '--report', 'report.json', '--junit', 'junit.xml');
    assert.is(second.code, 0, second.stderr);
    assert.equal(warnings(second.stderr), []);
    const report = readReport(b);
    assert.equal(ran(report), ['test:g/m1@oci', 'test:g/m1@sif', 'test:g/m2@oci', 'test:g/m2@sif']);
    assert.equal(report.nodes.find((n) => n.id === 'build:model')?.reasons, [fromRegistry('model', model.manifest as string), 'restores .graph/out/oci/model/index.json from the store']);
    assert.equal(report.nodes.find((n) => n.id === 'convert:model')?.reasons, [fromRegistry('model', sif, true), 'restores .graph/out/sif/model.sif from the store']);
    // The publishes were found done by B's plan (already in registry) and recorded then.
    for (const name of ['bb', 'shell', 'model']) assert.is(report.nodes.find((n) => n.id === `publish:${name}`)?.status, 'cached', name);
    assert.match(readFileSync(path.join(b, 'junit.xml'), 'utf8'), `<property name="cached" value="${fromRegistry('model', model.manifest as string)}; restores .graph/out/oci/model/index.json from the store"/>`);
    const html = await graphRun(b, 'report', 'html', 'report.html', '--from', 'report.json');
    assert.is(html.code, 0, html.stderr);
    assert.match(readFileSync(path.join(b, 'report.html'), 'utf8'), fromRegistry('model', model.manifest as string));
    const wanted = [model.config as string, ...(model.layers as string[]), sif].sort();
    assert.equal([...blobGets(proxy.requests, since)].sort(), wanted.map((d) => [d, 1]));
    assert.ok(existsSync(path.join(b, '.graph/out/oci/model/index.json')), 'the layout the tests needed, restored');
    assert.ok(existsSync(path.join(b, '.graph/out/sif/model.sif')), 'the SIF the sif tests needed, restored');
    assert.not.ok(existsSync(path.join(b, '.graph/out/oci/shell')), 'layouts nothing needed are not written');

    // One model's file changed on B: exactly its two tests run; nothing is built, converted or fetched.
    writeFileSync(path.join(b, 'inputs/m1/x.txt'), 'uno\n');
    writeFileSync(path.join(b, 'expect/m1/out.txt'), 'uno\n');
    since = proxy.requests.length;
    const third = await graphRun(b, 'build', '--report', 'report.json');
    assert.is(third.code, 0, third.stderr);
    assert.equal(warnings(third.stderr), []);
    assert.equal(ran(readReport(b)), ['test:g/m1@oci', 'test:g/m1@sif']);
    assert.equal(blobGets(proxy.requests, since).size, 0);

    // A tampered layer in the registry: detected, one warning, build:model runs here (the SIF still comes from the registry).
    const own = (model.layers as string[]).at(-1) as string;
    flipByte(blobFile(registry, own), 10);
    const c = checkout(proxy.host, a);
    const tampered = await graphRun(c, 'build', '--report', 'report.json');
    assert.is(tampered.code, 0, tampered.stderr);
    assert.equal(warnings(tampered.stderr), [`warning: registry: blob ${own} not used: it did not match its digest (tampered with or damaged in the registry)`]);
    const cReport = readReport(c);
    assert.equal(cReport.nodes.find((n) => n.id === 'build:model')?.reasons, [`${fromRegistry('model', model.manifest as string)}, but its artifacts could not be downloaded intact`]);
    assert.equal(ran(cReport), ['build:model', 'test:g/m1@oci', 'test:g/m1@sif', 'test:g/m2@oci', 'test:g/m2@sif']);
    assert.is(cReport.nodes.find((n) => n.id === 'build:model')?.outputs?.manifest, model.manifest, 'built here: the same digest');

    // Garbage for every manifest: one warning, everything runs here, exit 0.
    proxy.mode = 'garbage';
    const d = checkout(proxy.host, a);
    const garbage = await graphRun(d, 'build', '--only', 'build,convert,test', '--report', 'report.json');
    assert.is(garbage.code, 0, garbage.stderr);
    const gw = warnings(garbage.stderr);
    assert.is(gw.length, 1, garbage.stderr);
    assert.match(gw[0], /^warning: registry unavailable \(.+\): continuing without it$/);
    assert.equal(ran(readReport(d)).filter((id) => !id.startsWith('test:')), ['build:bb', 'build:model', 'build:shell', 'convert:model']);
    proxy.mode = 'pass';

    // The registry down: one warning, everything runs here, exit 0.
    await proxy.stop();
    const e = checkout(proxy.host, a);
    const down = await graphRun(e, 'build', '--only', 'build,convert,test', '--report', 'report.json');
    assert.is(down.code, 0, down.stderr);
    assert.equal(warnings(down.stderr), [`warning: registry unavailable (cannot reach registry ${proxy.host}: ECONNREFUSED): continuing without it`]);
    assert.is(readReport(e).summary.ran, 8);
    assert.is(readReport(e).summary.failed, 0);
  } finally {
    await proxy.stop().catch(() => {});
    await registry.stop();
  }
});

test('--offline asks no registry: a fresh clone plans its builds to run', async () => {
  const registry = await startRegistry();
  const proxy = await startProxy(registry);
  try {
    const a = checkout(proxy.host);
    assert.is((await graphRun(a, 'build', 'image:shell')).code, 0);
    const b = checkout(proxy.host, a);
    const since = proxy.requests.length;
    const plan = await graphRun(b, 'plan', 'build:shell', '--offline');
    assert.is(plan.code, 0, plan.stderr);
    assert.match(plan.stdout, '2 nodes to run, 0 cached (2 nodes selected)\n');
    assert.is(proxy.requests.length, since);
    assert.match((await graphRun(b, 'plan', 'build:shell')).stdout, '0 nodes to run, 2 cached (2 nodes selected)\n');
  } finally {
    await proxy.stop().catch(() => {});
    await registry.stop();
  }
});

test('a registry that needs credentials: with the publish rule\'s credentials the builds come from it, never printing them; without, one warning and everything runs here', async () => {
  const registry = await startRegistry({ user: 'ci', password: 'pa55word' });
  const creds = { GRAPH_REGISTRY_USERNAME: 'ci', GRAPH_REGISTRY_PASSWORD: 'pa55word' };
  try {
    const a = checkout(registry.host);
    const first = await graphRunWith(creds, a, 'build', 'image:shell');
    assert.is(first.code, 0, first.stderr);
    const b = checkout(registry.host, a);
    const plan = await graphRunWith(creds, b, 'plan', 'build:shell', '--format', 'json');
    assert.is(plan.code, 0, plan.stderr);
    assert.equal((JSON.parse(plan.stdout).nodes as Array<{ id: string; status: string }>).map((n) => `${n.id} ${n.status}`), ['build:bb cached', 'build:shell cached']);
    assert.not.match(plan.stdout + plan.stderr, 'pa55word');

    const anonymous = await graphRun(checkout(registry.host, a), 'build', 'build:shell', '--report', 'report.json');
    assert.is(anonymous.code, 0, anonymous.stderr);
    assert.equal(warnings(anonymous.stderr), [
      `warning: registry unavailable (registry ${registry.host} denied access to zoo/shell (401, anonymously): log in (docker login) or set GRAPH_REGISTRY_USERNAME and GRAPH_REGISTRY_PASSWORD): continuing without it`,
    ]);
    assert.match(anonymous.stderr, 'ok: 2 ran, 0 cached, 0 failed, 0 skipped');
  } finally {
    await registry.stop();
  }
});

test.run();
