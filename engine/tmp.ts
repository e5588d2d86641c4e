/**
 * Temp files left by graph processes that are gone (killed with SIGKILL, out of memory, the
 * machine reset). Every temp name graph makes carries its process id:
 *
 *   .tmp-NAME-PID-HEX       a file being written (engine/atomic.ts), beside its target
 *   NAME.tmp-PID-SUFFIX     a directory being filled (image layouts, unpacked root filesystems)
 *   NAME.old-PID-SUFFIX     a layout being replaced
 *   NAME.partial-PID-SUFFIX a builder's result layout
 *   .graph/tmp/PID-HEX      a node's scratch directory
 *   .graph.trash-PID        a state directory `graph clean` was deleting
 *
 * `sweepTemps` removes those whose process is gone, in the workspace root, in `.graph/` and in
 * `dist/`. A live pid may be a different process now (pids are reused, and a CI container's
 * first processes get the same pids on every run): each build records its process's identity
 * (boot id and start time, proc(5) `/proc/PID/stat` field 22) in `.graph/tmp/PID.proc` while it
 * runs, and a temp whose pid is alive but is not the process its record names is stale too. A live
 * pid without a record (a `graph plan` writing its memo) keeps its temps; so do directories with
 * something mounted inside (a builder's mount that outlived it: removing through it could reach
 * the host's files). Directories a rule fills with files that are not graph's (`Rule.holdsUserFiles`:
 * a test's output) are not searched: a name there that looks like a temp is someone else's.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Rule } from './rule.js';

/** Names of temps, the pid in group 1 (or 2, for the scratch directories and the trash). */
const TEMP_NAME = /^(?:\.tmp-.+-(\d+)-[0-9a-f]+|.+\.(?:tmp|old|partial)-(\d+)-[0-9a-z]+)$/;
const SCRATCH_NAME = /^(\d+)-[0-9a-f]+$/;
const TRASH_NAME = /^\.graph\.trash-(\d+)$/;
const RECORD_NAME = /^(\d+)\.proc$/;
/** Directories never searched: unpacked root filesystems (named by digest). */
const NOT_SEARCHED = /^[0-9a-f]{64}$/;

/** The identity of process `pid` that survives pid reuse: boot id and start time; undefined when it is gone. */
export function processIdentity(pid: number | 'self'): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces): state is field 3, starttime field 22.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (fields[0] === 'Z') return undefined;
    return `${readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()} ${fields[19]}`;
  } catch {
    return undefined;
  }
}

/**
 * Record this process in `stateDir/tmp/PID.proc` for later sweeps (see the module comment); the
 * record goes when the process exits.
 * @returns a function that removes the record now.
 */
export function recordProcess(stateDir: string): () => void {
  const file = path.join(stateDir, 'tmp', `${process.pid}.proc`);
  const identity = processIdentity('self');
  if (identity === undefined) return () => undefined;
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, `${identity}\n`);
  const remove = () => {
    process.off('exit', remove);
    rmSync(file, { force: true });
  };
  process.on('exit', remove);
  return remove;
}

/**
 * Remove the temp files and directories of graph processes that are gone, under workspace
 * `root` (its top level, `.graph/` and `dist/`). Call it before this process makes any temp: a
 * temp named with this process's own pid is taken to be an earlier process's. `rules` say which
 * directories under `.graph/out` hold their nodes' user files (`Rule.holdsUserFiles`): not searched.
 * @returns the paths removed (absolute), and those kept with why: something is mounted inside, or
 *   the removal failed (its error's message).
 */
export function sweepTemps(root: string, stateDir: string, rules: readonly Rule[]): Swept {
  const tmpDir = path.join(stateDir, 'tmp');
  const records = new Map<number, string>();
  for (const name of list(tmpDir)) {
    const m = RECORD_NAME.exec(name);
    if (!m) continue;
    try {
      records.set(Number(m[1]), readFileSync(path.join(tmpDir, name), 'utf8').trim());
    } catch {
      // removed meanwhile: its process has just exited
    }
  }
  return removeTemps(root, stateDir, rules, (pid) => processGone(pid, records.get(pid)));
}

/**
 * Remove this process's own temps, for a process about to exit in the middle of its work (a
 * third Ctrl-C): call it only once nothing of this process writes them any more.
 * @returns as `sweepTemps`.
 */
export function removeOwnTemps(root: string, stateDir: string, rules: readonly Rule[]): Swept {
  return removeTemps(root, stateDir, rules, (pid) => pid === process.pid);
}

/** What a sweep removed, and what it could not (absolute paths). */
export interface Swept {
  readonly removed: string[];
  readonly kept: Array<{ readonly path: string; readonly why: string }>;
}

function removeTemps(root: string, stateDir: string, rules: readonly Rule[], stale: (pid: number) => boolean): Swept {
  const outDir = path.join(stateDir, 'out');
  const userFiles = rules.filter((r) => r.holdsUserFiles);
  const removed: string[] = [];
  const kept: Swept['kept'] = [];
  const tmpDir = path.join(stateDir, 'tmp');
  const gone = new Map<number, boolean>();
  const isGone = (pid: number): boolean => {
    let g = gone.get(pid);
    if (g === undefined) gone.set(pid, (g = stale(pid)));
    return g;
  };
  const mounts = mountPoints();
  const remove = (p: string) => {
    if (mounts.some((m) => m === p || m.startsWith(`${p}/`))) {
      kept.push({ path: p, why: 'something is mounted inside it' });
      return;
    }
    try {
      rmSync(p, { recursive: true, force: true });
      removed.push(p);
    } catch (e) {
      kept.push({ path: p, why: (e as Error).message });
    }
  };

  for (const name of list(root)) {
    const pid = pidOf(name) ?? Number(TRASH_NAME.exec(name)?.[1] ?? NaN);
    if (!Number.isNaN(pid) && isGone(pid)) remove(path.join(root, name));
  }
  // A no-op build walks every entry of the cache (one per blob, per log, per action-cache entry):
  // a path is made only for a temp or a directory to descend into.
  const walk = (dir: string) => {
    for (const entry of listEntries(dir)) {
      const name = entry.name;
      const pid = pidOf(name) ?? (dir === tmpDir ? Number(SCRATCH_NAME.exec(name)?.[1] ?? RECORD_NAME.exec(name)?.[1] ?? NaN) : NaN);
      if (!Number.isNaN(pid)) {
        if (isGone(pid)) remove(path.join(dir, name));
      } else if (!NOT_SEARCHED.test(name) && entry.isDirectory()) {
        const p = path.join(dir, name);
        if (!userFiles.some((r) => r.holdsUserFiles?.(p, outDir))) walk(p);
      }
    }
  };
  walk(stateDir);
  walk(path.join(root, 'dist'));
  return { removed, kept };
}

function pidOf(name: string): number | undefined {
  // Every temp name has one of these; most names (blobs, entries, logs) have none.
  if (!name.includes('.tmp-') && !name.includes('.old-') && !name.includes('.partial-')) return undefined;
  const m = TEMP_NAME.exec(name);
  return m ? Number(m[1] ?? m[2]) : undefined;
}

/** Whether the process that made a temp named with `pid` is gone (see the module comment). */
function processGone(pid: number, record: string | undefined): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ESRCH') return true;
  }
  // Alive (or another user's): gone only if our record names a different process.
  const now = processIdentity(pid);
  return now === undefined || (record !== undefined && record !== now);
}

function list(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

function listEntries(dir: string) {
  try {
    return readdirSync(dir, { withFileTypes: true });
  } catch {
    return [];
  }
}

/** Every mount point this process sees (proc(5) mountinfo field 5, octal escapes undone). */
function mountPoints(): string[] {
  if (!existsSync('/proc/self/mountinfo')) return [];
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((m): m is string => m !== undefined)
    .map((m) => m.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))));
}
