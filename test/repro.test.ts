/**
 * Same digests on any machine (issue 12): one small workspace (a debian: base, a layers: image
 * with a setuid file, a dockerfile: image, both converted to SIF, a test run in both runtimes,
 * everything published into dist/) committed to git, cloned into fresh directories and built
 * under different process environments: umask 022 and 077 (clone and build), another checkout
 * path, other file mtimes, TZ, LANG/LC_ALL, hostname (a UTS namespace), HOSTNAME and HOME. Every
 * node's outputs and `published.lock.json` must be identical, byte for byte.
 */
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { CLI, workspace } from './helpers.js';

const test = suite('reproducible');

/** The workspace: what each variant clones. `run.sh` and `tool.sh` are committed executable. */
const FILES: Record<string, string> = {
  '.gitignore': '.graph/\ndist/\nreport.json\n',
  'images.yaml': `version: 1
images:
  base:
    debian: {suite: bookworm, packages: [busybox-static]}
    env: {PATH: /usr/local/bin:/usr/bin:/bin}
  app:
    from: base
    layers:
      - {copy: app/run.sh, to: /usr/local/bin/run}
      - {copy: app/data, to: /opt/data}
      - {copy: app/run.sh, to: /usr/local/bin/su-tool, mode: 0o4755}
    convert: [sif]
  df:
    from: base
    dockerfile: df/Dockerfile
    convert: [sif]
`,
  'models.yaml': `version: 1
groups:
  modes:
    image: app
    models: [m]
    test:
      command: [/bin/busybox, sh, -c, 'cd / && /bin/busybox stat -c "%a %n" etc etc/passwd var/lib/dpkg var/lib/dpkg/status bin/busybox usr/local/bin/run usr/local/bin/su-tool opt/data opt/data/x.txt > /output/modes.txt']
      expect: expect/modes
      runtimes: [oci, sif]
`,
  // What both runtimes must show: the package's and graph's own modes, the layers: recipe's
  // normalised modes, and the declared setuid bit kept (bubblewrap's no-new-privs makes it inert).
  'expect/modes/modes.txt': '755 etc\n644 etc/passwd\n755 var/lib/dpkg\n644 var/lib/dpkg/status\n755 bin/busybox\n755 usr/local/bin/run\n4755 usr/local/bin/su-tool\n755 opt/data\n644 opt/data/x.txt\n',
  'app/run.sh': '#!/bin/sh\necho run\n',
  'app/data/x.txt': 'x\n',
  'app/data/sub/y.txt': 'y\n',
  'df/Dockerfile': 'FROM base\nCOPY tool.sh /usr/local/bin/tool\nCOPY conf /etc/conf\n',
  'df/tool.sh': '#!/bin/sh\necho tool\n',
  'df/conf/a.txt': 'a\n',
};

/** One environment to clone and build in. */
interface Variant {
  readonly name: string;
  readonly umask: '022' | '077';
  /** Path of the checkout below a fresh temp directory. */
  readonly at: string;
  readonly hostname: string;
  /** Environment variables over the test's own (CI=true, no SOURCE_DATE_EPOCH). */
  readonly env: Readonly<Record<string, string>>;
  /** Give every checked-out file its own mtime (seconds since the epoch) instead of the clone's. */
  readonly mtimes?: (i: number) => number;
}

const made: string[] = [];
let origin = '';

test.before(() => {
  origin = workspace(FILES);
  made.push(origin);
  const git = (...args: string[]) => mustRun(spawnSync('git', ['-c', 'user.name=t', '-c', 'user.email=t@example.com', ...args], { cwd: origin, encoding: 'utf8' }), `git ${args[0]}`);
  for (const script of ['app/run.sh', 'df/tool.sh']) chmodSync(path.join(origin, script), 0o755);
  mustRun(spawnSync(process.execPath, [CLI, 'lock'], { cwd: origin, encoding: 'utf8', env: { ...process.env, CI: 'true' } }), 'graph lock');
  git('init', '-q');
  git('add', '.');
  git('commit', '-q', '-m', 'zoo');
});

test.after(() => {
  for (const dir of made) rmSync(dir, { recursive: true, force: true });
});

function mustRun(r: SpawnSyncReturns<string>, what: string): SpawnSyncReturns<string> {
  if (r.status !== 0) throw new Error(`${what} failed (${r.status ?? r.signal}): ${r.stderr}${r.stdout}`);
  return r;
}

/** Run `argv` in `cwd` under the variant's umask and hostname (a private UTS namespace), with exactly `env`. */
function runIn(cwd: string, variant: Variant, env: NodeJS.ProcessEnv, argv: string[]): SpawnSyncReturns<string> {
  const script = `umask ${variant.umask} && hostname ${variant.hostname} && exec "$@"`;
  return spawnSync('unshare', ['--uts', 'sh', '-c', script, 'sh', ...argv], { cwd, env, encoding: 'utf8' });
}

/** Every file under `dir` but `.git`, sorted. */
function filesUnder(dir: string, rel = ''): string[] {
  return readdirSync(path.join(dir, rel), { withFileTypes: true })
    .filter((d) => d.name !== '.git')
    .flatMap((d) => (d.isDirectory() ? filesUnder(dir, path.join(rel, d.name)) : [path.join(rel, d.name)]))
    .sort();
}

/**
 * Clone the workspace as `variant` says, build it there.
 * @returns every node's outputs (`{id: outputs}`, outputs null for a node that did not run),
 *   `published.lock.json` as text ('' when the build failed), the checkout's file modes
 *   (`644 images.yaml`…), and graph's exit status and stderr.
 */
function buildVariant(variant: Variant): { outputs: Record<string, unknown>; published: string; modes: string[]; exit: number | null; log: string } {
  const top = mkdtempSync(path.join(tmpdir(), 'graph-repro-'));
  made.push(top);
  const dir = path.join(top, variant.at);
  mkdirSync(path.dirname(dir), { recursive: true });
  const env: NodeJS.ProcessEnv = { ...process.env, CI: 'true', ...variant.env };
  delete env.SOURCE_DATE_EPOCH;
  mustRun(runIn(top, variant, env, ['git', 'clone', '-q', origin, dir]), `git clone (${variant.name})`);
  const files = filesUnder(dir);
  if (variant.mtimes) files.forEach((f, i) => utimesSync(path.join(dir, f), variant.mtimes!(i), variant.mtimes!(i)));
  const modes = files.map((f) => `${(statSync(path.join(dir, f)).mode & 0o777).toString(8)} ${f}`);
  const built = runIn(dir, variant, env, [process.execPath, CLI, 'build', '--report', 'report.json']);
  const report = JSON.parse(readFileSync(path.join(dir, 'report.json'), 'utf8')) as { nodes: Array<{ id: string; status: string; outputs: unknown }> };
  const outputs = Object.fromEntries(report.nodes.map((n) => [n.id, n.outputs]));
  const published = built.status === 0 ? readFileSync(path.join(dir, 'published.lock.json'), 'utf8') : '';
  return { outputs, published, modes, exit: built.status, log: built.stderr };
}

const BASELINE: Variant = {
  name: 'umask 022',
  umask: '022',
  at: 'a',
  hostname: 'builder-a',
  env: { TZ: 'UTC', LANG: 'C.UTF-8', LC_ALL: 'C.UTF-8', HOSTNAME: 'builder-a' },
};

test('the same digests under umask 077, and under another path, mtimes, TZ, locale, hostname and HOME', () => {
  const home = mkdtempSync(path.join(tmpdir(), 'graph-home-'));
  made.push(home);
  const variants: Variant[] = [
    BASELINE,
    // Only the umask differs: a clone's files are 0600/0700, new directories 0700.
    { ...BASELINE, name: 'umask 077', umask: '077' },
    // Everything else differs.
    {
      name: 'elsewhere',
      umask: '022',
      at: 'some/deeper/checkout',
      hostname: 'elsewhere-b',
      env: { TZ: 'Pacific/Kiritimati', LANG: 'tr_TR.UTF-8', LC_ALL: 'tr_TR.UTF-8', HOSTNAME: 'elsewhere-b', HOME: home },
      mtimes: (i) => 1_000_000_000 + 7919 * i,
    },
  ];
  const [base, ...others] = variants.map(buildVariant);
  // The variants really did differ on disk.
  assert.ok(base.modes.includes('644 images.yaml') && base.modes.includes('755 app/run.sh'), base.modes.join(', '));
  assert.ok(others[0].modes.includes('600 images.yaml') && others[0].modes.includes('700 app/run.sh'), others[0].modes.join(', '));
  // Digests first: they are the point, and a difference in them explains a failing test.
  for (const [i, other] of others.entries()) {
    assert.equal(other.outputs, base.outputs, `${variants[i + 1].name}: node outputs differ from ${BASELINE.name}`);
  }
  // The test passed in both runtimes: both show the modes expect/modes lists, setuid included.
  for (const [i, r] of [base, ...others].entries()) assert.is(r.exit, 0, `${variants[i].name}: ${r.log}`);
  for (const [i, other] of others.entries()) {
    assert.fixture(other.published, base.published, `${variants[i + 1].name}: published.lock.json differs from ${BASELINE.name}`);
  }
});

test.run();
