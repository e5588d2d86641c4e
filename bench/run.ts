/**
 * `npm run bench`: the engine's speed on synthetic zoos of Kipoi's shape (bench/zoo.ts). Each
 * figure is the median of RUNS runs after one warm-up, of the real CLI in a child process:
 *
 * - plan:   `graph plan --format json`, cache full (the no-op case), wall time and peak RSS
 * - no-op:  `graph build` with every node cached
 * - engine: scheduler overhead per executed node (instant rule, in-process)
 * - ninja:  `ninja -n` and a no-op `ninja` on a build.ninja of the same graph, when ninja is on PATH
 *
 * Sizes: ≈1k, ≈4.5k, ≈10k nodes; ≈100k too with BENCH_LARGE=1 (filling its cache takes minutes).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { openWorkspace } from '../engine/workspace.js';
import { defaultRules } from '../rules/index.js';
import { fillCache, instantRules } from './plan-once.js';
import { modelsForNodes, writeZoo } from './zoo.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const CLI = fileURLToPath(new URL('../cli.js', import.meta.url));
const PROBE = fileURLToPath(new URL('./rss-probe.js', import.meta.url));

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Run a command RUNS times after a warm-up; median wall ms and (for node) median peak RSS MB. */
function time(argv: string[], cwd: string): { ms: number; rssMb?: number } {
  const walls: number[] = [];
  const rss: number[] = [];
  const rssFile = path.join(cwd, '.bench-rss');
  for (let i = 0; i <= RUNS; i++) {
    const t0 = performance.now();
    const r = spawnSync(argv[0], argv.slice(1), { cwd, stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, CI: 'true', GRAPH_BENCH_RSS: rssFile } });
    const ms = performance.now() - t0;
    if (r.status !== 0) throw new Error(`${argv.join(' ')} exited ${r.status}: ${r.stderr}`);
    if (i === 0) continue;
    walls.push(ms);
    try {
      rss.push(Number(readFileSync(rssFile, 'utf8')) / 1024);
    } catch {
      // not a node process
    }
  }
  return { ms: median(walls), rssMb: rss.length ? median(rss) : undefined };
}

function ninjaFile(dir: string): string {
  const ws = openWorkspace(dir, defaultRules);
  const esc = (id: string) => id.replace(/[:$ ]/g, (c) => `$${c}`).replace(/\//g, '_');
  const lines = ['rule touch', '  command = touch $out', ''];
  for (const id of ws.graph.order) {
    const n = ws.graph.node(id);
    const inputs = n.deps.map((d) => `out/${esc(d.id)}`).join(' ');
    lines.push(`build out/${esc(id)}: touch ${inputs}`);
  }
  writeFileSync(path.join(dir, 'build.ninja'), `${lines.join('\n')}\n`);
  return dir;
}

const hasNinja = spawnSync('ninja', ['--version']).status === 0;
const sizes = [1000, 4500, 10000, ...(process.env.BENCH_LARGE ? [100000] : [])];
const rows: string[] = [];
rows.push(`| nodes | plan (ms) | plan RSS (MB) | no-op build (ms) | engine per node (ms) |${hasNinja ? ' ninja -n (ms) | ninja no-op (ms) |' : ''}`);
rows.push(`| --- | --- | --- | --- | --- |${hasNinja ? ' --- | --- |' : ''}`);
for (const target of sizes) {
  const dir = mkdtempSync(path.join(tmpdir(), 'graph-bench-'));
  writeZoo(dir, { models: modelsForNodes(target) });
  const { nodes, executeMs } = await fillCache(dir, instantRules);
  const node = [process.execPath, '--import', PROBE, CLI];
  const plan = time([...node, 'plan', '--format', 'json'], dir);
  const noop = time([...node, 'build'], dir);
  let ninja = '';
  if (hasNinja) {
    ninjaFile(dir);
    spawnSync('ninja', [], { cwd: dir, stdio: 'ignore' });
    ninja = ` ${time(['ninja', '-n'], dir).ms.toFixed(0)} | ${time(['ninja'], dir).ms.toFixed(0)} |`;
  }
  rows.push(`| ${nodes} | ${plan.ms.toFixed(0)} | ${plan.rssMb?.toFixed(0)} | ${noop.ms.toFixed(0)} | ${(executeMs / nodes).toFixed(3)} |${ninja}`);
  process.stderr.write(`${rows[rows.length - 1]}\n`);
  rmSync(dir, { recursive: true, force: true });
}
process.stdout.write(`graph benchmarks, median of ${RUNS} runs after a warm-up (node ${process.version})\n\n${rows.join('\n')}\n`);
