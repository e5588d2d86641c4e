/**
 * Pushing to real registries (Debian's docker-registry on 127.0.0.1), judged by skopeo. A small
 * node:http proxy in front of a registry counts requests and injects faults: the registry behind
 * it is real, so every answer that is not a fault is the registry's own.
 */
import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { ImageReference } from '../engine/validate/reference.js';
import { ContentStore } from '../engine/cache/store.js';
import { composeImage, type StoredImage } from '../rules/oci/image.js';
import { entriesForCopy, writeLayer } from '../rules/oci/layer.js';
import { RegistryError } from '../rules/registry/client.js';
import { MEDIA_TYPE_SIF_CONFIG, MEDIA_TYPE_SIF_LAYER, pushArtifact, pushImage, remoteDigest } from '../rules/registry/push.js';
import { SifError, writeSif } from '../rules/sif/sif.js';
import { freePort, startRegistry } from './helpers.js';

const test = suite('push');
const tmp = (prefix = 'graph-push-') => mkdtempSync(path.join(tmpdir(), prefix));
const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const ref = (host: string, repository: string, tag = 'v1'): ImageReference => ({ registry: host, repository, tag });
const OCI_ACCEPT = 'application/vnd.oci.image.manifest.v1+json';

/** An image built by the project's own layer and image code: one layer per `layers` entry. */
async function buildImage(layers: Array<Record<string, string | Buffer>>, store = new ContentStore(tmp())): Promise<{ store: ContentStore; image: StoredImage }> {
  const blobs = [];
  for (const [i, files] of layers.entries()) {
    const src = tmp();
    for (const [rel, content] of Object.entries(files)) {
      mkdirSync(path.dirname(path.join(src, rel)), { recursive: true });
      writeFileSync(path.join(src, rel), content);
    }
    const layer = await writeLayer(entriesForCopy(src, `/opt/l${i}`), store, { level: 1 });
    blobs.push({ descriptor: { mediaType: layer.mediaType, digest: layer.digest, size: layer.size }, diffId: layer.diffId, createdBy: `layer ${i}` });
  }
  return { store, image: composeImage(store, undefined, blobs, { env: { A: '1' }, labels: {} }, 0) };
}

const skopeo = (...args: string[]) => execFileSync('skopeo', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

/** What a fault hook may do with a request: answer it itself, or forward it and then lie. */
type Fault = { status: number; headers?: Record<string, string>; afterForwarding?: boolean } | undefined;

interface Proxy {
  readonly host: string;
  /** `METHOD path` of every request, in arrival order. */
  readonly requests: string[];
  close(): void;
}

/**
 * A proxy to `upstream`. `fault` may answer a request instead of the registry (its body drained
 * first); `onAnswer` runs before a forwarded answer reaches the client. When the upstream is gone,
 * the client's connection is dropped, as by a dead registry.
 */
async function startProxy(
  upstream: string,
  fault: (method: string, url: string) => Fault = () => undefined,
  onAnswer: (method: string, url: string, status: number) => Promise<void> = async () => undefined,
): Promise<Proxy> {
  const requests: string[] = [];
  const [upHost, upPort] = upstream.split(':');
  const server = http.createServer((req, res) => {
    const method = req.method ?? 'GET';
    const url = req.url ?? '/';
    requests.push(`${method} ${url}`);
    const answer = fault(method, url);
    const forward = (done: (status: number, headers: http.IncomingHttpHeaders, body: http.IncomingMessage) => void) => {
      const up = http.request({ host: upHost, port: Number(upPort), method, path: url, headers: req.headers }, (upRes) => done(upRes.statusCode ?? 502, upRes.headers, upRes));
      up.on('error', () => req.socket.destroy());
      req.pipe(up);
    };
    if (answer && !answer.afterForwarding) {
      req.resume();
      req.on('end', () => res.writeHead(answer.status, answer.headers ?? {}).end());
      return;
    }
    forward((status, headers, body) => {
      if (answer) {
        body.resume();
        body.on('end', () => res.writeHead(answer.status, answer.headers ?? {}).end());
        return;
      }
      onAnswer(method, url, status).then(() => {
        res.writeHead(status, headers);
        body.pipe(res);
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    host: `127.0.0.1:${(server.address() as { port: number }).port}`,
    requests,
    close: () => {
      server.close();
      server.closeAllConnections();
    },
  };
}

/** Requests with digests as D and upload sessions (uuid and `_state`) as ID, for comparing sequences. */
const shape = (requests: string[]) =>
  requests.map((r) => r.replace(/sha256:[a-f0-9]{64}/g, 'D').replace(/uploads\/[0-9a-f-]{36}\S*/, (m) => (m.includes('digest=D') ? 'uploads/ID?digest=D' : 'uploads/ID')));

/** A second registry process on `dataDir` (the first one's storage), on a new port. */
async function serveStorage(dataDir: string): Promise<{ host: string; stop(): void }> {
  const dir = tmp('graph-registry-again-');
  const port = await freePort();
  writeFileSync(path.join(dir, 'config.yml'), `version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: ${dataDir}\nhttp:\n  addr: 127.0.0.1:${port}\n`);
  const child = spawn('docker-registry', ['serve', path.join(dir, 'config.yml')], { stdio: 'ignore' });
  const host = `127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(`http://${host}/v2/`)).ok) break;
    } catch {
      // not listening yet
    }
    if (i > 100) throw new Error('docker-registry did not start again');
    await new Promise((r) => setTimeout(r, 50));
  }
  return { host, stop: () => child.kill('SIGTERM') };
}

const headStatus = async (url: string) => (await fetch(url, { method: 'HEAD', headers: { accept: OCI_ACCEPT } })).status;

test('push: skopeo reads it back; a re-push sends only HEADs; another repository mounts', async () => {
  const registry = await startRegistry();
  const proxy = await startProxy(registry.host);
  try {
    const { store, image } = await buildImage([{ 'a.txt': 'alpha\n' }, { 'b.bin': randomBytes(50_000) }]);
    const target = ref(proxy.host, 'zoo/img');
    assert.is(await remoteDigest(target), undefined);
    const lines: string[] = [];
    const first = await pushImage(store, image, target, { log: (l) => lines.push(l), concurrency: 1 });
    const blobBytes = [image.manifest.config, ...image.manifest.layers].reduce((n, d) => n + d.size, 0);
    assert.equal(first, { digest: image.manifestDescriptor.digest, pushedBlobs: 3, skippedBlobs: 0, mountedBlobs: 0, bytesSent: blobBytes + image.manifestDescriptor.size });
    assert.equal(shape(proxy.requests.slice(1)), [
      ...Array(3).fill(['HEAD /v2/zoo/img/blobs/D', 'POST /v2/zoo/img/blobs/uploads/', 'PUT /v2/zoo/img/blobs/uploads/ID?digest=D']).flat(),
      'HEAD /v2/zoo/img/manifests/v1',
      'PUT /v2/zoo/img/manifests/v1',
    ]);
    assert.is(lines.length, 4);
    assert.is(await remoteDigest(target), image.manifestDescriptor.digest);

    const inspect = JSON.parse(skopeo('inspect', '--tls-verify=false', `docker://${registry.host}/zoo/img:v1`));
    assert.is(inspect.Digest, image.manifestDescriptor.digest);
    assert.equal(inspect.Layers, image.manifest.layers.map((l) => l.digest));
    const layout = path.join(tmp(), 'copy');
    skopeo('copy', '--quiet', '--src-tls-verify=false', `docker://${registry.host}/zoo/img:v1`, `oci:${layout}:v1`);
    const index = JSON.parse(readFileSync(path.join(layout, 'index.json'), 'utf8'));
    assert.is(index.manifests[0].digest, image.manifestDescriptor.digest);
    for (const d of [image.manifestDescriptor, image.manifest.config, ...image.manifest.layers]) {
      assert.ok(readFileSync(path.join(layout, 'blobs/sha256', d.digest.slice(7))).equals(readFileSync(store.pathOf(d.digest))), `${d.digest} round-trips`);
    }

    proxy.requests.length = 0;
    const again = await pushImage(store, image, target);
    assert.equal(again, { digest: image.manifestDescriptor.digest, pushedBlobs: 0, skippedBlobs: 3, mountedBlobs: 0, bytesSent: 0 });
    assert.equal(proxy.requests.map((r) => r.split(' ')[0]), ['HEAD', 'HEAD', 'HEAD', 'HEAD']);

    proxy.requests.length = 0;
    const mounted = await pushImage(store, image, ref(proxy.host, 'zoo/copy'), { mountFrom: ['zoo/nothing-here', 'zoo/img'], concurrency: 1 });
    assert.equal({ ...mounted, bytesSent: 0 }, { digest: image.manifestDescriptor.digest, pushedBlobs: 0, skippedBlobs: 0, mountedBlobs: 3, bytesSent: 0 });
    assert.is(mounted.bytesSent, image.manifestDescriptor.size);
    assert.equal(shape(proxy.requests).slice(0, 4), ['HEAD /v2/zoo/copy/blobs/D', 'HEAD /v2/zoo/nothing-here/blobs/D', 'HEAD /v2/zoo/img/blobs/D', 'POST /v2/zoo/copy/blobs/uploads/?mount=D&from=zoo/img']);
    assert.not.ok(proxy.requests.some((r) => r.startsWith('PUT /v2/zoo/copy/blobs') || r.startsWith('PATCH')), 'nothing uploaded');
    assert.is(JSON.parse(skopeo('inspect', '--tls-verify=false', `docker://${registry.host}/zoo/copy:v1`)).Digest, image.manifestDescriptor.digest);
  } finally {
    proxy.close();
    await registry.stop();
  }
});

test('a mount the registry declines (202) falls back to an upload into the session it opened', async () => {
  const registry = await startRegistry();
  try {
    const { store, image } = await buildImage([{ 'a.txt': 'mount me\n' }]);
    await pushImage(store, image, ref(registry.host, 'zoo/img'));
    // The proxy asks the registry to mount from a repository without the blob: it answers 202.
    const rewrite = await startProxyRewriting(registry.host, (url) => url.replace('from=zoo/img', 'from=zoo/elsewhere'));
    try {
      const r = await pushImage(store, image, ref(rewrite.host, 'zoo/third'), { mountFrom: ['zoo/img'], concurrency: 1 });
      assert.equal({ ...r, bytesSent: 0 }, { digest: image.manifestDescriptor.digest, pushedBlobs: 2, skippedBlobs: 0, mountedBlobs: 0, bytesSent: 0 });
      assert.equal(shape(rewrite.requests).slice(0, 4), ['HEAD /v2/zoo/third/blobs/D', 'HEAD /v2/zoo/img/blobs/D', 'POST /v2/zoo/third/blobs/uploads/?mount=D&from=zoo/img', 'PUT /v2/zoo/third/blobs/uploads/ID?digest=D']);
      assert.is(JSON.parse(skopeo('inspect', '--tls-verify=false', `docker://${registry.host}/zoo/third:v1`)).Digest, image.manifestDescriptor.digest);
    } finally {
      rewrite.close();
    }
  } finally {
    await registry.stop();
  }
});

/** A proxy that rewrites request paths on the way to the registry (records the original). */
async function startProxyRewriting(upstream: string, rewrite: (url: string) => string): Promise<Proxy> {
  const requests: string[] = [];
  const [upHost, upPort] = upstream.split(':');
  const server = http.createServer((req, res) => {
    requests.push(`${req.method} ${req.url}`);
    const up = http.request({ host: upHost, port: Number(upPort), method: req.method, path: rewrite(req.url ?? '/'), headers: req.headers }, (upRes) => {
      res.writeHead(upRes.statusCode ?? 502, upRes.headers);
      upRes.pipe(res);
    });
    req.pipe(up);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { host: `127.0.0.1:${(server.address() as { port: number }).port}`, requests, close: () => (server.close(), server.closeAllConnections()) };
}

test('a blob larger than chunkSize goes in PATCHes of chunkSize and verifies', async () => {
  const registry = await startRegistry();
  const proxy = await startProxy(registry.host);
  try {
    const { store, image } = await buildImage([{ 'noise.bin': randomBytes(3 * 1024 * 1024) }]);
    const big = image.manifest.layers[0];
    const MiB = 1024 * 1024;
    assert.ok(big.size > 3 * MiB);
    const r = await pushImage(store, image, ref(proxy.host, 'zoo/big'), { chunkSize: MiB });
    assert.is(r.pushedBlobs, 2);
    const patches = proxy.requests.filter((x) => x.startsWith('PATCH'));
    assert.is(patches.length, Math.ceil(big.size / MiB));
    const puts = proxy.requests.filter((x) => x.startsWith('PUT') && x.includes(big.digest));
    assert.is(puts.length, 1);
    const layout = path.join(tmp(), 'copy');
    skopeo('copy', '--quiet', '--src-tls-verify=false', `docker://${registry.host}/zoo/big:v1`, `oci:${layout}:v1`);
    assert.ok(readFileSync(path.join(layout, 'blobs/sha256', big.digest.slice(7))).equals(readFileSync(store.pathOf(big.digest))));
  } finally {
    proxy.close();
    await registry.stop();
  }
});

test('basic auth from DOCKER_CONFIG works; wrong credentials fail naming registry and repository, not the password', async () => {
  const registry = await startRegistry({ user: 'zoo', password: 's3cret-pw' });
  const saved = process.env.DOCKER_CONFIG;
  try {
    const { store, image } = await buildImage([{ 'a.txt': 'private\n' }]);
    const config = (user: string, password: string) => {
      const dir = tmp('graph-docker-');
      writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ auths: { [registry.host]: { auth: Buffer.from(`${user}:${password}`).toString('base64') } } }));
      return dir;
    };
    process.env.DOCKER_CONFIG = config('zoo', 's3cret-pw');
    const r = await pushImage(store, image, ref(registry.host, 'zoo/private'));
    assert.is(r.pushedBlobs, 2);
    assert.is(await remoteDigest(ref(registry.host, 'zoo/private')), image.manifestDescriptor.digest);
    assert.is(JSON.parse(skopeo('inspect', '--tls-verify=false', '--creds', 'zoo:s3cret-pw', `docker://${registry.host}/zoo/private:v1`)).Digest, image.manifestDescriptor.digest);

    process.env.DOCKER_CONFIG = config('zoo', 'wrong-pw');
    const err = await pushImage(store, image, ref(registry.host, 'zoo/private', 'v2'), { concurrency: 1 }).then(() => undefined, (e: Error) => e);
    assert.instance(err, RegistryError);
    assert.is(
      err!.message,
      `registry ${registry.host} denied access to zoo/private (401, with the configured credentials): check their permissions, while checking for blob ${image.manifest.config.digest} in zoo/private`,
    );
    assert.not.match(err!.message, 'wrong-pw');
    assert.not.match(err!.message, Buffer.from('zoo:wrong-pw').toString('base64'));
  } finally {
    if (saved === undefined) delete process.env.DOCKER_CONFIG;
    else process.env.DOCKER_CONFIG = saved;
    await registry.stop();
  }
});

test('faults: 500s and a 429 on uploads and the manifest are retried; the tag appears only at the end', async () => {
  const registry = await startRegistry();
  const { store, image } = await buildImage([{ 'a.txt': 'retry\n' }, { 'b.txt': 'again\n' }]);
  let uploadFaults = 0;
  let manifestFaults = 0;
  // When the first manifest PUT arrives (it is answered 503): every blob in, the tag still absent?
  let beforeManifest: Promise<number[]> | undefined;
  const proxy = await startProxy(registry.host, (method, url) => {
    if (url.includes('/blobs/uploads/') && uploadFaults < 3) {
      uploadFaults++;
      return uploadFaults === 2 ? { status: 429, headers: { 'retry-after': '1' } } : { status: 500 };
    }
    if (method === 'PUT' && url.includes('/manifests/') && manifestFaults < 2) {
      const direct = `http://${registry.host}/v2/zoo/img`;
      beforeManifest ??= Promise.all([
        headStatus(`${direct}/manifests/v1`),
        ...[image.manifest.config, ...image.manifest.layers].map((d) => headStatus(`${direct}/blobs/${d.digest}`)),
      ]);
      manifestFaults++;
      return { status: 503 };
    }
    return undefined;
  });
  try {
    const started = Date.now();
    const r = await pushImage(store, image, ref(proxy.host, 'zoo/img'));
    assert.is(r.pushedBlobs, 3);
    assert.is(uploadFaults, 3);
    assert.is(manifestFaults, 2);
    assert.ok(Date.now() - started >= 1000, 'Retry-After: 1 was honoured');
    assert.equal(await beforeManifest, [404, 200, 200, 200]);
    assert.is(JSON.parse(skopeo('inspect', '--tls-verify=false', `docker://${registry.host}/zoo/img:v1`)).Digest, image.manifestDescriptor.digest);
  } finally {
    proxy.close();
    await registry.stop();
  }
});

test('faults: a chunk the registry took but whose answer was lost: the blob starts over and verifies', async () => {
  const registry = await startRegistry();
  const { store, image } = await buildImage([{ 'noise.bin': randomBytes(2 * 1024 * 1024) }]);
  let patches = 0;
  const proxy = await startProxy(registry.host, (method) => (method === 'PATCH' && ++patches === 2 ? { status: 500, afterForwarding: true } : undefined));
  try {
    const lines: string[] = [];
    const r = await pushImage(store, image, ref(proxy.host, 'zoo/img'), { chunkSize: 1024 * 1024, log: (l) => lines.push(l) });
    assert.is(r.pushedBlobs, 2);
    assert.ok(lines.some((l) => /starting over$/.test(l)), lines.join('\n'));
    assert.is(proxy.requests.filter((x) => x.startsWith('POST')).length, 3, 'one new session for the big blob');
    const layout = path.join(tmp(), 'copy');
    skopeo('copy', '--quiet', '--src-tls-verify=false', `docker://${registry.host}/zoo/img:v1`, `oci:${layout}:v1`);
    const big = image.manifest.layers[0].digest;
    assert.ok(readFileSync(path.join(layout, 'blobs/sha256', big.slice(7))).equals(readFileSync(store.pathOf(big))));
  } finally {
    proxy.close();
    await registry.stop();
  }
});

test('faults: a registry stopped mid-push fails the push and leaves no tag; a second push succeeds', async () => {
  const registry = await startRegistry();
  const { store, image } = await buildImage([{ 'a.txt': 'one\n' }, { 'b.txt': 'two\n' }]);
  let stopped: Promise<void> | undefined;
  let proxy: Proxy | undefined;
  proxy = await startProxy(registry.host, () => undefined, async (method, url, status) => {
    if (method === 'PUT' && url.includes('digest=') && status === 201 && !stopped) {
      // The first blob is in: the registry dies, and with it everything at its address.
      stopped = registry.stop();
      await stopped;
      setImmediate(() => proxy!.close());
    }
  });
  let again: { host: string; stop(): void } | undefined;
  try {
    const err = await pushImage(store, image, ref(proxy.host, 'zoo/img'), { concurrency: 1 }).then(() => undefined, (e: Error) => e);
    assert.instance(err, RegistryError);
    assert.match(err!.message, new RegExp(`^cannot reach registry ${proxy.host}: \\w+, while (checking for|starting the upload of) blob sha256:[a-f0-9]{64} (in|to) zoo/img$`));
    assert.not.ok(proxy.requests.some((r) => r.includes('/manifests/')), 'no manifest was put');

    again = await serveStorage(registry.dataDir);
    assert.is(await headStatus(`http://${again.host}/v2/zoo/img/manifests/v1`), 404);
    const r = await pushImage(store, image, ref(again.host, 'zoo/img'));
    assert.equal([r.skippedBlobs, r.pushedBlobs], [1, 2]);
    assert.is(await remoteDigest(ref(again.host, 'zoo/img')), image.manifestDescriptor.digest);
  } finally {
    proxy.close();
    again?.stop();
    // Once: the helper's stop() waits for an 'exit' that has already happened.
    await (stopped ?? registry.stop());
  }
});

test('a blob whose bytes the registry rejects (400 DIGEST_INVALID) fails clearly; no tag', async () => {
  const registry = await startRegistry();
  try {
    const { store, image } = await buildImage([{ 'a.txt': 'corrupt me\n' }]);
    const layer = image.manifest.layers[0].digest;
    const bytes = readFileSync(store.pathOf(layer));
    bytes[bytes.length - 1] ^= 0xff;
    writeFileSync(store.pathOf(layer), bytes);
    const err = await pushImage(store, image, ref(registry.host, 'zoo/bad'), { concurrency: 1 }).then(() => undefined, (e: Error) => e);
    assert.instance(err, RegistryError);
    assert.is((err as RegistryError).status, 400);
    assert.is(err!.message, `registry ${registry.host}, repository zoo/bad: PUT of blob ${layer} answered 400 DIGEST_INVALID: provided digest did not match uploaded content`);
    assert.is(await remoteDigest(ref(registry.host, 'zoo/bad')), undefined);
  } finally {
    await registry.stop();
  }
});

test('pushArtifact: a SIF as an ORAS artifact in apptainer\'s manifest shape; the blob comes back whole', async () => {
  const registry = await startRegistry();
  try {
    const dir = tmp();
    mkdirSync(path.join(dir, 'root'));
    writeFileSync(path.join(dir, 'root/hello.txt'), 'hello\n');
    execFileSync('mksquashfs', [path.join(dir, 'root'), path.join(dir, 'root.sqfs'), '-noappend', '-comp', 'gzip', '-all-root', '-mkfs-time', '0', '-all-time', '0', '-quiet'], { stdio: 'ignore' });
    const sif = path.join(dir, 'small.sif');
    await writeSif({ partitionFile: path.join(dir, 'root.sqfs'), outFile: sif, arch: 'amd64' });
    const store = new ContentStore(tmp());
    const target = ref(registry.host, 'zoo/small', 'v1-sif');
    assert.is(await remoteDigest(target), undefined);
    const digest = await pushArtifact(store, sif, target);
    assert.is(await remoteDigest(target), digest);

    const raw = skopeo('inspect', '--raw', '--tls-verify=false', `docker://${registry.host}/zoo/small:v1-sif`);
    assert.is(sha(Buffer.from(raw)), digest);
    const sifBytes = readFileSync(sif);
    assert.equal(JSON.parse(raw), {
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: MEDIA_TYPE_SIF_CONFIG, digest: 'sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a', size: 2, data: 'e30=' },
      layers: [{ mediaType: MEDIA_TYPE_SIF_LAYER, digest: sha(sifBytes), size: sifBytes.length, annotations: { 'org.opencontainers.image.title': 'small.sif' } }],
    });
    const blob = Buffer.from(await (await fetch(`http://${registry.host}/v2/zoo/small/blobs/${sha(sifBytes)}`)).arrayBuffer());
    assert.ok(blob.equals(sifBytes));

    writeFileSync(path.join(dir, 'not.sif'), 'just text\n');
    const err = await pushArtifact(store, path.join(dir, 'not.sif'), ref(registry.host, 'zoo/small', 'bad')).then(() => undefined, (e: Error) => e);
    assert.instance(err, SifError);
  } finally {
    await registry.stop();
  }
});

test.run();
