/**
 * A workspace: the directory holding `images.yaml` (required) and `models.yaml` (optional), and
 * its `.graph/` state. `openWorkspace` runs load → validate → compile and returns the sealed graph.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import type { Declarations } from './validate/declarations.js';
import { DiagnosticError } from './diagnostics.js';
import { STATE_DIR } from './key/files.js';
import { BuildGraph } from './compile/graph.js';
import { compiledFile, compiledKey, readCompiled, writeCompiled } from './compile/snapshot.js';
import { loadYamlFile, ParseCache, type LoadedFile } from './load.js';
import type { Rule, RuleWorkspace } from './rule.js';
import { validateDeclarations, type SettingsOverrides } from './validate/validate.js';

export const IMAGES_FILE = 'images.yaml';
export const MODELS_FILE = 'models.yaml';

export interface Workspace {
  /** Absolute workspace directory. */
  readonly root: string;
  /** Absolute `.graph` directory: logs, scratch space, outputs, memos. */
  readonly stateDir: string;
  /**
   * Absolute directory of the action cache (`ac/`, `actions.log`), the content-addressed store
   * (`cas/`) and the leases (`leases/`): `GRAPH_CACHE_DIR` when set (e.g. on a filesystem every
   * cluster node mounts, or shared by several clones of one zoo), else `stateDir`.
   */
  readonly cacheDir: string;
  readonly decls: Declarations;
  /** What the rules may know of the workspace when nodes run: root, boundary, settings. */
  readonly forRules: RuleWorkspace;
  readonly graph: BuildGraph;
}

/** How `openWorkspace` compiles. */
export interface OpenOptions {
  /**
   * Keep the compiled graph in `.graph/compiled.bin` and use it again while nothing it was
   * expanded from changed (engine/compile/snapshot.ts). The command line sets it; callers that
   * pass rules other than graph's own must not (the key knows rules by kind and version only).
   */
  readonly compiledCache?: boolean;
}

/**
 * Load, validate and compile the declarations in `root`.
 * @throws DiagnosticError for a missing images.yaml and for every problem in the declarations.
 */
export function openWorkspace(root: string, rules: readonly Rule[], overrides: SettingsOverrides = {}, options: OpenOptions = {}): Workspace {
  const abs = path.resolve(root);
  const imagesPath = path.join(abs, IMAGES_FILE);
  if (!existsSync(imagesPath)) {
    throw new DiagnosticError([
      { code: 'no-workspace', message: `no ${IMAGES_FILE} in ${abs}`, hint: 'run graph in the directory that holds images.yaml, or pass -C DIR' },
    ]);
  }
  const parseCache = new ParseCache(path.join(abs, STATE_DIR, 'parsed'));
  const imagesFile = loadYamlFile(imagesPath, IMAGES_FILE, parseCache);
  const modelsPath = path.join(abs, MODELS_FILE);
  const modelsFile = existsSync(modelsPath) ? loadYamlFile(modelsPath, MODELS_FILE, parseCache) : undefined;
  const ws = compileWorkspace(abs, imagesFile, modelsFile, rules, overrides, options);
  // Only declarations that compiled are remembered: bad input leaves .graph/ untouched.
  parseCache.put(imagesFile);
  if (modelsFile) parseCache.put(modelsFile);
  return ws;
}

/** As `openWorkspace`, for files already loaded (e.g. from another git revision). */
export function compileWorkspace(root: string, imagesFile: LoadedFile, modelsFile: LoadedFile | undefined, rules: readonly Rule[], overrides: SettingsOverrides = {}, options: OpenOptions = {}): Workspace {
  const decls = validateDeclarations(root, imagesFile, modelsFile, rules, overrides);
  const stateDir = path.join(root, STATE_DIR);
  const key = options.compiledCache ? compiledKey(decls, rules, overrides, process.env) : undefined;
  let graph: BuildGraph;
  if (key === undefined) graph = BuildGraph.compile(decls, rules);
  else {
    const file = compiledFile(stateDir);
    const cached = readCompiled(file, key, rules, decls, () => BuildGraph.compile(decls, rules));
    graph = cached ?? BuildGraph.compile(decls, rules, key);
    if (!cached) writeCompiled(file, key, graph);
  }
  const forRules: RuleWorkspace = { root: decls.root, boundary: decls.boundary, settings: decls.settings };
  return { root, stateDir, cacheDir: cacheDirFor(root, process.env), decls, forRules, graph };
}

/**
 * Where the action cache and the store of the workspace at `root` live: `GRAPH_CACHE_DIR`
 * (relative paths taken from `root`), else `root/.graph`.
 */
export function cacheDirFor(root: string, env: NodeJS.ProcessEnv): string {
  const dir = env.GRAPH_CACHE_DIR;
  return dir ? path.resolve(root, dir) : path.join(root, STATE_DIR);
}
