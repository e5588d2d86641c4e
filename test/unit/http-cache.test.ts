/**
 * The HTTP remote cache client against an in-process server (node:http) that answers as the test
 * says: 500s, 429, slow and truncated responses, tampered blobs, entries that name another key,
 * credentials. A cache never fails a build: every failure is a miss or a skipped upload with one
 * warning, and no warning shows a secret.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { hash } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { CachedResult } from '../../engine/cache/action-cache.js';
import { encodeActionResult, decodeActionResult, RECORD_PATH, RESULT_PATH } from '../../engine/cache/remote/action-result.js';
import { openRemoteCache } from '../../engine/cache/remote/config.js';
import { resolveEndpoint } from '../../engine/cache/remote/credentials.js';
import { HttpRemoteCache, type HttpCacheOptions } from '../../engine/cache/remote/http-cache.js';
import type { NodeId } from '../../engine/rule.js';
import { ContentStore } from '../../engine/cache/store.js';

const test = suite('http-cache');

const sha256 = (b: string | Uint8Array) => hash('sha256', b, 'hex');
const ID = 'build:a' as NodeId;

const servers: Array<ReturnType<typeof createServer>> = [];
// Closed after each test, also one that failed: a server left open keeps the test process alive.
test.after.each(() => {
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    s.close();
  }
});

type Handler = (req: IncomingMessage, res: ServerResponse, body: Buffer) => void | Promise<void>;

/** A server whose answers `handler` decides; `blobs` is a plain GET/PUT store behind it. */
async function server(handler: Handler = (_req, res) => void res.end()) {
  const blobs = new Map<string, Buffer>();
  const log: Array<{ method: string; url: string; headers: IncomingMessage['headers']; length: number }> = [];
  let current = handler;
  const srv = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      log.push({ method: req.method as string, url: req.url as string, headers: req.headers, length: body.length });
      void current(req, res, body);
    });
  });
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  servers.push(srv);
  const { port } = srv.address() as { port: number };
  /** The plain behaviour: GET/HEAD serve `blobs`, PUT stores. */
  const plain: Handler = (req, res, body) => {
    const key = (req.url as string).slice(1);
    if (req.method === 'PUT') {
      blobs.set(key, body);
      res.statusCode = 201;
      return void res.end();
    }
    const b = blobs.get(key);
    if (!b) {
      res.statusCode = 404;
      return void res.end();
    }
    res.setHeader('content-length', b.length);
    res.end(req.method === 'HEAD' ? undefined : b);
  };
  return {
    url: `http://127.0.0.1:${port}`,
    blobs,
    log,
    plain,
    set handler(h: Handler) {
      current = h;
    },
  };
}

function client(url: string, opts: Partial<HttpCacheOptions> = {}, env: NodeJS.ProcessEnv = {}) {
  const warnings: string[] = [];
  const cache = new HttpRemoteCache({ endpoint: resolveEndpoint(url, 'flag', { HOME: '/nonexistent', ...env }), mode: 'readwrite', warn: (m) => warnings.push(m), backoffMs: [1], idleTimeoutMs: 2000, ...opts });
  return { cache, warnings };
}

const store = () => new ContentStore(mkdtempSync(path.join(tmpdir(), 'graph-store-')));

/** A record, a result naming one artifact in `s`, uploaded by a well-behaved client. */
async function filled(url: string) {
  const s = store();
  const artifact = s.putBytes('layer bytes');
  const recordLine = JSON.stringify({ rule: 'build', n: Math.random() });
  const key = sha256(recordLine);
  const result: CachedResult = { outputs: { manifest: artifact.digest }, artifacts: [artifact.digest], duration_ms: 5 };
  await client(url).cache.upload(ID, key, recordLine, result, s);
  return { key, recordLine, result, artifact };
}

test('an upload puts every blob, then the entry; a fresh machine looks it up and downloads the artifact verified', async () => {
  const srv = await server();
  srv.handler = srv.plain;
  const { key, result, artifact } = await filled(srv.url);
  const puts = srv.log.filter((r) => r.method === 'PUT').map((r) => r.url);
  assert.is(puts.at(-1), `/ac/${key}`, 'the entry last');
  assert.ok(puts.includes(`/cas/${key}`), 'the key record is a CAS blob named by the key');
  assert.ok(puts.includes(`/cas/${artifact.digest.slice(7)}`));
  for (const r of srv.log) if (r.method === 'PUT') assert.is(Number(r.headers['content-length']), r.length, `Content-Length of ${r.url}`);
  const entry = decodeActionResult(srv.blobs.get(`ac/${key}`) as Buffer);
  assert.equal(entry.outputFiles.map((f) => f.path), [RECORD_PATH, RESULT_PATH, `graph/artifacts/sha256/${artifact.digest.slice(7)}`]);

  const { cache, warnings } = client(srv.url);
  const before = srv.log.length;
  const hit = await cache.lookup(ID, key);
  assert.equal(hit, result);
  assert.is(srv.log.length - before, 1, 'one request: the records are inlined');
  const s = store();
  assert.is(await cache.download(hit!.artifacts, s), true);
  assert.ok(s.has(artifact.digest));
  assert.equal(warnings, []);
});

test('status codes as Bazel reads them: 404 and 204 are misses without a warning', async () => {
  const srv = await server((_req, res) => {
    res.statusCode = 204;
    res.end();
  });
  const { cache, warnings } = client(srv.url);
  assert.is(await cache.lookup(ID, 'a'.repeat(64)), undefined);
  srv.handler = srv.plain;
  assert.is(await cache.lookup(ID, 'b'.repeat(64)), undefined);
  assert.equal(warnings, []);
  assert.is(srv.log.length, 2);
});

test('500 and 429 are retried; a server that keeps failing is one warning, then not asked again', async () => {
  const srv = await server();
  const { key, result } = await (async () => {
    srv.handler = srv.plain;
    return filled(srv.url);
  })();
  let failures = 2;
  srv.handler = (req, res, body) => {
    if (failures-- > 0) {
      res.statusCode = failures === 1 ? 500 : 429;
      if (res.statusCode === 429) res.setHeader('retry-after', '0');
      return void res.end();
    }
    return srv.plain(req, res, body);
  };
  const first = client(srv.url);
  assert.equal(await first.cache.lookup(ID, key), result, 'a hit after a 500 and a 429');
  assert.equal(first.warnings, []);

  srv.handler = (_req, res) => {
    res.statusCode = 503;
    res.end();
  };
  const { cache, warnings } = client(srv.url);
  const before = srv.log.length;
  assert.is(await cache.lookup(ID, key), undefined);
  assert.is(srv.log.length - before, 3, 'three attempts');
  assert.is(await cache.lookup(ID, 'c'.repeat(64)), undefined);
  assert.is(await cache.download([`sha256:${'d'.repeat(64)}`], store()), false);
  await cache.upload(ID, key, 'x', result, store());
  assert.is(srv.log.length - before, 3, 'nothing more is sent once the server failed');
  assert.equal(warnings, [`remote cache ${srv.url} unavailable (HTTP 503): continuing without it`]);
});

test('a slow server times out and is retried; one that stays slow is a miss with one warning', async () => {
  const srv = await server();
  srv.handler = srv.plain;
  const { key, result } = await filled(srv.url);
  let slow = 1;
  srv.handler = (req, res, body) => {
    if (slow-- > 0) return void setTimeout(() => srv.plain(req, res, body), 500);
    return srv.plain(req, res, body);
  };
  const quick = client(srv.url, { idleTimeoutMs: 100 });
  assert.equal(await quick.cache.lookup(ID, key), result, 'the second attempt answers in time');
  assert.equal(quick.warnings, []);

  srv.handler = (req, res, body) => void setTimeout(() => srv.plain(req, res, body), 500);
  const { cache, warnings } = client(srv.url, { idleTimeoutMs: 100 });
  const t0 = Date.now();
  assert.is(await cache.lookup(ID, key), undefined);
  assert.ok(Date.now() - t0 < 1000, "three attempts of 100 ms, not the server's pace");
  assert.equal(warnings, [`remote cache ${srv.url} unavailable (no answer within 100 ms (gave up after 3 attempts)): continuing without it`]);
});

test('a truncated body is retried, and never stored', async () => {
  const srv = await server();
  srv.handler = srv.plain;
  const { artifact } = await filled(srv.url);
  const hex = artifact.digest.slice(7);
  let cut = 1;
  srv.handler = (req, res, body) => {
    if (req.url === `/cas/${hex}` && cut-- > 0) {
      const b = srv.blobs.get(`cas/${hex}`) as Buffer;
      res.setHeader('content-length', b.length);
      res.write(b.subarray(0, 4));
      return void setTimeout(() => res.destroy(), 10);
    }
    return srv.plain(req, res, body);
  };
  const { cache, warnings } = client(srv.url);
  const s = store();
  assert.is(await cache.download([artifact.digest], s), true);
  assert.ok(s.has(artifact.digest));
  assert.equal(warnings, []);
  assert.is(srv.log.filter((r) => r.url === `/cas/${hex}` && r.method === 'GET').length, 2);
});

test('a tampered blob is not stored: false, one warning naming it', async () => {
  const srv = await server();
  srv.handler = srv.plain;
  const { artifact } = await filled(srv.url);
  srv.blobs.set(`cas/${artifact.digest.slice(7)}`, Buffer.from('layer bytez'));
  const { cache, warnings } = client(srv.url);
  const s = store();
  assert.is(await cache.download([artifact.digest], s), false);
  assert.is(s.has(artifact.digest), false);
  assert.equal(warnings, [`remote cache ${srv.url}: blob ${artifact.digest} not used: it did not match its digest (tampered with or damaged on the server)`]);
});

test("an entry whose key record is another action's is not used, with one warning", async () => {
  const srv = await server();
  srv.handler = srv.plain;
  const one = await filled(srv.url);
  const other = await filled(srv.url);
  srv.blobs.set(`ac/${one.key}`, srv.blobs.get(`ac/${other.key}`) as Buffer);
  // Inlined contents that do not match their digest are caught too.
  const forged = encodeActionResult({ outputFiles: [{ path: RECORD_PATH, digest: { hash: other.key, size: 3 }, contents: Buffer.from('abc') }] });
  srv.blobs.set(`ac/${other.key}`, Buffer.from(forged));
  const { cache, warnings } = client(srv.url);
  assert.is(await cache.lookup(ID, one.key), undefined);
  assert.is(await cache.lookup(ID, other.key), undefined);
  assert.equal(warnings, [
    `remote cache ${srv.url}: entry for build:a (key ${one.key.slice(0, 12)}) not used: its entry holds the key record of another action (sha256:${other.key.slice(0, 12)})`,
    `remote cache ${srv.url}: entry for build:a (key ${other.key.slice(0, 12)}) not used: the inlined graph/key-record.json does not match its digest`,
  ]);
  srv.blobs.set(`ac/${one.key}`, Buffer.from('not a protobuf at all'));
  assert.is(await cache.lookup(ID, one.key), undefined);
  assert.match(warnings[2], 'not used: its entry is not an ActionResult graph wrote');
});

test('read mode sends no PUT; a server that refuses writes stops uploads with one warning', async () => {
  const srv = await server();
  srv.handler = srv.plain;
  const s = store();
  const a = s.putBytes('blob');
  const result: CachedResult = { outputs: {}, artifacts: [a.digest], duration_ms: 1 };
  const reader = client(srv.url, { mode: 'read' });
  await reader.cache.upload(ID, sha256('r'), 'r', result, s);
  assert.is(srv.log.length, 0);

  srv.handler = (req, res, body) => {
    if (req.method === 'PUT') {
      res.statusCode = 403;
      return void res.end();
    }
    return srv.plain(req, res, body);
  };
  const { cache, warnings } = client(srv.url);
  await cache.upload(ID, sha256('r'), 'r', result, s);
  const puts = srv.log.filter((r) => r.method === 'PUT').length;
  await cache.upload(ID, sha256('q'), 'q', result, s);
  assert.is(srv.log.filter((r) => r.method === 'PUT').length, puts, 'no PUT after the refusal');
  assert.equal(warnings, [`remote cache ${srv.url}: uploads refused (HTTP 403); nothing more is uploaded in this run`]);
});

test('large blobs are asked for with HEAD before a PUT, and not sent when the server has them', async () => {
  const srv = await server();
  srv.handler = srv.plain;
  const s = store();
  const big = s.putBytes(Buffer.alloc(4096, 7));
  const result: CachedResult = { outputs: {}, artifacts: [big.digest], duration_ms: 1 };
  await client(srv.url, { headThresholdBytes: 1024 }).cache.upload(ID, sha256('k1'), 'k1', result, s);
  await client(srv.url, { headThresholdBytes: 1024 }).cache.upload(ID, sha256('k2'), 'k2', result, s);
  const forBig = srv.log.filter((r) => r.url === `/cas/${big.digest.slice(7)}`);
  assert.equal(forBig.map((r) => r.method), ['HEAD', 'PUT', 'HEAD']);
  // Streamed from the store's file, with its length given, never chunked.
  assert.is(forBig[1].headers['content-length'], '4096');
  assert.is(forBig[1].headers['transfer-encoding'], undefined);
  assert.is(forBig[1].length, 4096);
});

test('credentials: from the URL, the header variable or netrc; sent, never shown', async () => {
  const srv = await server((req, res) => {
    res.statusCode = 500;
    res.end();
  });
  const u = new URL(srv.url);
  const withUser = client(`http://alice:s3cret@${u.host}/cache/`);
  assert.is(withUser.cache.name, `http://alice:***@${u.host}/cache`);
  await withUser.cache.lookup(ID, 'a'.repeat(64));
  assert.is(srv.log[0].url, `/cache/ac/${'a'.repeat(64)}`);
  assert.is(srv.log[0].headers.authorization, `Basic ${Buffer.from('alice:s3cret').toString('base64')}`);
  assert.equal(withUser.warnings, [`remote cache http://alice:***@${u.host}/cache unavailable (HTTP 500): continuing without it`]);

  const header = client(srv.url, {}, { GRAPH_REMOTE_CACHE_HEADER: 'Authorization: Bearer tok-123' });
  await header.cache.lookup(ID, 'a'.repeat(64));
  assert.is(srv.log.at(-1)?.headers.authorization, 'Bearer tok-123');
  assert.not.match(header.warnings.join('\n'), 'tok-123');
  // Not to a URL from images.yaml: a change to the workspace must not redirect a token.
  assert.equal(resolveEndpoint(srv.url, 'settings', { GRAPH_REMOTE_CACHE_HEADER: 'Authorization: Bearer tok-123', HOME: '/nonexistent' }).headers, {});

  const netrc = path.join(mkdtempSync(path.join(tmpdir(), 'graph-netrc-')), 'netrc');
  writeFileSync(netrc, `machine other login x password y\nmachine ${u.hostname} login bob password hunter22\n`);
  const fromNetrc = resolveEndpoint(srv.url, 'settings', { NETRC: netrc });
  assert.equal(fromNetrc.headers, { authorization: `Basic ${Buffer.from('bob:hunter22').toString('base64')}` });
  assert.is(fromNetrc.redact('failed: hunter22 at Basic Ym9iOmh1bnRlcjIy'), 'failed: *** at ***');
});

test('an upload whose artifact is gone from the local store is skipped, and the server stays in use', async () => {
  const srv = await server();
  srv.handler = srv.plain;
  const gone = `sha256:${'e'.repeat(64)}`;
  const { cache, warnings } = client(srv.url);
  await cache.upload(ID, sha256('g'), 'g', { outputs: {}, artifacts: [gone], duration_ms: 1 }, store());
  assert.equal(warnings, [`remote cache ${srv.url}: upload of build:a skipped: ${gone} is not in the local store`]);
  assert.is(srv.log.length, 0);
  const { key, result } = await filled(srv.url);
  assert.equal(await cache.lookup(ID, key), result, 'still asked');
});

test('which cache: the flag, else GRAPH_REMOTE_CACHE (empty: none), else settings.remote_cache; the mode checked', async () => {
  const open = async (given: Parameters<typeof openRemoteCache>[0], env: NodeJS.ProcessEnv = {}) => (await openRemoteCache(given, { HOME: '/nonexistent', ...env }, () => {}))?.name;
  const problem = (given: Parameters<typeof openRemoteCache>[0], env: NodeJS.ProcessEnv = {}) => open(given, env).then(() => 'opened', (e: Error) => e.message);
  assert.is(await open({ flag: 'http://flag/', settings: 'http://settings' }, { GRAPH_REMOTE_CACHE: 'http://env' }), 'http://flag');
  assert.is(await open({ settings: 'http://settings' }, { GRAPH_REMOTE_CACHE: 'http://env' }), 'http://env');
  assert.is(await open({ settings: 'http://settings' }, { GRAPH_REMOTE_CACHE: '' }), undefined);
  assert.is(await open({ settings: 'http://settings/' }), 'http://settings');
  assert.is(await open({}), undefined);
  assert.match(await problem({ flag: 'http://x', mode: 'write' }), /unknown remote cache mode 'write' \(one of: read, readwrite\)/);
  assert.match(await problem({ flag: 'http://x' }, { GRAPH_REMOTE_CACHE_MODE: 'rw' }), /unknown remote cache mode 'rw'/);
  assert.match(await problem({ flag: 'http://x' }, { GRAPH_REMOTE_CACHE_HEADER: 'no colon here' }), /GRAPH_REMOTE_CACHE_HEADER must be `Name: value`/);
});

test.run();
