/**
 * A single-node Slurm cluster for the end-to-end tests, started the way ../shared/SANDBOX.md
 * describes (Debian's slurm-wlm and munge, as root, no systemd): munged as the munge user (reused
 * when one already runs), then slurmctld and slurmd with a slurm.conf in a temp directory on free
 * ports, so it never touches /etc/slurm or another cluster on the machine. Clients find it through
 * `SLURM_CONF` in the returned environment. `stop()` cancels what is left in its queue and ends
 * the daemons it started, by their pid files.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import path from 'node:path';
import { freePort, processAlive } from './helpers.js';

export interface SlurmCluster {
  /** `SLURM_CONF` for every Slurm client (and graph, which passes it on to sbatch). */
  readonly env: Readonly<Record<string, string>>;
  /** The compute node's name (`hostname -s`). */
  readonly node: string;
  readonly dir: string;
  /** Run a Slurm client command against this cluster; its stdout (throws when it fails). */
  run(argv: readonly string[]): string;
  stop(): void;
}

/** Where a command lives on PATH (or in the sbin directories root has), else undefined. */
function which(name: string): string | undefined {
  for (const dir of [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/sbin']) {
    const p = path.join(dir, name);
    if (dir && existsSync(p)) return p;
  }
  return undefined;
}

function pidIn(file: string): number | undefined {
  try {
    const pid = Number(readFileSync(file, 'utf8').trim());
    return pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

async function waitFor(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, 200));
  }
  return cond();
}

/**
 * Start the cluster.
 * @returns the cluster, or `{skip}` saying why its daemons cannot start here (not installed, not
 *   root); any other failure throws with the daemons' logs.
 */
export async function startSlurm(): Promise<SlurmCluster | { readonly skip: string }> {
  const tools = { slurmctld: which('slurmctld'), slurmd: which('slurmd'), munged: which('munged'), sbatch: which('sbatch') };
  const missing = Object.entries(tools).filter(([, p]) => !p).map(([n]) => n);
  if (missing.length) return { skip: `Slurm is not installed (no ${missing.join(', ')}; apt-get install slurm-wlm munge, as .ci/run does)` };
  if (process.getuid?.() !== 0) return { skip: 'the single-node Slurm of the tests runs as root' };
  const node = hostname().split('.')[0];
  const dir = mkdtempSync(path.join(tmpdir(), 'graph-slurm-'));
  for (const d of ['state', 'spool', 'log']) mkdirSync(path.join(dir, d));
  const [ctldPort, dPort] = [await freePort(), await freePort()];
  const conf = path.join(dir, 'slurm.conf');
  writeFileSync(
    conf,
    [
      'ClusterName=graphtest',
      `SlurmctldHost=${node}`,
      'SlurmUser=root',
      'AuthType=auth/munge',
      'ProctrackType=proctrack/linuxproc',
      'TaskPlugin=task/none',
      'SelectType=select/cons_tres',
      'SelectTypeParameters=CR_Core',
      'JobAcctGatherType=jobacct_gather/none',
      'AccountingStorageType=accounting_storage/none',
      'ReturnToService=2',
      `SlurmctldPort=${ctldPort}`,
      `SlurmdPort=${dPort}`,
      `StateSaveLocation=${dir}/state`,
      `SlurmdSpoolDir=${dir}/spool`,
      `SlurmctldPidFile=${dir}/slurmctld.pid`,
      `SlurmdPidFile=${dir}/slurmd.pid`,
      `SlurmctldLogFile=${dir}/log/slurmctld.log`,
      `SlurmdLogFile=${dir}/log/slurmd.log`,
      // Jobs stay visible to squeue/scontrol for 10 minutes after they end (the tests look).
      'MinJobAge=600',
      // Start batch jobs as soon as they are submitted (Slurm delays them by up to 3 s by default,
      // batching starts for throughput): a build of short nodes then takes a quarter of the time.
      'SchedulerParameters=batch_sched_delay=0,sched_min_interval=0',
      `NodeName=${node} CPUs=2 RealMemory=20000 State=UNKNOWN`,
      `PartitionName=debug Nodes=${node} Default=YES MaxTime=INFINITE State=UP`,
      '',
    ].join('\n'),
  );
  const env = { SLURM_CONF: conf };
  const logs = () => ['slurmctld', 'slurmd'].map((d) => `${d}.log:\n${(() => { try { return readFileSync(path.join(dir, 'log', `${d}.log`), 'utf8').slice(-2000); } catch { return '(none)'; } })()}`).join('\n');

  // munged: one per machine (its socket is in /run/munge); reuse a running one.
  let startedMunge = false;
  const mungePid = pidIn('/run/munge/munged.pid');
  if (!(mungePid && processAlive(mungePid))) {
    mkdirSync('/run/munge', { recursive: true });
    spawnSync('chown', ['munge:munge', '/run/munge']);
    const m = spawnSync('su', ['-s', '/bin/sh', 'munge', '-c', tools.munged as string], { encoding: 'utf8' });
    if (m.status !== 0) return { skip: `munged does not start: ${m.stderr.trim()}` };
    startedMunge = true;
  }
  const stopDaemons = () => {
    for (const d of ['slurmd', 'slurmctld']) {
      const pid = pidIn(path.join(dir, `${d}.pid`));
      if (pid && processAlive(pid)) process.kill(pid, 'SIGTERM');
    }
  };
  for (const d of ['slurmctld', 'slurmd'] as const) {
    const r = spawnSync(tools[d] as string, [], { env: { ...process.env, ...env }, encoding: 'utf8' });
    if (r.status !== 0) {
      stopDaemons();
      return { skip: `${d} does not start: ${r.stderr.trim() || `exit ${r.status}`}` };
    }
  }
  const run = (argv: readonly string[]) => {
    const r = spawnSync(argv[0], argv.slice(1), { env: { ...process.env, ...env }, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`${argv.join(' ')} failed: ${r.stderr}`);
    return r.stdout;
  };
  const idle = await waitFor(() => {
    try {
      return /^idle/.test(run(['sinfo', '-h', '-n', node, '-o', '%t']).trim());
    } catch {
      return false;
    }
  }, 20_000);
  if (!idle) {
    stopDaemons();
    throw new Error(`the test cluster's node never became idle\n${logs()}`);
  }
  return {
    env,
    node,
    dir,
    run,
    stop() {
      try {
        run(['scancel', '--full', '-u', 'root']);
        // Jobs' steps end only while slurmd runs: wait for the queue to empty first.
        const until = Date.now() + 15_000;
        while (run(['squeue', '-h', '-t', 'pending,running,completing,configuring', '-o', '%i']).trim() && Date.now() < until) spawnSync('sleep', ['0.2']);
      } catch {
        // nothing left, or the controller is gone
      }
      stopDaemons();
      const end = Date.now() + 10_000;
      for (const d of ['slurmd', 'slurmctld']) {
        const pid = pidIn(path.join(dir, `${d}.pid`));
        while (pid && processAlive(pid) && Date.now() < end) spawnSync('sleep', ['0.1']);
      }
      if (startedMunge) {
        const pid = pidIn('/run/munge/munged.pid');
        if (pid && processAlive(pid)) process.kill(pid, 'SIGTERM');
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
