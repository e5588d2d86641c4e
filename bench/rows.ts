/**
 * One row of the benchmark table: a case, graph's figure next to the reference measured in the
 * same run on the same input, their ratio (graph ÷ reference; lower is better unless the target
 * says otherwise) and the target. Each bench script prints its rows as one `BENCH_ROWS <json>`
 * line on stdout, which bench/run.ts collects into the table and bench/RESULTS.md.
 */
export interface BenchRow {
  /** plan, no-op build, hashing, layer build, scheduling, publish, SIF. */
  readonly section: string;
  /** What was measured, e.g. `10,065 nodes`. */
  readonly case: string;
  /** graph's figure with its unit, e.g. `812 ms, 150 MB RSS`. */
  readonly graph: string;
  /** The reference's name and figure, e.g. `ninja -n: 75 ms`. */
  readonly reference: string;
  /** graph ÷ reference (or the section's own measure, e.g. makespan ÷ bound). */
  readonly ratio?: number;
  /** The target for this row, e.g. `≤ 10`. */
  readonly target?: string;
  /** Whether `ratio` meets `target`. */
  readonly met?: boolean;
}

/** Print rows for bench/run.ts. */
export function emitRows(rows: readonly BenchRow[]): void {
  process.stdout.write(`BENCH_ROWS ${JSON.stringify(rows)}\n`);
}

/** Wall milliseconds `fn` takes (awaited when it returns a promise). */
export async function timed(fn: () => unknown): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

/** Median of a non-empty list. */
export function median(xs: readonly number[]): number {
  return [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
}

/** `1,234 ms` or `12.3 s`. */
export function ms(x: number): string {
  return x >= 10_000 ? `${(x / 1000).toFixed(1)} s` : `${Math.round(x).toLocaleString('en-US')} ms`;
}
