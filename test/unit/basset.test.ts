/**
 * The zoo's PyTorch model (zoo/basset), checked without PyTorch: its weights file is exactly what
 * the committed fixed-seed generator writes, and the expected predictions (produced by the model in
 * its image) agree with an independent forward pass in plain Python (zoo/basset/reference.py, float64,
 * its own .npz reader) within the group's declared tolerance.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { REPO, workspace } from '../helpers.js';

const test = suite('basset');
const BASSET = path.join(REPO, 'zoo', 'basset');
const python = (...args: string[]) => spawnSync('python3', args, { encoding: 'utf8' });

test('make_weights.py writes the committed weights byte for byte', () => {
  const out = path.join(workspace({}), 'dnase5.npz');
  const r = python(path.join(BASSET, 'make_weights.py'), out);
  assert.is(r.status, 0, r.stderr);
  assert.ok(readFileSync(out).equals(readFileSync(path.join(BASSET, 'weights', 'dnase5.npz'))), 'weights differ from the generator');
});

test("the expected predictions match the reference forward pass within the group's tolerance", () => {
  const models = readFileSync(path.join(REPO, 'models.yaml'), 'utf8');
  const tolerance = /\n {2}basset:\n(?: {4}.*\n)*? {6}tolerance: \{absolute: ([0-9.]+)\}/.exec(models)?.[1];
  assert.is(tolerance, '0.00001');
  const args = [path.join(BASSET, 'reference.py'), path.join(BASSET, 'weights', 'dnase5.npz'), path.join(BASSET, 'inputs', 'seqs.fa')];
  const expect = path.join(BASSET, 'expect', 'dnase5', 'predictions.tsv');
  const r = python(...args, expect, tolerance as string);
  assert.is(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /^25 predictions within 1e-05 of the reference \(largest difference [0-9.e-]+\)\n$/);
  // The reference is a real judge: one probability off by 0.0001 is named.
  const off = path.join(workspace({}), 'predictions.tsv');
  const text = readFileSync(expect, 'utf8');
  assert.ok(text.includes('chr2_enhancer\t0.331698\t'));
  writeFileSync(off, text.replace('chr2_enhancer\t0.331698\t', 'chr2_enhancer\t0.331798\t'));
  const bad = python(...args, off, tolerance as string);
  assert.is(bad.status, 1);
  assert.match(bad.stdout, /^.*predictions\.tsv: chr2_enhancer K562: 0\.331798, the reference computes 0\.3316\d+\n$/);
});

test.run();
