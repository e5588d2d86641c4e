/**
 * The repository's own zoo end to end in a temp copy, the main job as the README runs it: a python3
 * base from Debian packages (pinned by images.lock), two layered model images and one built from a
 * Dockerfile FROM that base, their SIFs, every model tested in both runtimes under bubblewrap,
 * every image published into dist/; then a second build is all cached, and a broken expectation
 * fails exactly its tests (and holds back that image's publish); finally the main job with a key
 * signs every image and SIF, and graph verify passes on them and fails on a tampered copy.
 */
import { cpSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { copyRepoZoo, flipByte, graph, SIFCHECK } from './helpers.js';

const test = suite('zoo');

function copyZoo(): string {
  return copyRepoZoo(mkdtempSync(path.join(tmpdir(), 'graph-zoo-')));
}

test('build, convert and test the zoo; a second build is all cached; a wrong expectation fails its tests only', () => {
  const dir = copyZoo();
  const first = graph(dir, 'build', '--junit', 'junit.xml', '--report', 'report.json');
  assert.is(first.code, 0, first.stderr);
  const report = JSON.parse(readFileSync(path.join(dir, 'report.json'), 'utf8'));
  const tests = report.nodes.filter((n: { kind: string }) => n.kind === 'test');
  assert.is(tests.length, 16);
  for (const t of tests) assert.is(t.status, 'ran', t.id);
  const convert = report.nodes.find((n: { id: string }) => n.id === 'convert:pwm-scanner').outputs;
  assert.match(convert.sha256, /^[a-f0-9]{64}$/);
  assert.match(convert.md5, /^[a-f0-9]{32}$/);
  const check = spawnSync('python3', [SIFCHECK, '--runnable', '--expect', '/usr/local/bin/predict', '--expect-exec', '/usr/bin/python3', path.join(dir, convert.sif)], { encoding: 'utf8' });
  assert.is(check.status, 0, check.stderr);
  assert.ok(existsSync(path.join(dir, 'dist/sif/pwm-scanner.sif')));
  assert.equal(Object.keys(JSON.parse(readFileSync(path.join(dir, 'published.lock.json'), 'utf8')).images), ['kmer-classifier', 'pwm-scanner', 'py3-base', 'seq-features']);
  const junit = readFileSync(path.join(dir, 'junit.xml'), 'utf8');
  assert.match(junit, '<testcase classname="test" name="test:pwm/CTCF@sif"');

  const second = graph(dir, 'build');
  assert.is(second.code, 0, second.stderr);
  assert.match(second.stderr, 'ok: 0 ran, 27 cached, 0 failed, 0 skipped');

  // One model's file changed: exactly that model's tests, and its image's publish, will run.
  const motif = path.join(dir, 'zoo/pwm/models/CTCF/motif.pwm');
  const motifText = readFileSync(motif, 'utf8');
  writeFileSync(motif, `${motifText}# tweak\n`);
  const plan = JSON.parse(graph(dir, 'plan', '--format', 'json').stdout) as { nodes: Array<{ id: string; status: string; reasons: string[] }> };
  const toRun = plan.nodes.filter((n) => n.status === 'run');
  assert.equal(toRun.map((n) => n.id), ['test:pwm/CTCF@oci', 'test:pwm/CTCF@sif', 'publish:pwm-scanner']);
  assert.match(toRun[0].reasons[0], /^input file zoo\/pwm\/models\/CTCF\/motif\.pwm changed \(sha256:[0-9a-f]{12} → sha256:[0-9a-f]{12}\)$/);
  writeFileSync(motif, motifText);

  // Within the declared tolerance (0.0005): the tests re-run (their inputs changed) and pass.
  const expected = path.join(dir, 'zoo/pwm/expect/GATA1/scores.tsv');
  const original = readFileSync(expected, 'utf8');
  writeFileSync(expected, original.replace('9.7360', '9.7363'));
  const close = graph(dir, 'build');
  assert.is(close.code, 0, close.stderr);
  assert.match(close.stderr, 'ok: 3 ran, 24 cached, 0 failed, 0 skipped');
  // Beyond it: exactly GATA1's two tests fail, saying where, and keep their output.
  writeFileSync(expected, original.replace('9.7360', '9.7000'));
  const broken = graph(dir, 'build', '--report', 'broken.json', '--profile', 'profile.json');
  assert.is(broken.code, 1);
  assert.match(broken.stderr, 'FAILED: 0 ran, 24 cached, 2 failed, 1 skipped');
  assert.match(
    broken.stderr,
    'failed test:pwm/GATA1@oci: output differs from zoo/pwm/expect/GATA1: scores.tsv: line 3, column 2: 9.7360 ≠ expected 9.7000 (tolerance 0.0005) (output kept in .graph/out/test/test:pwm%2FGATA1@oci/output)',
  );
  assert.match(broken.stderr, 'failed test:pwm/GATA1@sif: output differs');
  assert.match(readFileSync(path.join(dir, '.graph/out/test/test:pwm%2FGATA1@oci/output/scores.tsv'), 'utf8'), 'chr2_enhancer\t9.7360');
  // What CI keeps for a reviewer: the profile and the report page of that build.
  const trace = JSON.parse(readFileSync(path.join(dir, 'profile.json'), 'utf8')) as { traceEvents: Array<{ ph: string; name: string; tid: number }> };
  assert.equal(trace.traceEvents.filter((e) => e.ph === 'X' && e.tid > 0).map((e) => e.name).sort(), ['test:pwm/GATA1@oci', 'test:pwm/GATA1@sif']);
  const page = graph(dir, 'report', 'html', 'report.html', '--from', 'broken.json', '--profile', 'profile.json');
  assert.is(page.code, 0, page.stderr);
  const html = readFileSync(path.join(dir, 'report.html'), 'utf8');
  assert.match(html, '"id":"test:pwm/GATA1@oci","kind":"test","image":"pwm-scanner"');
  assert.match(html, 'scores.tsv: line 3, column 2: 9.7360 ≠ expected 9.7000');

  // The main job with a key: every image and SIF signed, with SBOMs, provenance and test results;
  // graph verify passes on them and fails on a tampered copy.
  writeFileSync(expected, original);
  assert.is(graph(dir, 'key', 'generate').code, 0);
  const signed = graph(dir, 'build', '--sign-key', 'graph.key');
  assert.is(signed.code, 0, signed.stderr);
  const verified = graph(dir, 'verify', '--key', 'graph.pub');
  assert.is(verified.code, 0, verified.stdout + verified.stderr);
  for (const image of ['kmer-classifier', 'pwm-scanner', 'py3-base', 'seq-features']) {
    assert.match(verified.stdout, new RegExp(`ok    dist/oci:${image}: signed by sha256:[0-9a-f]{64}\n`));
    assert.match(verified.stdout, new RegExp(`ok    dist/oci:${image}: spdx sha256:[0-9a-f]{64} names it\n`));
  }
  assert.match(verified.stdout, /ok    dist\/sif\/seq-features\.sif: signed by sha256:[0-9a-f]{64} \(DSSE, object group 1\)\n/);
  const signedSif = spawnSync('python3', [SIFCHECK, '--runnable', '--expect', '/usr/local/bin/predict', path.join(dir, 'dist/sif/pwm-scanner.sif')], { encoding: 'utf8' });
  assert.is(signedSif.status, 0, signedSif.stderr);
  cpSync(path.join(dir, 'dist/sif/pwm-scanner.sif'), path.join(dir, 'tampered.sif'));
  flipByte(path.join(dir, 'tampered.sif'), 1 << 20);
  const tampered = graph(dir, 'verify', 'tampered.sif', '--key', 'graph.pub');
  assert.is(tampered.code, 1);
  assert.match(tampered.stdout, /FAIL  tampered\.sif: signature invalid: object 4: object 3 \(partition\): its data changed since it was signed/);
});

test.run();
