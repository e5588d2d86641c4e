/**
 * `npm run bench`: every benchmark, each figure next to a reference measured in the same run on
 * the same input; prints one table and writes it to bench/RESULTS.md (between the generated-part
 * markers, keeping the notes around them) with the machine, the versions and the date.
 *
 * Sections (BENCH_ONLY=plan,hashing,… picks some; BENCH_RUNS sets the runs, default 5 (11 for
 * plans of ≤ 10k nodes), each section's median after one warm-up; commands compared in one row
 * run interleaved):
 * - plan:       `graph plan --format json` on synthetic zoos of Kipoi's shape (bench/zoo.ts) at
 *               ≈1k, ≈4.5k, ≈10k and ≈100k nodes (BENCH_SIZES=1000,4500 to change), cache full:
 *               wall time and peak RSS vs `ninja -n` on a build.ninja of the same graph and
 *               `turbo run --dry=json` on the same graph as a Turborepo workspace (bench/turbo.ts);
 * - no-op build: `graph build` with every node cached vs a no-op `ninja`;
 * - hashing, layer build, scheduling, publish, SIF, test start (sandbox), remote cache (a fresh
 *   runner's no-op against a warm loopback nginx), nodes as Slurm jobs:
 *   bench/{hash,layer,schedule,push,sif,sandbox,remote,slurm}.ts.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expandInputs } from '../engine/key/files.js';
import { openWorkspace } from '../engine/workspace.js';
import { defaultRules } from '../rules/index.js';
import { type BenchRow, median, ms } from './rows.js';
import { TURBO_ENV, TURBO_TASKS, turboBin, writeTurboWorkspace } from './turbo.js';
import { modelsForNodes, writeZoo } from './zoo.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const HERE = fileURLToPath(new URL('.', import.meta.url));
const CLI = fileURLToPath(new URL('../cli.js', import.meta.url));
const RESULTS = fileURLToPath(new URL('../../bench/RESULTS.md', import.meta.url));
const SECTIONS = ['plan', 'hashing', 'layer', 'scheduling', 'publish', 'sif', 'sandbox', 'remote', 'slurm'];
const only = new Set((process.env.BENCH_ONLY ?? SECTIONS.join(',')).split(','));
const log = (line: string) => process.stderr.write(`${line}\n`);

const GNU_TIME = existsSync('/usr/bin/time') ? '/usr/bin/time' : undefined;

/** A command to measure: argv, working directory, environment changes (undefined unsets). */
interface Command {
  readonly argv: readonly string[];
  readonly cwd: string;
  readonly env?: Readonly<Record<string, string | undefined>>;
}

/** Median wall ms and median peak RSS in MB (GNU time's maximum resident set size, when installed). */
interface Measured {
  readonly ms: number;
  readonly rssMb?: number;
  /** Runs in the median (fewer than asked when a run passed the slow limit). */
  readonly runs: number;
  /** Why the command has no figure (it failed or timed out). */
  readonly failed?: string;
}

/**
 * Run each command `runs` times after a warm-up, interleaved (a, b, c, a, b, c, …) so that the
 * machine's drift touches every command alike. A command whose run takes longer than `slowMs` is
 * not run again (its runs so far, the warm-up too, make its figure); one that fails or passes
 * `timeoutMs` gets `failed`.
 */
function measureSideBySide(commands: readonly Command[], runs: number, slowMs = 60_000, timeoutMs = 600_000): Measured[] {
  const walls = commands.map(() => [] as number[]);
  const rss = commands.map(() => [] as number[]);
  const failed: Array<string | undefined> = commands.map(() => undefined);
  const done = commands.map(() => false);
  for (let i = 0; i <= runs; i++) {
    commands.forEach((c, k) => {
      if (done[k]) return;
      const rssFile = path.join(c.cwd, '.bench-rss');
      const argv = GNU_TIME ? [GNU_TIME, '-f', '%M', '-o', rssFile, ...c.argv] : [...c.argv];
      const t0 = performance.now();
      const r = spawnSync(argv[0], argv.slice(1), { cwd: c.cwd, stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, CI: 'true', ...c.env }, maxBuffer: 1 << 30, timeout: timeoutMs });
      const wall = performance.now() - t0;
      if (r.status !== 0) {
        failed[k] = r.error ? `${r.error.message}` : `exit ${r.status}: ${r.stderr.toString().trim().split('\n').pop()?.slice(0, 160)}`;
        done[k] = true;
        return;
      }
      if (GNU_TIME) rss[k].push(Number(readFileSync(rssFile, 'utf8').trim().split('\n').pop()) / 1024);
      if (i > 0 || wall > slowMs) walls[k].push(wall);
      if (wall > slowMs) done[k] = true;
    });
  }
  return commands.map((_, k) => ({ ms: walls[k].length ? median(walls[k]) : NaN, rssMb: rss[k].length ? median(rss[k]) : undefined, runs: walls[k].length, failed: failed[k] }));
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

function planSection(): BenchRow[] {
  const rows: BenchRow[] = [];
  const sizes = (process.env.BENCH_SIZES ?? '1000,4500,10000,100000').split(',').map(Number);
  const hasNinja = spawnSync('ninja', ['--version']).status === 0;
  const turbo = turboBin();
  const rss = (m: Measured) => (m.rssMb === undefined ? '' : `, ${m.rssMb.toFixed(0)} MB RSS`);
  const figure = (m: Measured) => (m.failed ? `failed (${m.failed})` : `${ms(m.ms)}${rss(m)}${m.runs < 3 ? ` (${m.runs} run${m.runs === 1 ? '' : 's'})` : ''}`);
  for (const target of sizes) {
    // Small sizes are quick and this VM's timings wander ±15%: more runs steady the medians.
    const runs = target <= 10_000 ? Math.max(RUNS, 11) : RUNS;
    const dir = mkdtempSync(path.join(tmpdir(), 'graph-bench-'));
    const turboDir = mkdtempSync(path.join(tmpdir(), 'graph-bench-turbo-'));
    try {
      writeZoo(dir, { models: modelsForNodes(target) });
      // The engine alone first, on a copy (its nodes produce nothing the plan rows could use).
      const bareDir = `${dir}-bare`;
      cpSync(dir, bareDir, { recursive: true });
      const bare = JSON.parse(execFileSync(process.execPath, [path.join(HERE, 'plan-once.js'), '--fill-bare', bareDir], { encoding: 'utf8' })) as { nodes: number; executeMs: number };
      rmSync(bareDir, { recursive: true, force: true });
      log(`plan: ≈${target} nodes: filling the cache…`);
      const filled = execFileSync(process.execPath, [path.join(HERE, 'plan-once.js'), '--fill', dir], { encoding: 'utf8' });
      const { nodes, executeMs } = JSON.parse(filled) as { nodes: number; executeMs: number };
      const label = `${nodes.toLocaleString('en-US')} nodes`;
      if (hasNinja) {
        writeNinja(dir);
        spawnSync('ninja', [], { cwd: dir, stdio: 'ignore' });
      }
      const tasks = turbo ? writeTurboWorkspace(dir, turboDir) : 0;
      log(`plan: ${label}: measuring graph plan${hasNinja ? ', ninja -n' : ''}${turbo ? ', turbo --dry=json' : ''} side by side, ${runs} runs…`);
      const commands: Command[] = [{ argv: [process.execPath, CLI, 'plan', '--format', 'json'], cwd: dir, env: NODE_ENV }];
      if (hasNinja) commands.push({ argv: ['ninja', '-n'], cwd: dir });
      if (turbo) commands.push({ argv: [turbo, 'run', ...TURBO_TASKS, '--dry=json'], cwd: turboDir, env: TURBO_ENV });
      const [plan, ...refs] = measureSideBySide(commands, runs);
      const ninjaN = hasNinja ? refs.shift() : undefined;
      const turboDry = turbo ? refs.shift() : undefined;
      const at10k = target === 10000;
      if (ninjaN) rows.push({ section: 'plan', case: label, graph: figure(plan), reference: `ninja -n: ${figure(ninjaN)}`, ratio: plan.ms / ninjaN.ms, target: at10k ? '≤ 10' : undefined, met: at10k ? plan.ms / ninjaN.ms <= 10 : undefined });
      if (turboDry) rows.push({ section: 'plan', case: `${label} (turbo: ${tasks.toLocaleString('en-US')} tasks)`, graph: figure(plan), reference: `turbo run --dry=json: ${figure(turboDry)}`, ratio: turboDry.failed ? undefined : plan.ms / turboDry.ms, target: at10k ? '< 1' : undefined, met: at10k ? plan.ms < turboDry.ms : undefined });
      if (at10k && process.env.NODE_EXTRA_CA_CERTS) {
        const [withCerts, without, bare] = measureSideBySide(
          [
            { argv: [process.execPath, CLI, 'plan', '--format', 'json'], cwd: dir },
            { argv: [process.execPath, '-e', '0'], cwd: dir, env: NODE_ENV },
            { argv: [process.execPath, '-e', '0'], cwd: dir },
          ],
          runs,
        );
        rows.push({ section: 'plan', case: `${label}, with this host's NODE_EXTRA_CA_CERTS`, graph: figure(withCerts), reference: `(node -e 0: ${ms(bare.ms)} with it, ${ms(without.ms)} without)`, ratio: ninjaN ? withCerts.ms / ninjaN.ms : undefined });
      }
      log(`no-op build: ${label}: measuring graph build${hasNinja ? ' and ninja' : ''} side by side…`);
      const [noop, ninjaNoop] = measureSideBySide([{ argv: [process.execPath, CLI, 'build'], cwd: dir, env: NODE_ENV }, ...(hasNinja ? [{ argv: ['ninja'], cwd: dir }] : [])], runs);
      rows.push({ section: 'no-op build', case: label, graph: figure(noop), reference: ninjaNoop ? `ninja (no-op): ${figure(ninjaNoop)}` : 'ninja: not installed', ratio: ninjaNoop ? noop.ms / ninjaNoop.ms : undefined });
      rows.push({ section: 'engine', case: `${label}, every node run by an instant rule (--jobs 8)`, graph: `${(executeMs / nodes).toFixed(3)} ms per node`, reference: '(scheduler, cache writes, logs, the rule\'s blob)' });
      rows.push({ section: 'engine', case: `${label}, every node run by a rule that does nothing (--jobs 8)`, graph: `${(bare.executeMs / bare.nodes).toFixed(3)} ms per node`, reference: '(scheduler, cache writes, logs: the engine alone)', target: '≤ 0.5 ms', met: bare.executeMs / bare.nodes <= 0.5 });
      for (const r of rows.filter((r) => r.case.startsWith(label) && r.section !== 'engine')) log(`${r.section}: ${r.case}: ${r.graph} | ${r.reference}`);
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
    lines.push(`| ${r.section} | ${esc(r.case)} | ${esc(r.graph)} | ${esc(r.reference)} | ${r.ratio === undefined ? '' : r.ratio.toFixed(r.ratio < 2 ? 3 : 2)} | ${target} |`);
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
if (only.has('sandbox')) rows.push(...script('sandbox'));
if (only.has('remote')) rows.push(...script('remote', ['4500']));
if (only.has('slurm')) rows.push(...script('slurm'));

const commit = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8', cwd: HERE }).stdout.trim() || 'unknown';
const machine = [
  `- date: ${new Date().toISOString().slice(0, 10)}; graph at commit ${commit}; median of ${RUNS} runs after a warm-up`,
  `- machine: ${cpus()[0]?.model ?? 'unknown CPU'}, ${cpus().length} cores, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, ${version(['uname', '-sr'])}, ${version(['sh', '-c', '. /etc/os-release && echo $PRETTY_NAME'])}`,
  `- versions: node ${process.version}; ${version(['ninja', '--version']).replace(/^/, 'ninja ')}; turbo ${turboBin() ? version([turboBin()!, '--version']) : 'not installed'}; ${version(['mksquashfs', '-version'])}; ${version(['tar2sqfs', '--version'])}; ${version(['bwrap', '--version'])}; ${version(['gzip', '--version'])}; ${version(['sha256sum', '--version'])}; ${version(['skopeo', '--version'])}`,
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
