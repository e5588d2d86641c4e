/**
 * Run contracts (rules/runtime/contract.ts): each preset resolved, the path checks, the argv
 * fallback to the image's Entrypoint + Cmd, the exact sandbox command line every backend makes
 * for each preset (bubblewrap, podman, apptainer: golden arguments, no tool run), the
 * diagnostics of bad contracts in models.yaml. (plan.test.ts: the plan names a changed contract field.)
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { apptainerArgv } from '../../rules/runtime/apptainer.js';
import { bubblewrapArgv, rootMounts } from '../../rules/runtime/bubblewrap.js';
import { contractArgv, contractBinds, contractProblems, resolveContract, type ContractPreset, type RunContract } from '../../rules/runtime/contract.js';
import { podmanRunArgs } from '../../rules/runtime/podman.js';
import type { RunInImage } from '../../rules/runtime/runtime.js';
import { graph, workspace } from '../helpers.js';
import type { NodeId } from '../../engine/rule.js';
import { openWorkspace } from '../../engine/workspace.js';
import { defaultRules } from '../../rules/index.js';

const test = suite('contract');

const made: string[] = [];
test.after(() => {
  for (const dir of made) rmSync(dir, { recursive: true, force: true });
});

test('the presets: kipoi and synapse mount inputs at /input and write /output; tre uses /safe_data, /safe_outputs, /scratch and the image command', () => {
  const kipoi: RunContract = { preset: 'kipoi', mounts: [{ source: 'zoo/in', target: '/input' }], output: '/output', scratch: [], env: {}, workdir: null, command: ['predict'] };
  assert.equal(resolveContract({ preset: 'kipoi', inputs: 'zoo/in', command: ['predict'] }), kipoi);
  assert.equal(resolveContract({ preset: 'synapse', inputs: 'zoo/in', command: ['predict'] }), { ...kipoi, preset: 'synapse' });
  assert.equal(resolveContract({ preset: 'tre', inputs: 'zoo/in' }), {
    preset: 'tre',
    mounts: [{ source: 'zoo/in', target: '/safe_data' }],
    output: '/safe_outputs',
    scratch: ['/scratch'],
    env: {},
    workdir: null,
    command: null,
  });
  // Overrides: extra mounts sorted by target, paths normalized, env sorted, scratch replaced.
  assert.equal(
    resolveContract({ preset: 'tre', inputs: 'd', mounts: { ref: '/ref/', 'w/x': '/a//b' }, output: '/out/', scratch: ['/s2', '/s1'], env: { Z: '1', A: '2' }, workdir: '/w' }),
    {
      preset: 'tre',
      mounts: [{ source: 'w/x', target: '/a/b' }, { source: 'ref', target: '/ref' }, { source: 'd', target: '/safe_data' }],
      output: '/out',
      scratch: ['/s1', '/s2'],
      env: { A: '2', Z: '1' },
      workdir: '/w',
      command: null,
    },
  );
});

test('contract problems: relative, reserved, equal and nested paths, each at its field', () => {
  assert.equal(contractProblems({ preset: 'kipoi', inputs: 'in' }), []);
  assert.equal(contractProblems({ preset: 'tre', inputs: 'in', mounts: { ref: 'ref' } }), [{ at: { field: 'mounts', source: 'ref' }, message: "mount 'ref' is not an absolute path in the container" }]);
  assert.equal(contractProblems({ preset: 'kipoi', inputs: 'in', output: '/input' }), [{ at: { field: 'output' }, message: "the output path '/input' is the same path as the inputs mount /input" }]);
  assert.equal(contractProblems({ preset: 'kipoi', inputs: 'in', output: '/input/out' }), [{ at: { field: 'output' }, message: "the output path '/input/out' is inside the inputs mount /input" }]);
  assert.equal(contractProblems({ preset: 'tre', scratch: ['/safe_outputs/tmp', '/tmp/x', '/'] }), [
    { at: { field: 'scratch', index: 1 }, message: "scratch path '/tmp/x' is under /tmp, which the sandbox mounts itself" },
    { at: { field: 'scratch', index: 2 }, message: "scratch path '/' is the container's root" },
    { at: { field: 'scratch', index: 0 }, message: "scratch path '/safe_outputs/tmp' is inside the output path '/safe_outputs'" },
  ]);
  assert.equal(contractProblems({ preset: 'kipoi', mounts: { a: '/data', b: '/data/' } }), [{ at: { field: 'mounts', source: 'b' }, message: "mount '/data/' is the same path as mount '/data'" }]);
  assert.equal(contractProblems({ preset: 'kipoi', workdir: 'app' }), [{ at: { field: 'workdir' }, message: "workdir 'app' is not an absolute path in the container" }]);
});

test("argv: the test's command, else the image's Entrypoint + Cmd, else a clear error", () => {
  const tre = resolveContract({ preset: 'tre' });
  assert.equal(contractArgv(resolveContract({ preset: 'kipoi', command: ['a', 'b'] }), { Entrypoint: ['x'], Cmd: ['y'] }, 'img'), ['a', 'b']);
  assert.equal(contractArgv(tre, { Entrypoint: ['Rscript', 'run_model.R'], Cmd: ['--input-dir', '/input'] }, 'img'), ['Rscript', 'run_model.R', '--input-dir', '/input']);
  assert.equal(contractArgv(tre, { Cmd: ['tre-job'] }, 'img'), ['tre-job']);
  assert.equal(contractArgv(tre, { Entrypoint: null, Cmd: ['tre-job'] }, 'img'), ['tre-job']);
  assert.throws(
    () => contractArgv(tre, {}, 'py3-base'),
    (e: Error) => e.message === "the test has no 'command' and image 'py3-base' has neither Entrypoint nor Cmd: add 'command:' to the test, or 'entrypoint:'/'cmd:' to the image",
  );
});

/** A run request for `preset` with inputs at host /ws/zoo/in, output /n/output, scratch under /n/scratch. */
function requestFor(preset: ContractPreset, rootfs = '/img'): RunInImage {
  const contract = resolveContract({ preset, inputs: 'zoo/in', mounts: { 'zoo/ref': '/ref' }, env: { MODEL: 'm1' }, ...(preset === 'tre' ? {} : { command: ['predict', '/input/x'] }) });
  const binds = contractBinds(contract, (rel) => `/ws/${rel}`, '/n/output', '/n/scratch');
  return {
    rootfs,
    command: contractArgv(contract, { Cmd: ['tre-job'] }, 'img'),
    env: { PATH: '/usr/bin:/bin', ...contract.env },
    ...binds,
    signal: new AbortController().signal,
    logFile: '/n/test.log',
  };
}

const BWRAP_TAIL = ['--proc', '/proc', '--dev', '/dev', '--perms', '1777', '--tmpfs', '/tmp', '--unshare-all', '--die-with-parent', '--new-session', '--cap-drop', 'ALL', '--clearenv', '--setenv', 'HOME', '/root', '--setenv', 'MODEL', 'm1', '--setenv', 'PATH', '/usr/bin:/bin', '--chdir', '/', '--'];

test('bubblewrap argv for each preset (golden)', () => {
  for (const preset of ['kipoi', 'synapse'] as const) {
    assert.equal(bubblewrapArgv('bwrap', requestFor(preset), ['--ro-bind', '/img', '/']), [
      'bwrap', '--ro-bind', '/img', '/',
      '--ro-bind', '/ws/zoo/in', '/input', '--ro-bind', '/ws/zoo/ref', '/ref', '--bind', '/n/output', '/output',
      ...BWRAP_TAIL, 'predict', '/input/x',
    ], preset);
  }
  assert.equal(bubblewrapArgv('bwrap', requestFor('tre'), ['--ro-bind', '/img', '/']), [
    'bwrap', '--ro-bind', '/img', '/',
    '--ro-bind', '/ws/zoo/ref', '/ref', '--ro-bind', '/ws/zoo/in', '/safe_data', '--bind', '/n/output', '/safe_outputs', '--bind', '/n/scratch/scratch-0', '/scratch',
    ...BWRAP_TAIL, 'tre-job',
  ]);
});

test("bubblewrap's root: bound whole when every contract path is a directory in the image, else entry by entry", () => {
  const root = mkdtempSync(path.join(tmpdir(), 'graph-contract-'));
  made.push(root);
  for (const d of ['usr/bin', 'proc', 'dev', 'tmp', 'input', 'output', 'safe_data']) mkdirSync(path.join(root, d), { recursive: true });
  assert.equal(rootMounts(root, ['/input', '/output']), ['--ro-bind', root, '/']);
  // tre: /safe_outputs and /scratch are missing, so bwrap makes them in its own (then read-only) root.
  assert.equal(rootMounts(root, ['/safe_data', '/safe_outputs', '/scratch']), [
    '--ro-bind', `${root}/dev`, '/dev', '--ro-bind', `${root}/input`, '/input', '--ro-bind', `${root}/output`, '/output',
    '--ro-bind', `${root}/proc`, '/proc', '--ro-bind', `${root}/tmp`, '/tmp', '--ro-bind', `${root}/usr`, '/usr',
  ].filter((_, i, all) => !['/dev', '/proc', '/tmp'].includes(all[i - (i % 3) + 2])));
  const argv = bubblewrapArgv('bwrap', requestFor('tre', root), rootMounts(root, ['/ref', '/safe_data', '/safe_outputs', '/scratch']));
  assert.equal(argv.slice(argv.indexOf('--tmpfs'), argv.indexOf('--unshare-all')), ['--tmpfs', '/tmp', '--remount-ro', '/']);
});

test('podman run arguments for each preset (golden)', () => {
  const head = ['run', '--rm', '--name', 'graph-test-x', '--network', 'none', '--read-only', '--unsetenv-all', '--ulimit', 'nofile=1024:1024', '--ulimit', 'nproc=1000:1000'];
  const env = ['--env', 'HOME=/root', '--env', 'MODEL=m1', '--env', 'PATH=/usr/bin:/bin', '--rootfs', '/img:O'];
  for (const preset of ['kipoi', 'synapse'] as const) {
    assert.equal(podmanRunArgs(requestFor(preset), 'graph-test-x'), [
      ...head, '--mount', 'type=bind,src=/ws/zoo/in,dst=/input,ro=true', '--mount', 'type=bind,src=/ws/zoo/ref,dst=/ref,ro=true', '--mount', 'type=bind,src=/n/output,dst=/output',
      '--workdir', '/', ...env, 'predict', '/input/x',
    ], preset);
  }
  assert.equal(podmanRunArgs(requestFor('tre'), 'graph-test-x'), [
    ...head, '--mount', 'type=bind,src=/ws/zoo/ref,dst=/ref,ro=true', '--mount', 'type=bind,src=/ws/zoo/in,dst=/safe_data,ro=true', '--mount', 'type=bind,src=/n/output,dst=/safe_outputs',
    '--mount', 'type=bind,src=/n/scratch/scratch-0,dst=/scratch', '--workdir', '/', ...env, 'tre-job',
  ]);
});

test('apptainer arguments for each preset (golden)', () => {
  const head = ['apptainer', 'exec', '--containall', '--no-home', '--net', '--network', 'none'];
  const env = ['--pwd', '/', '--env', 'MODEL=m1', '--env', 'PATH=/usr/bin:/bin', '/i.sif'];
  for (const preset of ['kipoi', 'synapse'] as const) {
    assert.equal(apptainerArgv('apptainer', requestFor(preset, '/i.sif')), [
      ...head, '--mount', 'type=bind,src=/ws/zoo/in,dst=/input,ro', '--mount', 'type=bind,src=/ws/zoo/ref,dst=/ref,ro', '--mount', 'type=bind,src=/n/output,dst=/output', ...env, 'predict', '/input/x',
    ], preset);
  }
  assert.equal(apptainerArgv('apptainer', requestFor('tre', '/i.sif')), [
    ...head, '--mount', 'type=bind,src=/ws/zoo/ref,dst=/ref,ro', '--mount', 'type=bind,src=/ws/zoo/in,dst=/safe_data,ro', '--mount', 'type=bind,src=/n/output,dst=/safe_outputs',
    '--mount', 'type=bind,src=/n/scratch/scratch-0,dst=/scratch', ...env, 'tre-job',
  ]);
});

test('bad contracts in models.yaml: every problem at its file:line:col, unknown presets with a suggestion', () => {
  const dir = workspace({
    'in/x': '1',
    'ref/y': '2',
    'images.yaml': `version: 1
images:
  base:
    debian: {packages: [busybox-static]}
  app:
    from: base
    layers: [{copy: in/x, to: /x}]
    cmd: [run]
`,
    'models.yaml': `version: 1
groups:
  a:
    image: app
    models: [m]
    test: {contract: ter, inputs: in}
  b:
    image: app
    models: [m]
    test: {contract: tre, inputs: in, mounts: {ref: data}, output: /safe_data, scratch: [/tmp/s]}
  c:
    image: base
    models: [m]
    test: {contract: synapse, inputs: in}
  d:
    image: app
    models: [m]
    test: {mounts: {nothere: /n}}
`,
  });
  const r = graph(dir, 'validate');
  assert.is(r.code, 2);
  assert.fixture(
    r.stderr,
    `models.yaml:6:22: error[unknown-contract]: unknown run contract 'ter' (did you mean 'tre'?)
    6 |     test: {contract: ter, inputs: in}
      |                      ^^^
  hint: the presets are kipoi, synapse, tre (README, "Run contracts")

models.yaml:10:53: error[bad-contract]: mount 'data' is not an absolute path in the container
    10 |     test: {contract: tre, inputs: in, mounts: {ref: data}, output: /safe_data, scratch: [/tmp/s]}
       |                                                     ^^^^

models.yaml:10:68: error[bad-contract]: the output path '/safe_data' is the same path as the inputs mount /safe_data
    10 |     test: {contract: tre, inputs: in, mounts: {ref: data}, output: /safe_data, scratch: [/tmp/s]}
       |                                                                    ^^^^^^^^^^

models.yaml:10:90: error[bad-contract]: scratch path '/tmp/s' is under /tmp, which the sandbox mounts itself
    10 |     test: {contract: tre, inputs: in, mounts: {ref: data}, output: /safe_data, scratch: [/tmp/s]}
       |                                                                                          ^^^^^^

models.yaml:14:5: error[no-command]: the test has no 'command' and image 'base' has neither entrypoint nor cmd: nothing would run
    14 |     test: {contract: synapse, inputs: in}
       |     ^^^^
  hint: add 'command:' to the test, or 'entrypoint:'/'cmd:' to image 'base' in images.yaml

models.yaml:18:21: error[missing-file]: test mounts directory 'nothere' does not exist
    18 |     test: {mounts: {nothere: /n}}
       |                     ^^^^^^^

6 errors
`,
  );
});

test("a test node of a group using every contract field: {model} substituted, every field exactly, in the rule's order", () => {
  const dir = workspace({
    'in/m1/x': '1',
    'ref/m1/r': 'r',
    'exp/m1/e': 'e',
    'images.yaml': `version: 1
images:
  base:
    debian: {packages: [busybox-static]}
  app:
    from: base
    layers: [{copy: in, to: /x}]
    cmd: [run]
`,
    'models.yaml': `version: 1
groups:
  a:
    image: app
    models: [m1]
    test: {contract: tre, inputs: 'in/{model}', mounts: {'ref/{model}': /ref/}, output: /safe_outputs, scratch: [/scratch, /s2], env: {M: '{model}', K: v}, workdir: /w, command: [run, '{model}', x], expect: 'exp/{model}', cpus: 2, memory: 1G, resources: {gpu: 1}, tolerance: 0.1, timeout: 90s}
  b:
    image: base
    models: [m1]
    test: {command: [sh, -c, 'echo {model}']}
`,
  });
  try {
    const ws = openWorkspace(dir, defaultRules);
    const plain = (id: string) => {
      const n = ws.graph.node(id as NodeId);
      return { keys: Object.keys(n), node: JSON.parse(JSON.stringify({ ...n, deps: n.deps.map((d) => ({ id: d.id, at: typeof d.at })), tools: n.tools?.map((t) => t.name) })) };
    };
    assert.equal(plain('test:a/m1@oci'), {
      keys: ['id', 'kind', 'deps', 'decl', 'inputs', 'env', 'tool', 'tools', 'timeoutMs', 'resources', 'request', 'image', 'group', 'at'],
      node: {
        id: 'test:a/m1@oci',
        kind: 'test',
        deps: [{ id: 'build:app', at: 'function' }],
        decl: {
          image: 'app',
          runtime: 'oci',
          contract: {
            preset: 'tre',
            mounts: [
              { source: 'ref/m1', target: '/ref' },
              { source: 'in/m1', target: '/safe_data' },
            ],
            output: '/safe_outputs',
            scratch: ['/s2', '/scratch'],
            env: { K: 'v', M: 'm1' },
            workdir: '/w',
            command: ['run', 'm1', 'x'],
          },
          expect: 'exp/m1',
          timeout_ms: 90_000,
          tolerance: { absolute: 0.1 },
          gpus: 1,
        },
        inputs: [
          { kind: 'dir', path: 'ref/m1' },
          { kind: 'dir', path: 'in/m1' },
          { kind: 'dir', path: 'exp/m1' },
        ],
        env: [],
        tool: 'graph-test-oci/1 sandbox:bubblewrap',
        tools: ['sandbox:bubblewrap'],
        timeoutMs: 90_000,
        resources: { gpu: 1 },
        request: { cpus: 2, memoryMb: 1024 },
        image: 'app',
        group: 'a',
      },
    });
    assert.equal(Object.keys((ws.graph.node('test:a/m1@oci' as NodeId).decl as { contract: object }).contract), ['preset', 'mounts', 'output', 'scratch', 'env', 'workdir', 'command']);
    assert.equal(plain('test:b/m1@oci'), {
      keys: ['id', 'kind', 'deps', 'decl', 'inputs', 'env', 'tool', 'tools', 'timeoutMs', 'resources', 'image', 'group', 'at'],
      node: {
        id: 'test:b/m1@oci',
        kind: 'test',
        deps: [{ id: 'build:base', at: 'function' }],
        decl: {
          image: 'base',
          runtime: 'oci',
          contract: { preset: 'kipoi', mounts: [], output: '/output', scratch: [], env: {}, workdir: null, command: ['sh', '-c', 'echo m1'] },
          expect: null,
          timeout_ms: 1_800_000,
          tolerance: null,
        },
        inputs: [],
        env: [],
        tool: 'graph-test-oci/1 sandbox:bubblewrap',
        tools: ['sandbox:bubblewrap'],
        timeoutMs: 1_800_000,
        resources: {},
        image: 'base',
        group: 'b',
      },
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
