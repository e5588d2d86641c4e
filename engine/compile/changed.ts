/**
 * `--changed-since REF`: the nodes affected by what changed between a git revision and the
 * working tree (committed, staged, unstaged and untracked changes), plus everything downstream.
 *
 * A node is affected when one of its input files changed, or when its part of the declarations
 * changed: images.yaml and models.yaml are compiled as they were at REF and each node's
 * declaration, dependencies and input specs compared, so editing one group's entry selects that
 * group's nodes, not every node.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { DiagnosticError } from '../diagnostics.js';
import { expandInputs, type InputSpec } from '../key/files.js';
import { canonicalJson } from '../key/key.js';
import { parseYamlText } from '../load.js';
import { captureOutput } from '../process.js';
import type { NodeDef, NodeId, Rule } from '../rule.js';
import { compileWorkspace, IMAGES_FILE, MODELS_FILE, type Workspace } from '../workspace.js';

/** A git problem (not a repository, unknown revision); the CLI reports it with exit code 2. */
export class ChangedSinceError extends Error {}

export interface ChangedSince {
  /** Changed files, workspace-relative, sorted. */
  readonly files: readonly string[];
  /** Affected nodes and everything downstream of them. */
  readonly affected: ReadonlySet<NodeId>;
}

async function git(root: string, args: string[]): Promise<string> {
  try {
    return await captureOutput(['git', '-C', root, ...args]);
  } catch (e) {
    throw new ChangedSinceError((e as Error).message);
  }
}

/** Files changed between `ref` and the working tree, relative to the workspace. */
export async function changedFiles(root: string, ref: string): Promise<{ files: string[]; top: string }> {
  const top = (await git(root, ['rev-parse', '--show-toplevel'])).trim();
  try {
    await captureOutput(['git', '-C', root, 'rev-parse', '--verify', '--quiet', `${ref}^{commit}`]);
  } catch {
    throw new ChangedSinceError(`--changed-since: unknown git revision '${ref}'`);
  }
  const diffed = (await git(root, ['diff', '--name-only', '--no-renames', '-z', ref, '--'])).split('\0');
  const untracked = (await git(root, ['ls-files', '--others', '--exclude-standard', '--full-name', '-z'])).split('\0');
  const files = new Set<string>();
  for (const f of [...diffed, ...untracked]) {
    if (!f) continue;
    const rel = path.relative(root, path.join(top, f)).split(path.sep).join('/');
    if (!rel.startsWith('../')) files.add(rel);
  }
  return { files: [...files].sort(), top };
}

/** Could a (possibly deleted) file have been one of this spec's inputs? */
function specCovers(spec: InputSpec, file: string): boolean {
  if (spec.kind === 'file') return spec.path === file;
  const base = spec.kind === 'dir' ? spec.path : staticPrefix(spec.pattern);
  return base === '.' || base === '' || file === base || file.startsWith(`${base}/`);
}

function staticPrefix(pattern: string): string {
  const parts = pattern.split('/');
  const i = parts.findIndex((p) => /[*?[\]{}()!]/.test(p));
  return (i === -1 ? parts : parts.slice(0, i)).join('/');
}

/** What identifies a node's declaration, for comparing two revisions. */
function declarationFingerprint(n: NodeDef): string {
  return canonicalJson({
    decl: n.decl,
    deps: n.deps.map((d) => d.id),
    inputs: n.inputs,
    env: n.env,
    tool: n.tool,
    resources: n.resources,
    timeout: n.timeoutMs ?? null,
  });
}

/**
 * Nodes of `ws` affected by changes since `ref`.
 * @throws ChangedSinceError when the workspace is not in a git repository or `ref` is unknown.
 */
export async function affectedSince(ws: Workspace, ref: string, rules: readonly Rule[]): Promise<ChangedSince> {
  const { files, top } = await changedFiles(ws.root, ref);
  const changed = new Set(files);
  const affected = new Set<NodeId>();

  // A deleted file is in no expansion any more; any spec that could have held it counts.
  const deleted = files.filter((f) => !existsSync(path.join(ws.root, f)));
  const expanded = new Map<string, string[]>();
  for (const node of ws.graph.nodes()) {
    if (!node.inputs.length) continue;
    const specKey = JSON.stringify(node.inputs);
    let list = expanded.get(specKey);
    if (!list) expanded.set(specKey, (list = expandInputs(ws.root, node.inputs)));
    if (list.some((f) => changed.has(f)) || deleted.some((f) => node.inputs.some((s) => specCovers(s, f)))) affected.add(node.id);
  }

  if (changed.has(IMAGES_FILE) || changed.has(MODELS_FILE)) {
    const before = await declarationsAt(ws, ref, top, rules);
    for (const node of ws.graph.nodes()) {
      const old = before?.get(node.id);
      if (!old || old !== declarationFingerprint(node)) affected.add(node.id);
    }
  }
  return { files, affected: ws.graph.withDependents(affected) };
}

/** Declaration fingerprints of every node at `ref`; undefined when they cannot be compiled. */
async function declarationsAt(ws: Workspace, ref: string, top: string, rules: readonly Rule[]): Promise<Map<NodeId, string> | undefined> {
  const show = async (name: string) => {
    const inRepo = path.relative(top, path.join(ws.root, name)).split(path.sep).join('/');
    try {
      return parseYamlText(await captureOutput(['git', '-C', ws.root, 'show', `${ref}:${inRepo}`]), path.join(ws.root, name), `${ref}:${name}`);
    } catch {
      return undefined;
    }
  };
  const images = await show(IMAGES_FILE);
  if (!images) return undefined;
  const models = await show(MODELS_FILE);
  try {
    const old = compileWorkspace(ws.root, images, models, rules);
    return new Map([...old.graph.nodes()].map((n) => [n.id, declarationFingerprint(n)]));
  } catch (e) {
    // Declarations that were invalid at REF (or name files gone since): everything is affected.
    if (e instanceof DiagnosticError) return undefined;
    throw e;
  }
}
