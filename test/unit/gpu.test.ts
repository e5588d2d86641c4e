/**
 * GPUs without a GPU: discovery from fixture CDI specs (test/fixtures/cdi/) and from fake /dev,
 * /proc and `ldconfig -p` trees; the sandbox arguments each gives (golden files under
 * test/golden/, UPDATE_GOLDEN=1 rewrites them); the device allocator; and the scheduler handing
 * distinct GPU ids to tests, serializing them on one GPU, and skipping (or, required, failing)
 * tests on a host without GPUs. The fake trees' root is written as ROOT in the golden files.
 */
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { ActionCache } from '../../engine/cache/action-cache.js';
import { ContentStore } from '../../engine/cache/store.js';
import type { EngineEvent, RunSummary } from '../../engine/events.js';
import { DeviceAllocator } from '../../engine/execute/devices.js';
import { executePlan } from '../../engine/execute/scheduler.js';
import { FileDigester } from '../../engine/key/files.js';
import { planBuild, type Plan } from '../../engine/plan.js';
import { renderPlan } from '../../engine/report/plan.js';
import { reportJson, reportJunit } from '../../engine/report/build-report.js';
import type { HostResource } from '../../engine/validate/declarations.js';
import { openWorkspace } from '../../engine/workspace.js';
import { apptainerArgv } from '../../rules/runtime/apptainer.js';
import { bubblewrapArgv, rootMounts } from '../../rules/runtime/bubblewrap.js';
import { discoverGpus, elfSoname, gpuGrant, noGpuReason, parseLdconfig } from '../../rules/runtime/gpu.js';
import { podmanRunArgs } from '../../rules/runtime/podman.js';
import type { RunInImage } from '../../rules/runtime/runtime.js';
import { FakeExecutor, FakeRunner, fakeRules, REPO, workspace } from '../helpers.js';

const test = suite('gpu');
const FIXTURES = path.join(REPO, 'test', 'fixtures', 'cdi');

function golden(name: string, actual: string): void {
  const file = path.join(REPO, 'test', 'golden', name);
  if (process.env.UPDATE_GOLDEN) writeFileSync(file, actual);
  assert.fixture(actual, readFileSync(file, 'utf8'));
}

const temps: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(path.join(tmpdir(), 'graph-gpu-'));
  temps.push(d);
  return d;
}
test.after(() => {
  for (const d of temps) rmSync(d, { recursive: true, force: true });
});

function touch(root: string, rel: string, text = ''): void {
  mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
  writeFileSync(path.join(root, rel), text);
}

const LIB = 'usr/lib/x86_64-linux-gnu';

/**
 * The smallest 64-bit little-endian ELF shared object with a DT_SONAME: header, a PT_LOAD over the
 * whole file, a PT_DYNAMIC (DT_STRTAB, DT_SONAME, DT_NULL) at 176, the string table at 224.
 */
function fakeElf(soname: string): Buffer {
  const strtab = Buffer.from(`\0${soname}\0`, 'latin1');
  const b = Buffer.alloc(224 + strtab.length);
  b.writeUInt32BE(0x7f454c46, 0);
  b[4] = 2; // ELFCLASS64
  b[5] = 1; // little-endian
  b[6] = 1;
  b.writeUInt16LE(3, 16); // ET_DYN
  b.writeUInt16LE(62, 18); // x86-64
  b.writeUInt32LE(1, 20);
  b.writeBigUInt64LE(64n, 32); // e_phoff
  b.writeUInt16LE(64, 52);
  b.writeUInt16LE(56, 54);
  b.writeUInt16LE(2, 56);
  const ph = (at: number, type: number, offset: number, size: number) => {
    b.writeUInt32LE(type, at);
    b.writeBigUInt64LE(BigInt(offset), at + 8);
    b.writeBigUInt64LE(BigInt(offset), at + 16);
    b.writeBigUInt64LE(BigInt(size), at + 32);
    b.writeBigUInt64LE(BigInt(size), at + 40);
  };
  ph(64, 1, 0, b.length);
  ph(120, 2, 176, 48);
  b.writeBigInt64LE(5n, 176); // DT_STRTAB
  b.writeBigUInt64LE(224n, 184);
  b.writeBigInt64LE(14n, 192); // DT_SONAME
  b.writeBigUInt64LE(1n, 200);
  strtab.copy(b, 224);
  return b;
}

/** A fake host with two GPUs: device nodes, driver files, /proc; a CDI spec when `cdi`. */
function fakeHost(cdi: boolean): string {
  const root = tempDir();
  for (const n of ['nvidia0', 'nvidia1', 'nvidiactl', 'nvidia-uvm', 'nvidia-uvm-tools']) touch(root, `dev/${n}`);
  mkdirSync(path.join(root, LIB), { recursive: true });
  writeFileSync(path.join(root, LIB, 'libcuda.so.535.104.05'), fakeElf('libcuda.so.1'));
  writeFileSync(path.join(root, LIB, 'libnvidia-ml.so.535.104.05'), fakeElf('libnvidia-ml.so.1'));
  symlinkSync('libcuda.so.535.104.05', path.join(root, LIB, 'libcuda.so.1'));
  symlinkSync('libcuda.so.1', path.join(root, LIB, 'libcuda.so'));
  symlinkSync('libnvidia-ml.so.535.104.05', path.join(root, LIB, 'libnvidia-ml.so.1'));
  symlinkSync('libnvidia-ml.so.1', path.join(root, LIB, 'libnvidia-ml.so'));
  touch(root, 'usr/bin/nvidia-smi', '#!/bin/sh\n');
  touch(root, 'proc/driver/nvidia/version', 'NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\nGCC version:  gcc version 12.2.0\n');
  touch(root, 'proc/driver/nvidia/gpus/0000:01:00.0/information', 'Model: \t\t NVIDIA H100\nIRQ:   \t\t 42\nGPU UUID: \t GPU-aaaaaaaa-0000-0000-0000-000000000000\nDevice Minor: \t 0\n');
  touch(root, 'proc/driver/nvidia/gpus/0000:02:00.0/information', 'Model: \t\t NVIDIA H100\nGPU UUID: \t GPU-bbbbbbbb-0000-0000-0000-000000000000\nDevice Minor: \t 1\n');
  if (cdi) {
    mkdirSync(path.join(root, 'etc/cdi'), { recursive: true });
    copyFileSync(path.join(FIXTURES, 'nvidia.yaml'), path.join(root, 'etc/cdi/nvidia.yaml'));
    copyFileSync(path.join(FIXTURES, 'other-vendor.json'), path.join(root, 'etc/cdi/other-vendor.json'));
  }
  return root;
}

/** An image root filesystem with usrmerge links, and an empty output directory. */
function request(grant: RunInImage['gpus']): RunInImage {
  const rootfs = tempDir();
  mkdirSync(path.join(rootfs, 'usr/bin'), { recursive: true });
  mkdirSync(path.join(rootfs, 'etc'));
  symlinkSync('usr/bin', path.join(rootfs, 'bin'));
  return { rootfs, command: ['nvidia-smi', '-L'], env: { PATH: '/usr/bin:/bin', LD_LIBRARY_PATH: '/opt/lib' }, outputDir: '/OUT', signal: new AbortController().signal, logFile: '/LOG', ...(grant ? { gpus: grant } : {}) };
}

/** argv one per line, the fake root and rootfs named ROOT and ROOTFS. */
function shown(argv: readonly string[], root: string, rootfs: string): string {
  return `${argv.map((a) => a.split(rootfs).join('ROOTFS').split(root).join('ROOT')).join('\n')}\n`;
}

test('CDI: GPUs are the nvidia.com/gpu devices but "all", other vendors ignored; UUIDs and driver from /proc', () => {
  const root = fakeHost(true);
  const host = discoverGpus({ root });
  assert.is(host?.source, 'cdi');
  assert.equal(host?.specs, [path.join(root, 'etc/cdi/nvidia.yaml')]);
  assert.equal(host?.devices.map((d) => [d.id, d.minor, d.uuid]), [
    ['0', 0, 'GPU-aaaaaaaa-0000-0000-0000-000000000000'],
    ['1', 1, 'GPU-bbbbbbbb-0000-0000-0000-000000000000'],
  ]);
  assert.is(host?.driverVersion, '535.104.05');
});

test('CDI: a test holding GPU 1 gets its node, the control nodes, the libraries with sonames, nvidia-smi (golden bwrap argv)', () => {
  const root = fakeHost(true);
  const grant = gpuGrant(discoverGpus({ root }) as NonNullable<ReturnType<typeof discoverGpus>>, ['1']);
  assert.equal(grant.env, { NVIDIA_VISIBLE_DEVICES: '1', CUDA_VISIBLE_DEVICES: 'GPU-bbbbbbbb-0000-0000-0000-000000000000' });
  assert.equal(grant.notBound, [path.join(root, 'run/nvidia-persistenced/socket')]);
  const req = request(grant);
  const argv = bubblewrapArgv('bwrap', req, rootMounts(req.rootfs, ['/output', '/.graph']));
  golden('gpu-bwrap-cdi.txt', shown(argv, root, req.rootfs));
  // podman applies the CDI spec itself.
  const podman = podmanRunArgs(req, 'NAME');
  assert.equal(podman.slice(podman.indexOf('--workdir') + 2, podman.indexOf('--workdir') + 4), ['--device', 'nvidia.com/gpu=1']);
  assert.ok(podman.includes('NVIDIA_VISIBLE_DEVICES=1') && podman.includes('CUDA_VISIBLE_DEVICES=GPU-bbbbbbbb-0000-0000-0000-000000000000'));
  assert.not.ok(podman.some((a) => a.includes('/.graph/gpu')), 'podman binds no driver files of its own with CDI');
});

test('without CDI: /dev nodes, /proc UUIDs, nvliblist libraries from ldconfig -p (this ABI only), binaries (golden bwrap argv)', () => {
  const root = fakeHost(false);
  const host = discoverGpus({ root });
  assert.is(host?.source, 'dev');
  assert.equal(host?.devices.map((d) => d.id), ['0', '1']);
  const ldconfig = readFileSync(path.join(FIXTURES, 'ldconfig-p.txt'), 'utf8');
  const grant = gpuGrant(host as NonNullable<typeof host>, ['0', '1'], { root, ldconfig, abi: 'x86-64' });
  assert.equal(grant.deviceNodes.map((n) => n.path), ['/dev/nvidiactl', '/dev/nvidia-uvm', '/dev/nvidia-uvm-tools', '/dev/nvidia0', '/dev/nvidia1']);
  assert.equal(grant.env, { NVIDIA_VISIBLE_DEVICES: '0,1', CUDA_VISIBLE_DEVICES: 'GPU-aaaaaaaa-0000-0000-0000-000000000000,GPU-bbbbbbbb-0000-0000-0000-000000000000' });
  const req = request(grant);
  golden('gpu-bwrap-dev.txt', shown(bubblewrapArgv('bwrap', req, rootMounts(req.rootfs, ['/output', '/.graph'])), root, req.rootfs));
  // podman without CDI binds what bubblewrap binds.
  const podman = podmanRunArgs(req, 'NAME');
  assert.ok(podman.includes(`${path.join(root, LIB, 'libcuda.so.535.104.05')}:/.graph/gpu/lib/libcuda.so.1:ro`));
  assert.ok(podman.includes(`${path.join(root, 'dev/nvidia1')}:/dev/nvidia1`));
});

test('without UUIDs, CUDA_VISIBLE_DEVICES numbers the held GPUs from 0 (the sandbox has only their nodes)', () => {
  const root = fakeHost(false);
  rmSync(path.join(root, 'proc/driver/nvidia/gpus'), { recursive: true });
  const grant = gpuGrant(discoverGpus({ root }) as NonNullable<ReturnType<typeof discoverGpus>>, ['1']);
  assert.equal(grant.env, { NVIDIA_VISIBLE_DEVICES: '1', CUDA_VISIBLE_DEVICES: '0' });
});

test('apptainer: --nv, and the held GPUs by host index', () => {
  const root = fakeHost(true);
  const req = request(gpuGrant(discoverGpus({ root }) as NonNullable<ReturnType<typeof discoverGpus>>, ['1']));
  const argv = apptainerArgv('apptainer', req);
  assert.ok(argv.includes('--nv'));
  assert.ok(argv.includes('CUDA_VISIBLE_DEVICES=1') && argv.includes('NVIDIA_VISIBLE_DEVICES=1'));
});

test('no GPU: no /dev/nvidiaN and no CDI spec; a CDI spec that cannot be parsed is named', () => {
  const root = tempDir();
  touch(root, 'dev/null');
  touch(root, 'dev/nvidiactl');
  assert.is(discoverGpus({ root }), undefined);
  touch(root, 'etc/cdi/broken.json', '{"kind": ');
  assert.throws(() => discoverGpus({ root }), (e: Error) => e.message.startsWith(`cannot read CDI spec ${path.join(root, 'etc/cdi/broken.json')}: `));
  assert.is(noGpuReason(1, 0), 'no GPU on this host');
  assert.is(noGpuReason(2, 1), 'needs 2 GPUs, this host has 1');
});

test('elfSoname reads DT_SONAME; anything else has none', () => {
  const dir = tempDir();
  writeFileSync(path.join(dir, 'lib.so'), fakeElf('libfake.so.7'));
  assert.is(elfSoname(path.join(dir, 'lib.so')), 'libfake.so.7');
  writeFileSync(path.join(dir, 'text.so'), 'not an ELF file');
  assert.is(elfSoname(path.join(dir, 'text.so')), undefined);
  assert.is(elfSoname(path.join(dir, 'missing.so')), undefined);
  // A real library of this machine (zlib is everywhere node is).
  const libz = ['/usr/lib/x86_64-linux-gnu/libz.so.1', '/lib/x86_64-linux-gnu/libz.so.1'].find((p) => existsSync(p));
  if (libz && process.arch === 'x64') assert.is(elfSoname(libz), 'libz.so.1');
});

test('parseLdconfig keeps the first entry of each name of this ABI', () => {
  const cache = parseLdconfig(readFileSync(path.join(FIXTURES, 'ldconfig-p.txt'), 'utf8'), 'x86-64');
  assert.is(cache.get('libnvidia-ml.so.1'), '/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1');
  assert.is(cache.get('libc.so.6'), '/lib/x86_64-linux-gnu/libc.so.6');
  assert.not.ok(cache.has('libnvidia-ptxjitcompiler.so.1'));
  assert.is(cache.size, 6);
});

test('DeviceAllocator hands out the lowest free ids, takes nothing when a claim cannot be met, refuses double releases', () => {
  const a = new DeviceAllocator({ gpu: ['0', '1', '2'] });
  const first = a.take({ gpu: 2, slot: 1 });
  assert.equal(first, { gpu: ['0', '1'] });
  assert.is(a.take({ gpu: 2 }), undefined);
  assert.equal(a.free('gpu'), ['2']);
  a.give({ gpu: ['1'] });
  assert.equal(a.take({ gpu: 2 }), { gpu: ['1', '2'] });
  a.give({ gpu: ['0'] });
  assert.throws(() => a.give({ gpu: ['0'] }), /device gpu '0' given back twice/);
  assert.throws(() => a.give({ gpu: ['7'] }), /device gpu '7' is not in the pool/);
  assert.equal(a.take({ slot: 4 }), {}, 'tokens without a pool hold no ids');
});

// ---------------------------------------------------------------------------------------------
// The scheduler with fake GPUs.

const GPU_ZOO = {
  'f.txt': 'f\n',
  'images.yaml': 'version: 1\nsettings:\n  resources: {gpu: 2}\nimages:\n  img:\n    layers: [{copy: f.txt, to: /f}]\n',
  'models.yaml': 'version: 1\ngroups:\n  g:\n    image: img\n    models: [a, b]\n    test: {command: [run], resources: {gpu: 1}}\n',
};

function planOf(files: Record<string, string>, hostResources?: Record<string, HostResource>) {
  const ws = openWorkspace(workspace(files), fakeRules());
  temps.push(ws.root);
  const cache = new ActionCache(ws.stateDir);
  const store = new ContentStore(path.join(ws.stateDir, 'cas'));
  const plan = planBuild(ws.graph, new Set(ws.graph.order), { root: ws.root, cache, store, digester: new FileDigester(ws.root, undefined), env: {}, ...(hostResources ? { hostResources } : {}) });
  return { ws, cache, store, plan };
}

function execute(made: ReturnType<typeof planOf>, plan: Plan, devices: Record<string, string[]>, exec: FakeExecutor) {
  const events: EngineEvent[] = [];
  const done = executePlan(plan, {
    workspace: made.ws.forRules,
    jobs: 4,
    limits: {},
    resources: made.ws.decls.settings.resources,
    devices,
    failFast: false,
    runner: new FakeRunner(),
    cache: made.cache,
    store: made.store,
    stateDir: made.ws.stateDir,
    emit: (e) => events.push(e),
    executor: exec,
    recorder: { record: async () => {} },
  });
  return { done, events };
}

const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Succeed every running job, step by step, until the run ends; returns the test ids running together per step. */
async function drive(exec: FakeExecutor, done: Promise<RunSummary>): Promise<string[][]> {
  let over = false;
  void done.then(() => (over = true));
  const steps: string[][] = [];
  while (!over) {
    await settle();
    const running = [...exec.running.keys()].sort();
    if (running.some((id) => id.startsWith('test:'))) steps.push(running);
    for (const id of running) exec.succeed(id);
  }
  return steps;
}

test('two gpu: 1 tests on a 2-GPU host run together on different GPUs, named in events and results', async () => {
  const made = planOf(GPU_ZOO);
  const exec = new FakeExecutor();
  const { done, events } = execute(made, made.plan, { gpu: ['0', '1'] }, exec);
  const held = new Map<string, unknown>();
  let over = false;
  void done.then(() => (over = true));
  while (!over) {
    await settle();
    for (const [id, r] of exec.running) if (id.startsWith('test:')) held.set(id, r.job.devices);
    if (exec.running.size === 2) assert.equal([...exec.running.keys()].sort(), ['test:g/a@oci', 'test:g/b@oci']);
    for (const id of [...exec.running.keys()]) exec.succeed(id);
  }
  assert.equal(Object.fromEntries(held), { 'test:g/a@oci': { gpu: ['0'] }, 'test:g/b@oci': { gpu: ['1'] } });
  const starts = events.flatMap((e) => (e.type === 'node-start' && e.devices ? [[e.id, e.devices]] : []));
  assert.equal(starts, [['test:g/a@oci', { gpu: ['0'] }], ['test:g/b@oci', { gpu: ['1'] }]]);
  const summary = await done;
  assert.equal(summary.results.filter((r) => r.devices).map((r) => [r.id, r.status, r.devices]), [
    ['test:g/a@oci', 'ran', { gpu: ['0'] }],
    ['test:g/b@oci', 'ran', { gpu: ['1'] }],
  ]);
  const report = JSON.parse(reportJson(summary, made.ws.root)) as { nodes: { id: string; devices?: unknown }[] };
  assert.equal(report.nodes.map((n) => [n.id, n.devices]), [['build:img', undefined], ['test:g/a@oci', { gpu: ['0'] }], ['test:g/b@oci', { gpu: ['1'] }], ['publish:img', undefined]]);
});

test('with one GPU (though gpu: 2 is declared) the two tests run one after the other, both on GPU 0', async () => {
  const made = planOf(GPU_ZOO);
  const exec = new FakeExecutor();
  const { done, events } = execute(made, made.plan, { gpu: ['0'] }, exec);
  const steps = await drive(exec, done);
  assert.equal(steps, [['test:g/a@oci'], ['test:g/b@oci']]);
  const starts = events.flatMap((e) => (e.type === 'node-start' && e.devices ? [[e.id, e.devices]] : []));
  assert.equal(starts, [['test:g/a@oci', { gpu: ['0'] }], ['test:g/b@oci', { gpu: ['0'] }]]);
  assert.equal((await done).counts, { ran: 4, cached: 0, failed: 0, interrupted: 0, skipped: 0 });
});

const NO_GPU = (required: boolean): Record<string, HostResource> => ({ gpu: { ids: [], required, unavailable: (n) => `${noGpuReason(n, 0)}${required ? ' (--require-gpu)' : ''}` } });

test('no GPU on this host: the plan says skip, the tests end skipped (never started) with the reason, JUnit shows them skipped', async () => {
  const made = planOf(GPU_ZOO, NO_GPU(false));
  assert.is(
    renderPlan(made.plan, 'text'),
    '2 nodes to run, 0 cached, 2 cannot run here (4 nodes selected)\n  run    build:img\n           no previous record\n  skip   test:g/a@oci\n           will be skipped: no GPU on this host\n  skip   test:g/b@oci\n           will be skipped: no GPU on this host\n  run    publish:img\n           no previous record\n',
  );
  const json = JSON.parse(renderPlan(made.plan, 'json'));
  assert.equal(json.nodes.map((n: { id: string; status: string }) => [n.id, n.status]), [['build:img', 'run'], ['test:g/a@oci', 'skip'], ['test:g/b@oci', 'skip'], ['publish:img', 'run']]);
  assert.equal(json.summary, { total: 4, run: 2, cached: 0, unavailable: 2 });
  // Found in a remote cache (it ran on a GPU host): cached, whatever this host lacks.
  const hit = made.plan.nodes.map((p) => (p.node.id === 'test:g/a@oci' ? { ...p, status: 'cached' as const, reasons: ['from remote cache R'] } : p));
  const hitJson = JSON.parse(renderPlan({ ...made.plan, nodes: hit, byId: new Map(hit.map((p) => [p.node.id, p])) }, 'json'));
  assert.equal([hitJson.nodes[1].status, hitJson.summary], ['cached', { total: 4, run: 2, cached: 1, unavailable: 1 }]);
  const exec = new FakeExecutor();
  const { done } = execute(made, made.plan, {}, exec);
  await drive(exec, done);
  const summary = await done;
  assert.equal(exec.started, ['build:img']);
  const a = summary.results.find((r) => r.id === 'test:g/a@oci');
  assert.equal([a?.status, a?.reasons, a?.failure], ['skipped', ['no GPU on this host'], { type: 'unavailable', message: 'no GPU on this host', required: false }]);
  // An image is published only after its tests passed: not when they could not run.
  const publish = summary.results.find((r) => r.id === 'publish:img');
  assert.equal([publish?.status, publish?.reasons], ['skipped', ['dependency test:g/a@oci cannot run on this host: no GPU on this host']]);
  assert.equal(summary.counts, { ran: 1, cached: 0, failed: 0, interrupted: 0, skipped: 3 });
  assert.match(reportJunit(summary), '<skipped message="no GPU on this host"/>');
});

test('no GPU under --require-gpu: the plan says fail, the tests fail with the reason', async () => {
  const made = planOf(GPU_ZOO, NO_GPU(true));
  assert.match(renderPlan(made.plan, 'text'), '  fail   test:g/a@oci\n           will fail: no GPU on this host (--require-gpu)\n');
  const exec = new FakeExecutor();
  const { done } = execute(made, made.plan, {}, exec);
  await drive(exec, done);
  const summary = await done;
  const a = summary.results.find((r) => r.id === 'test:g/a@oci');
  assert.equal([a?.status, a?.reasons], ['failed', ['no GPU on this host (--require-gpu)']]);
  assert.equal(summary.counts, { ran: 1, cached: 0, failed: 2, interrupted: 0, skipped: 1 });
});

test('validation: an undeclared gpu token is the host\'s; a declared one smaller than a claim is still an error', () => {
  const ws = openWorkspace(workspace({ ...GPU_ZOO, 'images.yaml': GPU_ZOO['images.yaml'].replace('settings:\n  resources: {gpu: 2}\n', '') }), fakeRules());
  temps.push(ws.root);
  const found = discoverGpus()?.devices.length ?? 0;
  assert.is(ws.decls.settings.resources.gpu, found);
  assert.equal(ws.decls.settings.hostResources?.gpu.ids.length, found);
  // The test's decl (in its key) says how many GPUs, never which.
  assert.is((ws.graph.node('test:g/a@oci' as never).decl as { gpus?: number }).gpus, 1);
  const dir = workspace({ ...GPU_ZOO, 'images.yaml': GPU_ZOO['images.yaml'].replace('{gpu: 2}', '{gpu: 1}'), 'models.yaml': GPU_ZOO['models.yaml'].replace('{gpu: 1}', '{gpu: 2}') });
  temps.push(dir);
  assert.throws(() => openWorkspace(dir, fakeRules()), (e: Error) => /test claims 2 'gpu' but only 1 exist/.test(String((e as { diagnostics?: { message: string }[] }).diagnostics?.map((d) => d.message))));
});

test.run();
