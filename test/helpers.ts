/**
 * Test helpers: temp workspaces, the CLI as a child process, and the engine's fakes — a fake
 * process runner that records what ran and when, and fake rules that keep the real rules'
 * expansion (nodes, edges, key inputs) but execute through that runner.
 */
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ActionCache } from '../engine/cache.js';
import type { EngineEvent } from '../engine/events.js';
import { executePlan } from '../engine/execute.js';
import { FileDigester } from '../engine/files.js';
import { planBuild } from '../engine/plan.js';
import type { ProcessRunner, RunOptions, RunResult } from '../engine/process.js';
import { NodeFailure, type NodeId, type Rule } from '../engine/rule.js';
import { ContentStore } from '../engine/store.js';
import { openWorkspace, type Workspace } from '../engine/workspace.js';
import { defaultRules } from '../rules/index.js';

/** The compiled CLI (tests run from out/test/). */
export const CLI = fileURLToPath(new URL('../cli.js', import.meta.url));
/** The repository root. */
export const REPO = fileURLToPath(new URL('../../', import.meta.url));

/** The independent SIF verifier: GRAPH_SIFCHECK, or the shared folder beside the repository. */
export const SIFCHECK = process.env.GRAPH_SIFCHECK ?? path.join(REPO, '..', 'shared', 'tools', 'sifcheck.py');

/** Create a temp directory holding `files` (path → content). */
export function workspace(files: Record<string, string>): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'graph-test-'));
  writeFiles(dir, files);
  return dir;
}

export function writeFiles(dir: string, files: Record<string, string>): void {
  for (const [rel, content] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
    writeFileSync(path.join(dir, rel), content);
  }
}

/** Run `graph ARGS` in `cwd`; never throws. */
export function graph(cwd: string, ...args: string[]): { code: number; stdout: string; stderr: string } {
  return graphWith({}, cwd, ...args);
}

/** As `graph`, with extra environment variables. */
export function graphWith(extraEnv: NodeJS.ProcessEnv, cwd: string, ...args: string[]): { code: number; stdout: string; stderr: string } {
  const env: NodeJS.ProcessEnv = { ...process.env, CI: 'true', ...extraEnv };
  delete env.SOURCE_DATE_EPOCH; // in-process runs key with an empty environment; match them
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd, encoding: 'utf8', env });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** A small zoo: a Debian base, a layered model image with SIF, a group tested in both runtimes. */
export const SMALL_ZOO: Record<string, string> = {
  'images.yaml': `version: 1
settings:
  concurrency: {build: 2, test: 2}
images:
  base:
    debian: {packages: [python3]}
  pwm:
    from: base
    layers:
      - {copy: zoo/pwm/predict.py, to: /opt/bin/predict, mode: 0o755}
      - {copy: zoo/pwm/motifs, to: /opt/motifs}
    convert: [sif]
`,
  'models.yaml': `version: 1
groups:
  pwm:
    image: pwm
    models: [CTCF, GATA1]
    test:
      command: [predict, "{model}", /input/seqs.fa, /output/scores.tsv]
      inputs: zoo/pwm/test/input
      expect: zoo/pwm/test/expect
      runtimes: [oci, sif]
`,
  'zoo/pwm/predict.py': 'print("scores")\n',
  'zoo/pwm/motifs/CTCF.pwm': 'A 0.1 0.2\n',
  'zoo/pwm/motifs/GATA1.pwm': 'A 0.3 0.4\n',
  'zoo/pwm/test/input/seqs.fa': '>s1\nACGT\n',
  'zoo/pwm/test/expect/scores.tsv': 's1\t0.5\n',
};

/** One call of the fake runner. */
export interface FakeCall {
  readonly id: string;
  readonly start: number;
  end?: number;
}

/**
 * A fake process runner. `run(['fake', NODE_ID])` waits `durations[NODE_ID]` ms (default 5),
 * fails with exit 1 for ids in `failing`, hangs until aborted for ids in `hanging`, and records
 * every call, the most concurrent calls overall and per kind.
 */
export class FakeRunner implements ProcessRunner {
  readonly calls: FakeCall[] = [];
  readonly running = new Set<string>();
  maxRunning = 0;
  readonly maxByKind = new Map<string, number>();
  private seq = 0;

  constructor(
    readonly options: { durations?: Record<string, number>; failing?: Set<string>; hanging?: Set<string> } = {},
  ) {}

  async run(argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
    const id = argv[1];
    const call: FakeCall = { id, start: this.seq++ };
    this.calls.push(call);
    this.running.add(id);
    this.maxRunning = Math.max(this.maxRunning, this.running.size);
    const kind = id.split(':')[0];
    const sameKind = [...this.running].filter((r) => r.startsWith(`${kind}:`)).length;
    this.maxByKind.set(kind, Math.max(this.maxByKind.get(kind) ?? 0, sameKind));
    const ms = this.options.hanging?.has(id) ? 1e9 : (this.options.durations?.[id] ?? 5);
    const aborted = await new Promise<boolean>((resolve) => {
      const t = setTimeout(() => resolve(false), ms);
      opts.signal?.addEventListener('abort', () => {
        clearTimeout(t);
        resolve(true);
      });
    });
    this.running.delete(id);
    call.end = this.seq++;
    if (aborted) return { aborted: true, signal: 'SIGTERM' };
    return { exitCode: this.options.failing?.has(id) ? 1 : 0, aborted: false };
  }

  /** Ids in the order they started. */
  get started(): string[] {
    return this.calls.map((c) => c.id);
  }

  call(id: string): FakeCall {
    const c = this.calls.find((x) => x.id === id);
    if (!c) throw new Error(`${id} did not run`);
    return c;
  }
}

/** The real rules' expansion, executing through `ctx.runner` and storing one blob per node. */
export function fakeRules(): Rule[] {
  return defaultRules.map((r) => ({
    ...r,
    async execute(node, ctx) {
      const res = await ctx.runner.run(['fake', node.id], { signal: ctx.signal, logFile: ctx.log.path });
      if (res.exitCode !== 0) throw new NodeFailure(`fake command exited with ${res.exitCode ?? res.signal}`);
      ctx.log.write(`built ${node.id}\n`);
      const blob = ctx.store.putBytes(`output of ${node.id}`);
      return { outputs: { digest: blob.digest }, artifacts: [blob.digest] };
    },
  }));
}

export interface EngineRun {
  readonly ws: Workspace;
  readonly runner: FakeRunner;
  readonly events: EngineEvent[];
  readonly digester: FileDigester;
  readonly summary: Awaited<ReturnType<typeof executePlan>>;
}

/** Plan and execute a workspace in-process with fake rules and `runner`. */
export async function runEngine(
  dir: string,
  runner: FakeRunner,
  opts: { targets?: NodeId[]; jobs?: number; limits?: Record<string, number>; failFast?: boolean; signal?: AbortSignal; resources?: Record<string, number> } = {},
): Promise<EngineRun> {
  const ws = openWorkspace(dir, fakeRules());
  const cache = new ActionCache(ws.stateDir);
  const store = new ContentStore(path.join(ws.stateDir, 'cas'));
  const digester = new FileDigester(ws.root, path.join(ws.stateDir, 'stat-memo.json'));
  const selected = opts.targets ? ws.graph.withDependencies(opts.targets) : new Set(ws.graph.order);
  const plan = planBuild(ws.graph, selected, { root: ws.root, cache, store, digester, env: {} });
  digester.save();
  const events: EngineEvent[] = [];
  const summary = await executePlan(plan, {
    decls: ws.decls,
    jobs: opts.jobs ?? 4,
    limits: opts.limits ?? ws.decls.settings.concurrency,
    resources: opts.resources ?? ws.decls.settings.resources,
    failFast: opts.failFast ?? false,
    signal: opts.signal,
    runner,
    cache,
    store,
    stateDir: ws.stateDir,
    emit: (e) => events.push(e),
  });
  return { ws, runner, events, digester, summary };
}

/** Status of each node in a run, as `{id: status}`. */
export function statuses(run: EngineRun): Record<string, string> {
  return Object.fromEntries(run.summary.results.map((r) => [r.id, r.status]));
}

/** A free TCP port on 127.0.0.1. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
    server.on('error', reject);
  });
}

export interface Registry {
  /** `127.0.0.1:PORT` */
  readonly host: string;
  /** The registry's storage root (the filesystem driver's rootdirectory). */
  readonly dataDir: string;
  stop(): Promise<void>;
}

/**
 * Start a real registry (Debian's docker-registry) on 127.0.0.1 with storage in a temp dir;
 * with `user`, it requires htpasswd basic auth (bcrypt, made with htpasswd(1)).
 */
export async function startRegistry(auth?: { user: string; password: string }): Promise<Registry> {
  const dir = mkdtempSync(path.join(tmpdir(), 'graph-registry-'));
  const port = await freePort();
  let authConfig = '';
  if (auth) {
    const htpasswd = path.join(dir, 'htpasswd');
    const r = spawnSync('htpasswd', ['-Bbc', htpasswd, auth.user, auth.password], { stdio: 'pipe' });
    if (r.status !== 0) throw new Error(`htpasswd failed: ${r.stderr}`);
    authConfig = `auth:\n  htpasswd:\n    realm: test\n    path: ${htpasswd}\n`;
  }
  const config = path.join(dir, 'config.yml');
  writeFileSync(config, `version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: ${dir}/data\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:${port}\n${authConfig}`);
  const child = spawn('docker-registry', ['serve', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const host = `127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    try {
      const res = await fetch(`http://${host}/v2/`);
      if (res.status === 200 || res.status === 401) break;
    } catch {
      // not listening yet
    }
    if (i > 100 || child.exitCode !== null) throw new Error(`docker-registry did not start: ${stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    host,
    dataDir: path.join(dir, 'data'),
    stop: () =>
      new Promise((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.on('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}

/**
 * Unpack Debian packages into `root` the way the debian: recipe does (dpkg-deb -x, no maintainer
 * scripts), downloading them with apt-get from the host's configured mirror (after one
 * `apt-get update` if the lists are missing or stale). For test fixtures (base images, rootfs).
 */
export function debianRoot(root: string, packages: readonly string[]): string {
  const debs = mkdtempSync(path.join(tmpdir(), 'graph-debs-'));
  chmodSync(debs, 0o755); // apt's sandbox user `_apt` writes the downloads here
  let r = spawnSync('apt-get', ['download', '-q', ...packages], { cwd: debs, encoding: 'utf8' });
  if (r.status !== 0) {
    spawnSync('apt-get', ['update', '-qq'], { stdio: 'ignore' });
    r = spawnSync('apt-get', ['download', '-q', ...packages], { cwd: debs, encoding: 'utf8' });
  }
  if (r.status !== 0) throw new Error(`apt-get download ${packages.join(' ')} failed: ${r.stderr}`);
  mkdirSync(root, { recursive: true });
  for (const deb of readdirSync(debs).filter((f) => f.endsWith('.deb'))) {
    const x = spawnSync('dpkg-deb', ['-x', path.join(debs, deb), root], { encoding: 'utf8' });
    if (x.status !== 0) throw new Error(`dpkg-deb -x ${deb} failed: ${x.stderr}`);
  }
  rmSync(debs, { recursive: true, force: true });
  return root;
}

/**
 * A busybox-static root filesystem in `root` (documentation removed) with links to busybox for
 * `applets`: the given names, or every applet busybox has (`'all'`, as busybox --install would).
 */
export function busyboxRoot(root: string, applets: readonly string[] | 'all' = ['sh']): string {
  debianRoot(root, ['busybox-static']);
  rmSync(path.join(root, 'usr', 'share'), { recursive: true, force: true });
  const names = applets === 'all' ? spawnSync(path.join(root, 'bin/busybox'), ['--list'], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean) : applets;
  for (const a of names) if (!existsSync(path.join(root, 'bin', a))) symlinkSync('busybox', path.join(root, 'bin', a));
  return root;
}

/** Whether process `pid` runs (a zombie waiting for its reaper counts as ended). */
export function processAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/**
 * Run `fn` and collect every uncaught exception and unhandled rejection raised meanwhile and in
 * the `settleMs` after it (a stream destroyed on abort may emit its error a few ticks later).
 * Listening keeps them from ending the test process, so a test can assert there were none.
 */
export async function uncaughtDuring(fn: () => Promise<unknown>, settleMs = 50): Promise<string[]> {
  const seen: string[] = [];
  const onError = (e: unknown) => seen.push(`${(e as Error)?.name}: ${(e as Error)?.message}`);
  process.on('uncaughtException', onError);
  process.on('unhandledRejection', onError);
  try {
    await fn().catch(() => undefined);
    await new Promise((r) => setTimeout(r, settleMs));
  } finally {
    process.off('uncaughtException', onError);
    process.off('unhandledRejection', onError);
  }
  return seen;
}
