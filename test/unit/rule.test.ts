/** The rule interface's helpers: typed outputs (`outputsReader`) and their use by consuming rules. */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { NodeFailure, outputsReader, type ExecContext, type NodeDef, type NodeId, type NodeOutputs } from '../../engine/rule.js';
import { imageOutputs } from '../../rules/build.js';
import { sifOutputs } from '../../rules/convert.js';
import { testRule, type TestNodeDecl } from '../../rules/test.js';

const test = suite('rule');

const id = 'build:a' as NodeId;
const image = { manifest: 'sha256:m', config: 'sha256:c', layers: ['sha256:l'], layout: '.graph/out/oci/a', tag: 'latest' };

function failure(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    assert.instance(e, NodeFailure);
    return (e as Error).message;
  }
  throw new Error('did not throw');
}

test('outputsReader returns the outputs typed when every field has its type', () => {
  assert.equal(imageOutputs(id, { outputs: image }), image);
  const reader = outputsReader({ n: 'number', s: 'string', l: 'string[]' });
  assert.equal(reader(id, { outputs: { n: 1, s: 'x', l: [], extra: true } }), { n: 1, s: 'x', l: [], extra: true });
});

test('a missing or malformed output is a NodeFailure naming the node and the field', () => {
  assert.is(failure(() => imageOutputs(id, undefined)), 'no outputs of build:a (it has not run)');
  const { layout: _layout, ...noLayout } = image;
  assert.is(failure(() => imageOutputs(id, { outputs: noLayout })), "build:a has malformed outputs: 'layout' should be a string, got missing");
  assert.is(failure(() => imageOutputs(id, { outputs: { ...image, layers: ['sha256:l', 3] } })), 'build:a has malformed outputs: \'layers\' should be a list of strings, got ["sha256:l",3]');
  assert.is(
    failure(() => sifOutputs('convert:a' as NodeId, { outputs: { sif: '.graph/out/sif/a.sif', sha256: 'x', md5: 'y', size: '12', manifest: 'sha256:m' } })),
    `convert:a has malformed outputs: 'size' should be a number, got "12"`,
  );
});

test('a test in the sif runtime whose conversion recorded no SIF path fails saying so (not a path ending in undefined)', async () => {
  const dep = 'convert:a' as NodeId;
  const node: NodeDef<TestNodeDecl> = {
    id: 'test:g/m@sif' as NodeId,
    kind: 'test',
    deps: [{ id: dep }],
    decl: { image: 'a', runtime: 'sif', contract: { preset: 'kipoi', mounts: [], output: '/output', scratch: [], env: {}, workdir: null, command: ['x'] }, expect: null, timeout_ms: 1000, tolerance: null },
    inputs: [],
    env: [],
    tool: 'graph-test-sif/1',
    resources: {},
    at: () => {
      throw new Error('no span');
    },
  };
  const deps = new Map<NodeId, NodeOutputs>([[dep, { outputs: { sha256: 'x', md5: 'y', size: 1, manifest: 'sha256:m' }, artifacts: [] }]]);
  // Only what is read before the SIF: the outputs of the dependency.
  const ctx = { deps, workspace: {} } as unknown as ExecContext;
  try {
    await testRule.execute(node, ctx);
    assert.unreachable('the node must fail');
  } catch (e) {
    assert.instance(e, NodeFailure);
    assert.is((e as Error).message, "convert:a has malformed outputs: 'sif' should be a string, got missing");
  }
});

test.run();
