/**
 * Slurm benchmark: what running nodes as Slurm jobs costs over running them here. A zoo of
 * BENCH_SLURM_NODES (default 200) instant tests (busybox `true`, one model each, in one busybox
 * image from the host's Debian mirror) is built with `graph build --executor local` and with
 * `--executor slurm` on the single-node test cluster (test/slurm-cluster.ts: 2 CPUs, so `--jobs 2`
 * for both), alternately, each run with fresh model names (new keys, nothing cached). The figure is
 * the wall time of each build, and the overhead per node through Slurm (submit to recorded result,
 * beyond the local run): (slurm − local) × jobs ÷ nodes. Medians of BENCH_RUNS (default 1: a run
 * through Slurm takes minutes). Skipped, with the reason, when the cluster cannot start.
 * Run: `node out/bench/slurm.js`.
 */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { workspace } from '../test/helpers.js';
import { startSlurm } from '../test/slurm-cluster.js';
import { emitRows, median } from './rows.js';

const NODES = Number(process.env.BENCH_SLURM_NODES ?? 200);
const RUNS = Number(process.env.BENCH_RUNS ?? 1);
const JOBS = 2;
const CLI = fileURLToPath(new URL('../cli.js', import.meta.url));

const cluster = await startSlurm();
if ('skip' in cluster) {
  process.stderr.write(`slurm: skipped: ${cluster.skip}\n`);
  emitRows([{ section: 'slurm', case: `${NODES} instant tests`, graph: 'skipped', reference: cluster.skip }]);
} else {
  try {
    const dir = workspace({ 'images.yaml': 'version: 1\nimages:\n  bb:\n    debian: {packages: [busybox-static]}\n', 'models.yaml': 'version: 1\ngroups: {}\n' });
    const build = (...args: string[]) => {
      const t0 = performance.now();
      const r = spawnSync(process.execPath, [CLI, 'build', '--jobs', String(JOBS), ...args], { cwd: dir, env: { ...process.env, ...cluster.env, CI: 'true' }, encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`graph build ${args.join(' ')} failed:\n${r.stderr.slice(-2000)}`);
      return performance.now() - t0;
    };
    build('build:bb');
    const models = (run: string) =>
      `version: 1\ngroups:\n  g:\n    image: bb\n    models: [${Array.from({ length: NODES }, (_, i) => `${run}m${i}`).join(', ')}]\n    test: {command: [/bin/busybox, sh, -c, "true # {model}"]}\n`;
    const local: number[] = [];
    const slurm: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      writeFileSync(`${dir}/models.yaml`, models(`l${i}`));
      local.push(build('--executor', 'local'));
      writeFileSync(`${dir}/models.yaml`, models(`s${i}`));
      slurm.push(build('--executor', 'slurm'));
    }
    const [l, s] = [median(local), median(slurm)];
    const perNode = ((s - l) * JOBS) / NODES;
    emitRows([
      {
        section: 'slurm',
        case: `${NODES} instant tests, --jobs ${JOBS}`,
        graph: `--executor slurm: ${(s / 1000).toFixed(1)} s (overhead ${Math.round(perNode)} ms per node, submit to recorded result)`,
        reference: `--executor local: ${(l / 1000).toFixed(1)} s`,
        ratio: s / l,
      },
    ]);
  } finally {
    cluster.stop();
  }
}
