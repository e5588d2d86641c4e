/**
 * `npm run bench`: every benchmark, each figure next to a reference measured in the same run on
 * the same input; prints one table and writes it to bench/RESULTS.md (between the generated-part
 * markers, keeping the notes around them) with the machine, the versions and the date.
 *
 * Sections (BENCH_ONLY=plan,hashing,… picks some; BENCH_RUNS sets the runs, default 5, each
 * section's median after one warm-up):
 * - plan:       `graph plan --format json` on synthetic zoos of Kipoi's shape (bench/zoo.ts) at
 *               ≈1k, ≈4.5k, ≈10k and ≈100k nodes (BENCH_SIZES=1000,4500 to change), cache full:
 *               wall time and peak RSS vs `ninja -n` on a build.ninja of the same graph and
 *               `turbo run --dry=json` on the same graph as a Turborepo workspace (bench/turbo.ts);
 * - no-op build: `graph build` with every node cached vs a no-op `ninja`;
 * - hashing, layer build, scheduling, publish, SIF: bench/{hash,layer,schedule,push,sif}.ts.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expandInputs } from '../engine/files.js';
import { openWorkspace } from '../engine/workspace.js';
import { defaultRules } from '../rules/index.js';
import { type BenchRow, median, ms } from './rows.js';
import { TURBO_ENV, TURBO_TASKS, turboBin, writeTurboWorkspace } from './turbo.js';
import { modelsForNodes, writeZoo } from './zoo.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const HERE = fileURLToPath(new URL('.', import.meta.url));
const CLI = fileURLToPath(new URL('../cli.js', import.meta.url));
const RESULTS = fileURLToPath(new URL('../../bench/RESULTS.md', import.meta.url));
const SECTIONS = ['plan', 'hashing', 'layer', 'scheduling', 'publish', 'sif'];
const only = new Set((process.env.BENCH_ONLY ?? SECTIONS.join(',')).split(','));
const log = (line: string) => process.stderr.write(`${line}\n`);

const GNU_TIME = existsSync('/usr/bin/time') ? '/usr/bin/time' : undefined;

/**
 * Run `argv` in `cwd` RUNS times after a warm-up (fewer when one run passes `slowMs`); median wall
 * ms and median peak RSS in MB (GNU time's maximum resident set size), or undefined RSS without it.
 * @throws when the command fails.
 */
function measure(argv: string[], cwd: string, env: Record<string, string | undefined> = {}, slowMs = 60_000): { ms: number; rssMb?: number; runs: number } {
  const walls: number[] = [];
  const rss: number[] = [];
  const rssFile = path.join(cwd, '.bench-rss');
  for (let i = 0; i <= RUNS; i++) {
    const cmd = GNU_TIME ? [GNU_TIME, '-f', '%M', '-o', rssFile, ...argv] : argv;
    const t0 = performance.now();
    const r = spawnSync(cmd[0], cmd.slice(1), { cwd, stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, CI: 'true', ...env }, maxBuffer: 1 << 30 });
    const wall = performance.now() - t0;
    if (r.status !== 0) throw new Error(`${argv.join(' ')} exited ${r.status}: ${r.stderr.toString().slice(-2000)}`);
    if (GNU_TIME) rss.push(Number(readFileSync(rssFile, 'utf8').trim().split('\n').pop()) / 1024);
    if (i === 0 && wall < slowMs) continue; // warm-up (a very slow command gets no second chance)
    walls.push(wall);
    if (wall > slowMs && walls.length >= 1) break;
  }
  return { ms: median(walls), rssMb: rss.length ? median(rss) : undefined, runs: walls.length };
}

/**
 * build.ninja of the same graph: one edge per node (a `touch` of its output) whose inputs are the
 * node's input files (as graph hashes them) and its dependencies' outputs.
 */
function writeNinja(dir: string): void {
  const ws = openWorkspace(dir, defaultRules);
  const esc = (id: string) => id.replace(/[:$ ]/g, (c) => `$${c}`).replace(/\//g, '_');
  const files = new Map<string, string>();
  const lines = ['rule touch', '  command = touch $out', ''];
  for (const id of ws.graph.order) {
    const n = ws.graph.node(id);
    const key = JSON.stringify(n.inputs);
    if (!files.has(key)) files.set(key, expandInputs(dir, n.inputs).map((f) => f.replace(/[:$ ]/g, (c) => `$${c}`)).join(' '));
    lines.push(`build out/${esc(id)}: touch ${files.get(key)} ${n.deps.map((d) => `out/${esc(d.id)}`).join(' ')}`);
  }
  writeFileSync(path.join(dir, 'build.ninja'), `${lines.join('\n')}\n`);
}

/**
 * graph's processes run without NODE_EXTRA_CA_CERTS: Node loads that CA bundle at every start
 * (≈50 ms on these machines, for a plan that opens no connection); the host's own setting is
 * measured once, in its own row.
 */
const NODE_ENV = { NODE_EXTRA_CA_CERTS: undefined };

/** Median ms of `node -e 0`, with or without the host's NODE_EXTRA_CA_CERTS. */
function nodeStart(withCerts: boolean): number {
  return measure([process.execPath, '-e', '0'], tmpdir(), withCerts ? {} : NODE_ENV).ms;
}

function planSection(): BenchRow[] {
  const rows: BenchRow[] = [];
  const sizes = (process.env.BENCH_SIZES ?? '1000,4500,10000,100000').split(',').map(Number);
  const hasNinja = spawnSync('ninja', ['--version']).status === 0;
  const turbo = turboBin();
  for (const target of sizes) {
    const dir = mkdtempSync(path.join(tmpdir(), 'graph-bench-'));
    const turboDir = mkdtempSync(path.join(tmpdir(), 'graph-bench-turbo-'));
    try {
      writeZoo(dir, { models: modelsForNodes(target) });
      log(`plan: ≈${target} nodes: filling the cache…`);
      const filled = execFileSync(process.execPath, [path.join(HERE, 'plan-once.js'), '--fill', dir], { encoding: 'utf8' });
      const { nodes, executeMs } = JSON.parse(filled) as { nodes: number; executeMs: number };
      const label = `${nodes.toLocaleString('en-US')} nodes`;
      const plan = measure([process.execPath, CLI, 'plan', '--format', 'json'], dir, NODE_ENV);
      const rss = (m: { rssMb?: number }) => (m.rssMb === undefined ? '' : `, ${m.rssMb.toFixed(0)} MB RSS`);
      const graphPlan = `${ms(plan.ms)}${rss(plan)}`;
      log(`plan: ${label}: graph ${graphPlan}`);
      if (hasNinja) {
        writeNinja(dir);
        spawnSync('ninja', [], { cwd: dir, stdio: 'ignore' });
        const n = measure(['ninja', '-n'], dir);
        rows.push({ section: 'plan', case: label, graph: graphPlan, reference: `ninja -n: ${ms(n.ms)}${rss(n)}`, ratio: plan.ms / n.ms, target: target === 10000 ? '≤ 10' : undefined, met: target === 10000 ? plan.ms / n.ms <= 10 : undefined });
      }
      if (turbo) {
        const tasks = writeTurboWorkspace(dir, turboDir);
        try {
          const t = measure([turbo, 'run', ...TURBO_TASKS, '--dry=json'], turboDir, TURBO_ENV);
          rows.push({ section: 'plan', case: `${label} (turbo: ${tasks.toLocaleString('en-US')} tasks${t.runs < RUNS ? `, ${t.runs} run` : ''})`, graph: graphPlan, reference: `turbo run --dry=json: ${ms(t.ms)}${rss(t)}`, ratio: plan.ms / t.ms, target: target === 10000 ? '< 1' : undefined, met: target === 10000 ? plan.ms < t.ms : undefined });
        } catch (e) {
          rows.push({ section: 'plan', case: label, graph: graphPlan, reference: `turbo run --dry=json: failed (${(e as Error).message.split('\n')[0].slice(0, 120)})` });
        }
      }
      const noop = measure([process.execPath, CLI, 'build'], dir, NODE_ENV);
      if (target === 10000 && process.env.NODE_EXTRA_CA_CERTS) {
        const host = measure([process.execPath, CLI, 'plan', '--format', 'json'], dir);
        rows.push({ section: 'plan', case: `${label}, with this host's NODE_EXTRA_CA_CERTS`, graph: `${ms(host.ms)}${rss(host)}`, reference: `(node reads the CA bundle at start: ${ms(nodeStart(true))} vs ${ms(nodeStart(false))} for node -e 0)` });
      }
      const ninjaNoop = hasNinja ? measure(['ninja'], dir) : undefined;
      rows.push({ section: 'no-op build', case: label, graph: `${ms(noop.ms)}${rss(noop)}`, reference: ninjaNoop ? `ninja (no-op): ${ms(ninjaNoop.ms)}` : 'ninja: not installed', ratio: ninjaNoop ? noop.ms / ninjaNoop.ms : undefined });
      rows.push({ section: 'engine', case: `${label}, every node run by an instant rule (--jobs 8)`, graph: `${(executeMs / nodes).toFixed(3)} ms per node`, reference: '(scheduler, cache writes, logs)' });
      for (const r of rows.slice(-4)) if (r.section !== 'engine') log(`${r.section}: ${r.case}: ${r.graph} | ${r.reference}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
      rmSync(turboDir, { recursive: true, force: true });
    }
  }
  return rows;
}

/** Run bench/<script>.js, its progress on stderr, and collect its BENCH_ROWS. */
function script(name: string, args: string[] = []): BenchRow[] {
  log(`${name}: running bench/${name}.js ${args.join(' ')}`);
  const r = spawnSync(process.execPath, [path.join(HERE, `${name}.js`), ...args], { stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8', env: { ...process.env, BENCH_RUNS: String(RUNS) }, maxBuffer: 1 << 28 });
  process.stderr.write(r.stdout.split('\n').filter((l) => !l.startsWith('BENCH_ROWS ')).join('\n'));
  if (r.status !== 0) return [{ section: name, case: 'failed', graph: `exit ${r.status}`, reference: '' }];
  return r.stdout
    .split('\n')
    .filter((l) => l.startsWith('BENCH_ROWS '))
    .flatMap((l) => JSON.parse(l.slice('BENCH_ROWS '.length)) as BenchRow[]);
}

function version(argv: string[]): string {
  const r = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8' });
  return r.status === 0 || r.stdout || r.stderr ? `${r.stdout}${r.stderr}`.trim().split('\n')[0] : 'not installed';
}

function table(rows: readonly BenchRow[]): string {
  const lines = ['| section | case | graph | reference | ratio | target |', '| --- | --- | --- | --- | --- | --- |'];
  const esc = (s: string) => s.replace(/\|/g, '\\|');
  for (const r of rows) {
    const target = r.target ? `${r.target} ${r.met ? '✓ met' : '✗ missed'}` : '';
    lines.push(`| ${r.section} | ${esc(r.case)} | ${esc(r.graph)} | ${esc(r.reference)} | ${r.ratio === undefined ? '' : r.ratio.toFixed(2)} | ${target} |`);
  }
  return lines.join('\n');
}

const rows: BenchRow[] = [];
if (only.has('plan')) rows.push(...planSection());
if (only.has('hashing')) rows.push(...script('hash'));
if (only.has('layer')) rows.push(...script('layer', ['200']));
if (only.has('scheduling')) rows.push(...script('schedule'));
if (only.has('publish')) rows.push(...script('push', ['300']));
if (only.has('sif')) rows.push(...script('sif', ['500']));

const commit = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8', cwd: HERE }).stdout.trim() || 'unknown';
const machine = [
  `- date: ${new Date().toISOString().slice(0, 10)}; graph at commit ${commit}; median of ${RUNS} runs after a warm-up`,
  `- machine: ${cpus()[0]?.model ?? 'unknown CPU'}, ${cpus().length} cores, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, ${version(['uname', '-sr'])}, ${version(['sh', '-c', '. /etc/os-release && echo $PRETTY_NAME'])}`,
  `- versions: node ${process.version}; ${version(['ninja', '--version']).replace(/^/, 'ninja ')}; turbo ${turboBin() ? version([turboBin()!, '--version']) : 'not installed'}; ${version(['mksquashfs', '-version'])}; ${version(['tar2sqfs', '--version'])}; ${version(['gzip', '--version'])}; ${version(['sha256sum', '--version'])}; ${version(['skopeo', '--version'])}`,
].join('\n');
const generated = `<!-- generated by npm run bench: edits between these markers are overwritten -->\n${machine}\n\n${table(rows)}\n<!-- end of generated part -->`;
process.stdout.write(`\n${machine}\n\n${table(rows)}\n`);
if (!process.env.BENCH_ONLY) {
  let doc = existsSync(RESULTS) ? readFileSync(RESULTS, 'utf8') : '# Benchmark results\n\n';
  const m = /<!-- generated by npm run bench[\s\S]*?<!-- end of generated part -->/.exec(doc);
  doc = m ? doc.replace(m[0], generated) : `${doc}${generated}\n`;
  writeFileSync(RESULTS, doc);
  log(`wrote ${RESULTS}`);
}
