/**
 * Layer build benchmark: the daemonless builder (tar-stream + gzip -6 in parallel blocks on every
 * core, digest and diff_id in one pass, into the store) vs `tar -c DIR | gzip -6 > FILE` and
 * `tar -c DIR | pigz -6 > FILE` (pigz on the same cores; `apt-get install pigz`) on the same
 * ≈200 MB directory of model files; then a rebuild with unchanged inputs through the planner,
 * counting file bytes read. Run: `node out/bench/layer.js [MB]`.
 */
import { execSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { FileDigester, expandInputs } from '../engine/key/files.js';
import { ContentStore } from '../engine/cache/store.js';
import { entriesForCopy, writeLayer } from '../rules/oci/layer.js';
import { emitRows, median, ms, timed } from './rows.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 3);

/** Model-like files: float32 weights (noisy, little redundancy) and text vocabularies. */
export function writeModelTree(dir: string, megabytes: number): void {
  let seed = 42;
  const rand = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  const files = Math.max(1, Math.round(megabytes / 10));
  for (let f = 0; f < files; f++) {
    const sub = path.join(dir, `model_${f % 4}`);
    mkdirSync(sub, { recursive: true });
    const weights = new Float32Array((9 * 1024 * 1024) / 4);
    for (let i = 0; i < weights.length; i++) weights[i] = Math.round((rand() - 0.5) * 1000) / 1000;
    writeFileSync(path.join(sub, `weights_${f}.bin`), Buffer.from(weights.buffer));
    const vocab = Array.from({ length: 90_000 }, (_, i) => `token_${i}\t${(rand() * 100).toFixed(3)}`).join('\n');
    writeFileSync(path.join(sub, `vocab_${f}.tsv`), vocab.slice(0, 1024 * 1024));
  }
}

const megabytes = Number(process.argv[2] ?? 200);
const root = mkdtempSync(path.join(tmpdir(), 'graph-layer-bench-'));
const tree = path.join(root, 'tree');
writeModelTree(tree, megabytes);
const total = Number(execSync(`du -sb ${tree}`).toString().split('\t')[0]);
const ours: number[] = [];
const reference: number[] = [];
const pigz: number[] = [];
const hasPigz = (() => {
  try {
    execSync('command -v pigz', { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();
for (let i = 0; i <= RUNS; i++) {
  const store = new ContentStore(path.join(root, `cas-${i}`));
  const a = await timed(() => writeLayer(entriesForCopy(tree, '/opt/models'), store));
  const b = await timed(() => execSync(`tar -c -C ${tree} . | gzip -6 > ${root}/ref.tar.gz`));
  const c = hasPigz ? await timed(() => execSync(`tar -c -C ${tree} . | pigz -6 > ${root}/ref.tar.gz`)) : 0;
  rmSync(path.join(root, `cas-${i}`), { recursive: true, force: true });
  if (i === 0) continue; // warm-up
  ours.push(a);
  reference.push(b);
  pigz.push(c);
}
const digester = new FileDigester(tree, path.join(root, 'memo.json'));
for (const f of expandInputs(tree, [{ kind: 'dir', path: '.' }])) digester.fingerprint(f);
digester.save();
const warm = new FileDigester(tree, path.join(root, 'memo.json'));
await new Promise((r) => setTimeout(r, 10));
for (const f of expandInputs(tree, [{ kind: 'dir', path: '.' }])) warm.fingerprint(f);
const mb = (ms: number) => (total / 1e6 / (ms / 1000)).toFixed(1);
process.stdout.write(
  `layer build of ${(total / 1e6).toFixed(0)} MB, median of ${RUNS} after a warm-up\n` +
    `| builder | ms | MB/s | ratio to tar | gzip -6 |\n| --- | --- | --- | --- |\n` +
    `| graph writeLayer (gzip -6, parallel blocks) | ${median(ours).toFixed(0)} | ${mb(median(ours))} | ${(median(ours) / median(reference)).toFixed(2)} |\n` +
    `| tar -c \\| gzip -6 | ${median(reference).toFixed(0)} | ${mb(median(reference))} | 1.00 |\n` +
    (hasPigz ? `| tar -c \\| pigz -6 | ${median(pigz).toFixed(0)} | ${mb(median(pigz))} | ${(median(pigz) / median(reference)).toFixed(2)} |\n` : '') +
    `warm re-digest of the tree: ${warm.stats.bytesRead} bytes read, ${warm.stats.memoHits} memo hits\n`,
);
const size = `${(total / 1e6).toFixed(0)} MB of model files`;
emitRows([
  {
    section: 'layer build',
    case: size,
    graph: `${ms(median(ours))}, ${mb(median(ours))} MB/s`,
    reference: `tar -c | gzip -6: ${ms(median(reference))}, ${mb(median(reference))} MB/s`,
    ratio: median(ours) / median(reference),
    target: '≤ 1.5',
    met: median(ours) / median(reference) <= 1.5,
  },
  ...(hasPigz
    ? [
        {
          section: 'layer build',
          case: size,
          graph: `${ms(median(ours))}`,
          reference: `tar -c | pigz -6: ${ms(median(pigz))}, ${mb(median(pigz))} MB/s`,
          ratio: median(ours) / median(pigz),
          target: '≤ 1.0',
          met: median(ours) / median(pigz) <= 1.0,
        },
      ]
    : [{ section: 'layer build', case: size, graph: `${ms(median(ours))}`, reference: 'pigz: not installed' }]),
  { section: 'layer build', case: `${size}, unchanged: re-digest`, graph: `${warm.stats.bytesRead} bytes read, ${warm.stats.memoHits} memo hits`, reference: 'must read 0 bytes', target: '0 bytes', met: warm.stats.bytesRead === 0 },
]);
rmSync(root, { recursive: true, force: true });
