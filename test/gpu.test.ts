/**
 * End to end, with real bubblewrap, on a host without GPUs (this machine): a test claiming a GPU
 * is shown as `skip` by the plan, ends `skipped` with "no GPU on this host" in the report and in
 * JUnit while the zoo's other test runs, and the build exits 0; under `--require-gpu` the same
 * test fails with the reason and the build exits 1. On a host with GPUs this file checks nothing
 * and says so: scripts/gpu-check.sh is the check for such a host.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { discoverGpus } from '../rules/runtime/gpu.js';
import { graph, workspace } from './helpers.js';

const test = suite('gpu (e2e)');

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
