/**
 * Two builds of graph side by side, interleaved (A, B, A, B, …), so the machine's drift touches
 * both alike: for measuring a change against the commit before it on a shared, noisy machine.
 *
 *     node out/bench/ab.js engine OUT_A OUT_B [NODES] [RUNS] [--no-leases] [--bare]
 *     node out/bench/ab.js plan|noop OUT_A OUT_B [NODES] [RUNS]
 *
 * OUT_A and OUT_B are `out/` directories of two checkouts (each with its `package.json` and
 * `node_modules` beside it, as after `npm run build`; a copy of `out/` made before a change works
 * when put beside a `package.json` and a link to `node_modules`).
 *
 * - engine: every node of a fresh zoo of ≈NODES nodes (default 1000) is run by an instant rule at
 *   --jobs 8, as bench/plan-once.ts fills a cache, with leases as `graph build` takes them (none
 *   with --no-leases); with --bare, by a rule that does nothing and produces nothing (the engine
 *   alone, bench/plan-once.ts `bareRules`); per side and run, a fresh copy of the zoo. Figure: ms
 *   per node.
 * - plan, noop: `graph plan --format json` or `graph build` on a zoo of ≈NODES nodes (default
 *   4500) whose cache each side filled itself (a warm-up run first). Figures: wall ms, CPU ms
 *   (user + system) and peak RSS (GNU time).
 *
 * Prints each side's medians of RUNS (default 11) and the median of the per-round ratios B ÷ A.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { median } from './rows.js';
import { modelsForNodes, writeZoo } from './zoo.js';

const HERE = fileURLToPath(new URL('.', import.meta.url));

/** `fill OUT DIR leases|none`, in a child process: run every node with OUT's modules; prints {nodes, executeMs}. */
async function fillChild(out: string, dir: string, leases: boolean, bare: boolean): Promise<void> {
  // A module by its path in this layout, else by its path before engine/ was grouped into stage folders.
  const im = (m: string) => {
    const [now, before = now] = m.split('|');
    return import(path.join(out, existsSync(path.join(out, now)) ? now : before));
  };
  const [{ ActionCache }, { executePlan }, { KeyLeases }, { systemClock }, { FileDigester }, { planBuild }, { ContentStore }, { resolveTools }, { openWorkspace }, { instantRules, bareRules }] = await Promise.all(
    [
      'engine/cache/action-cache.js|engine/cache.js',
      'engine/execute/scheduler.js',
      'engine/execute/lease.js',
      'engine/execute/clock.js',
      'engine/key/files.js|engine/files.js',
      'engine/plan.js',
      'engine/cache/store.js|engine/store.js',
      'engine/key/tools.js|engine/tools.js',
      'engine/workspace.js',
      'bench/plan-once.js',
    ].map(im),
  );
  const ws = openWorkspace(dir, bare ? bareRules : instantRules);
  const cache = new ActionCache(ws.cacheDir);
  const store = new ContentStore(path.join(ws.cacheDir, 'cas'));
  const digester = new FileDigester(ws.root, path.join(ws.stateDir, 'stat-memo.json'));
  const tools = await resolveTools([...ws.graph.nodes()], path.join(ws.stateDir, 'tools.json'));
  const plan = planBuild(ws.graph, new Set(ws.graph.order), { root: ws.root, cache, store, digester, env: process.env, tools });
  digester.save();
  const t0 = performance.now();
  await executePlan(plan, {
    decls: ws.decls, // before rules owned their declarations
    workspace: ws.forRules,
    jobs: 8,
    limits: {},
    resources: {},
    failFast: false,
    runner: { run: async () => ({ exitCode: 0, aborted: false }) },
    cache,
    store,
    stateDir: ws.stateDir,
    ...(leases ? { leases: new KeyLeases({ dir: path.join(ws.cacheDir, 'leases'), clock: systemClock }) } : {}),
    emit: () => {},
  });
  process.stdout.write(`${JSON.stringify({ nodes: ws.graph.size, executeMs: performance.now() - t0 })}\n`);
}

function fill(out: string, dir: string, leases: boolean, bare = false): { nodes: number; executeMs: number } {
  return JSON.parse(execFileSync(process.execPath, [path.join(HERE, 'ab.js'), 'fill', out, dir, leases ? 'leases' : 'none', ...(bare ? ['bare'] : [])], { encoding: 'utf8' })) as { nodes: number; executeMs: number };
}

const report = (label: string, a: number[], b: number[], unit: string, digits = 0) => {
  const ratios = a.map((x, i) => b[i] / x);
  process.stdout.write(`${label}: A ${median(a).toFixed(digits)} ${unit}, B ${median(b).toFixed(digits)} ${unit}, B ÷ A ${median(ratios).toFixed(3)} (median of ${a.length} rounds)\n`);
};

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const [mode, a, b] = args;
  if (mode === 'fill') return fillChild(a, b, args[3] === 'leases', args[4] === 'bare');
  if (!['engine', 'plan', 'noop'].includes(mode) || !a || !b) {
    process.stderr.write('usage: node out/bench/ab.js engine|plan|noop OUT_A OUT_B [NODES] [RUNS] [--no-leases]\n');
    process.exitCode = 2;
    return;
  }
  const outs = [path.resolve(a), path.resolve(b)];
  const numbers = args.slice(3).filter((x) => /^\d+$/.test(x)).map(Number);
  const nodes = numbers[0] ?? (mode === 'engine' ? 1000 : 4500);
  const runs = numbers[1] ?? 11;
  const leases = !args.includes('--no-leases');
  const bare = args.includes('--bare');
  const work = mkdtempSync(path.join(tmpdir(), 'graph-ab-'));
  try {
    const template = path.join(work, 'zoo');
    writeZoo(template, { models: modelsForNodes(nodes) });
    if (mode === 'engine') {
      const perNode: number[][] = [[], []];
      for (let r = 0; r < runs; r++) {
        outs.forEach((out, side) => {
          const dir = path.join(work, `run-${r}-${side}`);
          cpSync(template, dir, { recursive: true });
          const f = fill(out, dir, leases, bare);
          perNode[side].push(f.executeMs / f.nodes);
        });
      }
      // The runs' files are removed at the end, not between runs: freeing blocks costs this disk as much as writing them.
      report(`engine, ≈${nodes} nodes, ${bare ? 'a rule that does nothing' : 'instant rule'}, --jobs 8, ${leases ? 'leases as graph build' : 'no leases'}`, perNode[0], perNode[1], 'ms per node', 3);
      return;
    }
    const dirs = outs.map((out, side) => {
      const dir = path.join(work, `zoo-${side}`);
      cpSync(template, dir, { recursive: true });
      fill(out, dir, true);
      return dir;
    });
    const argv = mode === 'plan' ? ['plan', '--format', 'json'] : ['build'];
    const gnuTime = existsSync('/usr/bin/time');
    const wall: number[][] = [[], []];
    const cpu: number[][] = [[], []];
    const rss: number[][] = [[], []];
    for (let r = 0; r <= runs; r++) {
      outs.forEach((out, side) => {
        const timeFile = path.join(work, 'time');
        const cmd = [process.execPath, path.join(out, 'cli.js'), ...argv];
        const full = gnuTime ? ['/usr/bin/time', '-f', '%U %S %M', '-o', timeFile, ...cmd] : cmd;
        const env: NodeJS.ProcessEnv = { ...process.env, CI: 'true' };
        delete env.NODE_EXTRA_CA_CERTS; // loaded at every start, for nothing a plan does (bench/run.ts)
        const t0 = performance.now();
        const p = spawnSync(full[0], full.slice(1), { cwd: dirs[side], stdio: ['ignore', 'ignore', 'pipe'], env });
        const ms = performance.now() - t0;
        if (p.status !== 0) throw new Error(`${cmd.join(' ')} exited ${p.status}: ${p.stderr.toString().slice(-300)}`);
        if (r === 0) return; // warm-up
        wall[side].push(ms);
        if (gnuTime) {
          const [user, sys, maxKb] = readFileSync(timeFile, 'utf8').trim().split('\n').pop()!.split(' ').map(Number);
          cpu[side].push((user + sys) * 1000);
          rss[side].push(maxKb / 1024);
        }
      });
    }
    const label = `${mode === 'plan' ? 'graph plan --format json' : 'graph build (no-op)'}, ≈${nodes} nodes`;
    report(`${label}, wall`, wall[0], wall[1], 'ms');
    if (gnuTime) {
      report(`${label}, CPU`, cpu[0], cpu[1], 'ms');
      report(`${label}, peak RSS`, rss[0], rss[1], 'MiB');
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
