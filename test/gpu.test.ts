/**
 * End to end, with real bubblewrap. On a host without GPUs (this machine): a test claiming a GPU
 * is shown as `skip` by the plan, ends `skipped` with "no GPU on this host" in the report and in
 * JUnit while the zoo's other test runs, and the build exits 0; under `--require-gpu` the same
 * test fails with the reason and the build exits 1 (on a host with GPUs that part checks nothing
 * and says so: scripts/gpu-check.sh is the check for such a host). On any host: the bwrap
 * arguments for a GPU grant from a fake host (fixture CDI spec, device nodes and driver files that
 * are plain files) work in a real sandbox: the command sees exactly the held GPU's nodes, the
 * driver's files, links and variables, and cannot write there.
 */
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { detectBackend } from '../rules/runtime/runtime.js';
import { discoverGpus, gpuGrant } from '../rules/runtime/gpu.js';
import { busyboxRoot, graph, REPO, workspace } from './helpers.js';

const test = suite('gpu (e2e)');

const made: string[] = [];
const tmp = () => {
  const d = mkdtempSync(path.join(tmpdir(), 'graph-gpu-e2e-'));
  made.push(d);
  return d;
};
test.after(() => {
  for (const d of made) rmSync(d, { recursive: true, force: true });
});

test('a grant from a fake CDI host in a real bubblewrap sandbox: the held GPU only, the driver files read-only, on the paths', async () => {
  const root = tmp();
  const put = (rel: string, text: string, mode = 0o644) => {
    mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
    writeFileSync(path.join(root, rel), text, { mode });
  };
  for (const n of ['nvidia0', 'nvidia1', 'nvidiactl', 'nvidia-uvm', 'nvidia-uvm-tools', 'nvidia-modeset']) put(`dev/${n}`, `node ${n}\n`);
  put('usr/lib/x86_64-linux-gnu/libcuda.so.535.104.05', 'cuda\n');
  put('usr/lib/x86_64-linux-gnu/libnvidia-ml.so.535.104.05', 'nvml\n');
  // The driver's tool, as the sandbox runs it: it reports what it can see.
  put('usr/bin/nvidia-smi', '#!/bin/sh\necho "visible=$NVIDIA_VISIBLE_DEVICES cuda=$CUDA_VISIBLE_DEVICES"\n', 0o755);
  mkdirSync(path.join(root, 'etc/cdi'), { recursive: true });
  copyFileSync(path.join(REPO, 'test/fixtures/cdi/nvidia.yaml'), path.join(root, 'etc/cdi/nvidia.yaml'));
  const host = discoverGpus({ root });
  assert.equal(host?.devices.map((d) => d.id), ['0', '1']);
  const grant = gpuGrant(host as NonNullable<typeof host>, ['1']);

  const rootfs = busyboxRoot(tmp(), 'all');
  const out = path.join(tmp(), 'output');
  const log = path.join(tmp(), 'test.log');
  const script = [
    'nvidia-smi > /output/smi.txt',
    'ls /dev | grep nvidia > /output/dev.txt',
    'cat /dev/nvidia1 /dev/nvidiactl > /output/nodes.txt',
    'echo "$LD_LIBRARY_PATH|$PATH" > /output/paths.txt',
    'ls /.graph/gpu/lib > /output/lib.txt',
    'readlink /.graph/gpu/lib/libnvidia-ml.so.1 > /output/link.txt',
    'cat /.graph/gpu/lib/libnvidia-ml.so.1 >> /output/link.txt',
    '(echo x > /.graph/gpu/lib/new) 2> /output/write.txt || echo refused >> /output/write.txt',
  ].join('; ');
  const backend = await detectBackend('bubblewrap');
  const outcome = await backend.run({ rootfs, command: ['/bin/sh', '-c', script], env: { PATH: '/bin' }, outputDir: out, gpus: grant, signal: new AbortController().signal, logFile: log });
  assert.equal(outcome, { exitCode: 0, timedOut: false }, readFileSync(log, 'utf8'));
  const read = (f: string) => readFileSync(path.join(out, f), 'utf8');
  assert.is(read('smi.txt'), 'visible=1 cuda=0\n');
  assert.is(read('dev.txt'), 'nvidia-modeset\nnvidia-uvm\nnvidia-uvm-tools\nnvidia1\nnvidiactl\n');
  assert.is(read('nodes.txt'), 'node nvidia1\nnode nvidiactl\n');
  assert.is(read('paths.txt'), '/.graph/gpu/lib|/bin:/.graph/gpu/bin\n');
  assert.is(read('lib.txt'), 'libcuda.so.535.104.05\nlibnvidia-ml.so.1\nlibnvidia-ml.so.535.104.05\n');
  assert.is(read('link.txt'), 'libnvidia-ml.so.535.104.05\nnvml\n');
  assert.match(read('write.txt'), /Read-only file system\nrefused\n$/);
});

const ZOO = {
  'images.yaml': 'version: 1\nimages:\n  bb:\n    debian: {packages: [busybox-static]}\n',
  'models.yaml': `version: 1
groups:
  cpu:
    image: bb
    models: [m]
    test: {command: [/bin/busybox, sh, -c, "echo ok > /output/out.txt"]}
  cuda:
    image: bb
    models: [m]
    test: {command: [nvidia-smi, -L], resources: {gpu: 1}}
`,
};

interface ReportNode {
  id: string;
  status: string;
  reasons: string[];
  failure?: { type: string; message?: string; required?: boolean };
}
const nodesOf = (dir: string) => new Map((JSON.parse(readFileSync(path.join(dir, 'report.json'), 'utf8')) as { nodes: ReportNode[] }).nodes.map((n) => [n.id, n]));

const gpus = discoverGpus()?.devices.length ?? 0;
if (gpus > 0) {
  test(`this host has ${gpus} GPU(s): the no-GPU path is not checked here (run scripts/gpu-check.sh)`, () => {});
} else {
  test('no GPU: the plan says skip; the build exits 0, the GPU test is skipped (report, JUnit), the other test ran in bubblewrap', () => {
    const dir = workspace(ZOO);
    const plan = graph(dir, 'plan');
    assert.is(plan.code, 0, plan.stderr);
    assert.match(plan.stdout, '  skip   test:cuda/m@oci\n           will be skipped: no GPU on this host\n');
    assert.match(plan.stdout, ', 1 cannot run here (');
    const build = graph(dir, 'build', '--report', 'report.json', '--junit', 'junit.xml');
    assert.is(build.code, 0, build.stderr);
    const nodes = nodesOf(dir);
    assert.is(nodes.get('test:cpu/m@oci')?.status, 'ran');
    assert.is(readFileSync(path.join(dir, '.graph/out/test/test:cpu%2Fm@oci/output/out.txt'), 'utf8'), 'ok\n');
    const cuda = nodes.get('test:cuda/m@oci');
    assert.equal([cuda?.status, cuda?.reasons, cuda?.failure], ['skipped', ['no GPU on this host'], { type: 'unavailable', message: 'no GPU on this host', required: false }]);
    assert.match(readFileSync(path.join(dir, 'junit.xml'), 'utf8'), /<testcase [^>]*name="test:cuda\/m@oci"[^>]*>\s*<skipped message="no GPU on this host"\/>/);

    // --require-gpu: the same test fails with the reason; what is cached stays cached.
    const required = graph(dir, 'build', '--require-gpu', '--report', 'report.json');
    assert.is(required.code, 1, required.stderr);
    const again = nodesOf(dir);
    assert.is(again.get('test:cpu/m@oci')?.status, 'cached');
    const failed = again.get('test:cuda/m@oci');
    assert.equal([failed?.status, failed?.reasons], ['failed', ['no GPU on this host (--require-gpu)']]);
    assert.match(graph(dir, 'plan', '--require-gpu').stdout, '  fail   test:cuda/m@oci\n           will fail: no GPU on this host (--require-gpu)\n');
  });
}

test.run();
