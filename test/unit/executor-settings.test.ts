/**
 * Where nodes run, as declared (engine/execute/executor-settings.ts): `settings.executor` for every
 * kind or per kind, `--executor` over it, `settings.slurm`; a test's `cpus:` and `memory:` as the
 * node's request, outside its key; the plan naming the executor of nodes that run elsewhere.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { ActionCache } from '../../engine/cache/action-cache.js';
import { DiagnosticError, formatDiagnostic } from '../../engine/diagnostics.js';
import { executorOf } from '../../engine/execute/executor-settings.js';
import { FileDigester } from '../../engine/key/files.js';
import { planBuild } from '../../engine/plan.js';
import { renderPlan } from '../../engine/report/plan.js';
import type { NodeId } from '../../engine/rule.js';
import { ContentStore } from '../../engine/cache/store.js';
import { openWorkspace } from '../../engine/workspace.js';
import { defaultRules } from '../../rules/index.js';
import { workspace } from '../helpers.js';
import path from 'node:path';

const test = suite('executor-settings');

function zoo(settings: string, testExtra = ''): string {
  return workspace({
    'images.yaml': `version: 1\nsettings:\n${settings}images:\n  a:\n    layers: [{copy: f.txt, to: /f}]\n`,
    'models.yaml': `version: 1\ngroups:\n  g:\n    image: a\n    models: [m]\n    test: {command: [run]${testExtra}}\n`,
    'f.txt': 'f\n',
  });
}

test('executor: one name for every kind, a map per kind (others local), --executor over both', () => {
  const all = openWorkspace(zoo('  executor: slurm\n  slurm: {partition: gpu, account: lab, qos: high, args: [--constraint=a100]}\n'), defaultRules).decls.settings.executor;
  assert.equal(all, { default: 'slurm', byKind: {}, slurm: { partition: 'gpu', account: 'lab', qos: 'high', args: ['--constraint=a100'] } });
  const tests = openWorkspace(zoo('  executor: {test: slurm}\n'), defaultRules).decls.settings.executor;
  assert.equal(['build', 'convert', 'test', 'publish'].map((k) => executorOf(tests, k)), ['local', 'local', 'slurm', 'local']);
  const overridden = openWorkspace(zoo('  executor: {test: slurm}\n'), defaultRules, { executor: 'local' }).decls.settings.executor;
  assert.is(executorOf(overridden, 'test'), 'local');
  const none = openWorkspace(zoo('  concurrency: {test: 1}\n'), defaultRules).decls.settings.executor;
  assert.equal(none, { default: 'local', byKind: {}, slurm: { args: [] } });
});

test('an executor map naming an unknown kind, or an unknown executor, is a declaration error', () => {
  for (const bad of ['  executor: {tset: slurm}\n', '  executor: pbs\n']) {
    try {
      openWorkspace(zoo(bad), defaultRules);
      assert.unreachable(bad);
    } catch (e) {
      assert.instance(e, DiagnosticError);
      assert.match((e as DiagnosticError).diagnostics.map(formatDiagnostic).join('\n'), 'settings.executor');
    }
  }
});

test("a test's cpus: and memory: are the node's request (MiB), and not part of its key", () => {
  const key = (extra: string) => {
    const ws = openWorkspace(zoo('  resources: {gpu: 1}\n', extra), defaultRules);
    const plan = planBuild(ws.graph, new Set(ws.graph.order), { root: ws.root, cache: new ActionCache(ws.stateDir), store: new ContentStore(path.join(ws.stateDir, 'cas')), digester: new FileDigester(ws.root, undefined), env: {} });
    const node = ws.graph.node('test:g/m@oci' as NodeId);
    return { request: node.request, key: plan.byId.get(node.id)?.key };
  };
  const plain = key('');
  const asked = key(', cpus: 4, memory: 2G');
  assert.equal(asked.request, { cpus: 4, memoryMb: 2048 });
  assert.is(plain.request, undefined);
  assert.is(asked.key, plain.key);
  assert.equal(key(', memory: 512').request, { memoryMb: 512 });
  assert.equal(key(', memory: 1536K').request, { memoryMb: 2 });
});

test('the plan names the executor of nodes that run elsewhere: (slurm) in text, "executor" in JSON', () => {
  const ws = openWorkspace(zoo('  executor: {test: slurm}\n'), defaultRules);
  const plan = planBuild(ws.graph, new Set(ws.graph.order), { root: ws.root, cache: new ActionCache(ws.stateDir), store: new ContentStore(path.join(ws.stateDir, 'cas')), digester: new FileDigester(ws.root, undefined), env: {} });
  const elsewhere = (kind: string) => (executorOf(ws.decls.settings.executor, kind) === 'slurm' ? 'slurm' : undefined);
  const text = renderPlan(plan, 'text', false, [], undefined, elsewhere);
  assert.match(text, '  run    build:a\n');
  assert.match(text, '  run    test:g/m@oci (slurm)\n');
  const json = JSON.parse(renderPlan(plan, 'json', false, [], undefined, elsewhere)) as { nodes: Array<{ id: string; executor?: string }> };
  assert.equal(json.nodes.map((n) => [n.id, n.executor ?? null]), [
    ['build:a', null],
    ['test:g/m@oci', 'slurm'],
    ['publish:a', null],
  ]);
});

test.run();
