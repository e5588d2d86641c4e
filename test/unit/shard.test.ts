/** Shards: the split of a plan by image group, balanced by durations, and the shards' matrix. */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { PlanStatus } from '../../engine/plan.js';
import { renderShardMatrix } from '../../engine/report/plan.js';
import type { NodeId } from '../../engine/rule.js';
import { parseShard, shardCountFor, shardMatrix, splitPlan, workGroups, type Split, type SplitInput } from '../../engine/compile/shard.js';

const test = suite('shard');

type Row = readonly [id: string, deps: readonly string[], status?: PlanStatus];

/** A plan from rows in topological order; a node's image is the part of its id after `kind:` up to `/` or `@`. */
function plan(rows: readonly Row[]): SplitInput {
  return {
    nodes: rows.map(([id, deps, status]) => {
      const [kind, rest] = id.split(':');
      const image = kind === 'test' ? rest.split('/')[0] : rest;
      return { node: { id: id as NodeId, kind, image, deps: deps.map((d) => ({ id: d as NodeId })) }, status: status ?? 'run' };
    }),
  };
}

/** One image FROM `base`: its build, SIF, a test in each runtime per model, its publish. */
function image(name: string, base: string | undefined, models: readonly string[], status?: PlanStatus): Row[] {
  const tests = models.flatMap((m) => [[`test:${name}/${m}@oci`, [`build:${name}`], status] as const, [`test:${name}/${m}@sif`, [`convert:${name}`], status] as const]);
  return [
    [`build:${name}`, base ? [`build:${base}`] : [], status],
    [`convert:${name}`, [`build:${name}`], status],
    ...tests,
    [`publish:${name}`, [`build:${name}`, `convert:${name}`, ...tests.map((t) => t[0])], status],
  ];
}

const none = () => undefined;
const owners = (split: Split) => split.shards.map((s) => s.groups);

/** The zoo's shape: a base and three images FROM it, every node to run. */
const ZOO = plan([
  ['build:base', []],
  ['publish:base', ['build:base']],
  ...image('pwm', 'base', ['CTCF', 'GATA1', 'REST']),
  ...image('features', 'base', ['gc', 'cpg']),
  ...image('classifier', 'base', ['enhancer']),
]);

test('parseShard: i/n counted from 1; anything else is a usage message naming the source', () => {
  assert.equal(parseShard('1/3', '--shard'), { ok: true, shard: { index: 1, count: 3 } });
  assert.equal(parseShard('3/3', '--shard'), { ok: true, shard: { index: 3, count: 3 } });
  const usage = '--shard takes i/n, shard i of n counted from 1 (1/3, 2/3, 3/3)';
  assert.equal(parseShard('0/3', '--shard'), { ok: false, message: `${usage}, got '0/3'` });
  assert.equal(parseShard('3/2', '--shard'), { ok: false, message: `${usage}, got '3/2': there is no shard 3 of 2` });
  for (const bad of ['x', '', '1/0', '1', '1/2/3', ' 1/2', '-1/2', '01/2', '1.5/2', '1/2x']) {
    assert.equal(parseShard(bad, '--shard'), { ok: false, message: `${usage}, got '${bad}'` }, bad);
  }
  assert.equal(parseShard('2', 'GRAPH_SHARD'), { ok: false, message: "GRAPH_SHARD takes i/n, shard i of n counted from 1 (1/3, 2/3, 3/3), got '2'" });
});

test('workGroups: one group per image, with the dependencies it needs from outside', () => {
  const groups = workGroups(ZOO, none);
  assert.equal(
    groups.map((g) => [g.name, g.nodes.length, g.needs, g.weight]),
    [
      ['base', 2, [], 2],
      ['classifier', 5, ['build:base'], 5],
      ['features', 7, ['build:base'], 7],
      ['pwm', 9, ['build:base'], 9],
    ],
  );
  assert.equal(groups[1].nodes, ['build:classifier', 'convert:classifier', 'test:classifier/enhancer@oci', 'test:classifier/enhancer@sif', 'publish:classifier']);
});

test('split: every selected node owned by exactly one shard, an image never split, dependencies of other shards listed', () => {
  for (const n of [1, 2, 3, 4, 7]) {
    const split = splitPlan(ZOO, n, none);
    assert.is(split.shards.length, n);
    const owned = split.shards.flatMap((s) => s.owned);
    assert.equal([...owned].sort(), ZOO.nodes.map((p) => p.node.id).sort(), `${n} shards cover the plan, each node once`);
    for (const s of split.shards) {
      const images = new Set(s.owned.map((id) => ZOO.nodes.find((p) => p.node.id === id)?.node.image));
      assert.equal([...images].sort(), [...s.groups], `shard ${s.index}/${n} owns whole images`);
      // What it plans is closed under dependencies: whatever its nodes need and it does not own.
      const members = new Set([...s.owned, ...s.dependencies]);
      for (const id of members) for (const d of ZOO.nodes.find((p) => p.node.id === id)?.node.deps ?? []) assert.ok(members.has(d.id), `${id} needs ${d.id}`);
      for (const d of s.dependencies) assert.not.ok(s.owned.includes(d));
    }
  }
  const two = splitPlan(ZOO, 2, none);
  assert.equal(owners(two), [['base', 'pwm'], ['classifier', 'features']]);
  assert.equal(two.shards.map((s) => s.dependencies), [[], ['build:base']]);
  assert.equal(two.shards.map((s) => s.load), [11, 13], 'the second shard runs the base build too, and its load says so');
  assert.equal(owners(splitPlan(ZOO, 7, none)).slice(4), [[], [], []], 'more shards than images: the rest own nothing');
});

test('split: deterministic, whatever the order durations are asked in', () => {
  const durations = new Map([['build:pwm', 50_000], ['test:features/gc@oci', 3_000], ['build:base', 90_000]]);
  const asked: string[] = [];
  const a = splitPlan(ZOO, 3, (id) => (asked.push(id), durations.get(id)));
  const b = splitPlan(ZOO, 3, (id) => durations.get(id));
  assert.equal(a, b);
  assert.match(a.digest, /^[0-9a-f]{16}$/);
  assert.is.not(splitPlan(ZOO, 2, (id) => durations.get(id)).digest, a.digest);
  assert.ok(asked.length > 0);
});

test('split: balanced by recorded durations, largest image first onto the least loaded shard', () => {
  // Four independent images; their builds took 40, 30, 20 and 10 s (the other nodes 1 ms each).
  const p = plan([...image('a', undefined, []), ...image('b', undefined, []), ...image('c', undefined, []), ...image('d', undefined, [])]);
  const seconds: Record<string, number> = { 'build:a': 40_000, 'build:b': 30_000, 'build:c': 20_000, 'build:d': 10_000 };
  const split = splitPlan(p, 2, (id) => seconds[id] ?? 1);
  assert.equal(owners(split), [['a', 'd'], ['b', 'c']]);
  assert.equal(split.shards.map((s) => s.load), [50_004, 50_004]);
  // Without the durations, three nodes each: by name.
  assert.equal(owners(splitPlan(p, 2, none)), [['a', 'c'], ['b', 'd']]);
  const skewed: Record<string, number> = { 'build:a': 60_000, 'build:b': 10_000, 'build:c': 10_000, 'build:d': 10_000 };
  assert.equal(owners(splitPlan(p, 2, (id) => skewed[id] ?? 1)), [['a'], ['b', 'c', 'd']]);
});

test('split: without durations it balances node counts; a node that never ran weighs the mean of its kind', () => {
  const p = plan([...image('big', undefined, ['m1', 'm2', 'm3', 'm4']), ...image('mid', undefined, ['m1', 'm2']), ...image('small', undefined, ['m1'])]);
  // 11, 7 and 5 nodes.
  assert.equal(owners(splitPlan(p, 2, none)), [['big'], ['mid', 'small']]);
  assert.equal(splitPlan(p, 2, none).shards.map((s) => s.load), [11, 12]);
  // Only the big image's tests have durations (100 ms): every node is estimated at their mean.
  assert.equal(splitPlan(p, 2, (id) => (id.startsWith('test:big/') ? 100 : undefined)).shards.map((s) => s.load), [1100, 1200]);
  // build:big took 1 s and its tests 100 ms: the other builds are estimated at 1 s, the other
  // tests at 100 ms, converts and publishes at the mean of all known (200 ms): 2200, 1800, 1600.
  const some = (id: string) => (id === 'build:big' ? 1000 : id.startsWith('test:big/') ? 100 : undefined);
  assert.equal(splitPlan(p, 2, some).shards.map((s) => [s.groups, s.load]), [
    [['big'], 2200],
    [['mid', 'small'], 3400],
  ]);
  // A slow build recorded for `small` (30 s): it gets a shard of its own.
  assert.equal(owners(splitPlan(p, 2, (id) => (id === 'build:small' ? 30_000 : 100))), [['small'], ['big', 'mid']]);
});

test('split: cached nodes weigh nothing; a changed base counts once per shard that needs it', () => {
  const cachedBase = plan([
    ['build:base', [], 'cached'],
    ['publish:base', ['build:base'], 'cached'],
    ...image('pwm', 'base', ['CTCF']),
    ...image('features', 'base', ['gc']),
  ]);
  const a = splitPlan(cachedBase, 2, none);
  assert.equal(owners(a), [['base', 'features'], ['pwm']]);
  assert.equal(a.shards.map((s) => s.load), [5, 5]);
  assert.equal(a.shards.map((s) => s.dependencies), [[], ['build:base']]);
  // The base runs (60 s, the rest 1 s a node): the shard that does not own it pays for it too,
  // so it gets less of the rest.
  const split = splitPlan(ZOO, 2, (id) => (id === 'build:base' ? 60_000 : 1_000));
  assert.equal(split.shards.map((s) => [s.groups, s.load, s.dependencies]), [
    [['base', 'classifier', 'features'], 73_000, []],
    [['pwm'], 69_000, ['build:base']],
  ]);
});

test('split: a node of no image is a group of its own', () => {
  const p: SplitInput = {
    nodes: [
      ...plan(image('pwm', undefined, ['CTCF'])).nodes,
      { node: { id: 'lint:zoo' as NodeId, kind: 'lint', deps: [] }, status: 'run' },
    ],
  };
  assert.equal(workGroups(p, none).map((g) => [g.name, g.nodes]), [
    ['lint:zoo', ['lint:zoo']],
    ['pwm', ['build:pwm', 'convert:pwm', 'test:pwm/CTCF@oci', 'test:pwm/CTCF@sif', 'publish:pwm']],
  ]);
  assert.equal(owners(splitPlan(p, 2, none)), [['pwm'], ['lint:zoo']]);
});

test('shards matrix: one shard per image with work, at most --max-shards; exact JSON', () => {
  assert.is(shardCountFor(ZOO, 3), 3);
  assert.is(shardCountFor(ZOO, 10), 4);
  const onlyPwm = plan([
    ['build:base', [], 'cached'],
    ...image('pwm', 'base', ['CTCF'], 'cached').map(([id, deps]) => [id, deps, id === 'test:pwm/CTCF@oci' ? 'run' : 'cached'] as const),
  ]);
  assert.is(shardCountFor(onlyPwm, 5), 1);
  assert.is(shardCountFor(plan([['build:base', [], 'cached']]), 5), 0);
  assert.equal(shardMatrix(3), { include: [{ shard: '1/3' }, { shard: '2/3' }, { shard: '3/3' }] });
  assert.is(renderShardMatrix(3), '{"include":[{"shard":"1/3"},{"shard":"2/3"},{"shard":"3/3"}]}\n');
  assert.is(renderShardMatrix(1), '{"include":[{"shard":"1/1"}]}\n');
  assert.is(renderShardMatrix(0), '{"include":[]}\n');
});

test.run();
