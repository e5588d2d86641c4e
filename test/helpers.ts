/**
 * Test helpers: temp workspaces, the CLI as a child process, and the engine's fakes — a fake
 * process runner that records what ran and when, and fake rules that keep the real rules'
 * expansion (nodes, edges, key inputs) but execute through that runner.
 */
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, closeSync, cpSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, readSync, rmSync, symlinkSync, writeFileSync, writeSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { ActionCache, type CachedResult, type RemoteCache } from '../engine/cache/action-cache.js';
import { CacheRecorder } from '../engine/execute/recorder.js';
import type { EngineEvent } from '../engine/events.js';
import { systemClock, type Clock } from '../engine/execute/clock.js';
import { KeyLeases } from '../engine/execute/lease.js';
import type { Executor, Job, Outcome } from '../engine/execute/executor.js';
import type { Failure } from '../engine/execute/failure.js';
import { executePlan } from '../engine/execute/scheduler.js';
import { FileDigester } from '../engine/key/files.js';
import { checkRemote, planBuild, type Plan } from '../engine/plan.js';
import { materializeNeeded } from '../engine/cache/remote/materialize.js';
import { resolveTools } from '../engine/key/tools.js';
import type { ProcessRunner, RunOptions, RunResult } from '../engine/process.js';
import { NodeFailure, type NodeId, type Rule } from '../engine/rule.js';
import { ContentStore } from '../engine/cache/store.js';
import { openWorkspace, type Workspace } from '../engine/workspace.js';
import { defaultRules } from '../rules/index.js';

/** The compiled CLI (tests run from out/test/). */
export const CLI = fileURLToPath(new URL('../cli.js', import.meta.url));
/** The repository root. */
export const REPO = fileURLToPath(new URL('../../', import.meta.url));

/**
 * The images of the repository's zoo that the engine's end-to-end tests run (the main job before
 * issue 17's models; test/zoo-contracts.test.ts runs the R and TRE models, whose R base alone
 * takes a minute to build).
 */
export const CORE_ZOO_IMAGES: readonly string[] = ['py3-base', 'pwm-scanner', 'seq-features', 'kmer-classifier'];

/**
 * Copy the repository's zoo (images.yaml, models.yaml, images.lock, zoo/) into `dir`, keeping only
 * `images` and the groups tested in them (the other entries are deleted from the copies).
 * @returns `dir`.
 */
export function copyRepoZoo(dir: string, images: readonly string[] = CORE_ZOO_IMAGES): string {
  for (const f of ['images.lock', 'zoo']) cpSync(path.join(REPO, f), path.join(dir, f), { recursive: true });
  const keep = new Set(images);
  const imagesDoc = YAML.parseDocument(readFileSync(path.join(REPO, 'images.yaml'), 'utf8'));
  for (const name of Object.keys(imagesDoc.toJS().images)) if (!keep.has(name)) imagesDoc.deleteIn(['images', name]);
  writeFileSync(path.join(dir, 'images.yaml'), imagesDoc.toString());
  const modelsDoc = YAML.parseDocument(readFileSync(path.join(REPO, 'models.yaml'), 'utf8'));
  for (const [name, group] of Object.entries(modelsDoc.toJS().groups as Record<string, { image: string }>)) if (!keep.has(group.image)) modelsDoc.deleteIn(['groups', name]);
  writeFileSync(path.join(dir, 'models.yaml'), modelsDoc.toString());
  return dir;
}

/**
 * The independent SIF verifier: GRAPH_SIFCHECK, else the shared folder beside the repository, else
 * the copy carried in test/fixtures/tools (so a clone anywhere passes).
 */
export const SIFCHECK =
  process.env.GRAPH_SIFCHECK ?? [path.join(REPO, '..', 'shared', 'tools', 'sifcheck.py'), path.join(REPO, 'test', 'fixtures', 'tools', 'sifcheck.py')].find((p) => existsSync(p)) ?? 'sifcheck.py';

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

/**
 * The environment a test's `graph` child gets: this one, with CI set and the variables that would
 * change what a run does removed, then `extraEnv` (a variable set to undefined there is removed).
 */
function childEnv(extraEnv: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, CI: 'true' };
  delete env.SOURCE_DATE_EPOCH; // in-process runs key with an empty environment; match them
  delete env.GRAPH_CACHE_DIR; // each test's cache is its workspace's, unless it says otherwise
  delete env.GRAPH_SHARD; // every node, unless the test says otherwise
  for (const [k, v] of Object.entries(extraEnv)) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return env;
}

/** As `graph`, with extra environment variables. */
export function graphWith(extraEnv: NodeJS.ProcessEnv, cwd: string, ...args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd, encoding: 'utf8', env: childEnv(extraEnv) });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** As `graph`, as a child running alongside the caller: resolves when it exits. */
export function graphAsync(cwd: string, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return graphAsyncWith({}, cwd, ...args);
}

/** As `graphAsync`, with extra environment variables (undefined: removed). */
export function graphAsyncWith(extraEnv: NodeJS.ProcessEnv, cwd: string, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const env = childEnv(extraEnv);
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

/** A zoo with `n` independent images, each with one model tested in oci (and a `slot` token). */
export function wideZoo(n: number, extra = ''): Record<string, string> {
  let images = 'version: 1\nsettings:\n  resources: {slot: 1}\nimages:\n';
  let models = 'version: 1\ngroups:\n';
  const files: Record<string, string> = {};
  for (let i = 0; i < n; i++) {
    images += `  img${i}:\n    layers: [{copy: f${i}.txt, to: /f}]\n`;
    models += `  g${i}:\n    image: img${i}\n    models: [m]\n    test: {command: [run]${extra}}\n`;
    files[`f${i}.txt`] = `file ${i}\n`;
  }
  return { ...files, 'images.yaml': images, 'models.yaml': models };
}

/** Flip one byte of a file in place (same size and inode: only its mtime and ctime change). */
export function flipByte(file: string, offset = 0): void {
  const fd = openSync(file, 'r+');
  try {
    const b = Buffer.alloc(1);
    readSync(fd, b, 0, 1, offset);
    b[0] ^= 0xff;
    writeSync(fd, b, 0, 1, offset);
  } finally {
    closeSync(fd);
  }
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
 * A fake process runner. `run(['fake', NODE_ID])` waits `durations[NODE_ID]` ms (default 0: a
 * timer due at once), fails with exit 1 for ids in `failing`, hangs until aborted for ids in
 * `hanging`, and records every call, the most concurrent calls overall and per kind.
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
    for (const w of this.waiters.splice(0)) w();
    this.maxRunning = Math.max(this.maxRunning, this.running.size);
    const kind = id.split(':')[0];
    const sameKind = [...this.running].filter((r) => r.startsWith(`${kind}:`)).length;
    this.maxByKind.set(kind, Math.max(this.maxByKind.get(kind) ?? 0, sameKind));
    const ms = this.options.hanging?.has(id) ? 1e9 : (this.options.durations?.[id] ?? 0);
    const aborted = await new Promise<boolean>((resolve) => {
      const t = setTimeout(() => resolve(false), ms);
      opts.signal?.addEventListener('abort', () => {
        clearTimeout(t);
        resolve(true);
      });
    });
    this.running.delete(id);
    call.end = this.seq++;
    for (const w of this.waiters.splice(0)) w();
    if (aborted) return { aborted: true, signal: 'SIGTERM' };
    return { exitCode: this.options.failing?.has(id) ? 1 : 0, aborted: false };
  }

  private waiters: Array<() => void> = [];

  /** Resolves once `id` has started (at once if it has). */
  async whenStarted(id: string): Promise<void> {
    while (!this.calls.some((c) => c.id === id)) await new Promise<void>((resolve) => this.waiters.push(resolve));
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
  // Without the rules' outputs readers: the fake outputs are not the real rules' (the scheduler
  // checks outputs with the reader before recording them).
  return defaultRules.map(({ outputs: _reader, ...r }) => ({
    ...r,
    async execute(node, ctx) {
      const res = await ctx.runner.run(['fake', node.id], { signal: ctx.signal, logFile: ctx.log.path });
      if (res.exitCode !== 0) throw new NodeFailure(`fake command exited with ${res.exitCode ?? res.signal}`, { type: 'exit', code: res.exitCode, signal: res.signal });
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
  /** The plan that ran (after the remote cache's pass, with `remote`). */
  readonly plan: Plan;
}

/** Plan and execute a workspace in-process with fake rules and `runner`. */
export async function runEngine(
  dir: string,
  runner: FakeRunner,
  opts: {
    targets?: NodeId[];
    jobs?: number;
    limits?: Record<string, number>;
    failFast?: boolean;
    signal?: AbortSignal;
    resources?: Record<string, number>;
    onEvent?: (e: EngineEvent) => void;
    remote?: RemoteCache;
    /** Awaited between planning and executing (lines concurrent runs up: all plan, then all run). */
    afterPlan?: () => Promise<void>;
  } = {},
): Promise<EngineRun> {
  const ws = openWorkspace(dir, fakeRules());
  const cache = new ActionCache(ws.stateDir);
  const store = new ContentStore(path.join(ws.stateDir, 'cas'));
  const digester = new FileDigester(ws.root, path.join(ws.stateDir, 'stat-memo.json'), ws.decls.boundary);
  const selected = opts.targets ? ws.graph.withDependencies(opts.targets) : new Set(ws.graph.order);
  // Tools probed as the CLI probes them (and remembered where it looks), so keys agree with it.
  const tools = await resolveTools([...selected].map((id) => ws.graph.node(id)), path.join(ws.stateDir, 'tools.json'));
  let plan = planBuild(ws.graph, selected, { root: ws.root, cache, store, digester, env: {}, tools });
  if (opts.remote) plan = await checkRemote(plan, cache, opts.remote, store, ws.root);
  if (opts.remote) plan = await materializeNeeded(plan, { cache, remote: opts.remote, store, root: ws.root });
  digester.save();
  await opts.afterPlan?.();
  const events: EngineEvent[] = [];
  const summary = await executePlan(plan, {
    workspace: ws.forRules,
    jobs: opts.jobs ?? 4,
    limits: opts.limits ?? ws.decls.settings.concurrency,
    resources: opts.resources ?? ws.decls.settings.resources,
    failFast: opts.failFast ?? false,
    signal: opts.signal,
    runner,
    cache,
    store,
    stateDir: ws.stateDir,
    leases: new KeyLeases({ dir: path.join(ws.stateDir, 'leases'), clock: systemClock }),
    recorder: new CacheRecorder(cache, store, opts.remote),
    emit: (e) => {
      events.push(e);
      opts.onEvent?.(e);
    },
  });
  return { ws, runner, events, digester, summary, plan };
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
 * A fake clock for the execute stage: `now()` moves only when the test calls `advance(ms)`, which
 * also fires the timeouts that fall due (in order).
 */
export class FakeClock implements Clock {
  private t = 0;
  private timers: Array<{ at: number; controller: AbortController }> = [];

  now(): number {
    return this.t;
  }

  timeout(ms: number): AbortSignal {
    const controller = new AbortController();
    this.timers.push({ at: this.t + ms, controller });
    return controller.signal;
  }

  private sleepers: Array<() => void> = [];

  /** Resolves when something next calls `sleep` (to advance time exactly when it waits). */
  nextSleep(): Promise<void> {
    return new Promise((resolve) => this.sleepers.push(resolve));
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    const timer = this.timeout(ms);
    for (const s of this.sleepers.splice(0)) s();
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      timer.addEventListener('abort', () => resolve(), { once: true });
      signal?.addEventListener('abort', () => reject(signal.reason), { once: true });
    });
  }

  /** Sleeps and timeouts pending now. */
  get pending(): number {
    return this.timers.length;
  }

  advance(ms: number): void {
    this.t += ms;
    const due = this.timers.filter((x) => x.at <= this.t).sort((a, b) => a.at - b.at);
    this.timers = this.timers.filter((x) => x.at > this.t);
    for (const x of due) x.controller.abort(new DOMException('timed out', 'TimeoutError'));
  }
}

/**
 * A fake executor: each job waits until the test ends it (`succeed`, `fail`), or until the job's
 * signal aborts (then `interrupted`). `started` lists ids in start order; `whenStarted(id)`
 * resolves once that job has started, so tests synchronise without sleeping or polling.
 */
export class FakeExecutor implements Executor {
  readonly started: string[] = [];
  readonly running = new Map<string, { job: Job; end: (o: Outcome) => void }>();
  maxRunning = 0;
  private waiters = new Map<string, Array<() => void>>();

  constructor(private readonly clock: FakeClock = new FakeClock()) {}

  run(job: Job): Promise<Outcome> {
    const id = job.planned.node.id;
    const t0 = this.clock.now();
    return new Promise<Outcome>((resolve) => {
      const end = (o: Outcome) => {
        if (!this.running.delete(id)) return;
        resolve(o);
      };
      this.running.set(id, { job, end });
      this.started.push(id);
      this.maxRunning = Math.max(this.maxRunning, this.running.size);
      job.signal.addEventListener('abort', () => end({ ok: false, failure: { type: 'interrupted' }, duration_ms: this.clock.now() - t0 }), { once: true });
      for (const w of this.waiters.get(id) ?? []) w();
      this.waiters.delete(id);
    });
  }

  /** Resolves once `id` has started (at once if it has). */
  whenStarted(id: string): Promise<void> {
    if (this.started.includes(id)) return Promise.resolve();
    return new Promise((resolve) => this.waiters.set(id, [...(this.waiters.get(id) ?? []), resolve]));
  }

  /** End a running job successfully, with one output naming it. */
  succeed(id: string, duration_ms = 10): void {
    this.job(id).end({ ok: true, result: { outputs: { made: id }, artifacts: [] }, duration_ms });
  }

  /** End a running job with `failure` (default: exit code 1). */
  fail(id: string, failure: Failure = { type: 'exit', code: 1, message: 'exited with status 1' }): void {
    this.job(id).end({ ok: false, failure, duration_ms: 10 });
  }

  private job(id: string): { job: Job; end: (o: Outcome) => void } {
    const r = this.running.get(id);
    if (!r) throw new Error(`${id} is not running (running: ${[...this.running.keys()].join(', ') || 'none'})`);
    return r;
  }
}

/**
 * An in-memory remote cache (the unit tier's stand-in for an HTTP cache): entries by key with their
 * artifacts' bytes. `down` makes every call fail as an unreachable server would (a miss, no upload).
 */
export class FakeRemoteCache implements RemoteCache {
  readonly name = 'fake://remote';
  readonly entries = new Map<string, { id: string; recordLine: string; result: CachedResult; blobs: Map<string, Buffer> }>();
  /** Ids of the hits looked up, and digests of the blobs downloaded, in order. */
  readonly fetched: string[] = [];
  readonly downloaded: string[] = [];
  down = false;

  async lookup(id: NodeId, key: string): Promise<CachedResult | undefined> {
    if (this.down) return undefined;
    const e = this.entries.get(key);
    if (!e) return undefined;
    this.fetched.push(id);
    return e.result;
  }

  async download(digests: readonly string[], store: ContentStore): Promise<boolean> {
    if (this.down) return false;
    for (const d of digests) {
      if (store.has(d)) continue;
      const bytes = [...this.entries.values()].find((e) => e.blobs.has(d))?.blobs.get(d);
      if (!bytes || store.putBytes(bytes).digest !== d) return false;
      this.downloaded.push(d);
    }
    return true;
  }

  async upload(id: NodeId, key: string, recordLine: string, result: CachedResult, store: ContentStore): Promise<void> {
    if (this.down) return;
    const blobs = new Map(result.artifacts.map((d) => [d, readFileSync(store.pathOf(d))] as const));
    this.entries.set(key, { id, recordLine, result, blobs });
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

/**
 * A Debian base (busybox), a shell layer on it, and a model image with a SIF whose group is tested
 * in both runtimes; `publish` goes at the end of images.yaml (e.g. the model's `publish:` list),
 * `expectText` is the expected output. Returns the workspace (not yet locked).
 */
export function shellModelZoo(publish = '', expectText = 'hi\n'): string {
  const dir = workspace({
    'model/run.sh': '#!/bin/sh\necho hi > /output/out.txt\n',
    'expect/out.txt': expectText,
    'images.yaml': `version: 1
images:
  bb:
    debian: {packages: [busybox-static]}
  shell:
    from: bb
    layers: [{copy: sh, to: /bin/sh}]
  model:
    from: shell
    layers: [{copy: model/run.sh, to: /usr/local/bin/run, mode: 0o755}]
    convert: [sif]
${publish}`,
    'models.yaml': `version: 1
groups:
  g:
    image: model
    models: [m]
    test: {command: [run], expect: expect, runtimes: [oci, sif]}
`,
  });
  symlinkSync('busybox', path.join(dir, 'sh'));
  return dir;
}

/** A two-platform zoo (linux/amd64, linux/arm64): a busybox base, an image whose test writes `uname -m`, expected per `{arch}`. */
export const ARCH_ZOO: Record<string, string> = {
  'run.sh': '#!/bin/busybox sh\n/bin/busybox uname -m > /output/arch.txt\n',
  'expect/amd64/arch.txt': 'x86_64\n',
  'expect/arm64/arch.txt': 'aarch64\n',
  'images.yaml': `version: 1
images:
  tiny:
    debian: {packages: [busybox-static]}
    platforms: [linux/amd64, linux/arm64]
  app:
    from: tiny
    layers: [{copy: run.sh, to: /app/run.sh, mode: 0o755}]
    convert: [sif]
`,
  'models.yaml': `version: 1
groups:
  arch:
    image: app
    models: [uname]
    test: {command: [/app/run.sh], expect: 'expect/{arch}', runtimes: [oci, sif]}
`,
};
