/**
 * The remote cache end to end: the real `graph` binary against a real nginx with WebDAV on
 * 127.0.0.1 (test/nginx.ts), two checkouts standing for two machines. The zoo across machines
 * (nothing downloaded that nothing needs), a tampered blob and an entry naming another action
 * (detected, not served, the node runs, one warning), a server that dies mid-build (the build
 * finishes locally), read-only access (no PUT). Requests are counted in nginx's access log.
 */
import { randomBytes } from 'node:crypto';
import { copyFileSync, cpSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { copyRepoZoo, flipByte, freePort, graphAsync, graphWith, startRegistry, workspace } from './helpers.js';
import { startNginx, type Nginx } from './nginx.js';

const test = suite('remote-cache');

interface Report {
  summary: { ran: number; cached: number; failed: number };
  nodes: Array<{ id: string; status: string; reasons: string[]; outputs: Record<string, unknown> | null }>;
}

const readReport = (dir: string): Report => JSON.parse(readFileSync(path.join(dir, 'report.json'), 'utf8'));
const ran = (r: Report) => r.nodes.filter((n) => n.status === 'ran').map((n) => n.id).sort();
const warnings = (stderr: string) => stderr.split('\n').filter((l) => l.startsWith('warning: '));

/** A second machine's checkout: the committed files only (no .graph/, no dist/). */
function checkout(from: string, files: readonly string[]): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'graph-clone-'));
  for (const f of files) if (existsSync(path.join(from, f))) cpSync(path.join(from, f), path.join(dir, f), { recursive: true });
  return dir;
}

/** GETs of `/cas/<hex>` for these hex digests since request number `since`. */
function blobGets(server: Nginx, hexes: ReadonlySet<string>, since = 0): string[] {
  return server
    .requests()
    .slice(since)
    .filter((r) => r.method === 'GET' && r.path.startsWith('/cas/') && hexes.has(r.path.slice(5)))
    .map((r) => r.path);
}

test('the zoo across two machines: a fresh checkout runs nothing and downloads no layer or SIF; one changed model runs its tests only', async () => {
  const server = await startNginx();
  const registry = await startRegistry();
  try {
    const a = copyRepoZoo(mkdtempSync(path.join(tmpdir(), 'graph-zoo-')));
    // Published to a registry, as CI publishes: each image under zoo/NAME.
    const images = readFileSync(path.join(a, 'images.yaml'), 'utf8').replace(/^ {2}([a-z0-9-]+):\n/gm, (line, name: string) => `${line}    publish: [${registry.host}/zoo/${name}]\n`);
    writeFileSync(path.join(a, 'images.yaml'), images);
    writeFileSync(path.join(a, 'published.lock.json'), '{"version": 1, "images": {}}\n');
    const env = { GRAPH_REMOTE_CACHE: server.url };

    const first = graphWith(env, a, 'build', '--report', 'report.json');
    assert.is(first.code, 0, first.stderr);
    assert.equal(warnings(first.stderr), []);
    const built = readReport(a);
    assert.is(built.summary.ran, 27);
    // The bytes a fresh machine should never fetch unless something runs that needs them.
    const layersOf = new Map<string, Set<string>>();
    for (const n of built.nodes) {
      const image = n.id.split(':')[1];
      if (n.id.startsWith('build:')) layersOf.set(image, new Set((n.outputs?.layers as string[]).map((d) => d.slice(7))));
      if (n.id.startsWith('convert:')) layersOf.get(image)?.add(n.outputs?.sha256 as string);
    }
    const heavy = new Set([...layersOf.values()].flatMap((s) => [...s]));
    assert.ok(heavy.size >= 8, 'layers and SIFs');

    // Machine B: the committed files, nothing else.
    const b = checkout(a, ['images.yaml', 'models.yaml', 'images.lock', 'zoo', 'published.lock.json']);
    let since = server.requests().length;
    const noop = graphWith(env, b, 'build', '--report', 'report.json');
    assert.is(noop.code, 0, noop.stderr);
    assert.match(noop.stderr, 'ok: 0 ran, 27 cached, 0 failed, 0 skipped');
    // Asked about: the four publishes, nothing else; their hits vouch for everything upstream.
    const asked = server.requests().slice(since);
    assert.equal(asked.map((r) => `${r.method} ${r.path.slice(0, 4)}`), ['GET /ac/', 'GET /ac/', 'GET /ac/', 'GET /ac/']);
    for (const n of readReport(b).nodes) {
      assert.equal(n.reasons, [n.id.startsWith('publish:') ? `from remote cache ${server.url}` : 'not needed: every node that depends on it is cached'], n.id);
    }
    assert.equal(blobGets(server, heavy, since), [], 'no layer and no SIF was downloaded');
    // The publishes' results are recorded on B (they have no bytes): the next plan asks nothing.
    since = server.requests().length;
    const plan = graphWith(env, b, 'plan');
    assert.is(plan.code, 0, plan.stderr);
    assert.match(plan.stdout, `0 nodes to run, 27 cached (27 nodes selected)\n  cached build:py3-base\n           not needed: every node that depends on it is cached\n`);
    assert.is(server.requests().length, since);

    // One model's file changed on B: its two tests run; nothing is built or converted.
    const motif = path.join(b, 'zoo/pwm/models/CTCF/motif.pwm');
    writeFileSync(motif, `${readFileSync(motif, 'utf8')}# tweak\n`);
    since = server.requests().length;
    const changed = graphWith(env, b, 'build', '--report', 'report.json');
    assert.is(changed.code, 0, changed.stderr);
    assert.equal(warnings(changed.stderr), []);
    const report = readReport(b);
    assert.equal(ran(report), ['test:pwm/CTCF@oci', 'test:pwm/CTCF@sif']);
    // Its image is unchanged and already in the registry: the publish is done, not repeated.
    assert.match(report.nodes.find((n) => n.id === 'publish:pwm-scanner')?.reasons.join() ?? '', `already in registry (${registry.host}/zoo/pwm-scanner`);
    // Downloaded: exactly the pwm-scanner image (base layer included) and its SIF.
    const fetched = new Set(blobGets(server, heavy, since).map((p) => p.slice(5)));
    assert.equal([...fetched].sort(), [...(layersOf.get('pwm-scanner') as Set<string>)].sort());
    assert.is(server.requests().slice(since).filter((r) => r.method === 'PUT' && r.path.startsWith('/ac/')).length, 2, 'the two test results uploaded');
    assert.ok(existsSync(path.join(b, '.graph/out/oci/pwm-scanner/index.json')), 'the layout the test needed, restored');
    assert.not.ok(existsSync(path.join(b, '.graph/out/oci/seq-features')), 'layouts nothing needed are not written');
  } finally {
    await server.stop();
    await registry.stop();
  }
});

/** A small zoo with no tests: `a` from a file, `b` on `a` with a larger file and a SIF. */
function smallZoo(bigBytes = 64 * 1024): string {
  return workspace({
    'images.yaml': 'version: 1\nimages:\n  a:\n    layers: [{copy: a.txt, to: /a}]\n  b:\n    from: a\n    layers: [{copy: big.bin, to: /big}]\n    convert: [sif]\n',
    'models.yaml': 'version: 1\ngroups: {}\n',
    'a.txt': 'a\n',
    'big.bin': randomBytes(bigBytes).toString('base64'),
  });
}
const SMALL_FILES = ['images.yaml', 'models.yaml', 'a.txt', 'big.bin'];

/** Build `dir` against `server`; its report. */
function build(dir: string, server: Nginx, ...args: string[]): { code: number; stderr: string; report: Report } {
  const r = graphWith({ GRAPH_REMOTE_CACHE: server.url }, dir, 'build', '--report', 'report.json', ...args);
  return { code: r.code, stderr: r.stderr, report: readReport(dir) };
}

test('a tampered blob on the server is detected, not served: its node runs, one warning, and the upload repairs it', async () => {
  const server = await startNginx();
  try {
    const a = smallZoo();
    const first = build(a, server);
    assert.is(first.code, 0, first.stderr);
    const layer = (first.report.nodes.find((n) => n.id === 'build:a')?.outputs?.layers as string[])[0].slice(7);
    flipByte(path.join(server.root, 'cas', layer), 10);

    // On B, the publishes write dist/, so they need both images' blobs: build:a's layer is bad.
    const b = checkout(a, SMALL_FILES);
    const second = build(b, server);
    assert.is(second.code, 0, second.stderr);
    assert.equal(warnings(second.stderr), [`warning: remote cache ${server.url}: blob sha256:${layer} not used: it did not match its digest (tampered with or damaged on the server)`]);
    const byId = new Map(second.report.nodes.map((n) => [n.id, n]));
    assert.is(byId.get('build:a')?.status, 'ran');
    assert.equal(byId.get('build:a')?.reasons, [`from remote cache ${server.url}, but its artifacts could not be downloaded intact`]);
    // b's image holds a's layer too, so its hit is not usable either; the SIF is.
    assert.equal(ran(second.report), ['build:a', 'build:b', 'publish:a', 'publish:b']);
    assert.is(byId.get('convert:b')?.status, 'cached');
    const sif = byId.get('convert:b')?.outputs?.sha256 as string;
    assert.ok(existsSync(path.join(b, 'dist/sif/b.sif')));
    assert.is(readFileSync(path.join(b, 'dist/sif/b.sif')).length, byId.get('convert:b')?.outputs?.size, `the SIF ${sif.slice(0, 12)} came from the server`);
    // The local build uploaded the good bytes again.
    const c = checkout(a, SMALL_FILES);
    const third = build(c, server);
    assert.is(third.code, 0, third.stderr);
    assert.equal(warnings(third.stderr), []);
    assert.equal(ran(third.report), ['publish:a', 'publish:b']);
  } finally {
    await server.stop();
  }
});

test("an entry that holds another action's record is not used: the node runs, one warning", async () => {
  const server = await startNginx();
  try {
    const a = smallZoo();
    assert.is(build(a, server).code, 0);
    const keys = new Map((JSON.parse(graphWith({}, a, 'plan', '--format', 'json').stdout).nodes as Array<{ id: string; key: string }>).map((n) => [n.id, n.key]));
    const keyA = keys.get('build:a') as string;
    const keyB = keys.get('build:b') as string;
    copyFileSync(path.join(server.root, 'ac', keyB), path.join(server.root, 'ac', keyA));

    const b = checkout(a, SMALL_FILES);
    const second = build(b, server);
    assert.is(second.code, 0, second.stderr);
    assert.equal(warnings(second.stderr), [
      `warning: remote cache ${server.url}: entry for build:a (key ${keyA.slice(0, 12)}) not used: its entry holds the key record of another action (sha256:${keyB.slice(0, 12)})`,
    ]);
    const buildA = second.report.nodes.find((n) => n.id === 'build:a');
    assert.is(buildA?.status, 'ran');
    assert.equal(buildA?.reasons, ['no previous record']);
  } finally {
    await server.stop();
  }
});

test('a server that dies mid-build: the build finishes locally, exit 0, one warning', async () => {
  const server = await startNginx();
  try {
    // Large enough that b's layer and SIF take a while after a's upload starts.
    const a = smallZoo(24 << 20);
    const done = graphAsync(a, 'build', '--remote-cache', server.url, '--report', 'report.json', '--jobs', '1');
    for (let i = 0; i < 2000 && !server.requests().some((r) => r.method === 'PUT'); i++) await new Promise((r) => setTimeout(r, 10));
    server.kill();
    const r = await done;
    assert.is(r.code, 0, r.stderr);
    assert.equal(ran(readReport(a)), ['build:a', 'build:b', 'convert:b', 'publish:a', 'publish:b']);
    const w = warnings(r.stderr);
    assert.is(w.length, 1, r.stderr);
    assert.match(w[0], `warning: remote cache ${server.url} unavailable (`);
    assert.match(w[0], '): continuing without it');
  } finally {
    await server.stop();
  }
});

test('read-only: --remote-cache-mode read sends no PUT; a server refusing writes is one warning', async () => {
  const server = await startNginx();
  try {
    const a = smallZoo();
    const r = build(a, server, '--remote-cache-mode', 'read');
    assert.is(r.code, 0, r.stderr);
    assert.is(r.report.summary.ran, 5);
    const methods = new Set(server.requests().map((q) => q.method));
    assert.equal([...methods], ['GET'], 'lookups only');
  } finally {
    await server.stop();
  }
  const readOnly = await startNginx({ readOnly: true });
  try {
    const a = smallZoo();
    const r = build(a, readOnly);
    assert.is(r.code, 0, r.stderr);
    assert.equal(warnings(r.stderr), [`warning: remote cache ${readOnly.url}: uploads refused (HTTP 403); nothing more is uploaded in this run`]);
  } finally {
    await readOnly.stop();
  }
});

test('a target named on the command line is brought in with its visible files; a build of everything is not', async () => {
  const server = await startNginx();
  try {
    const a = smallZoo();
    assert.is(build(a, server).code, 0);
    const layers = new Set((JSON.parse(readFileSync(path.join(a, 'report.json'), 'utf8')) as Report).nodes.flatMap((n) => (n.id.startsWith('build:') ? (n.outputs?.layers as string[]).map((d) => d.slice(7)) : [])));
    const b = checkout(a, SMALL_FILES);
    const since = server.requests().length;
    const r = build(b, server, 'build:b');
    assert.is(r.code, 0, r.stderr);
    assert.equal(ran(r.report), []);
    assert.ok(existsSync(path.join(b, '.graph/out/oci/b/index.json')), "build:b's image layout is here");
    assert.is(blobGets(server, layers, since).length, 2, "its two layers (a's and its own)");
    assert.not.ok(existsSync(path.join(b, '.graph/out/oci/a')), 'build:a, only a dependency, is not');
  } finally {
    await server.stop();
  }
});

test('credentials in the URL reach the server and never the output', async () => {
  const server = await startNginx();
  try {
    const a = smallZoo();
    const url = server.url.replace('http://', 'http://ci:pa55word@');
    const r = graphWith({ GRAPH_REMOTE_CACHE: url }, a, 'plan', '--format', 'json');
    assert.is(r.code, 0, r.stderr);
    assert.not.match(r.stdout + r.stderr, 'pa55word');
    const port = await freePort();
    const down = graphWith({}, a, 'build', '--remote-cache', `http://ci:pa55word@127.0.0.1:${port}`, '--report', 'report.json');
    assert.is(down.code, 0, down.stderr);
    assert.equal(warnings(down.stderr), [`warning: remote cache http://ci:***@127.0.0.1:${port} unavailable (cannot connect: ECONNREFUSED): continuing without it`]);
    assert.not.match(readFileSync(path.join(a, 'report.json'), 'utf8'), 'pa55word');
    // settings.remote_cache in images.yaml: used when neither the flag nor the variable names one.
    const c = smallZoo();
    writeFileSync(path.join(c, 'images.yaml'), readFileSync(path.join(c, 'images.yaml'), 'utf8').replace('version: 1\n', `version: 1\nsettings:\n  remote_cache: http://127.0.0.1:${port}/zoo\n`));
    const fromSettings = graphWith({}, c, 'plan', 'build:a');
    assert.is(fromSettings.code, 0, fromSettings.stderr);
    assert.equal(warnings(fromSettings.stderr), [`warning: remote cache http://127.0.0.1:${port}/zoo unavailable (cannot connect: ECONNREFUSED): continuing without it`]);
    const bad = graphWith({}, a, 'plan', '--remote-cache', 'ftp://ci:pa55word@host/');
    assert.is(bad.code, 2);
    assert.match(bad.stderr, "remote cache 'ftp://ci:***@host/' must be an http:// or https:// URL");
  } finally {
    await server.stop();
  }
});

test.run();
