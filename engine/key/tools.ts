/**
 * Tool identities for action keys. A node names the external tools that make its output
 * (`NodeDef.tools`: the Dockerfile builder, tar2sqfs, the test sandbox); before planning, each is
 * resolved to an identity such as `buildah version 1.28.2 (image-spec 1.0.2-dev, runtime-spec
 * 1.0.2-dev)` by its probe, and the identities join the key record's `tool` field. A new builder
 * or sandbox version is then a new key, and the plan says `tool changed (… → …)`.
 *
 * Probing starts processes (`--version`), so identities are remembered in `.graph/tools.json` by the
 * stat (size, mtime, inode) of every executable the probe depends on, and the paths it looked for
 * and did not find: a no-op plan costs a few stats, and installing, upgrading or removing a tool
 * is noticed. A tool that cannot be probed is `NAME: unavailable` (its nodes fail when they run,
 * with the reason); that answer is not remembered.
 */
import { accessSync, constants, statSync } from 'node:fs';
import path from 'node:path';
import { readJsonFile, writeFileAtomic } from '../atomic.js';

/** How to tell which tool, and which version of it, a node would run. */
export interface ToolProbe {
  /** Stable name, shown in keys and plans (e.g. `dockerfile-builder:auto`, `tar2sqfs`). */
  readonly name: string;
  /**
   * Absolute paths of the executables the identity depends on, and of ones looked for but absent
   * (a builder chosen `auto` changes when another is installed). Looked up anew at every plan.
   */
  executables(): readonly string[];
  /** The identity, e.g. `bubblewrap 0.8.0`. @throws when the tool cannot be run. */
  identify(): Promise<string>;
}

/** Tool name → identity, as `resolveTools` found them. */
export type ToolIdentities = ReadonlyMap<string, string>;

/** What this module reads of a node (`NodeDef`'s `tool` and `tools`). */
interface UsesTools {
  readonly tool: string;
  readonly tools?: readonly ToolProbe[];
}

const MEMO_FORMAT = 1;

/** `path size mtimeMs ino`, or `path absent`: what the memo compares. */
function statLine(file: string): string {
  const st = statSync(file, { throwIfNoEntry: false });
  return st ? `${file} ${st.size} ${st.mtimeMs} ${st.ino}` : `${file} absent`;
}

/**
 * Resolve the identity of every tool the `selected` nodes name.
 * @param memoFile where identities are remembered (`.graph/tools.json`); undefined for none.
 * @returns name → identity; never rejects (a failing probe is `NAME: unavailable`).
 */
export async function resolveTools(nodes: Iterable<UsesTools>, memoFile: string | undefined): Promise<ToolIdentities> {
  const probes = new Map<string, ToolProbe>();
  for (const n of nodes) for (const p of n.tools ?? []) if (!probes.has(p.name)) probes.set(p.name, p);
  const out = new Map<string, string>();
  if (!probes.size) return out;
  const memo = (memoFile && (readJsonFile(memoFile) as { format?: number; tools?: Record<string, { stats: string; identity: string }> } | undefined)) || undefined;
  const known = memo?.format === MEMO_FORMAT && memo.tools ? memo.tools : {};
  const next: Record<string, { stats: string; identity: string }> = {};
  let changed = false;
  await Promise.all(
    [...probes.values()].map(async (probe) => {
      const stats = probe.executables().map(statLine).join('\n');
      const hit = known[probe.name];
      if (hit && hit.stats === stats) {
        out.set(probe.name, hit.identity);
        next[probe.name] = hit;
        return;
      }
      let identity: string;
      try {
        identity = (await probe.identify()).trim().split('\n')[0];
        next[probe.name] = { stats, identity };
        changed = true;
      } catch {
        identity = `${probe.name}: unavailable`;
      }
      out.set(probe.name, identity);
    }),
  );
  for (const [name, entry] of Object.entries(known)) if (!(name in next)) next[name] = entry;
  if (memoFile && changed) {
    try {
      writeFileAtomic(memoFile, `${JSON.stringify({ format: MEMO_FORMAT, tools: next }, null, 1)}\n`);
    } catch {
      // a memo that cannot be written costs the next plan a probe, nothing else
    }
  }
  return out;
}

/**
 * The key's `tool` field of `node`: its own tool string, then the identity of each tool it names
 * (`NAME: not probed` when `identities` lacks it, as in plans made without probing).
 */
export function toolField(node: UsesTools, identities: ToolIdentities | undefined): string {
  if (!node.tools?.length) return node.tool;
  return `${node.tool}; ${node.tools.map((t) => identities?.get(t.name) ?? `${t.name}: not probed`).join('; ')}`;
}

/**
 * The first executable called `name` in the directories of `searchPath` (PATH syntax), then in
 * `extraDirs`; undefined when none.
 */
export function findExecutable(name: string, searchPath: string | undefined, extraDirs: readonly string[] = []): string | undefined {
  for (const dir of [...(searchPath ?? '').split(':'), ...extraDirs]) {
    if (!dir) continue;
    const candidate = path.join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}
