/**
 * `graph build --executor slurm` end to end against a real single-node Slurm started by the test
 * (test/slurm-cluster.ts): the whole zoo runs as Slurm jobs, one job per node, visible in
 * scontrol, and a second build submits nothing; a failing test fails its node (exit 1) and a test
 * past its time limit ends TIMEOUT (tests on Slurm, the build here: settings.executor per kind); Ctrl-C leaves nothing of the run in the queue (exit 130);
 * bad configuration (no sbatch, an unknown partition, a refused GRES) fails clearly without a hang.
 * Skipped, with the reason, only when the daemons cannot start here (CI installs them).
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { CLI, copyRepoZoo, graphWith, workspace } from './helpers.js';
import { startSlurm, type SlurmCluster } from './slurm-cluster.js';

const test = suite('slurm');
let cluster: SlurmCluster | undefined;
let skip: string | undefined;

test.before(async () => {
  const started = await startSlurm();
  if ('skip' in started) {
    skip = started.skip;
    process.stderr.write(`\nslurm: SKIPPED, the test cluster cannot start: ${skip}\n`);
  } else cluster = started;
});

test.after(() => cluster?.stop());

/** Run `name` only with a cluster (else it passes, the skip printed once above). */
function withCluster(name: string, fn: (c: SlurmCluster) => Promise<void> | void): void {
  test(name, async () => {
    if (cluster) await fn(cluster);
  });
}

interface ReportNode {
  id: string;
  kind: string;
  status: string;
  failure: { type: string; state?: string; code?: number; job?: string; host?: string; message?: string; cause?: { type: string; code?: number } } | null;
  where?: { executor: string; job: string; host: string };
}

const readReport = (dir: string) => JSON.parse(readFileSync(path.join(dir, 'report.json'), 'utf8')) as { nodes: ReportNode[] };

/** Every job the cluster knows, as `id|state|name`. */
function jobs(c: SlurmCluster): Array<{ id: string; state: string; name: string }> {
  return c
    .run(['squeue', '-h', '-t', 'all', '-o', '%i|%T|%j'])
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const [id, state, name] = l.split('|');
      return { id, state, name };
    });
}

/** A busybox image from Debian's mirror and tests of `groups` (YAML lines per group) on Slurm. */
function busyboxZoo(groups: string, settings = ''): string {
  return workspace({
    'images.yaml': `version: 1\nsettings:\n  executor: {test: slurm}\n${settings}images:\n  bb:\n    debian: {packages: [busybox-static]}\n`,
    'models.yaml': `version: 1\ngroups:\n${groups}`,
  });
}

withCluster('graph build --executor slurm runs the zoo as Slurm jobs, one per node, visible in scontrol; a second build submits nothing', (c) => {
  const dir = copyRepoZoo(mkdtempSync(path.join(tmpdir(), 'graph-slurm-zoo-')));
  const plan = JSON.parse(graphWith(c.env, dir, 'plan', '--format', 'json', '--executor', 'slurm').stdout) as { nodes: Array<{ id: string; executor?: string }> };
  for (const n of plan.nodes) assert.is(n.executor, 'slurm', n.id);
  const before = new Set(jobs(c).map((j) => j.id));
  const first = graphWith(c.env, dir, 'build', '--executor', 'slurm', '--report', 'report.json', '--junit', 'junit.xml');
  assert.is(first.code, 0, first.stderr);
  const nodes = readReport(dir).nodes;
  assert.is(nodes.length, 27);
  assert.is(nodes.filter((n) => n.kind === 'test').length, 16);
  for (const n of nodes) {
    assert.is(n.status, 'ran', n.id);
    assert.is(n.where?.executor, 'slurm', n.id);
    assert.is(n.where?.host, c.node, n.id);
  }
  // One job per node, each COMPLETED, named after its node.
  const ours = jobs(c).filter((j) => !before.has(j.id));
  assert.equal(ours.map((j) => j.id).sort(), nodes.map((t) => t.where?.job as string).sort());
  const run = /^graph-([0-9a-f]{8})-/.exec(ours[0].name)?.[1] as string;
  for (const t of nodes) {
    const shown = c.run(['scontrol', 'show', 'job', '-o', t.where?.job as string]);
    assert.match(shown, `JobName=graph-${run}-${t.id.replace(/[^A-Za-z0-9._@-]/g, '_')} `);
    assert.match(shown, 'JobState=COMPLETED ');
    assert.match(shown, `NodeList=${c.node} `);
  }
  assert.match(first.stderr, new RegExp(`ran     test:pwm/CTCF@oci \\([^)]*, slurm job [0-9]+ on ${c.node}\\)`));
  assert.match(readFileSync(path.join(dir, 'junit.xml'), 'utf8'), `<property name="host" value="${c.node}"/>`);
  assert.match(readFileSync(path.join(dir, '.graph/logs/test:pwm%2FCTCF@sif.log'), 'utf8'), /# slurm: job [0-9]+ COMPLETED on /);

  const second = graphWith(c.env, dir, 'build', '--executor', 'slurm');
  assert.is(second.code, 0, second.stderr);
  assert.match(second.stderr, 'ok: 0 ran, 27 cached, 0 failed, 0 skipped');
  assert.is(jobs(c).length, before.size + ours.length, 'the second build submitted nothing');
});

withCluster('a failing test fails its node with exit 1; a test past its time limit ends TIMEOUT', (c) => {
  const dir = busyboxZoo(
    '  fails:\n    image: bb\n    models: [m]\n    test: {command: [/bin/busybox, sh, -c, "echo failing; exit 1"]}\n' +
      '  slow:\n    image: bb\n    models: [m]\n    test: {command: [/bin/busybox, sleep, "600"], timeout: 1s}\n',
  );
  const r = graphWith(c.env, dir, 'build', '--report', 'report.json');
  assert.is(r.code, 1, r.stderr);
  const byId = new Map(readReport(dir).nodes.map((n) => [n.id, n]));
  const failing = byId.get('test:fails/m@oci') as ReportNode;
  assert.is(failing.status, 'failed');
  assert.equal([failing.failure?.type, failing.failure?.state, failing.failure?.code, failing.failure?.cause?.type, failing.failure?.cause?.code], ['cluster', 'FAILED', 1, 'exit', 1]);
  assert.match(failing.failure?.message as string, new RegExp(`^Slurm job ${failing.where?.job} FAILED on ${c.node} \\(exit code 1\\): `));
  assert.match(readFileSync(path.join(dir, '.graph/logs/test:fails%2Fm@oci.log'), 'utf8'), 'failing\n');
  const slow = byId.get('test:slow/m@oci') as ReportNode;
  assert.is(slow.status, 'failed');
  assert.equal([slow.failure?.type, slow.failure?.state], ['cluster', 'TIMEOUT']);
  assert.match(slow.failure?.message as string, new RegExp(`^Slurm job ${slow.where?.job} TIMEOUT on ${c.node}: ran past its time limit 00:01:00$`));
  assert.match(r.stderr, `FAILED  test:slow/m@oci`);
  // The failures' notes from the jobs were read and removed.
  const notes = path.join(dir, '.graph/slurm');
  assert.equal(existsSync(notes) ? readdirSync(notes) : [], []);
});

withCluster('Ctrl-C cancels every job of the run and exits 130; nothing of ours is left in the queue', async (c) => {
  const dir = busyboxZoo(
    // {model} in the command: two actions, two jobs (the same command would be one action key).
    '  sleepy:\n    image: bb\n    models: [a, b]\n    test: {command: [/bin/busybox, sh, -c, "sleep 600 # {model}"], timeout: 20m}\n',
  );
  const env: NodeJS.ProcessEnv = { ...process.env, ...c.env, CI: 'true' };
  delete env.GRAPH_CACHE_DIR;
  const child = spawn(process.execPath, [CLI, 'build', '--report', 'report.json'], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<number>((resolve) => child.on('close', (code) => resolve(code ?? -1)));
  const ours = () => jobs(c).filter((j) => j.name.startsWith('graph-') && j.name.includes('test_sleepy_'));
  try {
    const end = Date.now() + 120_000;
    while (ours().filter((j) => j.state === 'RUNNING').length < 2 && Date.now() < end) await new Promise((r) => setTimeout(r, 250));
    assert.is(ours().filter((j) => j.state === 'RUNNING').length, 2, `both tests running as jobs\n${stderr}`);
    child.kill('SIGINT');
    assert.is(await exited, 130, stderr);
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
  const left = ours().filter((j) => !['CANCELLED', 'COMPLETED', 'FAILED'].includes(j.state));
  assert.equal(left, [], 'no job of the run is pending or running');
  assert.equal(ours().map((j) => j.state), ['CANCELLED', 'CANCELLED']);
  const statuses = readReport(dir).nodes.filter((n) => n.kind === 'test').map((n) => n.status);
  assert.equal(statuses, ['interrupted', 'interrupted']);
});

withCluster('bad configuration fails before anything is submitted: no sbatch, an unknown partition; a refused job fails at once', (c) => {
  const dir = busyboxZoo('  ok:\n    image: bb\n    models: [m]\n    test: {command: [/bin/busybox, "true"], resources: {gpu: 1}}\n', '  resources: {gpu: 1}\n  slurm: {partition: nope}\n');
  const before = jobs(c).length;
  const partition = graphWith(c.env, dir, 'build');
  assert.is(partition.code, 2, partition.stderr);
  assert.match(partition.stderr, "graph build: settings.slurm.partition 'nope' does not exist on this cluster (partitions: debug)\n");
  const noSbatch = graphWith({ ...c.env, PATH: '/nonexistent' }, dir, 'build');
  assert.is(noSbatch.code, 2, noSbatch.stderr);
  assert.match(noSbatch.stderr, 'graph build: sbatch is not on PATH: --executor slurm needs the Slurm client commands (sbatch, squeue, scontrol, scancel)\n');
  assert.is(jobs(c).length, before);
  // The partition fixed, the fake GPU it asks for (--gres=gpu:1) does not exist on this node:
  // sbatch refuses, and the node fails with sbatch's words.
  writeFileSync(path.join(dir, 'images.yaml'), readFileSync(path.join(dir, 'images.yaml'), 'utf8').replace('partition: nope', 'partition: debug'));
  const refused = graphWith(c.env, dir, 'build', '--report', 'report.json');
  assert.is(refused.code, 1, refused.stderr);
  const node = readReport(dir).nodes.find((n) => n.id === 'test:ok/m@oci') as ReportNode;
  assert.is(node.failure?.type, 'error');
  assert.match(node.failure?.message as string, /^sbatch refused the job: sbatch --parsable .* --gres=gpu:1 --partition=debug failed: sbatch: error: /);
  assert.is(jobs(c).length, before);
});

test.run();
