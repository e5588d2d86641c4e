/**
 * The report commands end to end through the CLI: `graph explain` after a change, `--profile` on
 * a real build, and the GitHub step summary that `graph plan` and `graph build` append.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { Explanation } from '../engine/report/explain.js';
import type { TraceFile } from '../engine/report/profile.js';
import { graph, graphWith, workspace } from './helpers.js';

const test = suite('report commands');

const ZOO = {
  'not-a-layout/readme.txt': 'nothing here',
  'f.txt': 'x',
  'g.txt': 'y',
  'images.yaml': 'version: 1\nimages:\n  bad:\n    from: oci-layout:not-a-layout\n    layers: [{copy: f.txt, to: /f}]\n  good:\n    layers: [{copy: g.txt, to: /g}]\n',
};

test('explain: each field beside the last record, after an input file changed; --format json; bad node names', () => {
  const dir = workspace(ZOO);
  const before = graph(dir, 'explain', 'build:good');
  assert.is(before.code, 0, before.stderr);
  assert.match(before.stdout, 'build:good (build): will run\n');
  assert.match(before.stdout, '  last record: none (every field is new)\n');
  assert.is(graph(dir, 'build', 'image:good').code, 0);
  const fp = (JSON.parse(graph(dir, 'explain', 'build:good', '--format', 'json').stdout) as Explanation).fields.find((f) => f.field === 'files["g.txt"]');
  assert.is(fp?.change, 'same');
  writeFileSync(path.join(dir, 'g.txt'), 'changed');
  const after = graph(dir, 'explain', 'build:good');
  assert.is(after.code, 0, after.stderr);
  assert.match(after.stdout, /  why:\n    input file g\.txt changed \(sha256:[0-9a-f]{12} → sha256:[0-9a-f]{12}\)\n/);
  assert.match(after.stdout, /  fields \(\d+, 1 differ from the last record\):\n/);
  assert.match(after.stdout, new RegExp(`    ~ files\\["g.txt"\\]: "sha256:[0-9a-f]{64}"\\n        was ${JSON.stringify(fp?.now).replace(/[[\]]/g, '\\$&')}\\n`));
  const json = JSON.parse(graph(dir, 'explain', 'build:good', '--format', 'json').stdout) as Explanation;
  assert.equal(
    json.fields.filter((f) => f.change !== 'same').map((f) => [f.field, f.change, f.last]),
    [['files["g.txt"]', 'changed', fp?.now]],
  );
  assert.is(json.last?.same_key, false);
  const unknown = graph(dir, 'explain', 'build:goood');
  assert.is(unknown.code, 2);
  assert.match(unknown.stderr, 'build:good');
  assert.is(graph(dir, 'explain', 'image:good').code, 2);
  assert.is(graph(dir, 'explain').code, 2);
});

test('build --profile: a trace file every event of which has ph, ts, pid and tid', () => {
  const dir = workspace(ZOO);
  const r = graph(dir, 'build', '--profile', 'out/profile.json', '--jobs', '2');
  assert.is(r.code, 1, r.stderr);
  const trace = JSON.parse(readFileSync(path.join(dir, 'out/profile.json'), 'utf8')) as TraceFile;
  for (const e of trace.traceEvents) for (const f of ['ph', 'ts', 'pid', 'tid'] as const) assert.ok(e[f] !== undefined, JSON.stringify(e));
  const slices = trace.traceEvents.filter((e) => e.ph === 'X' && e.tid > 0).map((e) => [e.name, (e.args as { status: string }).status]);
  assert.equal(Object.fromEntries(slices), { 'build:bad': 'failed', 'build:good': 'ran', 'publish:good': 'ran' });
  assert.equal(trace.otherData.critical_path, ['build:good', 'publish:good']);
  assert.is(graph(dir, 'build', '--profile', '.').code, 2, 'a directory is refused before the build');
});

test('GITHUB_STEP_SUMMARY: plan and build append their Markdown summaries; without it nothing is written', () => {
  const dir = workspace(ZOO);
  const file = path.join(dir, 'summary.md');
  const env = { GITHUB_STEP_SUMMARY: file };
  assert.is(graphWith(env, dir, 'plan').code, 0);
  assert.is(graphWith(env, dir, 'plan', '--format', 'matrix').code, 0);
  assert.is(graphWith(env, dir, 'build').code, 1);
  const text = readFileSync(file, 'utf8');
  assert.is(text.split('### graph plan').length, 2, 'one plan summary: a matrix adds none');
  assert.match(text, '**4 to run**, 0 cached (4 nodes)');
  assert.match(text, '| `build:good` | build | no previous record |');
  assert.match(text, '### graph build: failed\n\n2 ran · 0 cached · 1 failed · 1 skipped · ');
  assert.match(text, '#### `build:bad` failed');
  assert.match(text, '<details><summary>log tail</summary>\n\n```text\n# build:bad\n');
  assert.match(text, '# failed: OCI image layout');
});

test.run();
