/**
 * Run contracts end to end with real bubblewrap, in both runtimes (oci, sif), for each preset
 * (kipoi, synapse, tre): a busybox image from Debian's mirror whose job script reports what the
 * sandbox gave it (arguments, working directory, environment, which contract paths exist and
 * whether they are writable, network interfaces) into the contract's output directory, which
 * graph then compares with the expected report. The same report from the oci and the sif runtime
 * is the proof that both honour the same contract; podman, where installed, gives the same. Then the repository's own contract models
 * (the R model under `synapse`, the TRE job under `tre`) from a copy of the zoo.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { findExecutable } from '../engine/key/tools.js';
import { copyRepoZoo, graph, workspace } from './helpers.js';

const test = suite('contracts');

const made: string[] = [];
test.after(() => {
  for (const dir of made) rmSync(dir, { recursive: true, force: true });
});

/** The job: every probe written to $OUT/report.txt (busybox applets called through busybox: the package links none). */
const JOB = `#!/bin/busybox sh
bb=/bin/busybox
{
  echo "args: $*"
  echo "pwd: $($bb pwd)"
  echo "model: \${MODEL:-unset}"
  if $bb touch /probe 2>/dev/null; then echo "/: writable"; else echo "/: read-only"; fi
  for d in /input /output /safe_data /safe_outputs /scratch /ref; do
    if [ ! -d $d ]; then echo "$d: absent"; continue; fi
    if $bb touch $d/.probe 2>/dev/null; then
      $bb rm $d/.probe
      echo "$d: writable, $($bb ls -A $d | $bb wc -l) entries"
    else
      echo "$d: read-only: $($bb ls $d | $bb tr '\\n' ' ')"
    fi
  done
  echo "network interfaces: $($bb awk -F: 'NR > 2 { gsub(/ /, "", $1); print $1 }' /proc/net/dev | $bb tr '\\n' ' ')"
} > "$OUT/report.txt"
`;

/** The report the job writes under `preset` (its own expectation, stated here, not read from a run). */
function report(lines: Record<string, string>): string {
  const dirs = ['/input', '/output', '/safe_data', '/safe_outputs', '/scratch', '/ref'];
  return [`args: ${lines.args}`, `pwd: ${lines.pwd}`, `model: ${lines.model}`, '/: read-only', ...dirs.map((d) => `${d}: ${lines[d] ?? 'absent'}`), 'network interfaces: lo ', ''].join('\n');
}

const EXPECTED = {
  // kipoi (the default): the test's command, /input read-only, /output writable (report.txt open in it).
  kipoi: report({ args: 'kipoi-m1', pwd: '/', model: 'm1', '/input': 'read-only: seqs.fa ', '/output': 'writable, 1 entries' }),
  // synapse: the image's entrypoint + cmd, /input read-only, /output writable, an extra mount.
  synapse: report({ args: 'from-cmd', pwd: '/', model: 'm1', '/input': 'read-only: seqs.fa ', '/output': 'writable, 1 entries', '/ref': 'read-only: weights.txt ' }),
  // tre: the image's own command, /safe_data read-only, /safe_outputs and an empty /scratch writable, workdir set.
  tre: report({ args: 'from-cmd', pwd: '/scratch', model: 'unset', '/safe_data': 'read-only: seqs.fa ', '/safe_outputs': 'writable, 1 entries', '/scratch': 'writable, 0 entries' }),
};

test('each preset in both runtimes under bubblewrap: the job sees exactly its contract, and the oci and sif runs agree', () => {
  const dir = workspace({
    'job.sh': JOB,
    'data/seqs.fa': '>s\nACGT\n',
    'ref/weights.txt': '0.5\n',
    'expect/kipoi/report.txt': EXPECTED.kipoi,
    'expect/synapse/report.txt': EXPECTED.synapse,
    'expect/tre/report.txt': EXPECTED.tre,
    'images.yaml': `version: 1
images:
  bb:
    debian: {packages: [busybox-static]}
  job:
    from: bb
    layers: [{copy: job.sh, to: /job.sh, mode: 0o755}]
    entrypoint: [/bin/busybox, sh, /job.sh]
    cmd: [from-cmd]
    convert: [sif]
`,
    'models.yaml': `version: 1
groups:
  kipoi:
    image: job
    models: [m1]
    test:
      command: [/bin/busybox, sh, /job.sh, "kipoi-{model}"]
      env: {OUT: /output, MODEL: "{model}"}
      inputs: data
      expect: expect/kipoi
      runtimes: [oci, sif]
  synapse:
    image: job
    models: [m1]
    test:
      contract: synapse
      env: {OUT: /output, MODEL: "{model}"}
      mounts: {ref: /ref}
      inputs: data
      expect: expect/synapse
      runtimes: [oci, sif]
  tre:
    image: job
    models: [m1]
    test:
      contract: tre
      env: {OUT: /safe_outputs}
      workdir: /scratch
      inputs: data
      expect: expect/tre
      runtimes: [oci, sif]
`,
  });
  made.push(dir);
  const r = graph(dir, 'build', '--report', 'report.json', 'group:*');
  assert.is(r.code, 0, r.stderr);
  const nodes = (JSON.parse(readFileSync(path.join(dir, 'report.json'), 'utf8')) as { nodes: Array<{ id: string; status: string }> }).nodes;
  assert.equal(
    nodes.filter((n) => n.id.startsWith('test:')).map((n) => `${n.id} ${n.status}`).sort(),
    ['kipoi', 'synapse', 'tre'].flatMap((g) => [`test:${g}/m1@oci ran`, `test:${g}/m1@sif ran`]),
  );
  // Each output is the contract's, byte for byte, in both runtimes (graph compared it; read it back too).
  for (const preset of ['kipoi', 'synapse', 'tre'] as const) {
    for (const runtime of ['oci', 'sif']) {
      const out = path.join(dir, '.graph/out/test', `test:${preset}%2Fm1@${runtime}`, 'output', 'report.txt');
      assert.fixture(readFileSync(out, 'utf8'), EXPECTED[preset]);
    }
  }
  const treLog = readFileSync(path.join(dir, '.graph/logs/test:tre%2Fm1@sif.log'), 'utf8');
  assert.match(treLog, "contract: tre; data → /safe_data (ro), output /safe_outputs, scratch /scratch; the image's entrypoint + cmd: /bin/busybox sh /job.sh from-cmd\n");
  assert.match(treLog, / --ro-bind \S+\/data \/safe_data --bind \S+ \/safe_outputs --bind \S+\/scratch-0 \/scratch /);

  // The same contracts under podman (the sandbox is in the test's key, so every test runs again):
  // the same reports, so both backends honour the same contract. Skipped, saying so, without podman.
  if (findExecutable('podman', process.env.PATH)) {
    const podman = graph(dir, 'build', '--sandbox', 'podman', '--report', 'podman.json', 'group:*');
    assert.is(podman.code, 0, podman.stderr);
    assert.match(podman.stderr, 'ok: 6 ran, 3 cached, 0 failed, 0 skipped');
    assert.match(readFileSync(path.join(dir, '.graph/logs/test:tre%2Fm1@oci.log'), 'utf8'), / --mount type=bind,src=\S+\/data,dst=\/safe_data,ro=true --mount type=bind,src=\S+,dst=\/safe_outputs --mount type=bind,src=\S+\/scratch-0,dst=\/scratch /);
  } else {
    console.log('  (podman is not installed: the podman run of the contracts is skipped)');
  }

  // A second build: all cached. A changed contract field re-runs that group's tests, and the plan says which field.
  assert.match(graph(dir, 'build', 'group:*').stderr, 'ok: 0 ran, 9 cached, 0 failed, 0 skipped');
  const models = path.join(dir, 'models.yaml');
  writeFileSync(models, readFileSync(models, 'utf8').replace('      workdir: /scratch\n', '      workdir: /\n'));
  const plan = graph(dir, 'plan', 'group:*');
  assert.match(plan.stdout, '2 nodes to run, 7 cached (9 nodes selected)');
  // (The node's last record is the podman run's, so the plan names the sandbox too, where podman ran.)
  assert.match(plan.stdout, /  run {4}test:tre\/m1@oci\n( {11}.*\n)* {11}declaration contract\.workdir changed \("\/scratch" → "\/"\)\n/);
  // The tre job's report now says pwd /, so its expectation fails, naming the line.
  const failed = graph(dir, 'build', 'group:tre');
  assert.is(failed.code, 1);
  assert.match(failed.stderr, 'failed test:tre/m1@oci: output differs from expect/tre: report.txt: differs at byte 21 (size ');
});

test("the zoo's contract models: the R model (synapse) and the TRE job (tre) run their images' own commands in both runtimes", () => {
  const dir = copyRepoZoo(mkdtempSync(path.join(tmpdir(), 'graph-zoo-contracts-')), ['py3-base', 'r-base', 'r-gc-model', 'tre-kmer-job']);
  made.push(dir);
  const r = graph(dir, 'build', '--report', 'report.json', 'group:r-gc', 'group:tre-kmer');
  assert.is(r.code, 0, r.stderr);
  const tests = (JSON.parse(readFileSync(path.join(dir, 'report.json'), 'utf8')) as { nodes: Array<{ id: string; status: string }> }).nodes.filter((n) => n.id.startsWith('test:'));
  assert.equal(tests.map((n) => `${n.id} ${n.status}`).sort(), [
    'test:r-gc/gc_logistic@oci ran',
    'test:r-gc/gc_logistic@sif ran',
    'test:tre-kmer/kmer_summary@oci ran',
    'test:tre-kmer/kmer_summary@sif ran',
  ]);
  const rLog = readFileSync(path.join(dir, '.graph/logs/test:r-gc%2Fgc_logistic@sif.log'), 'utf8');
  assert.match(rLog, "contract: synapse; zoo/inputs → /input (ro), output /output; the image's entrypoint + cmd: Rscript run_model.R --input-dir /input --output-dir /output\n");
  assert.match(rLog, 'wrote 3 predictions to /output/predictions.csv');
  // R found its BLAS and LAPACK through the alternatives links the debian recipe made.
  const buildLog = readFileSync(path.join(dir, '.graph/logs/build:r-base.log'), 'utf8');
  assert.match(buildLog, /alternatives: libblas\.so\.3-\S+ -> \/usr\/lib\/\S+\/blas\/libblas\.so\.3 \(libblas3\)/);
  assert.match(buildLog, 'template: /etc/R/Renviron from /usr/lib/R/etc/Renviron.ucf (declared)');
  assert.match(readFileSync(path.join(dir, '.graph/logs/test:tre-kmer%2Fkmer_summary@oci.log'), 'utf8'), 'released 3 rows to /safe_outputs/kmer_summary.tsv');
});

test.run();
