/**
 * Report files written after a build: `--report FILE.json` and `--junit FILE.xml`.
 *
 * JSON report (stable, documented in the README):
 *
 *     {"version": 1,
 *      "summary": {"ran", "cached", "failed", "skipped", "interrupted_nodes", "duration_ms",
 *                  "interrupted": bool (the run was interrupted)},
 *      "nodes": [{"id", "kind", "status": "ran"|"cached"|"failed"|"interrupted"|"skipped",
 *                 "duration_ms", "reasons": [..], "failure": {"type", ..}|null,
 *                 "outputs": {..}|null, "log": path|null, ["devices": {"gpu": ["0"]}]}]}
 *
 * `devices`, only for a node that held host devices while it ran: their ids by token
 * (engine/execute/devices.ts).
 *
 * `log` is null for a node that did not run, and for one that ran and whose log said nothing
 * beyond its header (node, key, why: no file is written for it).
 *
 * A shard's report (`graph build --shard I/N`) has `"shard": {"index", "count", "split", "groups", "dependencies"}`
 * after the summary (engine/compile/shard.ts; `graph report merge`, engine/report/merge.ts, reads it).
 *
 * `failure` is the typed reason of a failed, interrupted or skipped node (engine/execute/failure.ts):
 * `type` is one of exit, timeout, interrupted, sandbox, error, outputs, record, cluster, dependency,
 * not-started, unavailable (this host cannot run it: it lacks the GPUs the node claims, or a
 * foreign platform has no emulation; `{message, required}`).
 *
 * JUnit: one `<testsuite>` per node kind that has nodes, one `<testcase>` per node (classname =
 * the kind, name = the node id, time in seconds), `<failure>` with the reason and the end of the
 * log, `<error>` for an interrupted node, `<skipped>` with the reason; a cached node whose cache
 * has a reason (`from remote cache URL`, `from registry REF …`) has the property `cached` saying it.
 */
import { closeSync, openSync, readFileSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { tempPathFor, writeFileAtomic } from '../atomic.js';
import type { RunSummary } from '../events.js';
import type { Json } from '../rule.js';
import type { ShardSummary } from '../compile/shard.js';

/** Characters of a failed node's log embedded in JUnit. */
const JUNIT_LOG_TAIL = 8000;

/** One node of the JSON report (the module comment). */
export interface ReportNodeJson {
  readonly id: string;
  readonly kind: string;
  readonly status: 'ran' | 'cached' | 'failed' | 'interrupted' | 'skipped';
  readonly duration_ms: number;
  readonly reasons: readonly string[];
  readonly failure: Json;
  readonly outputs: Json;
  /** Workspace-relative. */
  readonly log: string | null;
  /** Where it ran, when not on the machine that ran graph: `{executor, job, host}` (a Slurm job). */
  readonly where?: Json;
  /** The host devices it held, by token (`{gpu: ['0']}`). */
  readonly devices?: Json;
}

/**
 * The JSON report of a run. `shard`, for `graph build --shard i/n`: which shard this is, the split's
 * digest, the images it owns and the nodes in the report that other shards own (`graph report
 * merge` reads them).
 */
export function reportJson(s: RunSummary, root: string, shard?: ShardSummary): string {
  const nodes: ReportNodeJson[] = s.results.map((r) => ({
    id: r.id,
    kind: r.kind,
    status: r.status,
    duration_ms: r.duration_ms,
    reasons: r.reasons,
    failure: (r.failure ?? null) as Json,
    outputs: r.outputs ?? null,
    log: r.log ? path.relative(root, r.log) : null,
    ...(r.where ? { where: r.where as unknown as Json } : {}),
    ...(r.devices ? { devices: r.devices as unknown as Json } : {}),
  }));
  return `${JSON.stringify(
    {
      version: 1,
      summary: { ran: s.counts.ran, cached: s.counts.cached, failed: s.counts.failed, skipped: s.counts.skipped, interrupted_nodes: s.counts.interrupted, duration_ms: s.duration_ms, interrupted: s.interrupted },
      ...(shard ? { shard } : {}),
      nodes,
    },
    null,
    2,
  )}\n`;
}

function xml(s: string): string {
  // XML 1.0 cannot carry most control characters, even escaped.
  return s
    .replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f]/g, '')
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;');
}

function tail(file: string | undefined): string {
  if (!file) return '';
  try {
    const text = readFileSync(file, 'utf8');
    return text.length > JUNIT_LOG_TAIL ? `…${text.slice(-JUNIT_LOG_TAIL)}` : text;
  } catch {
    return '';
  }
}

/** JUnit XML of a run (the module comment); a failed node's text is the end of its log. */
export function reportJunit(s: RunSummary): string {
  const logs = new Map(s.results.map((r) => [r.id as string, r.log]));
  return junitXml(s.results, { failed: s.counts.failed, interrupted: s.counts.interrupted, skipped: s.counts.skipped, duration_ms: s.duration_ms }, (r) => tail(logs.get(r.id)));
}

/**
 * JUnit XML for node results (the module comment), from a run or from JSON reports.
 * @param body the text inside a failed or interrupted node's element (XML-escaped here).
 */
export function junitXml<R extends { readonly id: string; readonly kind: string; readonly status: string; readonly duration_ms: number; readonly reasons: readonly string[]; readonly where?: unknown }>(
  results: readonly R[],
  counts: { readonly failed: number; readonly interrupted: number; readonly skipped: number; readonly duration_ms: number },
  body: (r: R) => string,
): string {
  const kinds = [...new Set(results.map((r) => r.kind))];
  const out = ['<?xml version="1.0" encoding="UTF-8"?>'];
  const seconds = (ms: number) => (ms / 1000).toFixed(3);
  out.push(`<testsuites name="graph" tests="${results.length}" failures="${counts.failed}" errors="${counts.interrupted}" skipped="${counts.skipped}" time="${seconds(counts.duration_ms)}">`);
  for (const kind of kinds) {
    const rs = results.filter((r) => r.kind === kind);
    const failures = rs.filter((r) => r.status === 'failed').length;
    const errors = rs.filter((r) => r.status === 'interrupted').length;
    const skipped = rs.filter((r) => r.status === 'skipped').length;
    const time = rs.reduce((t, r) => t + r.duration_ms, 0);
    out.push(`  <testsuite name="${xml(kind)}" tests="${rs.length}" failures="${failures}" errors="${errors}" skipped="${skipped}" time="${seconds(time)}">`);
    for (const r of rs) {
      const open = `    <testcase classname="${xml(kind)}" name="${xml(r.id)}" time="${seconds(r.duration_ms)}"`;
      // A cached node with a reason (from a remote cache, from a registry) says so as a property.
      const props = properties(r.status === 'cached' && r.reasons.length ? { ...(r.where as object | undefined), cached: r.reasons.join('; ') } : r.where);
      if (props.length && r.status !== 'failed' && r.status !== 'interrupted' && r.status !== 'skipped') {
        out.push(`${open}>`, ...props, '    </testcase>');
      } else if (r.status === 'failed') {
        out.push(`${open}>`, ...props, `      <failure message="${xml(r.reasons.join('; '))}">${xml(body(r))}</failure>`, '    </testcase>');
      } else if (r.status === 'interrupted') {
        out.push(`${open}>`, ...props, `      <error type="interrupted" message="interrupted">${xml(body(r))}</error>`, '    </testcase>');
      } else if (r.status === 'skipped') {
        out.push(`${open}>`, `      <skipped message="${xml(r.reasons.join('; '))}"/>`, '    </testcase>');
      } else {
        out.push(`${open}/>`);
      }
    }
    out.push('  </testsuite>');
  }
  out.push('</testsuites>');
  return `${out.join('\n')}\n`;
}

/**
 * `<properties>` naming where a node ran (`executor`, `job`, `host`: JUnit has no field for it,
 * and CI viewers list properties); none for a node that ran on graph's machine.
 */
function properties(where: unknown): string[] {
  if (!where || typeof where !== 'object') return [];
  const entries = Object.entries(where as Record<string, unknown>).filter(([, v]) => typeof v === 'string');
  if (!entries.length) return [];
  return ['      <properties>', ...entries.map(([k, v]) => `        <property name="${xml(k)}" value="${xml(v as string)}"/>`), '      </properties>'];
}

/** Write a report file atomically (the user's file is never left half-written). */
export function writeReport(file: string, text: string): void {
  writeFileAtomic(path.resolve(file), text);
}

/**
 * Why a report file could not be written at `file`, checked before a build starts so a typo costs
 * no build: the path is a directory, an ancestor is a file, or no file can be created in the
 * nearest existing directory (read-only file system, permissions). Creates nothing: a probe file
 * is made in that directory and removed at once; missing directories are left for `writeReport`.
 * @returns undefined when the report can be written, else the reason (a sentence without the path).
 */
export function reportPathProblem(file: string): string | undefined {
  const target = path.resolve(file);
  try {
    if (existing(target)?.isDirectory()) return 'it is a directory';
    let dir = path.dirname(target);
    let st = existing(dir);
    while (!st && dir !== path.dirname(dir)) st = existing((dir = path.dirname(dir)));
    if (!st?.isDirectory()) return `${dir} is not a directory`;
    const probe = tempPathFor(path.join(dir, 'report'));
    try {
      closeSync(openSync(probe, 'wx'));
    } catch (e) {
      return `no file can be created in ${dir} (${(e as Error).message.replace(/, open .*$/, '')})`;
    }
    rmSync(probe, { force: true });
    return undefined;
  } catch (e) {
    return (e as Error).message; // EACCES, EROFS…: node's message names the path
  }
}

/** The stats of `p`, or undefined when it (or a directory on its way) does not exist. */
function existing(p: string) {
  try {
    return statSync(p);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw e;
  }
}
