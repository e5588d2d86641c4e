/**
 * Dockerfile builders: detection, the exact command lines (against a fake runner), and real
 * builds with buildah, podman, and the docker CLI against podman's Docker-compatible service.
 * The base image is made here from Debian's busybox-static package (no registry involved), in a
 * directory with upper-case letters in its path on purpose (buildah cannot pull `oci:` from such
 * paths; the backends must not depend on that).
 *
 * Needs: apt (with package lists), dpkg, buildah, podman, runc, skopeo, umoci; the docker test
 * also the docker CLI (skipped with a reason when absent).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { ProcessRunner, RunOptions, RunResult } from '../engine/process.js';
import { BuildahBuilder } from '../rules/dockerfile/buildah.js';
import { detectBuilder, killContainerProcesses, type DockerfileBuild } from '../rules/dockerfile/builder.js';
import { findExecutable } from '../engine/key/tools.js';
import { stageContext } from '../rules/dockerfile/context.js';
import { PodmanBuilder } from '../rules/dockerfile/podman.js';
import { busyboxRoot } from './helpers.js';

const test = suite('dockerfile');

const ROOT = mkdtempSync(path.join(tmpdir(), 'graph-dockerfile-'));
/** The busybox base layout (tag `base`), made once in `before`. */
const BASE_LAYOUT = path.join(ROOT, 'Base-Layout');
const PATH_ENV = process.env.PATH ?? '';
const has = (tool: string) => findExecutable(tool, PATH_ENV, ['/usr/sbin', '/sbin']) !== undefined;

function sh(argv: string[], cwd?: string): string {
  return execFileSync(argv[0], argv.slice(1), { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** A fresh directory under ROOT. */
function fresh(name: string): string {
  return mkdtempSync(path.join(ROOT, `${name}-`));
}

/** Make an OCI image layout at `layout` (tag `base`) holding busybox-static from Debian's mirror. */
function makeBusyboxBase(layout: string): void {
  const rootfs = busyboxRoot(path.join(fresh('busybox'), 'rootfs'), ['sh', 'cat', 'echo', 'ls', 'sleep', 'true', 'false']);
  sh(['umoci', 'init', '--layout', layout]);
  sh(['umoci', 'new', '--image', `${layout}:base`]);
  sh(['umoci', 'insert', '--image', `${layout}:base`, rootfs, '/']);
  sh(['umoci', 'config', '--image', `${layout}:base`, '--config.env', 'PATH=/usr/sbin:/usr/bin:/sbin:/bin', '--config.cmd', '/bin/sh']);
}

/** A build context with a Dockerfile of two stages over `FROM base` (through an ARG). */
function context(dockerfile?: string): string {
  const dir = fresh('ctx');
  writeFileSync(
    path.join(dir, 'Dockerfile'),
    dockerfile ??
      'ARG BASE=base\n' +
        'FROM ${BASE} AS build\n' +
        'ARG GREETING=hi\n' +
        'RUN echo "$GREETING" > /hello\n' +
        'COPY data.txt /copied.txt\n' +
        'FROM build AS final\n' +
        'RUN echo final > /final\n',
  );
  writeFileSync(path.join(dir, 'data.txt'), 'context data\n');
  return dir;
}

/** A request building `ctx` on the busybox base into a fresh output directory. */
function request(ctx: string, extra: Partial<DockerfileBuild> = {}): DockerfileBuild {
  const dir = fresh('build');
  return {
    dockerfile: path.join(ctx, 'Dockerfile'),
    context: ctx,
    args: { GREETING: 'hello from arg' },
    target: 'build',
    base: { layoutDir: BASE_LAYOUT, tag: 'base', name: 'base' },
    outLayout: path.join(dir, 'out'),
    scratchDir: path.join(dir, 'scratch'),
    logFile: path.join(dir, 'build.log'),
    signal: new AbortController().signal,
    ...extra,
  };
}

/** The manifest digest `latest` names in a layout. */
function latestDigest(layout: string): string {
  const index = JSON.parse(readFileSync(path.join(layout, 'index.json'), 'utf8'));
  assert.is(index.manifests.length, 1);
  assert.is(index.manifests[0].annotations['org.opencontainers.image.ref.name'], 'latest');
  return index.manifests[0].digest;
}

/** Unpack `layout:latest` with umoci; returns the rootfs path. */
function unpack(layout: string): string {
  const bundle = path.join(fresh('bundle'), 'b');
  sh(['umoci', 'unpack', '--rootless', '--image', `${layout}:latest`, bundle]);
  return path.join(bundle, 'rootfs');
}

/** Check a finished build of `context()` with target `build`: a valid image with the RUN output and the copied file. */
function assertBuilt(req: DockerfileBuild): void {
  const inspect = JSON.parse(sh(['skopeo', 'inspect', `oci:${req.outLayout}:latest`]));
  assert.is(inspect.Digest, latestDigest(req.outLayout));
  const rootfs = unpack(req.outLayout);
  assert.is(readFileSync(path.join(rootfs, 'hello'), 'utf8'), 'hello from arg\n');
  assert.is(readFileSync(path.join(rootfs, 'copied.txt'), 'utf8'), 'context data\n');
  assert.not.ok(existsSync(path.join(rootfs, 'final')), 'target stage `build` stops before `final`');
  assert.ok(existsSync(path.join(rootfs, 'bin', 'busybox')), 'built on the busybox base');
  assert.equal(readdirSync(req.scratchDir), [], 'private storage removed');
  assert.equal(readdirSync(path.dirname(req.outLayout)).filter((f) => f.includes('.partial-')), [], 'no partial layout left');
}

/** Pids of processes whose command line contains `needle`. */
function processesWith(needle: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (stat.slice(stat.lastIndexOf(')') + 2)[0] === 'Z') continue; // a zombie has ended
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').replaceAll('\0', ' ').includes(needle)) pids.push(Number(entry));
    } catch {
      // gone
    }
  }
  return pids;
}

async function waitFor(what: string, ok: () => boolean, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Records command lines; the push (or save/copy) step writes a minimal layout so the build can finish. */
class RecordingRunner implements ProcessRunner {
  readonly calls: { argv: readonly string[]; options: RunOptions }[] = [];
  constructor(private readonly onRun: (argv: readonly string[]) => void = () => {}) {}
  async run(argv: readonly string[], options: RunOptions = {}): Promise<RunResult> {
    this.calls.push({ argv, options });
    this.onRun(argv);
    const dest = argv.at(-1) ?? '';
    if (argv.includes('push') && dest.startsWith('oci:')) {
      const dir = dest.slice(4, dest.lastIndexOf(':'));
      mkdirSync(dir, { recursive: true });
      writeFileSync(path.join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
      writeFileSync(path.join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: `sha256:${'0'.repeat(64)}`, size: 2, annotations: { 'org.opencontainers.image.ref.name': 'latest' } }] }));
    }
    return { exitCode: 0, signal: undefined, aborted: false };
  }
}

/** A small synthetic layout (tag `v1`, plus an unreachable blob) for the command-line tests. */
function syntheticLayout(): { dir: string; manifest: { digest: string; size: number }; blobs: string[] } {
  const dir = path.join(fresh('synthetic'), 'Layout');
  const put = (bytes: string) => {
    const hex = createHash('sha256').update(bytes).digest('hex');
    mkdirSync(path.join(dir, 'blobs', 'sha256'), { recursive: true });
    writeFileSync(path.join(dir, 'blobs', 'sha256', hex), bytes);
    return { digest: `sha256:${hex}`, size: Buffer.byteLength(bytes) };
  };
  const config = put('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}');
  const layer = put('not really a tar');
  put('unreachable');
  const manifest = put(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config }, layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...layer }] }));
  writeFileSync(path.join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  writeFileSync(path.join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifest, annotations: { 'org.opencontainers.image.ref.name': 'v1' } }] }));
  return { dir, manifest, blobs: [config.digest, layer.digest, manifest.digest].sort() };
}

test.before(() => {
  makeBusyboxBase(BASE_LAYOUT);
});

test.after(() => {
  rmSync(ROOT, { recursive: true, force: true });
});

test('stageContext: the files the key covers (.dockerignore applied), modes as git checks them out, right ones hard-linked', () => {
  const ws = fresh('ws');
  const files = { 'ctx/Dockerfile': 'FROM base\n', 'ctx/.dockerignore': '*.key\n', 'ctx/tool.sh': '#!/bin/sh\n', 'ctx/conf/a.txt': 'a\n', 'ctx/ok.txt': 'ok\n', 'ctx/id.key': 'secret\n', 'outside.txt': 'no\n' };
  for (const [rel, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(ws, rel)), { recursive: true });
    writeFileSync(path.join(ws, rel), text);
  }
  // As a checkout under umask 077 has them, but ok.txt.
  for (const [rel, mode] of [['ctx/tool.sh', 0o700], ['ctx/conf/a.txt', 0o600], ['ctx/conf', 0o700], ['ctx/Dockerfile', 0o600], ['ctx/.dockerignore', 0o600], ['ctx/ok.txt', 0o644]] as const) {
    chmodSync(path.join(ws, rel), mode);
  }
  symlinkSync('ok.txt', path.join(ws, 'ctx/link'));
  const staged = stageContext(ws, 'ctx', path.join(fresh('stage'), 'context'));
  const list = (dir: string, rel = ''): string[] =>
    readdirSync(path.join(dir, rel)).sort().flatMap((name) => {
      const p = rel ? `${rel}/${name}` : name;
      const st = lstatSync(path.join(dir, p));
      if (st.isSymbolicLink()) return [`${p} -> ${readlinkSync(path.join(dir, p))}`];
      const line = `${p} ${(st.mode & 0o7777).toString(8)}`;
      return st.isDirectory() ? [line, ...list(dir, p)] : [line];
    });
  assert.equal(list(staged), ['.dockerignore 644', 'Dockerfile 644', 'conf 755', 'conf/a.txt 644', 'link -> ok.txt', 'ok.txt 644', 'tool.sh 755']);
  assert.is(lstatSync(path.join(staged, '.')).mode & 0o7777, 0o755);
  assert.is(lstatSync(path.join(staged, 'ok.txt')).ino, lstatSync(path.join(ws, 'ctx/ok.txt')).ino, 'a file whose mode is right is a hard link');
  assert.is.not(lstatSync(path.join(staged, 'tool.sh')).ino, lstatSync(path.join(ws, 'ctx/tool.sh')).ino);
  assert.is(lstatSync(path.join(ws, 'ctx/tool.sh')).mode & 0o7777, 0o700, 'the workspace is left as it was');
});

test('detectBuilder: an unknown name, and nothing installed, are clear errors', async () => {
  try {
    await detectBuilder('kaniko');
    assert.unreachable();
  } catch (e) {
    assert.is((e as Error).message, "unknown Dockerfile builder 'kaniko' (choose one of: buildah, podman, docker)");
  }
  try {
    await detectBuilder(undefined, { env: { PATH: fresh('empty-path') } });
    assert.unreachable();
  } catch (e) {
    assert.is(
      (e as Error).message,
      'no Dockerfile builder found; tried:\n  buildah: not on PATH\n  podman: not on PATH\n  docker: not on PATH\n' +
        'Install one, e.g. `apt-get install buildah` (Debian/Ubuntu).',
    );
  }
});

test('detectBuilder: the preferred builder first, then buildah; docker only with an engine', async () => {
  assert.is((await detectBuilder()).name, 'buildah');
  assert.is((await detectBuilder('podman')).name, 'podman');
  // A docker CLI alone is passed over when no engine is named.
  const bin = fresh('bin');
  writeFileSync(path.join(bin, 'docker'), '#!/bin/sh\n', { mode: 0o755 });
  if (!existsSync('/var/run/docker.sock')) {
    try {
      await detectBuilder('docker', { env: { PATH: bin } });
      assert.unreachable();
    } catch (e) {
      assert.match((e as Error).message, `  docker: CLI at ${bin}/docker, but no engine (DOCKER_HOST is unset and /var/run/docker.sock does not exist)\n`);
    }
  }
  assert.is((await detectBuilder('docker', { env: { PATH: bin, DOCKER_HOST: 'unix:///nowhere.sock' } })).name, 'docker');
  assert.match(await (await detectBuilder('buildah')).version(), /^buildah \d+\.\d+\.\d+$/);
});

test('buildah command lines: base pinned by digest through an OCI archive, sorted args, private storage', async () => {
  const base = syntheticLayout();
  let staged: { index: unknown; blobs: string[] } | undefined;
  const runner = new RecordingRunner((argv) => {
    if (argv[0] !== 'tar') return;
    const stage = argv[2];
    staged = {
      index: JSON.parse(readFileSync(path.join(stage, 'index.json'), 'utf8')),
      blobs: readdirSync(path.join(stage, 'blobs', 'sha256')).map((h) => `sha256:${h}`).sort(),
    };
  });
  const req = request('/ctx', { dockerfile: '/ctx/Dockerfile', args: { Z: 'last', A: 'first one' }, base: { layoutDir: base.dir, tag: 'v1', name: 'base' }, sourceDateEpoch: 1700000000 });
  await new BuildahBuilder({ runner }).build(req);
  const work = path.dirname(runner.calls[0].argv[2]); // …/scratch/buildah-XXXXXX
  const normalize = (a: string) => a.replace(work, 'WORK').replace(/out\.partial-[\w-]+/, 'out.partial').replace(path.dirname(req.outLayout), 'BUILD');
  assert.equal(
    runner.calls.map((c) => c.argv.map(normalize).join(' ')),
    [
      'tar -C WORK/base-layout --dereference -cf WORK/base.oci.tar oci-layout index.json blobs',
      'buildah --root WORK/root --runroot WORK/runroot --storage-driver vfs pull oci-archive:WORK/base.oci.tar',
      'buildah --root WORK/root --runroot WORK/runroot --storage-driver vfs bud --isolation chroot --format oci --layers=false --pull=false --timestamp 1700000000 -f /ctx/Dockerfile --build-arg A=first one --build-arg Z=last --target build -t localhost/graph-result:latest /ctx',
      'buildah --root WORK/root --runroot WORK/runroot --storage-driver vfs push localhost/graph-result:latest oci:BUILD/out.partial:latest',
    ],
  );
  assert.is(path.dirname(work), req.scratchDir);
  assert.is(runner.calls[1].options.env?.TMPDIR, `${work}/tmp`);
  assert.is(runner.calls[1].options.env?.CONTAINERS_STORAGE_CONF, `${work}/storage.conf`);
  assert.equal(staged, {
    index: { schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...base.manifest, annotations: { 'org.opencontainers.image.ref.name': 'base' } }] },
    blobs: base.blobs,
  });
  assert.is(latestDigest(req.outLayout), `sha256:${'0'.repeat(64)}`);
  assert.equal(readdirSync(req.scratchDir), []);
  const log = readFileSync(req.logFile, 'utf8');
  assert.match(log, "--build-arg 'A=first one' --build-arg Z=last");
});

test('podman and network none command lines', async () => {
  const runner = new RecordingRunner();
  const req = request('/ctx', { dockerfile: '/ctx/Dockerfile', args: {}, target: undefined, base: undefined });
  await new PodmanBuilder({ runner }).build(req);
  const runc = findExecutable('runc', PATH_ENV, ['/usr/sbin', '/sbin']);
  const first = runner.calls[0].argv;
  const work = path.dirname(first[first.indexOf('--root') + 1]);
  // This scratch path makes WORK/runroot longer than podman accepts: a short private one stands in.
  const runroot = first[first.indexOf('--runroot') + 1];
  assert.match(runroot, /^\/tmp\/graph-run-\w{6}$/);
  assert.not.ok(existsSync(runroot), 'the short run root is removed too');
  const normalize = (a: string) => a.replace(work, 'WORK').replace(runroot, 'RR').replace(/out\.partial-[\w-]+/, 'out.partial').replace(path.dirname(req.outLayout), 'BUILD').replace(runc ?? 'RUNC', 'RUNC');
  assert.equal(
    runner.calls.map((c) => c.argv.map(normalize).join(' ')),
    [
      'podman --root WORK/root --runroot RR --storage-driver vfs --runtime RUNC --cgroup-manager cgroupfs --events-backend file --tmpdir WORK/libpod build --network host --ulimit nofile=1024:1024 --ulimit nproc=1000:1000 --format oci --layers=false --pull=false --timestamp 0 -f /ctx/Dockerfile -t localhost/graph-result:latest /ctx',
      'podman --root WORK/root --runroot RR --storage-driver vfs --runtime RUNC --cgroup-manager cgroupfs --events-backend file --tmpdir WORK/libpod push localhost/graph-result:latest oci:BUILD/out.partial:latest',
    ],
  );
  const none = new RecordingRunner();
  const req2 = request('/ctx', { dockerfile: '/ctx/Dockerfile', args: {}, target: undefined, base: undefined });
  await new BuildahBuilder({ runner: none, network: 'none' }).build(req2);
  assert.ok(none.calls[0].argv.join(' ').includes(` bud --isolation oci --runtime ${runc} --network none --format oci `));
});

test('request and base errors are NodeFailures that name the problem', async () => {
  const base = syntheticLayout();
  const cases: [Partial<DockerfileBuild>, string][] = [
    [{ base: { layoutDir: base.dir, tag: 'v2', name: 'base' } }, `OCI image layout ${base.dir} has no image tagged 'v2' (tags: v1)`],
    [{ base: { layoutDir: base.dir, tag: 'v1', name: 'Base' } }, "base image name 'Base' cannot appear in FROM: it must be a lowercase repository name (a-z, 0-9, '.', '_', '-')"],
    [{ outLayout: '/a:b/out' }, "outLayout '/a:b/out' contains ':', which OCI transport references cannot express"],
    [{ context: 'relative' }, "context must be an absolute path, not 'relative'"],
  ];
  for (const [extra, message] of cases) {
    const req = request('/ctx', extra);
      try {
      await new BuildahBuilder({ runner: new RecordingRunner() }).build(req);
      assert.unreachable(message);
    } catch (e) {
      assert.is((e as Error).name, 'NodeFailure');
      assert.is((e as Error).message, message);
    }
  }
});

test('buildah: builds FROM the pinned base with a build arg, a COPY and a target stage', async () => {
  const req = request(context());
  await new BuildahBuilder().build(req);
  assertBuilt(req);
  const log = readFileSync(req.logFile, 'utf8');
  assert.match(log, '$ buildah --root ');
  assert.match(log, 'STEP 2/');
});

test('buildah: the same inputs and timestamp give the same manifest digest', async () => {
  const ctx = context();
  const first = request(ctx);
  await new BuildahBuilder().build(first);
  // Another build in another private storage, with the context file's mtime changed.
  utimesSync(path.join(ctx, 'data.txt'), new Date(2001, 1, 1), new Date(2001, 1, 1));
  const second = request(ctx);
  await new BuildahBuilder().build(second);
  assert.is(latestDigest(second.outLayout), latestDigest(first.outLayout));
  const later = request(ctx, { sourceDateEpoch: 86400 });
  await new BuildahBuilder().build(later);
  assert.is.not(latestDigest(later.outLayout), latestDigest(first.outLayout), 'the timestamp is in the image');
  const config = JSON.parse(sh(['skopeo', 'inspect', '--config', `oci:${later.outLayout}:latest`]));
  assert.is(config.created, '1970-01-02T00:00:00Z');
});

test('buildah: network none leaves RUN steps only loopback', async () => {
  const req = request(context('FROM base\nRUN cat /proc/net/dev > /net\n'), { target: undefined });
  await new BuildahBuilder({ network: 'none' }).build(req);
  const devices = readFileSync(path.join(unpack(req.outLayout), 'net'), 'utf8').split('\n').slice(2).filter(Boolean).map((l) => l.split(':')[0].trim());
  assert.equal(devices, ['lo']);
});

test('buildah: a failing RUN step throws with the last lines of output and the log path', async () => {
  const req = request(context('FROM base\nRUN echo boom-marker-1; echo boom-marker-2 >&2; exit 3\n'), { target: undefined });
  try {
    await new BuildahBuilder().build(req);
    assert.unreachable();
  } catch (e) {
    const message = (e as Error).message;
    assert.is((e as Error).name, 'NodeFailure');
    assert.ok(message.startsWith(`buildah bud failed (exit code 3); last lines of ${req.logFile}:\n`), message);
    assert.match(message, 'boom-marker-1\n');
    assert.match(message, 'boom-marker-2\n');
    assert.match(message, 'Error: building at STEP "RUN echo boom-marker-1; echo boom-marker-2 >&2; exit 3": exit status 3');
    assert.ok(message.split('\n').length <= 21, 'at most 20 lines of output');
  }
  assert.equal(readdirSync(req.scratchDir), []);
  assert.not.ok(existsSync(req.outLayout));
});

/** Sleep durations unique to this run, so the process checks never see another run's leftovers. */
const uniqueSeconds = 100_000 + (process.pid % 100_000) * 10;

for (const network of ['host', 'none'] as const) {
  test(`buildah: abort ends the build and every process it started (network ${network})`, async () => {
    const seconds = uniqueSeconds + (network === 'host' ? 1 : 2);
    const controller = new AbortController();
    const req = request(context(`FROM base\nRUN sleep ${seconds}\n`), { target: undefined, signal: controller.signal });
    const build = new BuildahBuilder({ network }).build(req);
    const outcome = build.then(() => 'built', (e: Error) => e);
    await waitFor('the RUN step', () => processesWith(`sleep ${seconds}`).length > 0);
    const t0 = Date.now();
    controller.abort();
    const e = await outcome;
    assert.instance(e, Error);
    assert.is((e as Error).name, 'AbortError');
    assert.ok(Date.now() - t0 < 5000, `ended within 5 s (took ${Date.now() - t0} ms)`);
    await waitFor('no processes left', () => processesWith(`sleep ${seconds}`).length + processesWith(req.scratchDir).length === 0, 3000).catch(() => undefined);
    assert.equal(processesWith(`sleep ${seconds}`), [], 'no RUN step left');
    assert.equal(processesWith(req.scratchDir), [], 'no builder process left');
    assert.equal(readdirSync(req.scratchDir), []);
    assert.match(readFileSync(req.logFile, 'utf8'), '# buildah bud: aborted\n');
  });
}

test('killContainerProcesses ends RUN steps that outlive a SIGKILLed buildah (runc gives them their own session)', async () => {
  const seconds = uniqueSeconds + 3;
  const ctx = context(`FROM base\nRUN sleep ${seconds}\n`);
  const work = fresh('orphans');
  const g = ['--root', path.join(work, 'root'), '--runroot', path.join(work, 'runroot'), '--storage-driver', 'vfs'];
  sh(['skopeo', 'copy', `oci:${BASE_LAYOUT}:base`, `containers-storage:[vfs@${path.join(work, 'root')}+${path.join(work, 'runroot')}]localhost/base:latest`]);
  const runc = findExecutable('runc', PATH_ENV, ['/usr/sbin', '/sbin']) as string;
  const child = spawn('buildah', [...g, 'bud', '--isolation', 'oci', '--runtime', runc, '--network', 'none', '--pull=false', '-f', path.join(ctx, 'Dockerfile'), ctx], { stdio: 'ignore', detached: true });
  const exited = new Promise((r) => child.once('exit', r));
  await waitFor('the RUN step', () => processesWith(`sleep ${seconds}`).length > 0);
  process.kill(-(child.pid as number), 'SIGKILL');
  await exited;
  const orphans = processesWith(`sleep ${seconds}`);
  assert.is(orphans.length, 1, 'the RUN step survived its builder');
  assert.equal(killContainerProcesses(path.join(work, 'root')), orphans);
  await waitFor('the orphan to end', () => processesWith(`sleep ${seconds}`).length === 0, 3000);
});

test('podman: builds FROM the pinned base, reproducibly', async () => {
  const ctx = context();
  const first = request(ctx);
  await new PodmanBuilder().build(first);
  assertBuilt(first);
  assert.match(await new PodmanBuilder().version(), /^podman \d+\.\d+\.\d+$/);
  const second = request(ctx);
  await new PodmanBuilder().build(second);
  assert.is(latestDigest(second.outLayout), latestDigest(first.outLayout));
});

/** podman's Docker-compatible API on a private socket, with SANDBOX.md's defaults. */
async function startDockerService(): Promise<{ host: string; child: ChildProcess; runroot: string }> {
  const dir = fresh('docker-service');
  // podman refuses run roots longer than 50 characters.
  const runroot = mkdtempSync('/tmp/graph-svc-');
  const conf = path.join(dir, 'containers.conf');
  writeFileSync(
    conf,
    '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1000:1000"]\n[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n',
  );
  const socket = path.join(dir, 'docker.sock');
  const child = spawn(
    'podman',
    ['--root', path.join(dir, 'root'), '--runroot', runroot, '--storage-driver', 'vfs', '--tmpdir', path.join(dir, 'libpod'), 'system', 'service', '--time=0', `unix://${socket}`],
    { env: { ...process.env, CONTAINERS_CONF: conf, TMPDIR: dir }, stdio: 'ignore', detached: true },
  );
  await waitFor('the podman service socket', () => existsSync(socket), 15_000);
  return { host: `unix://${socket}`, child, runroot };
}

const dockerMissing = ['docker', 'podman', 'skopeo'].filter((t) => !has(t));
test('docker CLI against podman\'s Docker-compatible service: builds FROM the pinned base', async () => {
  if (dockerMissing.length) {
    console.log(`  skipped the docker backend test: ${dockerMissing.join(', ')} not installed`);
    return;
  }
  const service = await startDockerService();
  try {
    const env = { ...process.env, DOCKER_HOST: service.host };
    const builder = await detectBuilder('docker', { env });
    assert.is(builder.name, 'docker');
    assert.match(await builder.version(), /^docker \d+\.\d+\.\d+ \(engine \d+\.\d+\.\d+(, buildx .*)?\)$/);
    const req = request(context());
    await builder.build(req);
    assertBuilt(req);
    assert.match(readFileSync(req.logFile, 'utf8'), '$ docker --host unix://');
  } finally {
    process.kill(-(service.child.pid as number), 'SIGTERM');
    await new Promise((r) => (service.child.exitCode !== null ? r(undefined) : service.child.once('exit', r)));
    rmSync(service.runroot, { recursive: true, force: true });
  }
});

test('no builder process outlives the tests', () => {
  assert.equal(processesWith(ROOT), []);
});

test.run();
