/**
 * Build progress reporters. On a TTY (and not under CI): one live status line — counts of
 * running, done, cached and failed, and the nodes running now — with finished nodes printed
 * above it. Otherwise: one plain line per started and finished node, for CI logs. Both end with a
 * summary naming every failure and its log path.
 */
import path from 'node:path';
import type { EngineEvent, EventSink, NodeResult, RunSummary } from '../events.js';
import { formatMs } from '../duration.js';
import type { NodeId } from '../rule.js';

export interface ProgressOptions {
  readonly write: (text: string) => void;
  /** Live view (TTY); plain lines otherwise. */
  readonly live: boolean;
  /** Terminal width for the live line. */
  readonly columns?: number;
  /** Workspace root, to show log paths relative to it. */
  readonly root: string;
  /** Milliseconds clock for redraw throttling (injectable for tests). */
  readonly now?: () => number;
}

/** Redraws of the live line at most this often (ms). */
const REDRAW_MS = 100;

export function progressReporter(options: ProgressOptions): EventSink {
  const { write } = options;
  const running = new Set<NodeId>();
  let total = 0;
  let done = 0;
  let cached = 0;
  let failed = 0;
  let skipped = 0;
  let lastDraw = 0;
  let lineShown = false;
  const rel = (p?: string) => (p ? path.relative(options.root, p) : '');

  const clearLine = () => {
    if (lineShown) write('\r\x1b[K');
    lineShown = false;
  };
  const draw = (force = false) => {
    if (!options.live) return;
    const t = (options.now ?? Date.now)();
    if (!force && t - lastDraw < REDRAW_MS) return;
    lastDraw = t;
    const head = `[${done + cached + failed + skipped}/${total}] running ${running.size} · done ${done} · cached ${cached} · failed ${failed}`;
    const names = [...running].join(', ');
    const width = (options.columns ?? 100) - 1;
    const line = names ? `${head} — ${names}` : head;
    write(`\r\x1b[K${line.length > width ? `${line.slice(0, width - 1)}…` : line}`);
    lineShown = true;
  };
  const above = (text: string) => {
    clearLine();
    write(`${text}\n`);
    draw(true);
  };
  const finished = (r: NodeResult) => {
    const n = done + cached + failed + skipped;
    const counter = `[${String(n).padStart(String(total).length)}/${total}]`;
    if (r.status === 'ran') return `${counter} ran     ${r.id} (${formatMs(r.duration_ms)}${placed(r)})`;
    if (r.status === 'failed') return `${counter} FAILED  ${r.id} (${formatMs(r.duration_ms)}${placed(r)}): ${r.reasons.join('; ')}${r.log ? `\n          log: ${rel(r.log)}` : ''}`;
    if (r.status === 'interrupted') return `${counter} interrupted ${r.id} (${formatMs(r.duration_ms)}${placed(r)})`;
    if (r.status === 'skipped') return `${counter} skipped ${r.id}: ${r.reasons.join('; ')}`;
    return `${counter} cached  ${r.id}`;
  };

  return (e: EngineEvent) => {
    switch (e.type) {
      case 'run-start':
        total = e.total;
        write(`${e.toRun} to run, ${e.cached} cached, ${e.total} nodes; jobs ${e.jobs}\n`);
        draw(true);
        break;
      case 'node-start':
        running.add(e.id);
        if (options.live) draw();
        else write(`start   ${e.id}\n`);
        break;
      case 'node-waiting':
        if (options.live) draw();
        else write(`waiting ${e.id}: another graph process runs it (pid ${e.pid} on ${e.host})\n`);
        break;
      case 'node-finish': {
        const r = e.result;
        running.delete(r.id);
        if (r.status === 'ran') done++;
        else if (r.status === 'cached') cached++;
        else if (r.status === 'failed') failed++;
        else skipped++; // skipped or interrupted: neither ran to its end
        // Cached nodes are summarized, not listed: a no-op build of 10k nodes prints one line.
        if (r.status !== 'cached') {
          if (options.live) above(finished(r));
          else write(`${finished(r)}\n`);
        } else draw();
        break;
      }
      case 'run-finish':
        clearLine();
        write(summaryText(e.summary, options.root));
        break;
    }
  };
}

/** `, slurm job 12 on node1` for a node that ran elsewhere; empty for one that ran here. */
function placed(r: NodeResult): string {
  if (!r.where) return '';
  return `, ${r.where.executor}${r.where.job ? ` job ${r.where.job}` : ''}${r.where.host ? ` on ${r.where.host}` : ''}`;
}

/** The closing summary: counts, duration, and every failure with its log path. */
export function summaryText(s: RunSummary, root: string): string {
  const c = s.counts;
  const lines = [
    `${s.interrupted ? 'interrupted' : c.failed ? 'FAILED' : 'ok'}: ${c.ran} ran, ${c.cached} cached, ${c.failed} failed, ${c.interrupted ? `${c.interrupted} interrupted, ` : ''}${c.skipped} skipped in ${formatMs(s.duration_ms)}`,
  ];
  for (const r of s.results) {
    if (r.status !== 'failed') continue;
    lines.push(`  failed ${r.id}: ${r.reasons.join('; ')}`);
    if (r.log) lines.push(`         log: ${path.relative(root, r.log)}`);
  }
  return `${lines.join('\n')}\n`;
}
