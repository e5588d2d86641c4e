/**
 * `graph report merge`: the JSON reports of several shards (or of any builds) joined into one,
 * in the `--report` format (engine/report/build-report.ts) with two additions:
 *
 *     "merged_from": [file names, in the order merged],
 *     "conflicts": [{"id", "message", "reports": [{"report", "status", "outputs"}]}]
 *
 * Per node id, across the reports that list it:
 * - a **result** is `ran`, `cached` (success) or `failed`; `interrupted` and `skipped` entries are
 *   no result and give way to any report that has one (a shard stopped early does not hide the
 *   result of the shard that owns the node);
 * - results agree when all succeeded with equal `outputs` (then the node is `ran` if any report ran
 *   it, else `cached`) or all failed; the owner's entry (the report whose shard owns the node, see
 *   `shard.dependencies`) is kept, else the first one;
 * - a **conflict** is a success in one report and a failure in another, or two successes with
 *   different outputs (two runners built different bytes under one key). The node is merged as
 *   `failed`, keeping the failed entry, and the conflict is listed.
 * The summary is recomputed from the merged nodes; `duration_ms` is the longest input's (shards run
 * side by side), `interrupted` is true if any input was.
 *
 * Shard reports carry `shard: {index, count, split, groups, dependencies}`. When any input has one, the
 * merge also checks that they come from one split (the same `split` digest and count) and that
 * every shard 1..n is there exactly once; each gap is a problem, since nodes may then have been run
 * by no shard.
 */
import { readFileSync } from 'node:fs';
import type { Json } from '../rule.js';
import { junitXml, type ReportNodeJson } from './build-report.js';

/** `shard` in a shard's report. */
export interface ReportShardJson {
  readonly index: number;
  readonly count: number;
  /** `Split.digest` (engine/compile/shard.ts). */
  readonly split: string;
  /** The images it owns. */
  readonly groups?: readonly string[];
  /** Nodes in this report that another shard owns. */
  readonly dependencies: readonly string[];
}

/** `summary` of a JSON report: node counts by status, wall time in ms, whether it was interrupted. */
export interface ReportSummaryJson {
  readonly ran: number;
  readonly cached: number;
  readonly failed: number;
  readonly skipped: number;
  readonly interrupted_nodes: number;
  readonly duration_ms: number;
  readonly interrupted: boolean;
}

/** A `--report` file as read back. */
export interface BuildReportJson {
  readonly version: 1;
  readonly summary: ReportSummaryJson;
  readonly nodes: readonly ReportNodeJson[];
  readonly shard?: ReportShardJson;
}

/** A node with different results in two reports (the module comment). */
export interface MergeConflict {
  readonly id: string;
  /** One line: `build:base: ran in a.json, failed in b.json`. */
  readonly message: string;
  readonly reports: ReadonlyArray<{ readonly report: string; readonly status: string; readonly outputs: Json }>;
}

/** The merged report: a JSON report plus the inputs' names and the conflicts. */
export interface MergedReport extends BuildReportJson {
  readonly merged_from: readonly string[];
  readonly conflicts: readonly MergeConflict[];
}

/** What `mergeReports` returns. */
export interface MergeResult {
  readonly report: MergedReport;
  /** Missing or mismatched shards, one sentence each (see the module comment). */
  readonly problems: readonly string[];
}

const STATUSES = new Set(['ran', 'cached', 'failed', 'interrupted', 'skipped']);

/**
 * Read one JSON report. `name` is how messages call it (its path).
 * @returns the report, or a one-line reason it is not one (not JSON, wrong version, bad node).
 */
export function parseReport(text: string, name: string): { ok: true; report: BuildReportJson } | { ok: false; message: string } {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (e) {
    return { ok: false, message: `${name}: not JSON (${(e as Error).message})` };
  }
  const r = data as Partial<BuildReportJson> | null;
  if (typeof r !== 'object' || r === null || Array.isArray(r)) return { ok: false, message: `${name}: not a graph report (a JSON object written by graph build --report)` };
  if (r.version !== 1) return { ok: false, message: `${name}: report version ${JSON.stringify(r.version)}, expected 1` };
  if (!Array.isArray(r.nodes) || typeof r.summary !== 'object' || r.summary === null) return { ok: false, message: `${name}: not a graph report (no nodes or summary)` };
  for (const [i, n] of r.nodes.entries()) {
    if (typeof n?.id !== 'string' || typeof n.kind !== 'string' || !STATUSES.has(n.status) || typeof n.duration_ms !== 'number' || !Array.isArray(n.reasons)) {
      return { ok: false, message: `${name}: nodes[${i}] is not a node result (id, kind, status, duration_ms, reasons)` };
    }
  }
  const s = r.shard;
  if (s !== undefined && (typeof s?.index !== 'number' || typeof s.count !== 'number' || typeof s.split !== 'string' || !Array.isArray(s.dependencies))) {
    return { ok: false, message: `${name}: shard is not {index, count, split, dependencies}` };
  }
  return { ok: true, report: r as BuildReportJson };
}

/** Read and parse the report file `file` (`parseReport`; a file that cannot be read says why). */
export function readReport(file: string): ReturnType<typeof parseReport> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    return { ok: false, message: `cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}` };
  }
  return parseReport(text, file);
}

/**
 * What `graph report merge` prints (stderr): one line per conflict and per problem, then
 * `merged 2 reports into OUT: 12 ran, 0 cached, 0 failed, 0 skipped[; N conflicts]`.
 */
export function mergeMessage(result: MergeResult, out: string): string {
  const { report, problems } = result;
  const s = report.summary;
  const n = report.merged_from.length;
  const conflicts = report.conflicts.length;
  return [
    ...report.conflicts.map((c) => `conflict: ${c.message}\n`),
    ...problems.map((p) => `incomplete: ${p}\n`),
    `merged ${n} report${n === 1 ? '' : 's'} into ${out}: ${s.ran} ran, ${s.cached} cached, ${s.failed} failed, ${s.skipped} skipped${s.interrupted_nodes ? `, ${s.interrupted_nodes} interrupted` : ''}${conflicts ? `; ${conflicts} conflict${conflicts === 1 ? '' : 's'}` : ''}\n`,
  ].join('');
}

/** Join `inputs` (see the module comment). Pure: reads and writes nothing. */
export function mergeReports(inputs: ReadonlyArray<{ readonly name: string; readonly report: BuildReportJson }>): MergeResult {
  const problems = shardProblems(inputs);
  // Shard reports in shard order, so the merged order does not depend on the command line's.
  const ordered = [...inputs].sort((a, b) => (a.report.shard?.index ?? 0) - (b.report.shard?.index ?? 0));
  const entries = new Map<string, Array<{ report: string; node: ReportNodeJson; owner: boolean }>>();
  for (const { name, report } of ordered) {
    const foreign = new Set(report.shard?.dependencies ?? []);
    for (const node of report.nodes) {
      const list = entries.get(node.id);
      const entry = { report: name, node, owner: report.shard !== undefined && !foreign.has(node.id) };
      if (list) list.push(entry);
      else entries.set(node.id, [entry]);
    }
  }
  const nodes: ReportNodeJson[] = [];
  const conflicts: MergeConflict[] = [];
  for (const [id, list] of entries) {
    const results = list.filter((e) => e.node.status === 'ran' || e.node.status === 'cached' || e.node.status === 'failed');
    const pool = results.length ? results : list.filter((e) => e.node.status === 'interrupted').length ? list.filter((e) => e.node.status === 'interrupted') : list;
    const pick = (es: typeof list) => es.find((e) => e.owner) ?? es[0];
    const successes = results.filter((e) => e.node.status !== 'failed');
    const failures = results.filter((e) => e.node.status === 'failed');
    const outputs = new Set(successes.map((e) => canonical(e.node.outputs ?? null)));
    if (successes.length && (failures.length || outputs.size > 1)) {
      const where = (es: typeof list) => es.map((e) => e.report).join(', ');
      const message = failures.length
        ? `${id}: succeeded in ${where(successes)}, failed in ${where(failures)}`
        : `${id}: different outputs in ${[...outputs].map((o) => where(successes.filter((e) => canonical(e.node.outputs ?? null) === o))).join(' and in ')}`;
      conflicts.push({ id, message, reports: results.map((e) => ({ report: e.report, status: e.node.status, outputs: e.node.outputs ?? null })) });
      const kept = failures.length ? pick(failures) : pick(successes);
      nodes.push(failures.length ? kept.node : { ...kept.node, status: 'failed', reasons: [`conflict: ${message}`], failure: { type: 'error', message: `conflict: ${message}` } });
      continue;
    }
    const kept = pick(pool);
    const ran = pool.find((e) => e.node.status === 'ran');
    // A node one report ran and another took from the cache ran once: show the run.
    nodes.push(kept.node.status === 'cached' && ran ? ran.node : kept.node);
  }
  const count = (status: string) => nodes.filter((n) => n.status === status).length;
  const summary: ReportSummaryJson = {
    ran: count('ran'),
    cached: count('cached'),
    failed: count('failed'),
    skipped: count('skipped'),
    interrupted_nodes: count('interrupted'),
    duration_ms: Math.max(0, ...inputs.map((i) => i.report.summary.duration_ms ?? 0)),
    interrupted: inputs.some((i) => i.report.summary.interrupted === true),
  };
  return { report: { version: 1, summary, nodes, merged_from: inputs.map((i) => i.name), conflicts }, problems };
}

/** The merged report as its file's text (pretty JSON, as `--report` writes). */
export function mergedJson(report: MergedReport): string {
  return `${JSON.stringify(report, null, 2)}\n`;
}

/**
 * JUnit XML from a (merged) JSON report, as `--junit` writes it; a failed node's text is its
 * reasons and its log's path on the runner that ran it (the log itself stayed there).
 */
export function junitFromReport(report: BuildReportJson): string {
  const s = report.summary;
  return junitXml(report.nodes, { failed: s.failed, interrupted: s.interrupted_nodes, skipped: s.skipped, duration_ms: s.duration_ms }, (n) =>
    [...n.reasons, ...(n.log ? [`log: ${n.log}`] : [])].join('\n'),
  );
}

function shardProblems(inputs: ReadonlyArray<{ readonly name: string; readonly report: BuildReportJson }>): string[] {
  const sharded = inputs.filter((i) => i.report.shard);
  if (!sharded.length) return [];
  const problems: string[] = [];
  const unsharded = inputs.filter((i) => !i.report.shard);
  if (unsharded.length) problems.push(`${unsharded.map((i) => i.name).join(', ')}: not from a sharded build, merged with shard reports`);
  const splits = new Map<string, string[]>();
  for (const i of sharded) {
    const s = i.report.shard as ReportShardJson;
    const k = `${s.count} shards, split ${s.split}`;
    splits.set(k, [...(splits.get(k) ?? []), i.name]);
  }
  if (splits.size > 1) {
    const list = [...splits].map(([k, names]) => `${names.join(', ')}: ${k}`).join('; ');
    problems.push(`the shard reports come from different splits (${list}): the shards did not plan the same nodes (same commit, targets, --changed-since and cache), so some nodes may have been run by no shard`);
    return problems;
  }
  const count = (sharded[0].report.shard as ReportShardJson).count;
  const byIndex = new Map<number, string[]>();
  for (const i of sharded) {
    const idx = (i.report.shard as ReportShardJson).index;
    byIndex.set(idx, [...(byIndex.get(idx) ?? []), i.name]);
  }
  for (let idx = 1; idx <= count; idx++) {
    const names = byIndex.get(idx);
    if (!names) problems.push(`no report for shard ${idx}/${count}: the nodes it owns are missing`);
    else if (names.length > 1) problems.push(`shard ${idx}/${count} appears twice (${names.join(', ')})`);
  }
  return problems;
}

/** JSON with object keys sorted, for comparing outputs. */
function canonical(v: Json | undefined): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v ?? null);
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  const o = v as { readonly [k: string]: Json };
  return `{${Object.keys(o)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`)
    .join(',')}}`;
}
