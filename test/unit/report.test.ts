/** Reporters: the exact lines a person sees, live and plain, and the summary. */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { EngineEvent, NodeResult } from '../../engine/events.js';
import { progressReporter } from '../../engine/report/progress.js';
import type { NodeId } from '../../engine/rule.js';

const test = suite('report');

const id = (s: string) => s as NodeId;
const results: NodeResult[] = [
  { id: id('build:a'), kind: 'build', status: 'ran', duration_ms: 1500, reasons: ['no previous record'], log: '/ws/.graph/logs/build:a.log' },
  { id: id('test:g/m@oci'), kind: 'test', status: 'failed', duration_ms: 250, reasons: ['exit status 1'], log: '/ws/.graph/logs/test:g%2Fm@oci.log' },
  { id: id('publish:a'), kind: 'publish', status: 'skipped', duration_ms: 0, reasons: ['dependency test:g/m@oci failed'] },
  { id: id('build:b'), kind: 'build', status: 'cached', duration_ms: 0, reasons: [] },
];
const events: EngineEvent[] = [
  { type: 'run-start', total: 4, toRun: 3, cached: 1, jobs: 2 },
  { type: 'node-finish', result: results[3] },
  { type: 'node-start', id: id('build:a'), kind: 'build', log: '' },
  { type: 'node-finish', result: results[0] },
  { type: 'node-start', id: id('test:g/m@oci'), kind: 'test', log: '' },
  { type: 'node-finish', result: results[1] },
  { type: 'node-finish', result: results[2] },
  {
    type: 'run-finish',
    summary: { results, counts: { ran: 1, cached: 1, failed: 1, interrupted: 0, skipped: 1 }, duration_ms: 1800, interrupted: false },
  },
];

test('plain lines for CI logs', () => {
  let out = '';
  const emit = progressReporter({ write: (t) => (out += t), live: false, root: '/ws' });
  for (const e of events) emit(e);
  assert.fixture(
    out,
    `3 to run, 1 cached, 4 nodes; jobs 2
start   build:a
[2/4] ran     build:a (1.5s)
start   test:g/m@oci
[3/4] FAILED  test:g/m@oci (250ms): exit status 1
          log: .graph/logs/test:g%2Fm@oci.log
[4/4] skipped publish:a: dependency test:g/m@oci failed
FAILED: 1 ran, 1 cached, 1 failed, 1 skipped in 1.8s
  failed test:g/m@oci: exit status 1
         log: .graph/logs/test:g%2Fm@oci.log
`,
  );
});

test('live view: a status line redrawn in place, finished nodes printed above it', () => {
  let out = '';
  let clock = 0;
  const emit = progressReporter({ write: (t) => (out += t), live: true, columns: 80, root: '/ws', now: () => (clock += 1000) });
  for (const e of events.slice(0, 3)) emit(e);
  assert.ok(out.endsWith('\r\x1b[K[1/4] running 1 · done 0 · cached 1 · failed 0 — build:a'), JSON.stringify(out));
  emit(events[3]);
  assert.ok(out.endsWith('\r\x1b[K[2/4] ran     build:a (1.5s)\n\r\x1b[K[2/4] running 0 · done 1 · cached 1 · failed 0'), JSON.stringify(out));
  for (const e of events.slice(4)) emit(e);
  assert.ok(out.endsWith('\r\x1b[KFAILED: 1 ran, 1 cached, 1 failed, 1 skipped in 1.8s\n  failed test:g/m@oci: exit status 1\n         log: .graph/logs/test:g%2Fm@oci.log\n'));
});

test.run();
