/** `graph explain` and the CI step summary: exact text against golden files (UPDATE_GOLDEN=1 rewrites them). */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { RunSummary } from '../../engine/events.js';
import type { KeyRecord } from '../../engine/key/key.js';
import type { Plan, PlannedNode } from '../../engine/plan.js';
import { explainNode, explainText } from '../../engine/report/explain.js';
import { appendStepSummary, buildMarkdown, planMarkdown } from '../../engine/report/step-summary.js';
import type { NodeId } from '../../engine/rule.js';
import { REPO } from '../helpers.js';

const test = suite('explain');
const id = (s: string) => s as NodeId;
const H = (c: string) => `sha256:${c.repeat(64)}`;

function golden(name: string, actual: string): void {
  const file = path.join(REPO, 'test', 'golden', name);
  if (process.env.UPDATE_GOLDEN) writeFileSync(file, actual);
  assert.fixture(actual, readFileSync(file, 'utf8'));
}

const last: KeyRecord = {
  rule: 'build',
  ruleVersion: 1,
  decl: { from: 'base', env: { MODE: 'fast' }, layers: [{ copy: 'zoo/pwm/predict.py', to: '/opt/bin/predict' }] },
  files: { 'zoo/pwm/predict.py': H('a'), 'zoo/pwm/motifs/CTCF.pwm': H('b'), 'zoo/pwm/old.txt': H('c') },
  env: { SOURCE_DATE_EPOCH: null },
  tool: 'graph-layers/2',
  deps: { 'build:base': '1'.repeat(64) },
};
const now: KeyRecord = {
  ...last,
  decl: { from: 'base', env: { MODE: 'slow' }, layers: [{ copy: 'zoo/pwm/predict.py', to: '/opt/bin/predict' }, { copy: 'zoo/pwm/motifs', to: '/opt/motifs' }] },
  files: { 'zoo/pwm/predict.py': H('d'), 'zoo/pwm/motifs/CTCF.pwm': H('b'), 'zoo/pwm/motifs/GATA1.pwm': H('e') },
  env: { SOURCE_DATE_EPOCH: '0' },
};
const planned = (record: KeyRecord, status: 'run' | 'cached', reasons: string[]): PlannedNode =>
  ({ node: { id: id('build:pwm'), kind: 'build', deps: [{ id: id('build:base') }], image: 'pwm' }, key: '2'.repeat(64), record, recordText: '', status, reasons }) as unknown as PlannedNode;

test('explain: every field of the key record beside the last record', () => {
  const x = explainNode(planned(now, 'run', ['input file zoo/pwm/predict.py changed (sha256:aaaaaaaaaaaa → sha256:dddddddddddd)']), { key: '3'.repeat(64), record: last });
  golden('explain.txt', explainText(x));
  golden('explain.json', `${JSON.stringify(x, null, 2)}\n`);
  assert.equal(
    x.fields.filter((f) => f.change !== 'same').map((f) => [f.field, f.change]),
    [
      ['decl.env.MODE', 'changed'],
      ['decl.layers[1].copy', 'added'],
      ['decl.layers[1].to', 'added'],
      ['files["zoo/pwm/motifs/GATA1.pwm"]', 'added'],
      ['files["zoo/pwm/predict.py"]', 'changed'],
      ['env.SOURCE_DATE_EPOCH', 'changed'],
      ['files["zoo/pwm/old.txt"]', 'removed'],
    ],
  );
});

test('explain: without a last record every field is new; with the same key every field is the same', () => {
  const none = explainNode(planned(last, 'run', ['no previous record']), undefined);
  assert.ok(none.fields.every((f) => f.change === 'new'));
  assert.match(explainText(none), '  last record: none (every field is new)\n');
  const same = explainNode(planned(last, 'cached', []), { key: '2'.repeat(64), record: last });
  assert.ok(same.fields.every((f) => f.change === 'same'));
  assert.match(explainText(same), `  last record: key ${'2'.repeat(64)} (the same key)\n`);
});

const summary: RunSummary = {
  results: [
    { id: id('build:base'), kind: 'build', status: 'cached', duration_ms: 0, reasons: [] },
    { id: id('build:pwm'), kind: 'build', status: 'ran', duration_ms: 1500, reasons: ['input file zoo/pwm/predict.py changed (sha256:aaaaaaaaaaaa → sha256:dddddddddddd)'] },
    { id: id('test:pwm/CTCF@oci'), kind: 'test', status: 'failed', duration_ms: 250, reasons: ['exit status 1 | see log'], log: '/ws/.graph/logs/test.log' },
    { id: id('publish:pwm'), kind: 'publish', status: 'skipped', duration_ms: 0, reasons: ['dependency test:pwm/CTCF@oci failed'] },
  ],
  counts: { ran: 1, cached: 1, failed: 1, interrupted: 0, skipped: 1 },
  duration_ms: 1800,
  interrupted: false,
};

test('CI summary of a build: counts, what ran and why, failures with their log tail', () => {
  golden('build-summary.md', buildMarkdown(summary, (r) => (r.log ? 'step 1\nTraceback (most recent call last):\nAssertionError: 0.5 != 0.4' : undefined)));
});

test('CI summary of a plan: counts and what runs and why', () => {
  const nodes = [planned(now, 'run', ['input file zoo/pwm/predict.py changed (sha256:aaaaaaaaaaaa → sha256:dddddddddddd)']), { ...planned(last, 'cached', []), node: { id: id('build:base'), kind: 'build', deps: [] } }] as PlannedNode[];
  golden('plan-summary.md', planMarkdown({ nodes, byId: new Map(), graph: undefined } as unknown as Plan));
});

test('the summary is appended to GITHUB_STEP_SUMMARY, and only when it is set', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'graph-summary-'));
  try {
    const file = path.join(dir, 'summary.md');
    writeFileSync(file, 'before\n');
    assert.is(appendStepSummary({ GITHUB_STEP_SUMMARY: file }, 'one\n'), undefined);
    assert.is(appendStepSummary({ GITHUB_STEP_SUMMARY: file }, 'two\n'), undefined);
    assert.is(appendStepSummary({}, 'three\n'), undefined);
    assert.is(readFileSync(file, 'utf8'), 'before\none\ntwo\n');
    assert.match(appendStepSummary({ GITHUB_STEP_SUMMARY: path.join(dir, 'no', 'such', 'dir') }, 'x') as string, 'ENOENT');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
