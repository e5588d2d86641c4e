/**
 * The registry as source of truth, its decisions with fakes (the real registry has its end-to-end
 * test, test/registry-source.test.ts): which lock entries and registry answers make a claim
 * (rules/registry/source.ts), one warning for a registry that fails or a blob that lies
 * (`SourceTier`), tiers in order (`TieredRemote`), and the plan asking the registry after the
 * local cache, where only its own hits spare what is upstream of them.
 */
import { createHash } from 'node:crypto';
import { cpSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { ActionCache, type CachedResult } from '../../engine/cache/action-cache.js';
import { SourceDigestError, SourceTier, tieredRemote, type ResultSource, type SourceClaim } from '../../engine/cache/registry-source.js';
import { materializeNeeded } from '../../engine/cache/remote/materialize.js';
import { ContentStore } from '../../engine/cache/store.js';
import { FileDigester } from '../../engine/key/files.js';
import { resolveTools } from '../../engine/key/tools.js';
import { checkRemote, planBuild } from '../../engine/plan.js';
import type { NodeId } from '../../engine/rule.js';
import { openWorkspace } from '../../engine/workspace.js';
import { publishedSource, type RegistryAccess } from '../../rules/registry/source.js';
import { FakeRemoteCache, FakeRunner, fakeRules, runEngine, SMALL_ZOO, workspace } from '../helpers.js';

const test = suite('registry-source');

const sha = (b: string | Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const id = (s: string) => s as NodeId;
const KEY = 'a'.repeat(64);
const OTHER = 'b'.repeat(64);
const CONVERT_KEY = 'c'.repeat(64);

/** A fake registry: manifests and blobs by host/repository/reference; every request logged. */
class FakeRegistry implements RegistryAccess {
  readonly manifests = new Map<string, Buffer>();
  readonly blobs = new Map<string, Buffer>();
  readonly requests: string[] = [];
  failure?: Error;

  async manifest(host: string, repository: string, reference: string) {
    this.requests.push(`manifest ${host}/${repository}@${reference}`);
    if (this.failure) throw this.failure;
    const bytes = this.manifests.get(`${host}/${repository}@${reference}`);
    return bytes ? { bytes, digest: sha(bytes) } : undefined;
  }

  async blob(host: string, repository: string, digest: string) {
    this.requests.push(`blob ${host}/${repository}@${digest}`);
    if (this.failure) throw this.failure;
    const bytes = this.blobs.get(digest);
    if (!bytes) throw new Error(`no blob ${digest}`);
    return Readable.from([bytes]);
  }
}

const config = Buffer.from('{"architecture":"amd64"}');
const layer = Buffer.from('layer bytes');
const sifBytes = Buffer.from('a SIF file');

function imageManifest(annotations?: Record<string, string>): Buffer {
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(config), size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha(layer), size: layer.length }],
      ...(annotations ? { annotations } : {}),
    }),
  );
}

function sifManifest(digest = sha(sifBytes), size = sifBytes.length): Buffer {
  return Buffer.from(JSON.stringify({ schemaVersion: 2, config: { digest: sha('{}'), size: 2 }, layers: [{ mediaType: 'application/vnd.sylabs.sif.layer.v1.sif', digest, size }] }));
}

/** A workspace root with a published.lock.json for image `m` (pushed to reg.test/zoo/m:v1 and its SIF). */
function lockDir(manifest: Buffer, extra: Record<string, unknown> = {}): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'graph-lock-'));
  const entry = {
    manifest: sha(manifest),
    references: ['reg.test/zoo/m:v1'],
    sif: { sha256: sha(sifBytes).slice(7), md5: 'm'.repeat(32), size: sifBytes.length, references: ['oras://reg.test/zoo/m:v1-sif'] },
    keys: { 'build:m': KEY, 'convert:m': CONVERT_KEY, 'publish:m': 'd'.repeat(64) },
    ...extra,
  };
  writeFileSync(path.join(dir, 'published.lock.json'), JSON.stringify({ version: 1, images: { m: entry } }));
  return dir;
}

/** A registry holding the image (with `manifest`) and its SIF artifact. */
function registryWith(manifest: Buffer): FakeRegistry {
  const r = new FakeRegistry();
  r.manifests.set(`reg.test/zoo/m@${sha(manifest)}`, manifest);
  r.manifests.set('reg.test/zoo/m@v1-sif', sifManifest());
  for (const b of [config, layer, sifBytes]) r.blobs.set(sha(b), b);
  return r;
}

const store = () => new ContentStore(mkdtempSync(path.join(tmpdir(), 'graph-cas-')));

test('no lock, or a lock naming no registry: no source', () => {
  assert.is(publishedSource(mkdtempSync(path.join(tmpdir(), 'graph-lock-')), new FakeRegistry()), undefined);
  const dist = lockDir(imageManifest(), { references: ['oci-layout:dist/oci:m'], sif: null });
  assert.is(publishedSource(dist, new FakeRegistry()), undefined);
});

test('a build whose key the lock records and whose manifest the registry holds (annotated with the key): a claim, the result the build would record', async () => {
  const manifest = imageManifest({ 'dev.graph.action-key': KEY });
  const registry = registryWith(manifest);
  const source = publishedSource(lockDir(manifest), registry) as ResultSource;
  const claim = (await source.lookup(id('build:m'), KEY)) as SourceClaim;
  assert.equal(claim.result, {
    outputs: { manifest: sha(manifest), config: sha(config), layers: [sha(layer)], layout: '.graph/out/oci/m', tag: 'latest' },
    artifacts: [sha(manifest), sha(config), sha(layer)],
    files: ['.graph/out/oci/m/index.json'],
    duration_ms: 0,
  });
  assert.is(claim.reason, `from registry reg.test/zoo/m:v1 (${sha(manifest).slice(0, 19)}, as published.lock.json records)`);
  assert.equal(registry.requests, [`manifest reg.test/zoo/m@${sha(manifest)}`], 'one manifest GET, by digest; no blob');
  const s = store();
  for (const d of claim.result.artifacts) await claim.fetch(d, s);
  for (const d of claim.result.artifacts) assert.is(s.check(d), 'intact');
  assert.equal(registry.requests.slice(1), [`blob reg.test/zoo/m@${sha(config)}`, `blob reg.test/zoo/m@${sha(layer)}`], 'the manifest is not fetched twice');
});

test('not a claim: another key in the lock, the annotation naming another key, the manifest not in the registry, a publish or test node', async () => {
  const manifest = imageManifest({ 'dev.graph.action-key': KEY });
  const registry = registryWith(manifest);
  const source = publishedSource(lockDir(manifest), registry) as ResultSource;
  assert.is(await source.lookup(id('build:m'), OTHER), undefined);
  assert.is(await source.lookup(id('build:n'), KEY), undefined);
  assert.is(await source.lookup(id('publish:m'), 'd'.repeat(64)), undefined);
  assert.is(await source.lookup(id('test:g/x@oci'), KEY), undefined);
  assert.equal(registry.requests, [], 'none of those asks the registry');

  const lying = imageManifest({ 'dev.graph.action-key': OTHER });
  assert.is(await (publishedSource(lockDir(lying), registryWith(lying)) as ResultSource).lookup(id('build:m'), KEY), undefined);
  // No annotation (published before graph wrote it): the lock's key and the digest suffice.
  const plain = imageManifest();
  assert.ok(await (publishedSource(lockDir(plain), registryWith(plain)) as ResultSource).lookup(id('build:m'), KEY));
  // Not in the registry (deleted, another registry): a miss, not a failure.
  assert.is(await (publishedSource(lockDir(plain), new FakeRegistry()) as ResultSource).lookup(id('build:m'), KEY), undefined);
});

test('a convert: the unsigned SIF the lock records, at its ORAS tag; not when signed, nor when the tag moved on', async () => {
  const manifest = imageManifest();
  const registry = registryWith(manifest);
  const claim = (await (publishedSource(lockDir(manifest), registry) as ResultSource).lookup(id('convert:m'), CONVERT_KEY)) as SourceClaim;
  assert.equal(claim.result, {
    outputs: { sif: '.graph/out/sif/m.sif', sha256: sha(sifBytes).slice(7), md5: 'm'.repeat(32), size: sifBytes.length, manifest: sha(manifest) },
    artifacts: [sha(sifBytes)],
    files: ['.graph/out/sif/m.sif'],
    duration_ms: 0,
  });
  assert.is(claim.reason, `from registry oras://reg.test/zoo/m:v1-sif (${sha(sifBytes).slice(0, 19)}, as published.lock.json records)`);
  const signed = lockDir(manifest, { signed_by: `sha256:${'e'.repeat(64)}` });
  assert.is(await (publishedSource(signed, registry) as ResultSource).lookup(id('convert:m'), CONVERT_KEY), undefined);
  registry.manifests.set('reg.test/zoo/m@v1-sif', sifManifest(sha('another SIF'), 11));
  assert.is(await (publishedSource(lockDir(manifest), registry) as ResultSource).lookup(id('convert:m'), CONVERT_KEY), undefined);
});

test('garbage from the registry throws; the tier makes it one warning and asks no more', async () => {
  const manifest = imageManifest();
  const registry = new FakeRegistry();
  // Bytes whose digest is the one asked for cannot be faked; a registry answering garbage under
  // the digest is one that the access layer already refused: here it hands over non-JSON.
  registry.manifest = async (host, repo, ref) => {
    registry.requests.push(`manifest ${host}/${repo}@${ref}`);
    return { bytes: Buffer.from('<html>'), digest: ref };
  };
  const source = publishedSource(lockDir(manifest), registry) as ResultSource;
  const thrown = await source.lookup(id('build:m'), KEY).then(() => 'resolved', (e: Error) => e.message);
  assert.is(thrown, `reg.test/zoo/m@${sha(manifest)} is not JSON`);
  const warnings: string[] = [];
  const tier = new SourceTier(source, (m) => warnings.push(m));
  assert.is(await tier.lookup(id('build:m'), KEY), undefined);
  assert.is(await tier.lookup(id('build:m'), KEY), undefined);
  assert.equal(warnings, [`registry unavailable (reg.test/zoo/m@${sha(manifest)} is not JSON): continuing without it`]);
  assert.is(registry.requests.length, 2, 'the second lookup sent nothing');

  const down = registryWith(manifest);
  down.failure = new Error('cannot reach registry reg.test: ECONNREFUSED');
  const w2: string[] = [];
  const tier2 = new SourceTier(publishedSource(lockDir(manifest), down) as ResultSource, (m) => w2.push(m));
  assert.is(await tier2.lookup(id('build:m'), KEY), undefined);
  assert.is(await tier2.lookup(id('convert:m'), CONVERT_KEY), undefined);
  assert.equal(w2, ['registry unavailable (cannot reach registry reg.test: ECONNREFUSED): continuing without it']);
});

test('a tampered blob: download false, one warning naming it, nothing stored under its digest', async () => {
  const manifest = imageManifest();
  const registry = registryWith(manifest);
  registry.blobs.set(sha(layer), Buffer.from('layer bytez'));
  const warnings: string[] = [];
  const tier = new SourceTier(publishedSource(lockDir(manifest), registry) as ResultSource, (m) => warnings.push(m));
  const result = (await tier.lookup(id('build:m'), KEY)) as CachedResult;
  assert.is(tier.hitReason(KEY), `from registry reg.test/zoo/m:v1 (${sha(manifest).slice(0, 19)}, as published.lock.json records)`);
  const s = store();
  assert.is(await tier.download(result.artifacts, s), false);
  assert.equal(warnings, [`registry: blob ${sha(layer)} not used: it did not match its digest (tampered with or damaged in the registry)`]);
  assert.is(s.has(sha(layer)), false);
  assert.ok(new SourceDigestError('x') instanceof Error);
});

test('tiers in order: the first that has a key answers; downloads go to the tier whose hit named the blob; reasons are the tier\'s', async () => {
  const remote = new FakeRemoteCache();
  const remoteBlob = Buffer.from('remote blob');
  remote.entries.set(OTHER, { id: 'build:r', recordLine: '{}', result: { outputs: {}, artifacts: [sha(remoteBlob)], duration_ms: 1 }, blobs: new Map([[sha(remoteBlob), remoteBlob]]) });
  const manifest = imageManifest();
  const registry = registryWith(manifest);
  const source = new SourceTier(publishedSource(lockDir(manifest), registry) as ResultSource, () => {});
  const tiers = tieredRemote([remote, source]);
  assert.ok(tiers);
  assert.is(tieredRemote([undefined]), undefined);
  assert.is(tiers.name, 'fake://remote, then registry');
  const fromRemote = await tiers.lookup(id('build:r'), OTHER);
  const fromRegistry = await tiers.lookup(id('build:m'), KEY);
  assert.ok(fromRemote && fromRegistry);
  assert.is(tiers.hitReason(OTHER), 'from remote cache fake://remote');
  assert.is(tiers.hitReason(KEY), source.hitReason(KEY));
  const s = store();
  assert.is(await tiers.download([...fromRemote.artifacts, ...fromRegistry.artifacts], s), true);
  assert.equal(remote.downloaded, [sha(remoteBlob)]);
  assert.equal(registry.requests.filter((r) => r.startsWith('blob')).length, 2, 'config and layer from the registry');
  // A claim the plan got from the source directly is still routed to it.
  const direct = new SourceTier(publishedSource(lockDir(manifest), registryWith(manifest)) as ResultSource, () => {});
  const claimed = (await direct.lookup(id('build:m'), KEY)) as CachedResult;
  assert.is(await (tieredRemote([new FakeRemoteCache(), direct]) as NonNullable<typeof tiers>).download(claimed.artifacts, store()), true);
});

/** A source answering for builds and converts from what a fake remote cache holds (`tampered`: blobs that lie). */
function fakeSource(remote: FakeRemoteCache, tampered = new Set<string>()): ResultSource & { fetched: string[] } {
  const fetched: string[] = [];
  return {
    name: 'registry',
    fetched,
    async lookup(nodeId, key) {
      const e = remote.entries.get(key);
      if (!e || !/^(build|convert):/.test(nodeId)) return undefined;
      return {
        result: e.result,
        reason: `from registry fake/${nodeId}`,
        async fetch(d, s) {
          fetched.push(d);
          if (tampered.has(d)) throw new SourceDigestError(`blob ${d} did not match`);
          s.putBytes(e.blobs.get(d) as Buffer);
        },
      };
    },
  };
}

/** Machine B's plan of SMALL_ZOO after the local cache (where the publishes are recorded, as a plan that found them in a registry records them). */
async function planOnB(a: string, remote: FakeRemoteCache) {
  const b = mkdtempSync(path.join(tmpdir(), 'graph-clone-'));
  cpSync(a, b, { recursive: true, filter: (src) => !src.includes(`${path.sep}.graph`) });
  const ws = openWorkspace(b, fakeRules());
  const cache = new ActionCache(ws.stateDir);
  const s = new ContentStore(path.join(ws.stateDir, 'cas'));
  // Tools as runEngine probes them, so the keys are machine A's.
  const tools = await resolveTools(ws.graph.order.map((n) => ws.graph.node(n)), path.join(ws.stateDir, 'tools.json'));
  const plan0 = planBuild(ws.graph, new Set(ws.graph.order), { root: b, cache, store: s, digester: new FileDigester(b, path.join(ws.stateDir, 'stat-memo.json'), ws.decls.boundary), env: {}, tools });
  for (const p of plan0.nodes) {
    if (p.node.kind !== 'publish') continue;
    const e = remote.entries.get(p.key) as { result: CachedResult; blobs: Map<string, Buffer> };
    for (const bytes of e.blobs.values()) s.putBytes(bytes);
    await cache.put(p.node.id, p.key, p.recordText, e.result);
  }
  const plan = planBuild(ws.graph, new Set(ws.graph.order), { root: b, cache, store: s, digester: new FileDigester(b, path.join(ws.stateDir, 'stat-memo.json'), ws.decls.boundary), env: {}, tools });
  return { ws, cache, store: s, plan, root: b };
}

test("the plan asks the registry after the local cache: builds and the convert cached with its reason, tests still run (a publish found in a registry spares none); a running test's image is fetched", async () => {
  const remote = new FakeRemoteCache();
  const a = workspace(SMALL_ZOO);
  assert.is((await runEngine(a, new FakeRunner(), { remote })).summary.counts.ran, 9);

  const b = await planOnB(a, remote);
  const source = fakeSource(remote);
  const tier = new SourceTier(source, () => {});
  const statusOf = (plan: typeof b.plan) => Object.fromEntries(plan.nodes.map((p) => [p.node.id, `${p.status}: ${p.reasons.join('; ')}`]));
  // Pruning as the remote cache prunes would take the locally recorded publishes as vouching for tests that never ran.
  const pruned = await checkRemote(b.plan, b.cache, tier, b.store, b.root);
  assert.is(statusOf(pruned)['test:pwm/CTCF@oci'], 'cached: not needed: every node that depends on it is cached');

  const plan = await checkRemote(b.plan, b.cache, tier, b.store, b.root, undefined, { prune: 'under-hits' });
  assert.equal(statusOf(plan), {
    // Asked, since a publish recorded before does not vouch for it; a hit, whose bytes nothing needs.
    'build:base': 'cached: from registry fake/build:base',
    'build:pwm': 'cached: from registry fake/build:pwm',
    'convert:pwm': 'cached: from registry fake/convert:pwm',
    'publish:base': 'cached: ',
    'test:pwm/CTCF@oci': 'run: no previous record',
    'test:pwm/GATA1@oci': 'run: no previous record',
    'test:pwm/CTCF@sif': 'run: no previous record',
    'test:pwm/GATA1@sif': 'run: no previous record',
    'publish:pwm': 'cached: ',
  });
  assert.equal(source.fetched, [], 'the plan fetches no blob');
  const ready = await materializeNeeded(plan, { cache: b.cache, remote: tieredRemote([tier]) as NonNullable<ReturnType<typeof tieredRemote>>, store: b.store, root: b.root });
  const pwm = ready.byId.get(id('build:pwm'));
  assert.is(pwm?.remote, undefined, 'brought in');
  assert.equal(source.fetched.sort(), [...(remote.entries.get(pwm?.key as string)?.result.artifacts ?? []), ...(remote.entries.get(ready.byId.get(id('convert:pwm'))?.key as string)?.result.artifacts ?? [])].sort());
  assert.ok(b.cache.get(pwm?.key as string, id('build:pwm')), 'recorded locally: the next plan needs no registry');
  assert.is(ready.byId.get(id('build:base'))?.remote, 'hit', "the base's bytes are not needed: not fetched");
});

test('a tampered blob from the registry: the hit is not used, its node runs with the reason', async () => {
  const remote = new FakeRemoteCache();
  const a = workspace(SMALL_ZOO);
  await runEngine(a, new FakeRunner(), { remote });
  const b = await planOnB(a, remote);
  const pwmKey = b.plan.byId.get(id('build:pwm'))?.key as string;
  const bad = (remote.entries.get(pwmKey) as { result: CachedResult }).result.artifacts[0];
  const warnings: string[] = [];
  const tier = new SourceTier(fakeSource(remote, new Set([bad])), (m) => warnings.push(m));
  const plan = await checkRemote(b.plan, b.cache, tier, b.store, b.root, undefined, { prune: 'under-hits' });
  const ready = await materializeNeeded(plan, { cache: b.cache, remote: tier, store: b.store, root: b.root });
  assert.equal(ready.byId.get(id('build:pwm'))?.status, 'run');
  assert.equal(ready.byId.get(id('build:pwm'))?.reasons, ['from registry fake/build:pwm, but its artifacts could not be downloaded intact']);
  assert.equal(warnings, [`registry: blob ${bad} not used: it did not match its digest (tampered with or damaged in the registry)`]);
  assert.is(ready.byId.get(id('convert:pwm'))?.status, 'cached', 'the SIF was intact');
});

test.run();
