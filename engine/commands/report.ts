/**
 * `graph report merge` (the shards' reports joined) and `graph report html` (the report page, from
 * a build's report or from a plan). cli.ts loads this module only for `graph report`.
 */
import path from 'node:path';
import { reportPathProblem, writeReport } from '../report/build-report.js';
import { addTimeline, dagSvg, pageFromPlan, pageFromReport, readJsonFile, renderHtml, type ReportInput } from '../report/html.js';
import { junitFromReport, mergedJson, mergeMessage, mergeReports, readReport } from '../report/merge.js';
import type { TraceFile } from '../report/profile.js';
import { UsageError, type NodeId } from '../rule.js';
import type { Workspace } from '../workspace.js';
import type { CommandContext, CommandOutcome } from './command.js';
import { makePlan, type SelectionValues } from './selection.js';

/**
 * `graph report merge OUT.json IN.json... [--junit OUT.xml]`: writes the merged report; the
 * merge's message goes to `io.err`.
 * @returns `failed` when there are conflicts or missing shards.
 * @throws UsageError for an input that cannot be read or is not a report, an unwritable output.
 */
export function reportMerge(c: CommandContext, out: string | undefined, inputs: readonly string[], junit: string | undefined): CommandOutcome {
  if (out === undefined || !inputs.length) throw new UsageError('merge takes OUT.json and at least one IN.json');
  for (const [flag, file] of [['OUT', out], ['--junit', junit]] as const) {
    const problem = file === undefined ? undefined : reportPathProblem(file);
    if (problem) throw new UsageError(`cannot write ${flag} ${file}: ${problem}`);
  }
  const reports = inputs.map((name) => {
    const read = readReport(name);
    if (!read.ok) throw new UsageError(read.message);
    return { name, report: read.report };
  });
  const merged = mergeReports(reports);
  const { report, problems } = merged;
  writeReport(out, mergedJson(report));
  if (junit) writeReport(junit, junitFromReport(report));
  c.io.err(mergeMessage(merged, out));
  return report.conflicts.length || problems.length ? 'failed' : 'ok';
}

/** `graph report html`'s arguments. */
export interface HtmlRequest {
  /** OUT.html. */
  readonly out: string | undefined;
  /** `--from REPORT.json`: draw a build's report instead of a plan. */
  readonly from?: string;
  /** `--profile PROFILE.json`: add the timeline. */
  readonly profile?: string;
  /** `-C DIR`, for a report whose workspace no longer opens. */
  readonly directory?: string;
  /** Targets (a plan only) and the selection options. */
  readonly targets: readonly string[];
  readonly values: SelectionValues;
}

/**
 * `graph report html OUT.html [--from REPORT.json] [--profile PROFILE.json] [TARGET...]`: writes
 * one self-contained page (engine/report/html.ts).
 * @throws UsageError for a missing or unwritable OUT, an unreadable input, targets with --from.
 */
export async function reportHtml(c: CommandContext, r: HtmlRequest): Promise<CommandOutcome> {
  const { out } = r;
  if (out === undefined) throw new UsageError('html takes OUT.html');
  const problem = reportPathProblem(out);
  if (problem) throw new UsageError(`cannot write OUT ${out}: ${problem}`);
  const read = <T>(file: string): T => {
    try {
      return readJsonFile<T>(file);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  };
  let data;
  if (r.from !== undefined) {
    if (r.targets.length) throw new UsageError('--from draws the whole report: it takes no targets');
    const report = read<ReportInput>(r.from);
    if (!report || !Array.isArray(report.nodes) || !report.summary) throw new UsageError(`${r.from} is not a graph build report`);
    // The workspace, when it still declares the nodes, gives the edges and images.
    let ws: Workspace | undefined;
    try {
      ws = c.open();
    } catch {
      ws = undefined;
    }
    const root = ws?.root ?? path.resolve(r.directory ?? '.');
    data = pageFromReport(report, root, (id) => (ws?.graph.has(id as NodeId) ? { deps: ws.graph.node(id as NodeId).deps.map((d) => d.id), image: ws.graph.node(id as NodeId).image } : undefined));
  } else {
    const ws = c.open();
    const { plan, digester } = await makePlan(ws, r.values, r.targets, c.rules, c.io.err);
    digester.save();
    data = pageFromPlan(plan);
  }
  if (r.profile !== undefined) addTimeline(data, read<TraceFile>(r.profile));
  writeReport(out, renderHtml(data, await dagSvg(data)));
  c.io.err(`wrote ${out}: ${data.nodes.length} nodes\n`);
  return 'ok';
}
