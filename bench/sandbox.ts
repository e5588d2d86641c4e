/**
 * Test start-up benchmark: what running a test command in the bubblewrap runtime adds over
 * running the same command directly. The command is busybox-static's `sh` (from the host's
 * Debian mirror) copying /input/x to /output/y, in both cases the same binary:
 * (a) `BubblewrapBackend.run` on busybox's root filesystem, the whole call a test node makes
 *     (request checks, the log line, bwrap's namespaces and mounts, the sandbox's end);
 * (b) the same `sh -c` started directly through the same process runner, on host paths.
 * Medians of 30 runs each (or BENCH_RUNS, when more) after 3 warm-ups, interleaved. Target: (a) − (b) < 100 ms.
 * Run: `node out/bench/sandbox.js`.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ExecaRunner } from '../engine/process.js';
import { detectBackend } from '../rules/runtime/runtime.js';
import { busyboxRoot } from '../test/helpers.js';
import { emitRows, median, timed } from './rows.js';

/** At least 30 runs (they are cheap, and a start-up time is noisy): BENCH_RUNS only raises it. */
const RUNS = Math.max(30, Number(process.env.BENCH_RUNS ?? 30));
const WARMUP = 3;

const root = mkdtempSync(path.join(tmpdir(), 'graph-sandbox-bench-'));
const rootfs = busyboxRoot(path.join(root, 'rootfs'));
const input = path.join(root, 'input');
mkdirSync(input);
writeFileSync(path.join(input, 'x'), 'model input\n');
const backend = await detectBackend('bubblewrap');
const runner = new ExecaRunner();
const logFile = path.join(root, 'log');

const sandboxed: number[] = [];
const direct: number[] = [];
for (let i = 0; i < WARMUP + RUNS; i++) {
  const outA = path.join(root, `a${i}`);
  const ta = await timed(async () => {
    const outcome = await backend.run({
      rootfs,
      command: ['sh', '-c', 'cat /input/x > /output/y'],
      env: {},
      inputDir: input,
      outputDir: outA,
      signal: new AbortController().signal,
      logFile,
      timeoutMs: 60_000,
    });
    if (outcome.exitCode !== 0) throw new Error(`the sandboxed command failed: ${outcome.reason}`);
  });
  const outB = path.join(root, `b${i}`);
  mkdirSync(outB);
  const tb = await timed(async () => {
    const r = await runner.run([path.join(rootfs, 'bin', 'busybox'), 'sh', '-c', `cat ${input}/x > ${outB}/y`], { logFile });
    if (r.exitCode !== 0) throw new Error('the direct command failed');
  });
  if (i < WARMUP) continue;
  sandboxed.push(ta);
  direct.push(tb);
}
rmSync(root, { recursive: true, force: true });

const a = median(sandboxed);
const b = median(direct);
const added = a - b;
process.stdout.write(`(a) in bubblewrap ${a.toFixed(1)} ms, (b) directly ${b.toFixed(1)} ms: bubblewrap adds ${added.toFixed(1)} ms (target < 100 ms); medians of ${RUNS}\n`);
emitRows([
  {
    section: 'test start',
    case: 'a test command (busybox sh copying /input to /output)',
    graph: `in bubblewrap: ${a.toFixed(1)} ms (adds ${added.toFixed(1)} ms)`,
    reference: `the same command run directly: ${b.toFixed(1)} ms`,
    target: 'adds < 100 ms',
    met: added < 100,
  },
]);
