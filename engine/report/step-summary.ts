/**
 * The CI summary: under GitHub Actions (`GITHUB_STEP_SUMMARY` names a file) `graph plan` and
 * `graph build` append a short Markdown summary to that file (GitHub renders it on the run's page;
 * docs.github.com, "Adding a job summary"). GitHub-flavoured Markdown: a heading, the counts, a
 * table of what runs (plan) or ran (build) and why, at most `MAX_ROWS` rows, and for a build each
 * failure with the end of its log in a collapsed `<details>` block.
 */
import { appendFileSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { formatMs } from '../duration.js';
import type { NodeResult, RunSummary } from '../events.js';
import type { Plan } from '../plan.js';
import { planSummary } from '../plan.js';

/** Rows of a table before "and N more". */
export const MAX_ROWS = 50;
/** Lines of a failed node's log shown. */
export const LOG_TAIL_LINES = 30;
/** Failures shown with their log. */
const MAX_FAILURES = 10;

/** A table cell: one line, `|` escaped, code spans kept intact. */
function cell(s: string): string {
  return s.replace(/\r?\n/g, ' ').replace(/\|/g, '\\|');
}

function code(s: string): string {
  return `\`${s.replace(/`/g, "'")}\``;
}

function more(n: number, cols: number): string {
  return `| … and ${n} more |${' |'.repeat(cols - 1)}`;
}

/** The Markdown summary of a plan (`graph plan`). */
export function planMarkdown(plan: Plan): string {
  const s = planSummary(plan);
  const runs = plan.nodes.filter((p) => p.status === 'run');
  const lines = ['### graph plan', '', `**${s.run} to run**, ${s.cached} cached${s.unavailable ? `, ${s.unavailable} cannot run here` : ''} (${s.total} nodes)`, ''];
  if (runs.length) {
    lines.push('| node | kind | why |', '| --- | --- | --- |');
    for (const p of runs.slice(0, MAX_ROWS)) lines.push(`| ${code(p.node.id)} | ${p.node.kind} | ${cell(p.reasons.join('; '))} |`);
    if (runs.length > MAX_ROWS) lines.push(more(runs.length - MAX_ROWS, 3));
    lines.push('');
  }
  return `${lines.join('\n')}\n`;
}

/**
 * The last `LOG_TAIL_LINES` lines of a log file, or undefined when it cannot be read.
 * @param file absolute path.
 */
export function logTail(file: string | undefined, lines = LOG_TAIL_LINES): string | undefined {
  if (!file) return undefined;
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  const all = text.replace(/\n$/, '').split('\n');
  return all.slice(-lines).join('\n');
}

/**
 * The Markdown summary of a build (`graph build`).
 * @param tail the end of a node's log (default: `logTail` of its log file).
 */
export function buildMarkdown(s: RunSummary, tail: (r: NodeResult) => string | undefined = (r) => logTail(r.log)): string {
  const c = s.counts;
  const verdict = s.interrupted ? 'interrupted' : c.failed ? 'failed' : 'succeeded';
  const lines = [`### graph build: ${verdict}`, ''];
  lines.push(`${c.ran} ran · ${c.cached} cached · ${c.failed} failed · ${c.skipped} skipped${c.interrupted ? ` · ${c.interrupted} interrupted` : ''} · ${formatMs(s.duration_ms)}`, '');
  const shown = s.results.filter((r) => r.status !== 'cached' && r.status !== 'skipped');
  if (shown.length) {
    lines.push('| node | kind | status | time | why |', '| --- | --- | --- | --- | --- |');
    for (const r of shown.slice(0, MAX_ROWS)) lines.push(`| ${code(r.id)} | ${r.kind} | ${r.status === 'failed' ? '**failed**' : r.status} | ${formatMs(r.duration_ms)} | ${cell(r.reasons.join('; '))} |`);
    if (shown.length > MAX_ROWS) lines.push(more(shown.length - MAX_ROWS, 5));
    lines.push('');
  }
  const failed = s.results.filter((r) => r.status === 'failed');
  for (const r of failed.slice(0, MAX_FAILURES)) {
    lines.push(`#### ${code(r.id)} failed`, '', cell(r.reasons.join('; ')), '');
    const t = tail(r);
    if (t !== undefined) lines.push('<details><summary>log tail</summary>', '', '```text', t.replace(/```/g, "'''"), '```', '', '</details>', '');
  }
  if (failed.length > MAX_FAILURES) lines.push(`… and ${failed.length - MAX_FAILURES} more failures`, '');
  return `${lines.join('\n')}\n`;
}

/**
 * Append `markdown` to the file `GITHUB_STEP_SUMMARY` names in `env`; nothing when it is unset or
 * empty. A summary that cannot be written is not worth failing a build: returns the error message.
 */
export function appendStepSummary(env: NodeJS.ProcessEnv, markdown: string): string | undefined {
  const file = env.GITHUB_STEP_SUMMARY;
  if (!file) return undefined;
  try {
    appendFileSync(path.resolve(file), markdown);
    return undefined;
  } catch (e) {
    return (e as Error).message;
  }
}
