/**
 * Hashing benchmark: digesting a ≈1 GB tree of model files (`FileDigester`, the input digests of
 * action keys) against `sha256sum` over the same files, side by side.
 *
 * - cold: no stat memo, and the page cache dropped before every run of either side (needs root to
 *   write /proc/sys/vm/drop_caches; without it the files are cached and the row says so);
 * - cached: no stat memo, files in the page cache (the hashing itself, without the disk);
 * - warm: the stat memo from a previous run: every file is a memo hit and no file byte is read,
 *   counted by the digester (`stats.bytesRead`) and by the kernel (`rchar` of /proc/self/io
 *   minus the memo file's size).
 *
 * The tree: 40 model directories, each a 24 MiB weights file and 20 small files (4–64 KiB).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expandInputs, FileDigester } from '../engine/key/files.js';
import { emitRows, median, ms } from './rows.js';

export interface HashRow {
  readonly mode: 'cold' | 'cached' | 'warm';
  readonly files: number;
  readonly bytes: number;
  /** Median ms of graph's digester. */
  readonly graphMs: number;
  /** Median ms of sha256sum (undefined for warm: sha256sum has no memo). */
  readonly sha256sumMs?: number;
  /** File bytes the digester read (median run). */
  readonly bytesRead: number;
  /** Bytes the process read by the kernel's count, less the memo file (warm only). */
  readonly kernelBytesRead?: number;
  /** cold only: whether the page cache could be dropped. */
  readonly pageCacheDropped?: boolean;
}

function writeTree(dir: string): void {
  const big = Buffer.allocUnsafe(24 << 20);
  for (let m = 0; m < 40; m++) {
    const d = path.join(dir, `model_${m}`);
    mkdirSync(d, { recursive: true });
    writeFileSync(path.join(d, 'weights.h5'), randomFillSync(big));
    for (let f = 0; f < 20; f++) writeFileSync(path.join(d, `file_${f}.txt`), randomFillSync(Buffer.allocUnsafe(4096 * (1 + ((m * 20 + f) % 16)))));
  }
}

/** Write back dirty pages and drop the page cache; false when not allowed (not root). */
function dropCaches(): boolean {
  execFileSync('sync');
  try {
    writeFileSync('/proc/sys/vm/drop_caches', '3');
    return true;
  } catch {
    return false;
  }
}

function rchar(): number {
  return Number(/rchar: (\d+)/.exec(readFileSync('/proc/self/io', 'utf8'))![1]);
}

/** Run the benchmark; one row per mode. */
export async function hashBench(opts: { runs: number; log?: (line: string) => void }): Promise<HashRow[]> {
  const root = mkdtempSync(path.join(tmpdir(), 'graph-bench-hash-'));
  try {
    writeTree(path.join(root, 'models'));
    const files = expandInputs(root, [{ kind: 'dir', path: 'models' }]);
    const bytes = files.reduce((n, f) => n + statSync(path.join(root, f)).size, 0);
    const memo = path.join(root, '.graph', 'stat-memo.json');
    const list = path.join(root, 'files.list');
    writeFileSync(list, files.map((f) => `${f}\0`).join(''));

    const ours = (memoPath: string | undefined) => {
      const t0 = performance.now();
      // What planning does: expand the declared input, fingerprint every file.
      const d = new FileDigester(root, memoPath);
      for (const f of expandInputs(root, [{ kind: 'dir', path: 'models' }])) d.fingerprint(f);
      const ms = performance.now() - t0;
      d.save();
      return { ms, bytesRead: d.stats.bytesRead };
    };
    const theirs = () => {
      const t0 = performance.now();
      const r = spawnSync('sh', ['-c', 'xargs -0 sha256sum < files.list > /dev/null'], { cwd: root });
      if (r.status !== 0) throw new Error(`sha256sum failed: ${r.stderr}`);
      return performance.now() - t0;
    };

    const rows: HashRow[] = [];
    let dropped = true;
    for (const mode of ['cold', 'cached'] as const) {
      const g: number[] = [];
      const s: number[] = [];
      let read = 0;
      for (let i = 0; i <= opts.runs; i++) {
        if (mode === 'cold') dropped &&= dropCaches();
        const r = ours(undefined);
        if (mode === 'cold') dropped &&= dropCaches();
        const t = theirs();
        if (i === 0) continue;
        g.push(r.ms);
        s.push(t);
        read = r.bytesRead;
      }
      rows.push({ mode, files: files.length, bytes, graphMs: median(g), sha256sumMs: median(s), bytesRead: read, pageCacheDropped: mode === 'cold' ? dropped : undefined });
      opts.log?.(`hashing ${mode}: graph ${median(g).toFixed(0)} ms, sha256sum ${median(s).toFixed(0)} ms${mode === 'cold' && !dropped ? ' (page cache not dropped: not root)' : ''}`);
    }
    // Warm: a memo from a full run, then runs that must read no file bytes.
    ours(memo);
    const w: number[] = [];
    let read = 0;
    let kernel = 0;
    for (let i = 0; i <= opts.runs; i++) {
      const before = rchar();
      const r = ours(memo);
      const after = rchar();
      if (i === 0) continue;
      w.push(r.ms);
      read = r.bytesRead;
      kernel = after - before - statSync(memo).size;
    }
    rows.push({ mode: 'warm', files: files.length, bytes, graphMs: median(w), bytesRead: read, kernelBytesRead: kernel });
    opts.log?.(`hashing warm: graph ${median(w).toFixed(0)} ms, ${read} file bytes read (kernel count less the memo: ${kernel})`);
    return rows;
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const rows = await hashBench({ runs: Number(process.env.BENCH_RUNS ?? 5), log: (l) => process.stderr.write(`${l}\n`) });
  const mbps = (t: number, bytes: number) => `${(bytes / 1e6 / (t / 1000)).toFixed(0)} MB/s`;
  emitRows(
    rows.map((r) =>
      r.mode === 'warm'
        ? {
            section: 'hashing',
            case: `warm (stat memo): ${r.files} files, ${(r.bytes / 1e9).toFixed(2)} GB`,
            graph: `${ms(r.graphMs)}, ${r.bytesRead} file bytes read (kernel rchar less the memo file: ${r.kernelBytesRead} bytes)`,
            reference: 'must read 0 bytes',
            target: '0 bytes',
            met: r.bytesRead === 0,
          }
        : {
            section: 'hashing',
            case: `${r.mode === 'cold' ? `cold${r.pageCacheDropped ? ' (page cache dropped)' : ' (page cache NOT dropped)'}` : 'files in page cache'}: ${r.files} files, ${(r.bytes / 1e9).toFixed(2)} GB`,
            graph: `${ms(r.graphMs)}, ${mbps(r.graphMs, r.bytes)}`,
            reference: `sha256sum: ${ms(r.sha256sumMs!)}, ${mbps(r.sha256sumMs!, r.bytes)}`,
            // Throughput ratio: graph's MB/s ÷ sha256sum's (higher is better).
            ratio: r.sha256sumMs! / r.graphMs,
            target: r.mode === 'cold' ? '≥ 0.8 (throughput)' : undefined,
            met: r.mode === 'cold' ? r.sha256sumMs! / r.graphMs >= 0.8 : undefined,
          },
    ),
  );
}
