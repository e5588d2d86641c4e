/**
 * Slurm's command line as data (engine/execute/slurm.ts): the sbatch arguments a node becomes,
 * the parsers of sbatch, squeue and scontrol output (as Slurm 22.05 prints them), and the
 * commands `SlurmCli` runs, against canned outputs.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { isEnded, jobName, parseSbatch, parseScontrolJob, parseSqueue, sbatchArgs, SlurmCli, SlurmConfigError, timeLimitMinutes, type JobId } from '../../engine/execute/slurm.js';

const test = suite('slurm');

const base = { name: 'graph-r1-test_g_m@oci', log: '/ws/.graph/logs/x.log', chdir: '/ws', resources: {}, exclude: [] };

test('sbatch arguments: graph\'s own, then partition, account, qos, then the extra args', () => {
  assert.equal(sbatchArgs({ ...base, timeoutMs: 90_000, resources: { gpu: 2, disk: 1 }, cpus: 4, memoryMb: 4096, exclude: ['n2', 'n1', 'n2'] }, { partition: 'gpu', account: 'lab', qos: 'high', args: ['--constraint=a100'] }), [
    '--parsable',
    '-J',
    'graph-r1-test_g_m@oci',
    '--output=/ws/.graph/logs/x.log',
    '--open-mode=append',
    '--chdir=/ws',
    '--time=2',
    '--gres=gpu:2',
    '-c',
    '4',
    '--mem=4096M',
    '--exclude=n1,n2',
    '--partition=gpu',
    '--account=lab',
    '--qos=high',
    '--constraint=a100',
  ]);
  assert.equal(sbatchArgs(base, { args: [] }), ['--parsable', '-J', 'graph-r1-test_g_m@oci', '--output=/ws/.graph/logs/x.log', '--open-mode=append', '--chdir=/ws']);
});

test('--time is whole minutes, rounded up, at least one', () => {
  assert.is(timeLimitMinutes(1), 1);
  assert.is(timeLimitMinutes(60_000), 1);
  assert.is(timeLimitMinutes(60_001), 2);
  assert.is(timeLimitMinutes(30 * 60_000), 30);
});

test('job names keep letters, digits and ._@- and replace the rest', () => {
  assert.is(jobName('ab12', 'test:MMSplice/mtsplice@sif'), 'graph-ab12-test_MMSplice_mtsplice@sif');
});

test('sbatch --parsable: the id, with or without a cluster; anything else is an error quoting it', () => {
  assert.is(parseSbatch('4711\n'), '4711');
  assert.is(parseSbatch('4711;cluster\n'), '4711');
  assert.throws(() => parseSbatch('Submitted batch job 4711\n'), /sbatch printed no job id: "Submitted batch job 4711"/);
});

test('squeue rows: id, long state, host, reason; pending jobs have no host', () => {
  const rows = parseSqueue('12|RUNNING|vm|None\n13|PENDING||Resources\n14|CANCELLED+|vm|None\ngarbage\n');
  assert.equal([...rows.values()], [
    { id: '12', state: 'RUNNING', host: 'vm' },
    { id: '13', state: 'PENDING', reason: 'Resources' },
    { id: '14', state: 'CANCELLED', host: 'vm' },
  ]);
});

test('scontrol show job: state, exit code and signal, host, reason, time limit', () => {
  const out =
    'JobId=7 JobName=graph-x UserId=root(0) JobState=TIMEOUT Reason=TimeLimit Dependency=(null) ExitCode=0:15 RunTime=00:01:24 TimeLimit=00:01:00 ' +
    'Partition=debug NodeList=vm BatchHost=vm NumNodes=1 Command=(null) WorkDir=/ws StdOut=/ws/.graph/logs/x.log\n';
  assert.equal(parseScontrolJob(out), { id: '7', state: 'TIMEOUT', exitCode: 0, exitSignal: 15, host: 'vm', reason: 'TimeLimit', timeLimit: '00:01:00' });
  assert.equal(parseScontrolJob('JobId=8 JobState=PENDING Reason=None ExitCode=0:0 NodeList= TimeLimit=UNLIMITED'), { id: '8', state: 'PENDING', exitCode: 0, exitSignal: 0, timeLimit: 'UNLIMITED' });
  assert.is(parseScontrolJob('slurm_load_jobs error: Invalid job id specified'), undefined);
});

test('ended states: COMPLETED and the failed ones; PENDING, RUNNING, COMPLETING are not', () => {
  for (const s of ['COMPLETED', 'FAILED', 'TIMEOUT', 'OUT_OF_MEMORY', 'NODE_FAIL', 'CANCELLED', 'PREEMPTED', 'BOOT_FAIL', 'DEADLINE']) assert.ok(isEnded(s), s);
  for (const s of ['PENDING', 'RUNNING', 'COMPLETING', 'CONFIGURING', 'REQUEUED', 'SUSPENDED']) assert.not.ok(isEnded(s), s);
});

/** A capture answering from a table of argv prefixes; records every call. */
function canned(table: Array<[string, string | Error]>): { calls: string[][]; capture: (argv: readonly string[], o?: { input?: string }) => Promise<string> } {
  const calls: string[][] = [];
  return {
    calls,
    capture: async (argv) => {
      calls.push([...argv]);
      const line = argv.join(' ');
      const hit = table.find(([prefix]) => line.startsWith(prefix));
      if (!hit) throw new Error(`${line} failed: unexpected`);
      if (hit[1] instanceof Error) throw hit[1];
      return hit[1];
    },
  };
}

test('check: no sbatch on PATH is a configuration error naming the commands', async () => {
  const { capture } = canned([['sbatch --version', new Error('sbatch --version failed: spawn sbatch ENOENT')]]);
  try {
    await new SlurmCli(capture).check({ args: [] });
    assert.unreachable();
  } catch (e) {
    assert.instance(e, SlurmConfigError);
    assert.is((e as Error).message, 'sbatch is not on PATH: --executor slurm needs the Slurm client commands (sbatch, squeue, scontrol, scancel)');
  }
});

test('check: an unknown partition is a configuration error listing the partitions', async () => {
  const { capture } = canned([
    ['sbatch --version', 'slurm-wlm 22.05.8\n'],
    ['scontrol show partition -o nope', new Error('scontrol failed')],
    ['sinfo -h -o %R', 'debug\ngpu\ndebug\n'],
  ]);
  try {
    await new SlurmCli(capture).check({ partition: 'nope', args: [] });
    assert.unreachable();
  } catch (e) {
    assert.instance(e, SlurmConfigError);
    assert.is((e as Error).message, "settings.slurm.partition 'nope' does not exist on this cluster (partitions: debug, gpu)");
  }
});

test('one squeue for every job; a list Slurm has wholly forgotten is an empty answer', async () => {
  const { calls, capture } = canned([
    ['squeue -h -t all -j 1,2', '1|RUNNING|vm|None\n2|COMPLETED|vm|None\n'],
    ['squeue -h -t all -j 9', new Error('squeue failed: slurm_load_jobs error: Invalid job id specified')],
  ]);
  const cli = new SlurmCli(capture);
  assert.equal([...(await cli.queue(['1', '2'] as JobId[])).keys()], ['1', '2']);
  assert.equal(calls, [['squeue', '-h', '-t', 'all', '-j', '1,2', '-o', '%i|%T|%N|%r']]);
  assert.is((await cli.queue(['9'] as JobId[])).size, 0);
});

test.run();
