/** The report page's data and DOT: node rows, edges, grouping by image, safe embedding. */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { addTimeline, GROUP_NODES, pageDot, pageFromReport, renderHtml, type PageData, type ReportInput } from '../../engine/report/html.js';
import type { TraceFile } from '../../engine/report/profile.js';

const test = suite('html');

const report: ReportInput = {
  summary: { duration_ms: 900, ran: 1, cached: 1, failed: 1, skipped: 0 },
  nodes: [
    { id: 'build:a', kind: 'build', status: 'cached', duration_ms: 0, reasons: [], log: null },
    { id: 'build:b', kind: 'build', status: 'ran', duration_ms: 500, reasons: ['input file b.txt changed (sha256:aaaaaaaaaaaa → sha256:bbbbbbbbbbbb)'], log: null },
    { id: 'test:g/m@oci', kind: 'test', status: 'failed', duration_ms: 300, reasons: ['exit status 1 </script><script>alert(1)</script>'], log: null },
  ],
};
const graphOf = (id: string) => ({ 'build:b': { deps: ['build:a', 'build:gone'], image: 'b' }, 'test:g/m@oci': { deps: ['build:b'], image: 'b' } })[id];

test('from a build report: edges only between reported nodes, images from the workspace', () => {
  const data = pageFromReport(report, '/ws', graphOf);
  assert.equal(
    data.nodes.map((n) => [n.id, n.image, n.deps, n.status]),
    [
      ['build:a', '-', [], 'cached'],
      ['build:b', 'b', ['build:a'], 'ran'],
      ['test:g/m@oci', 'b', ['build:b'], 'failed'],
    ],
  );
  assert.equal(data.counts, { total: 3, ran: 1, cached: 1, failed: 1, skipped: 0, interrupted: 0 });
  assert.is(
    pageDot(data),
    `digraph page {
  rankdir=LR;
  node [shape=box, style=filled, fontname="monospace", fontsize=10];
  edge [color="#868e96"];
  n0 [id="n0", label="build:a", tooltip="build:a: cached", fillcolor="#e9ecef"];
  n1 [id="n1", label="build:b", tooltip="build:b: ran", fillcolor="#b2f2bb"];
  n2 [id="n2", label="test:g/m@oci", tooltip="test:g/m@oci: failed", fillcolor="#ff8787"];
  n0 -> n1;
  n1 -> n2;
}
`,
  );
});

test('the timeline comes from the profile: slots and the critical path', () => {
  const data = pageFromReport(report, '/ws', graphOf);
  const trace = {
    traceEvents: [
      { name: 'build:b', ph: 'X', ts: 0, dur: 500_000, pid: 1, tid: 1 },
      { name: 'test:g/m@oci', ph: 'X', ts: 500_000, dur: 300_000, pid: 1, tid: 2 },
      { name: 'build:b', ph: 'X', ts: 0, dur: 500_000, pid: 1, tid: 0 },
    ],
    displayTimeUnit: 'ms',
    otherData: { graph_version: 1, critical_path: ['build:b', 'test:g/m@oci'], cached: 1, duration_ms: 800 },
  } as TraceFile;
  addTimeline(data, trace);
  assert.equal(data.nodes.map((n) => n.span ?? null), [null, { start: 0, end: 500, lane: 1, critical: true }, { start: 500, end: 800, lane: 2, critical: true }]);
  assert.equal(data.critical_path, ['build:b', 'test:g/m@oci']);
});

test('above GROUP_NODES nodes the DAG has one box per image, coloured by its worst node, and edges between images', () => {
  const nodes: PageData['nodes'] = [];
  nodes.push({ id: 'build:base', kind: 'build', image: 'base', deps: [], status: 'ran', key: null, reasons: [], duration_ms: 1, log_tail: null });
  for (let i = 0; i < GROUP_NODES; i++) {
    nodes.push({ id: `test:g/m${i}@oci`, kind: 'test', image: 'top', deps: ['build:base'], status: i === 7 ? 'failed' : 'cached', key: null, reasons: [], duration_ms: 1, log_tail: null });
  }
  const dot = pageDot({ version: 1, source: 'build', title: 't', counts: {}, duration_ms: 1, nodes, critical_path: [] });
  assert.match(dot, '  g0 [id="g0", label="base (1)", tooltip="image base: 1 nodes, worst ran", fillcolor="#b2f2bb"];\n');
  assert.match(dot, '  g1 [id="g1", label="top (300)", tooltip="image top: 300 nodes, worst failed", fillcolor="#ff8787"];\n');
  assert.equal(dot.match(/->/g), ['->']);
});

test('the page embeds its data so that no text in it can close the script element, and loads nothing', () => {
  const html = renderHtml(pageFromReport(report, '/ws', graphOf), { error: 'dot: not found' });
  assert.is(html.split('</script>').length, 3, 'only the two script elements close');
  assert.match(html, 'exit status 1 \\u003c/script>\\u003cscript>alert(1)\\u003c/script>');
  assert.match(html, 'The DAG could not be drawn: dot: not found');
  assert.not.match(html, /(src|href)=/);
  assert.match(html, `content="default-src 'none';`);
});

test.run();
