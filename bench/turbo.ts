/**
 * The reference for `graph plan`: the same graph as a Turborepo workspace, for
 * `turbo run … --dry=json` (npm package turbo, installed on first use: `turboBin`).
 *
 * `writeTurboWorkspace(zooDir, outDir)` maps the zoo's graph task for task:
 * - each image is a package `images/<image>` (its Dockerfile directory's files) with tasks
 *   `build` (after `^build`: the image it is FROM), `convert` (after `build`) and `publish`
 *   (after `build`, `convert` and every test of its models, listed in turbo.json as
 *   `<image>#publish`, as graph's publish node depends on them);
 * - each model is a package `models/<group>-<model>` holding its group's test input and
 *   expectation, depending on its image's package, with tasks `test-oci` (after `^build`) and
 *   `test-sif` (after `^convert`).
 * So turbo plans as many tasks as graph has nodes, with the same edges, and hashes each task's
 * files as graph hashes each node's inputs.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expandInputs } from '../engine/key/files.js';
import { openWorkspace } from '../engine/workspace.js';
import { defaultRules } from '../rules/index.js';

/** The turbo version the benchmark compares against. */
export const TURBO_VERSION = '2.11.11';

/**
 * The turbo executable, installed on first use into `bench/.tools/` (git-ignored) from the npm
 * registry the host's npm is configured with. Not a devDependency: the registry here serves
 * only turbo's Linux binaries, and a lock file without the others fails `npm ci`.
 * @returns its path, or undefined when it cannot be installed (the turbo rows then say so).
 */
export function turboBin(): string | undefined {
  const tools = fileURLToPath(new URL('../../bench/.tools', import.meta.url));
  const bin = path.join(tools, 'node_modules', '.bin', 'turbo');
  const works = () => existsSync(bin) && spawnSync(bin, ['--version'], { encoding: 'utf8' }).stdout?.trim() === TURBO_VERSION;
  if (works()) return bin;
  mkdirSync(tools, { recursive: true });
  spawnSync('npm', ['install', '--prefix', tools, '--no-save', '--no-package-lock', '--no-audit', '--no-fund', `turbo@${TURBO_VERSION}`], { stdio: ['ignore', 'ignore', 'inherit'] });
  return works() ? bin : undefined;
}

/** The tasks `turbo run` is given (every task kind of the workspace). */
export const TURBO_TASKS = ['build', 'convert', 'publish', 'test-oci', 'test-sif'];

/** Environment for turbo runs: no telemetry, no update check. */
export const TURBO_ENV = { TURBO_TELEMETRY_DISABLED: '1', DO_NOT_TRACK: '1', TURBO_NO_UPDATE_NOTIFIER: '1', TURBO_UI: 'false' };

/** Write the Turborepo equivalent of the zoo in `zooDir` into `outDir`; returns its task count. */
export function writeTurboWorkspace(zooDir: string, outDir: string): number {
  const ws = openWorkspace(zooDir, defaultRules);
  const write = (rel: string, text: string | Uint8Array) => {
    mkdirSync(path.dirname(path.join(outDir, rel)), { recursive: true });
    writeFileSync(path.join(outDir, rel), text);
  };
  const pkgName = (image: string) => `img-${image}`;
  const modelPkg = (group: string, model: string) => `m-${group.replace(/\//g, '-')}-${model}`.toLowerCase();
  const scripts = new Map<string, Set<string>>();
  const deps = new Map<string, string[]>();
  const dirs = new Map<string, string>();
  const files = new Map<string, string[]>(); // package → zoo files copied into it
  const perTask: Record<string, { dependsOn: string[] }> = {};
  let tasks = 0;

  const add = (pkg: string, task: string) => {
    if (!scripts.has(pkg)) scripts.set(pkg, new Set());
    scripts.get(pkg)!.add(task);
    tasks++;
  };
  for (const id of ws.graph.order) {
    const n = ws.graph.node(id);
    if (n.kind === 'build' || n.kind === 'convert' || n.kind === 'publish') {
      const pkg = pkgName(n.image!);
      add(pkg, n.kind);
      dirs.set(pkg, `images/${n.image}`);
      if (n.kind === 'build') {
        deps.set(pkg, n.deps.map((d) => pkgName(ws.graph.node(d.id).image!)));
        files.set(pkg, expandInputs(zooDir, n.inputs));
      }
      if (n.kind === 'publish') {
        perTask[`${pkg}#publish`] = {
          dependsOn: n.deps.map((d) => {
            const dep = ws.graph.node(d.id);
            if (dep.kind !== 'test') return dep.kind;
            const [, group, model, runtime] = /^test:(.+)\/([^/@]+)@(\w+)$/.exec(d.id)!;
            return `${modelPkg(group, model)}#test-${runtime}`;
          }),
        };
      }
    } else if (n.kind === 'test') {
      const [, group, model, runtime] = /^test:(.+)\/([^/@]+)@(\w+)$/.exec(id)!;
      const pkg = modelPkg(group, model);
      add(pkg, `test-${runtime}`);
      dirs.set(pkg, `models/${pkg}`);
      deps.set(pkg, [...new Set(n.deps.map((d) => pkgName(ws.graph.node(d.id).image!)))]);
      if (!files.has(pkg)) files.set(pkg, expandInputs(zooDir, n.inputs));
    }
  }
  for (const [pkg, dir] of dirs) {
    const pkgScripts = Object.fromEntries([...scripts.get(pkg)!].sort().map((t) => [t, `echo ${t}`]));
    const dependencies = Object.fromEntries((deps.get(pkg) ?? []).map((d) => [d, '*']));
    write(`${dir}/package.json`, `${JSON.stringify({ name: pkg, version: '1.0.0', private: true, scripts: pkgScripts, dependencies }, null, 2)}\n`);
    for (const f of files.get(pkg) ?? []) write(`${dir}/${path.basename(f)}`, readFileSync(path.join(zooDir, f)));
  }
  write('package.json', `${JSON.stringify({ name: 'zoo', private: true, packageManager: 'npm@10.8.2', workspaces: ['images/*', 'models/*'] }, null, 2)}\n`);
  const generic = {
    build: { dependsOn: ['^build'] },
    convert: { dependsOn: ['build'] },
    publish: { dependsOn: ['build'] },
    'test-oci': { dependsOn: ['^build'] },
    'test-sif': { dependsOn: ['^convert'] },
  };
  write('turbo.json', `${JSON.stringify({ tasks: { ...generic, ...perTask } }, null, 1)}\n`);
  return tasks;
}
