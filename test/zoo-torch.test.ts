/**
 * The top-level zoo's PyTorch model end to end in a temp copy of the zoo: the PyTorch base from
 * Debian's python3-torch (pinned by images.lock; numpy and libtorch load only because the
 * update-alternatives links for libblas.so.3 and liblapack.so.3 are made), the Basset-shaped CNN
 * layered on it, its SIF, its predictions compared with the expected ones (within the declared
 * tolerance) in both runtimes under bubblewrap, and its publication; a second build is all cached,
 * and an expectation off by more than the tolerance fails both tests, naming the cell.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { copyRepoZoo, graph, SIFCHECK } from './helpers.js';

const test = suite('zoo-torch');

test('the PyTorch CNN: built from Debian packages, converted, tested in both runtimes, published; cached; a wrong expectation fails', () => {
  const dir = copyRepoZoo(mkdtempSync(path.join(tmpdir(), 'graph-zoo-torch-')), ['torch-base', 'basset-cnn']);
  const first = graph(dir, 'build', 'image:basset-cnn', '--report', 'report.json');
  assert.is(first.code, 0, first.stderr);
  const report = JSON.parse(readFileSync(path.join(dir, 'report.json'), 'utf8')) as { nodes: Array<{ id: string; status: string; outputs?: Record<string, unknown> }> };
  assert.equal(report.nodes.map((n) => `${n.id} ${n.status}`).sort(), [
    'build:basset-cnn ran',
    'build:torch-base ran',
    'convert:basset-cnn ran',
    'publish:basset-cnn ran',
    'test:basset/dnase5@oci ran',
    'test:basset/dnase5@sif ran',
  ]);
  // The base applied the alternatives the packages' postinst scripts register.
  const baseLog = readFileSync(path.join(dir, '.graph/logs/build:torch-base.log'), 'utf8');
  assert.match(baseLog, '392 packages pinned by images.lock\n');
  assert.match(baseLog, '\nalternatives: libblas.so.3-x86_64-linux-gnu -> /usr/lib/x86_64-linux-gnu/blas/libblas.so.3 (libblas3): etc/alternatives/libblas.so.3-x86_64-linux-gnu, usr/lib/x86_64-linux-gnu/libblas.so.3\n');
  assert.match(baseLog, '\nalternatives: liblapack.so.3-x86_64-linux-gnu -> /usr/lib/x86_64-linux-gnu/lapack/liblapack.so.3 (liblapack3): etc/alternatives/liblapack.so.3-x86_64-linux-gnu, usr/lib/x86_64-linux-gnu/liblapack.so.3\n');
  // The SIF holds the model, its weights and the alternatives' links, and apptainer could run it.
  const sif = report.nodes.find((n) => n.id === 'convert:basset-cnn')?.outputs?.sif as string;
  const check = spawnSync(
    'python3',
    [SIFCHECK, '--runnable', '--expect', '/usr/local/bin/basset', '--expect', '/opt/model/dnase5.npz', '--expect', '/usr/lib/x86_64-linux-gnu/libblas.so.3', '--expect', '/etc/alternatives/liblapack.so.3-x86_64-linux-gnu', '--expect-exec', '/usr/bin/python3', path.join(dir, sif)],
    { encoding: 'utf8' },
  );
  assert.is(check.status, 0, check.stdout + check.stderr);
  assert.ok(existsSync(path.join(dir, 'dist/sif/basset-cnn.sif')));

  const second = graph(dir, 'build', 'image:basset-cnn');
  assert.is(second.code, 0, second.stderr);
  assert.match(second.stderr, 'ok: 0 ran, 6 cached, 0 failed, 0 skipped');

  // One probability off by 0.0001, ten times the tolerance: both tests fail and say where.
  const expected = path.join(dir, 'zoo/basset/expect/dnase5/predictions.tsv');
  writeFileSync(expected, readFileSync(expected, 'utf8').replace('chr2_enhancer\t0.331698\t', 'chr2_enhancer\t0.331798\t'));
  const broken = graph(dir, 'build', 'image:basset-cnn');
  assert.is(broken.code, 1);
  assert.match(broken.stderr, 'FAILED: 0 ran, 3 cached, 2 failed, 1 skipped');
  for (const runtime of ['oci', 'sif']) {
    assert.match(
      broken.stderr,
      `failed test:basset/dnase5@${runtime}: output differs from zoo/basset/expect/dnase5: predictions.tsv: line 3, column 2: 0.331698 ≠ expected 0.331798 (tolerance 0.00001)`,
    );
  }
});

test.run();
