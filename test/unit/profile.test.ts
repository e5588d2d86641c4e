/** The build profile: checked against the Trace Event Format, lanes, counters, the critical path. */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { EngineEvent, NodeResult } from '../../engine/events.js';
import { criticalPath, profileReporter, type TraceEvent } from '../../engine/report/profile.js';
import type { NodeId } from '../../engine/rule.js';
import { FakeRunner, runEngine, SMALL_ZOO, workspace } from '../helpers.js';

const test = suite('profile');
const id = (s: string) => s as NodeId;

/** Every event has the format's required fields; complete slices in one lane nest or are disjoint. */
function checkTraceFormat(events: readonly TraceEvent[]): void {
  for (const e of events) {
    for (const f of ['name', 'ph', 'ts', 'pid', 'tid'] as const) assert.ok(e[f] !== undefined, `${f} missing in ${JSON.stringify(e)}`);
    assert.ok(['X', 'C', 'M'].includes(e.ph), e.ph);
    assert.ok(Number.isInteger(e.ts) && e.ts >= 0, `ts ${e.ts}`);
    if (e.ph === 'X') assert.ok(Number.isInteger(e.dur) && (e.dur as number) >= 0, `dur ${e.dur}`);
  }
  const lanes = new Map<string, TraceEvent[]>();
  for (const e of events.filter((x) => x.ph === 'X')) lanes.set(`${e.pid}/${e.tid}`, [...(lanes.get(`${e.pid}/${e.tid}`) ?? []), e]);
  for (const [lane, slices] of lanes) {
    for (const a of slices) {
      for (const b of slices) {
        if (a === b) continue;
        const [aEnd, bEnd] = [a.ts + (a.dur as number), b.ts + (b.dur as number)];
        const disjoint = aEnd <= b.ts || bEnd <= a.ts;
        const nested = (a.ts <= b.ts && bEnd <= aEnd) || (b.ts <= a.ts && aEnd <= bEnd);
        assert.ok(disjoint || nested, `slices ${a.name} and ${b.name} overlap without nesting in lane ${lane}`);
      }
    }
  }
}

const result = (s: string, status: NodeResult['status']): NodeResult => ({ id: id(s), kind: s.split(':')[0], status, duration_ms: 0, reasons: status === 'failed' ? ['exit status 1'] : [] });

test('lanes per slot, a slice per node, the running counter and the critical path, from the events alone', () => {
  let now = 1000;
  const deps: Record<string, NodeId[]> = { 'convert:a': [id('build:a')], 'test:a': [id('convert:a')], 'build:b': [] };
  const p = profileReporter({ now: () => now, deps: (n) => deps[n] ?? [], key: (n) => `key-of-${n}` });
  const at = (t: number, e: EngineEvent) => {
    now = 1000 + t;
    p.emit(e);
  };
  at(0, { type: 'run-start', total: 5, toRun: 4, cached: 1, jobs: 2 });
  at(0, { type: 'node-finish', result: result('build:c', 'cached') });
  at(0, { type: 'node-start', id: id('build:a'), kind: 'build', log: '' });
  at(1, { type: 'node-start', id: id('build:b'), kind: 'build', log: '' });
  at(5, { type: 'node-finish', result: result('build:b', 'failed') });
  at(10, { type: 'node-finish', result: result('build:a', 'ran') });
  at(10, { type: 'node-start', id: id('convert:a'), kind: 'convert', log: '' });
  at(20, { type: 'node-finish', result: result('convert:a', 'ran') });
  at(20, { type: 'node-start', id: id('test:a'), kind: 'test', log: '' });
  at(23, { type: 'node-finish', result: result('test:a', 'ran') });
  const trace = p.trace();
  checkTraceFormat(trace.traceEvents);
  const slices = trace.traceEvents.filter((e) => e.ph === 'X');
  assert.equal(
    slices.map((e) => [e.tid, e.name, e.ts, e.dur, (e.args as { status: string }).status]),
    [
      [1, 'build:a', 0, 10000, 'ran'],
      [2, 'build:b', 1000, 4000, 'failed'],
      [1, 'convert:a', 10000, 10000, 'ran'],
      [1, 'test:a', 20000, 3000, 'ran'],
      [0, 'build:a', 0, 10000, 'ran'],
      [0, 'convert:a', 10000, 10000, 'ran'],
      [0, 'test:a', 20000, 3000, 'ran'],
    ],
  );
  assert.equal(trace.otherData.critical_path, ['build:a', 'convert:a', 'test:a']);
  assert.is(trace.otherData.cached, 1);
  assert.equal(slices[0].args, { kind: 'build', status: 'ran', key: 'key-of-build:a', reasons: [], critical: true });
  assert.is(slices[1].args?.critical, false);
  assert.equal(
    trace.traceEvents.filter((e) => e.ph === 'C').map((e) => [e.ts, (e.args as { nodes: number }).nodes]),
    [
      [0, 0],
      [0, 1],
      [1000, 2],
      [5000, 1],
      [10000, 0],
      [10000, 1],
      [20000, 0],
      [20000, 1],
      [23000, 0],
    ],
  );
  assert.equal(
    trace.traceEvents.filter((e) => e.ph === 'M').map((e) => [e.tid, (e.args as { name: string }).name]),
    [
      [0, 'graph build'],
      [0, 'critical path'],
      [1, 'slot 1'],
      [2, 'slot 2'],
    ],
  );
});

test('critical path: back from the node that ended last through the dependency that ended last', () => {
  const nodes = [
    { id: id('a'), end: 5 },
    { id: id('b'), end: 9 },
    { id: id('c'), end: 12 },
  ];
  const deps: Record<string, NodeId[]> = { c: [id('a'), id('b'), id('not-run')] };
  assert.equal(criticalPath(nodes, (n) => deps[n] ?? []), ['b', 'c']);
  assert.equal(criticalPath([], () => []), []);
});

test('a real run of the engine gives a well-formed trace: no lane holds two nodes at once, at most --jobs lanes', async () => {
  const dir = workspace(SMALL_ZOO);
  const runner = new FakeRunner({ durations: { 'build:base': 20, 'build:pwm': 10, 'convert:pwm': 10 }, failing: new Set(['test:pwm/GATA1@sif']) });
  let profile: ReturnType<typeof profileReporter> | undefined;
  const run = await runEngine(dir, runner, {
    jobs: 2,
    onEvent: (e) => {
      if (e.type === 'run-start') profile = profileReporter({ now: Date.now, deps: (n) => run0().graph.node(n).deps.map((d) => d.id) });
      profile?.emit(e);
    },
  });
  function run0() {
    return run.ws;
  }
  const trace = (profile as NonNullable<typeof profile>).trace();
  checkTraceFormat(trace.traceEvents);
  const slots = trace.traceEvents.filter((e) => e.ph === 'X' && e.tid > 0);
  assert.is(slots.length, run.summary.counts.ran + run.summary.counts.failed);
  assert.ok(Math.max(...slots.map((e) => e.tid)) <= 2);
  assert.is((slots.find((e) => e.name === 'test:pwm/GATA1@sif')?.args as { status: string }).status, 'failed');
  assert.is(trace.otherData.critical_path[0], 'build:base');
});

test.run();
