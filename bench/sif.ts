/**
 * SIF conversion benchmark: the whole `imageToSif` (layers flattened and streamed into tar2sqfs,
 * runtime files included; the squashfs moved to the partition offset; the SIF completed around
 * it with SHA-256 and MD5; clean-up) on an image holding ≈500 MB of model-like files (float32
 * weights, which gzip barely shrinks, and text vocabularies), against the squashfs step alone on
 * the same root filesystem, unpacked beforehand (not timed): (b) `mksquashfs` with the same
 * settings and (c) `tar | tar2sqfs -c gzip -j N`, both on every processor as (a) is. Each figure is the median of RUNS (3) runs after
 * one warm-up, interleaved. Parts of (a) are timed too, through a timing runner: tar2sqfs (the
 * streaming included), fallocate, and the rest (the id and digests computed, the front written).
 * Target: (a) ≤ 1.3 × min(b, c).
 * Run: `node out/bench/sif.js [MB]`.
 */
import { execSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import path from 'node:path';
import { ExecaRunner, type ProcessRunner, type RunOptions } from '../engine/process.js';
import { ContentStore } from '../engine/cache/store.js';
import { composeImage } from '../rules/oci/image.js';
import { entriesForCopy, writeLayer } from '../rules/oci/layer.js';
import { unpackImage } from '../rules/oci/unpack.js';
import { addRuntimeFiles, imageToSif, mksquashfsArgs } from '../rules/sif/convert.js';
import { emitRows, median, ms, timed } from './rows.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 3);

/**
 * Model-like files, `megabytes` in all: 90% float32 weights (normally distributed, so the low
 * mantissa bits are noise and gzip saves ~10%) in ~10 MB files, 10% tab-separated vocabularies.
 */
function writeModelTree(dir: string, megabytes: number): void {
  let seed = 7;
  const rand = () => {
    // xorshift32: fast and deterministic
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) / 0x100000000;
  };
  const weightFiles = Math.max(1, Math.round((megabytes * 0.9) / 10));
  for (let f = 0; f < weightFiles; f++) {
    const sub = path.join(dir, `model_${f % 8}`);
    mkdirSync(sub, { recursive: true });
    const w = new Float32Array((10 * 1024 * 1024) / 4);
    for (let i = 0; i < w.length; i += 2) {
      const r = Math.sqrt(-2 * Math.log(rand() + 1e-12)) * 0.05;
      const t = 2 * Math.PI * rand();
      w[i] = r * Math.cos(t);
      w[i + 1] = r * Math.sin(t);
    }
    writeFileSync(path.join(sub, `weights_${f}.bin`), Buffer.from(w.buffer));
  }
  const textFiles = Math.max(1, Math.round((megabytes * 0.1) / 5));
  for (let f = 0; f < textFiles; f++) {
    const lines: string[] = [];
    let size = 0;
    for (let i = 0; size < 5 * 1024 * 1024; i++) {
      const line = `token_${i}_${Math.floor(rand() * 1e6).toString(36)}\t${(rand() * 100).toFixed(4)}\n`;
      lines.push(line);
      size += line.length;
    }
    writeFileSync(path.join(dir, `model_${f % 8}`, `vocab_${f}.tsv`), lines.join(''));
  }
}

/** A runner that records how long each tool took, by name (`argv[0]`), in the last conversion. */
class TimingRunner implements ProcessRunner {
  readonly inner = new ExecaRunner();
  readonly last = new Map<string, number>();
  async run(argv: readonly string[], options?: RunOptions) {
    const t0 = performance.now();
    try {
      return await this.inner.run(argv, options);
    } finally {
      this.last.set(argv[0], performance.now() - t0);
    }
  }
}

const megabytes = Number(process.argv[2] ?? 500);
const root = mkdtempSync(path.join(tmpdir(), 'graph-sif-bench-'));
const tree = path.join(root, 'tree');
process.stdout.write(`writing ${megabytes} MB of model files and the image layer…\n`);
writeModelTree(tree, megabytes);
const total = Number(execSync(`du -sb ${tree}`).toString().split('\t')[0]);
const store = new ContentStore(path.join(root, 'cas'));
const layer = await writeLayer(entriesForCopy(tree, '/opt/models'), store);
rmSync(tree, { recursive: true, force: true });
const image = composeImage(store, undefined, [{ descriptor: { mediaType: layer.mediaType, digest: layer.digest, size: layer.size }, diffId: layer.diffId, createdBy: 'models' }], { env: { PATH: '/usr/bin:/bin' }, cmd: ['/bin/sh'], labels: {} }, 0);

// mksquashfs refuses SOURCE_DATE_EPOCH next to -mkfs-time/-all-time (imageToSif drops it too).
const squashEnv = { ...process.env };
delete squashEnv.SOURCE_DATE_EPOCH;
// The root filesystem (b) and (c) compress: exactly the tree (a) streams (test/flatten.test.ts).
const rootfs = path.join(root, 'rootfs');
const unpackMs: number[] = [];
const runner = new TimingRunner();
const a: number[] = [];
const aSquash: number[] = [];
const aShift: number[] = [];
const b: number[] = [];
const c: number[] = [];
let sifSize = 0;
let sqfsSize = 0;
// Every timed step starts with no dirty pages left by the one before (`sync`, not timed), so one
// step's write-back does not land in the next one's time.
const settle = () => execSync('sync');
for (let i = 0; i <= RUNS; i++) {
  rmSync(rootfs, { recursive: true, force: true });
  settle();
  const u = await timed(async () => {
    await unpackImage(store, image, rootfs);
    addRuntimeFiles(rootfs, image.config);
  });
  const sqfsB = path.join(root, 'b.squashfs');
  settle();
  const tb = await timed(() => execSync(`mksquashfs ${rootfs} ${sqfsB} ${mksquashfsArgs(0).join(' ')}`, { stdio: 'ignore', env: squashEnv }));
  settle();
  const tc = await timed(() => execSync(`tar -C ${rootfs} -c --numeric-owner --owner=0 --group=0 --mtime=@0 . | tar2sqfs -f -q -c gzip -x -j ${availableParallelism()} ${root}/c.squashfs`, { stdio: 'ignore', shell: '/bin/bash' }));
  rmSync(path.join(root, 'c.squashfs'), { force: true });
  rmSync(rootfs, { recursive: true, force: true });
  const out = path.join(root, 'a.sif');
  let result = { size: 0 };
  runner.last.clear();
  settle();
  const ta = await timed(async () => {
    result = await imageToSif({ store, image, scratchDir: path.join(root, 'scratch'), outFile: out, epoch: 0, runner });
  });
  sifSize = result.size;
  sqfsSize = Number(execSync(`stat -c %s ${sqfsB}`).toString());
  rmSync(out, { force: true });
  rmSync(sqfsB, { force: true });
  const squash = runner.last.get('tar2sqfs') ?? runner.last.get('mksquashfs') ?? NaN;
  const shift = runner.last.get('fallocate') ?? NaN;
  process.stdout.write(`run ${i}${i === 0 ? ' (warm-up)' : ''}: a ${(ta / 1000).toFixed(2)} s (tar2sqfs ${(squash / 1000).toFixed(2)} s, fallocate ${(shift / 1000).toFixed(2)} s), b ${(tb / 1000).toFixed(2)} s, c ${(tc / 1000).toFixed(2)} s, unpack ${(u / 1000).toFixed(2)} s\n`);
  if (i === 0) continue;
  a.push(ta);
  aSquash.push(squash);
  aShift.push(shift);
  b.push(tb);
  c.push(tc);
  unpackMs.push(u);
}
rmSync(root, { recursive: true, force: true });

const s = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
const rate = (ms: number) => `${(total / 1e6 / (ms / 1000)).toFixed(1)} MB/s`;
const best = Math.min(median(b), median(c));
process.stdout.write(
  [
    `root filesystem: ${(total / 1e6).toFixed(0)} MB of model files; squashfs ${(sqfsSize / 1e6).toFixed(0)} MB, SIF ${(sifSize / 1e6).toFixed(0)} MB; medians of ${RUNS} after a warm-up`,
    `(a) imageToSif (whole conversion)        ${s(median(a))}  ${rate(median(a))}`,
    `    of which tar2sqfs, streamed into     ${s(median(aSquash))}`,
    `    of which fallocate --insert-range    ${s(median(aShift))}`,
    `(unpack + runtime files, for b and c)    ${s(median(unpackMs))}`,
    `    the rest: id, digests, front         ${s(median(a.map((t, i) => t - aSquash[i] - aShift[i])))}`,
    `(b) mksquashfs alone                     ${s(median(b))}  ${rate(median(b))}`,
    `(c) tar | tar2sqfs -c gzip -j N alone    ${s(median(c))}  ${rate(median(c))}`,
    `(a) / (b) = ${(median(a) / median(b)).toFixed(2)}, (a) / (c) = ${(median(a) / median(c)).toFixed(2)}, (a) / faster = ${(median(a) / best).toFixed(2)} (target ≤ 1.30)`,
    '',
  ].join('\n'),
);
emitRows(
  [
    ['mksquashfs', median(b)],
    ['tar | tar2sqfs -c gzip -j N', median(c)],
  ].map(([name, ref]) => ({
    section: 'SIF',
    case: `convert a ${(total / 1e6).toFixed(0)} MB image (SIF ${(sifSize / 1e6).toFixed(0)} MB)`,
    graph: `${ms(median(a))} (tar2sqfs streamed into ${ms(median(aSquash))}, fallocate ${ms(median(aShift))})`,
    reference: `${name} alone: ${ms(ref as number)}`,
    ratio: median(a) / (ref as number),
    target: '≤ 1.3',
    met: median(a) / (ref as number) <= 1.3,
  })),
);
