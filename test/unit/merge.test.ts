/** `graph report merge`: shard reports joined, counts recomputed, conflicts and gaps named. */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { ReportNodeJson } from '../../engine/report/build-report.js';
import { junitFromReport, mergeMessage, mergeReports, parseReport, type BuildReportJson, type ReportShardJson } from '../../engine/report/merge.js';

const test = suite('merge');

function node(id: string, status: ReportNodeJson['status'], more: Partial<ReportNodeJson> = {}): ReportNodeJson {
  const ran = status === 'ran' || status === 'failed';
  return { id, kind: id.split(':')[0], status, duration_ms: ran ? 1000 : 0, reasons: [], failure: null, outputs: status === 'ran' || status === 'cached' ? { digest: `sha256:${id}` } : null, log: ran ? `.graph/logs/${id}.log` : null, ...more };
}

function report(nodes: ReportNodeJson[], shard?: Partial<ReportShardJson> & { index: number }, duration_ms = 5000): BuildReportJson {
  const count = (s: string) => nodes.filter((n) => n.status === s).length;
  return {
    version: 1,
    summary: { ran: count('ran'), cached: count('cached'), failed: count('failed'), skipped: count('skipped'), interrupted_nodes: count('interrupted'), duration_ms, interrupted: false },
    nodes,
    ...(shard ? { shard: { count: 2, split: '0123456789abcdef', dependencies: [], ...shard } } : {}),
  };
}

const failure = { type: 'exit', code: 1, message: 'exit status 1' };

test('two shards: every node once, counts recomputed, a dependency run by both shows as ran', () => {
  // Shard 1 owns base; shard 2 owns pwm and ran build:base too (no shared cache).
  const one = report([node('build:base', 'ran'), node('publish:base', 'cached')], { index: 1 }, 7000);
  const two = report([node('build:base', 'ran'), node('build:pwm', 'ran'), node('test:pwm/CTCF@oci', 'ran'), node('publish:pwm', 'ran')], { index: 2, dependencies: ['build:base'] }, 9000);
  // The command line's order does not matter: shards are merged in shard order.
  const { report: merged, problems } = mergeReports([
    { name: 'shard-2.json', report: two },
    { name: 'shard-1.json', report: one },
  ]);
  assert.equal(problems, []);
  assert.equal(merged.conflicts, []);
  assert.equal(merged.merged_from, ['shard-2.json', 'shard-1.json']);
  assert.equal(
    merged.nodes.map((n) => [n.id, n.status]),
    [
      ['build:base', 'ran'],
      ['publish:base', 'cached'],
      ['build:pwm', 'ran'],
      ['test:pwm/CTCF@oci', 'ran'],
      ['publish:pwm', 'ran'],
    ],
  );
  assert.equal(merged.summary, { ran: 4, cached: 1, failed: 0, skipped: 0, interrupted_nodes: 0, duration_ms: 9000, interrupted: false });
  assert.not.ok('shard' in merged, 'the merged report is no shard');
});

test('a node cached in its owner and run by another shard ran; a skipped or interrupted copy gives way to a result', () => {
  const one = report([node('build:base', 'cached'), node('publish:base', 'ran')], { index: 1 });
  const two = report(
    [node('build:base', 'ran'), node('build:pwm', 'interrupted', { failure: { type: 'interrupted' } }), node('publish:pwm', 'skipped', { reasons: ['interrupted before it started'] })],
    { index: 2, dependencies: ['build:base'] },
  );
  const three = report([node('build:pwm', 'ran')], { index: 1, count: 1, split: 'ffffffffffffffff' });
  const { report: merged } = mergeReports([
    { name: 'a.json', report: one },
    { name: 'b.json', report: two },
  ]);
  assert.equal(
    merged.nodes.map((n) => [n.id, n.status]),
    [
      ['build:base', 'ran'],
      ['publish:base', 'ran'],
      ['build:pwm', 'interrupted'],
      ['publish:pwm', 'skipped'],
    ],
  );
  // A report with a result for build:pwm (a rerun of the interrupted build, unsharded here).
  const rerun = mergeReports([
    { name: 'b.json', report: two },
    { name: 'rerun.json', report: { ...three, shard: undefined } },
  ]).report;
  assert.equal(rerun.nodes.find((n) => n.id === 'build:pwm')?.status, 'ran');
});

test('conflict: succeeded in one report and failed in another; merged as failed, listed with both reports', () => {
  const one = report([node('build:base', 'ran'), node('publish:base', 'ran')], { index: 1 });
  const two = report(
    [node('build:base', 'failed', { reasons: ['exit status 1'], failure }), node('build:pwm', 'skipped', { reasons: ['dependency build:base failed'] })],
    { index: 2, dependencies: ['build:base'] },
  );
  const result = mergeReports([
    { name: 'one.json', report: one },
    { name: 'two.json', report: two },
  ]);
  const { report: merged, problems } = result;
  assert.equal(problems, []);
  assert.is(
    mergeMessage(result, 'merged.json'),
    'conflict: build:base: succeeded in one.json, failed in two.json\nmerged 2 reports into merged.json: 1 ran, 0 cached, 1 failed, 1 skipped; 1 conflict\n',
  );
  assert.equal(merged.conflicts, [
    {
      id: 'build:base',
      message: 'build:base: succeeded in one.json, failed in two.json',
      reports: [
        { report: 'one.json', status: 'ran', outputs: { digest: 'sha256:build:base' } },
        { report: 'two.json', status: 'failed', outputs: null },
      ],
    },
  ]);
  const base = merged.nodes[0];
  assert.equal([base.id, base.status, base.reasons, base.failure], ['build:base', 'failed', ['exit status 1'], failure]);
  assert.equal(merged.summary, { ran: 1, cached: 0, failed: 1, skipped: 1, interrupted_nodes: 0, duration_ms: 5000, interrupted: false });
});

test('conflict: two successes with different outputs', () => {
  const one = report([node('build:base', 'ran', { outputs: { manifest: 'sha256:aaa', layers: ['sha256:1'] } })], { index: 1 });
  const two = report([node('build:base', 'ran', { outputs: { layers: ['sha256:1'], manifest: 'sha256:bbb' } })], { index: 2, dependencies: ['build:base'] });
  const same = report([node('build:base', 'cached', { outputs: { layers: ['sha256:1'], manifest: 'sha256:aaa' } })], { index: 2, dependencies: ['build:base'] });
  const { report: merged } = mergeReports([
    { name: 'one.json', report: one },
    { name: 'two.json', report: two },
  ]);
  assert.equal(
    merged.conflicts.map((c) => c.message),
    ['build:base: different outputs in one.json and in two.json'],
  );
  assert.equal([merged.nodes[0].status, merged.nodes[0].reasons], ['failed', ['conflict: build:base: different outputs in one.json and in two.json']]);
  assert.equal(merged.summary.failed, 1);
  // Equal outputs, keys in another order: no conflict.
  assert.equal(mergeReports([{ name: 'one.json', report: one }, { name: 'same.json', report: same }]).report.conflicts, []);
});

test('incomplete: a missing shard, a shard twice, reports of different splits', () => {
  const s = (index: number, more: Partial<ReportShardJson> = {}) => report([node(`build:i${index}`, 'ran')], { index, count: 3, ...more });
  assert.equal(
    mergeReports([
      { name: 'a.json', report: s(1) },
      { name: 'c.json', report: s(3) },
    ]).problems,
    ['no report for shard 2/3: the nodes it owns are missing'],
  );
  assert.is(
    mergeMessage(mergeReports([{ name: 'a.json', report: s(1) }]), 'out.json'),
    'incomplete: no report for shard 2/3: the nodes it owns are missing\nincomplete: no report for shard 3/3: the nodes it owns are missing\nmerged 1 report into out.json: 1 ran, 0 cached, 0 failed, 0 skipped\n',
  );
  assert.equal(
    mergeReports([
      { name: 'a.json', report: s(1) },
      { name: 'b.json', report: s(2) },
      { name: 'b2.json', report: s(2) },
      { name: 'c.json', report: s(3) },
    ]).problems,
    ['shard 2/3 appears twice (b.json, b2.json)'],
  );
  assert.equal(
    mergeReports([
      { name: 'a.json', report: s(1) },
      { name: 'b.json', report: s(2, { split: 'fedcba9876543210' }) },
      { name: 'c.json', report: s(3) },
    ]).problems,
    [
      'the shard reports come from different splits (a.json, c.json: 3 shards, split 0123456789abcdef; b.json: 3 shards, split fedcba9876543210): the shards did not plan the same nodes (same commit, targets, --changed-since and cache), so some nodes may have been run by no shard',
    ],
  );
  // Reports of unsharded builds are merged without these checks.
  assert.equal(mergeReports([{ name: 'x.json', report: report([node('build:x', 'ran')]) }, { name: 'y.json', report: report([node('build:y', 'ran')]) }]).problems, []);
});

test('parseReport: a graph report, or one line saying why not', () => {
  const good = report([node('build:a', 'ran')], { index: 1 });
  assert.equal(parseReport(JSON.stringify(good), 'r.json'), { ok: true, report: good });
  const torn = parseReport('{"version": 1', 'r.json');
  assert.ok(!torn.ok && torn.message.startsWith("r.json: not JSON (Expected ',' or '}' after property value"), JSON.stringify(torn)); // the rest is Node's wording
  assert.equal(parseReport('[]', 'r.json'), { ok: false, message: 'r.json: not a graph report (a JSON object written by graph build --report)' });
  assert.equal(parseReport('{"version": 2}', 'r.json'), { ok: false, message: 'r.json: report version 2, expected 1' });
  assert.equal(parseReport('{"version": 1, "nodes": []}', 'r.json'), { ok: false, message: 'r.json: not a graph report (no nodes or summary)' });
  assert.equal(parseReport(JSON.stringify({ ...good, nodes: [{ id: 'build:a', status: 'done' }] }), 'r.json'), {
    ok: false,
    message: 'r.json: nodes[0] is not a node result (id, kind, status, duration_ms, reasons)',
  });
  assert.equal(parseReport(JSON.stringify({ ...good, shard: { index: 1 } }), 'r.json'), { ok: false, message: 'r.json: shard is not {index, count, split, dependencies}' });
});

test('JUnit from the merged report: one suite per kind, failures with their reasons and log path', () => {
  const merged = mergeReports([
    { name: 'one.json', report: report([node('build:base', 'ran'), node('test:pwm/CTCF@oci', 'failed', { reasons: ['exit status 1'], failure })], { index: 1, count: 1 }, 2500) },
  ]).report;
  assert.fixture(
    junitFromReport(merged),
    `<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="graph" tests="2" failures="1" errors="0" skipped="0" time="2.500">
  <testsuite name="build" tests="1" failures="0" errors="0" skipped="0" time="1.000">
    <testcase classname="build" name="build:base" time="1.000"/>
  </testsuite>
  <testsuite name="test" tests="1" failures="1" errors="0" skipped="0" time="1.000">
    <testcase classname="test" name="test:pwm/CTCF@oci" time="1.000">
      <failure message="exit status 1">exit status 1
log: .graph/logs/test:pwm/CTCF@oci.log</failure>
    </testcase>
  </testsuite>
</testsuites>
`,
  );
});

test.run();
