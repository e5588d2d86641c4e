/**
 * Push benchmark: a ≈300 MB image (five random-ish gzip layers) pushed to a loopback
 * docker-registry by `pushImage` vs `skopeo copy oci:LAYOUT docker://…`, median of BENCH_RUNS
 * (default 3) after one warm-up; then a re-push of the unchanged image, counting its requests.
 *
 * Every push goes to a fresh registry (a new process, port and storage): skopeo remembers where it
 * has seen blobs (its blob-info cache) and would mount them from an earlier run's repository on the
 * same host:port instead of uploading, which is not the case being measured.
 * Run: `node out/bench/push.js [MB]` (PUSH_CONCURRENCY and PUSH_CHUNK_MB override the defaults).
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ContentStore } from '../engine/cache/store.js';
import { composeImage } from '../rules/oci/image.js';
import { entriesForCopy, writeLayer } from '../rules/oci/layer.js';
import { writeLayout } from '../rules/oci/layout.js';
import { pushImage, type PushOptions } from '../rules/registry/push.js';
import { startRegistry } from '../test/helpers.js';
import { emitRows, median, ms, timed } from './rows.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const megabytes = Number(process.argv[2] ?? 300);
const options: PushOptions = {
  ...(process.env.PUSH_CONCURRENCY ? { concurrency: Number(process.env.PUSH_CONCURRENCY) } : {}),
  ...(process.env.PUSH_CHUNK_MB ? { chunkSize: Number(process.env.PUSH_CHUNK_MB) * 1024 * 1024 } : {}),
};

/** A file of `mb` MiB: three random MiB in four, the fourth a repeated pattern (gzip gains ~25%). */
function writeRandomish(file: string, mb: number, seed: number): void {
  const fd = openSync(file, 'w');
  const pattern = Buffer.alloc(1 << 20, `weights ${seed} `);
  for (let i = 0; i < mb; i++) writeSync(fd, i % 4 === 3 ? pattern : randomBytes(1 << 20));
  closeSync(fd);
}

const root = mkdtempSync(path.join(tmpdir(), 'graph-push-bench-'));
const store = new ContentStore(path.join(root, 'cas'));
const layers = [];
for (const [i, share] of [0.4, 0.27, 0.17, 0.1, 0.06].entries()) {
  const dir = path.join(root, `src${i}`);
  mkdirSync(dir);
  writeRandomish(path.join(dir, 'weights.bin'), Math.max(1, Math.round((megabytes / 0.75) * share)), i);
  const layer = await writeLayer(entriesForCopy(dir, `/opt/model${i}`), store, { level: 1 });
  layers.push({ descriptor: { mediaType: layer.mediaType, digest: layer.digest, size: layer.size }, diffId: layer.diffId, createdBy: `model ${i}` });
  rmSync(dir, { recursive: true });
}
const image = composeImage(store, undefined, layers, { env: {}, labels: {} }, 0);
const layout = path.join(root, 'layout');
writeLayout(store, layout, [{ tag: 'bench', image }]);
const bytes = layers.reduce((n, l) => n + l.descriptor.size, 0);

const ours: number[] = [];
const skopeo: number[] = [];
for (let i = 0; i <= RUNS; i++) {
  // Alternate who goes first, so neither always gets the warmer page cache.
  for (const who of i % 2 ? ['skopeo', 'ours'] : ['ours', 'skopeo']) {
    const registry = await startRegistry();
    try {
      const ms =
        who === 'ours'
          ? await timed(() => pushImage(store, image, { registry: registry.host, repository: `bench/ours-${i}`, tag: 'v1' }, options))
          : await timed(() => execFileSync('skopeo', ['copy', '--quiet', '--dest-tls-verify=false', `oci:${layout}:bench`, `docker://${registry.host}/bench/skopeo-${i}:v1`], { stdio: 'pipe' }));
      if (i > 0) (who === 'ours' ? ours : skopeo).push(ms);
    } finally {
      await registry.stop();
    }
  }
}

// The re-push: counting every request our client sends.
const registry = await startRegistry();
const requests: string[] = [];
const realFetch = globalThis.fetch;
let repushMs: number;
let skopeoRepushMs: number;
try {
  const ref = { registry: registry.host, repository: 'bench/again', tag: 'v1' };
  await pushImage(store, image, ref, options);
  execFileSync('skopeo', ['copy', '--quiet', '--dest-tls-verify=false', `oci:${layout}:bench`, `docker://${registry.host}/bench/skopeo-again:v1`], { stdio: 'pipe' });
  globalThis.fetch = (input, init) => {
    requests.push(init?.method ?? 'GET');
    return realFetch(input, init);
  };
  repushMs = await timed(() => pushImage(store, image, ref, options));
  globalThis.fetch = realFetch;
  skopeoRepushMs = await timed(() =>
    execFileSync('skopeo', ['copy', '--quiet', '--dest-tls-verify=false', `oci:${layout}:bench`, `docker://${registry.host}/bench/skopeo-again:v1`], { stdio: 'pipe' }),
  );
} finally {
  globalThis.fetch = realFetch;
  await registry.stop();
}

const mbps = (ms: number) => (bytes / 1e6 / (ms / 1000)).toFixed(0);
const counts = Object.entries(requests.reduce<Record<string, number>>((m, r) => ((m[r] = (m[r] ?? 0) + 1), m), {}))
  .map(([k, v]) => `${v} ${k}`)
  .join(', ');
process.stdout.write(
  [
    `image: ${layers.length} layers + config, ${(bytes / 1e6).toFixed(1)} MB of blobs (manifest ${image.manifestDescriptor.digest.slice(0, 19)}…, layers sha256 ${createHash('sha256').update(layers.map((l) => l.descriptor.digest).join()).digest('hex').slice(0, 8)})`,
    `push to a fresh loopback registry, median of ${RUNS} after a warm-up:`,
    `  pushImage     ${median(ours).toFixed(0)} ms (${mbps(median(ours))} MB/s)   runs: ${ours.map((x) => x.toFixed(0)).join(', ')}`,
    `  skopeo copy   ${median(skopeo).toFixed(0)} ms (${mbps(median(skopeo))} MB/s)   runs: ${skopeo.map((x) => x.toFixed(0)).join(', ')}`,
    `  ratio         ${(median(ours) / median(skopeo)).toFixed(2)}× skopeo (target ≤ 1.2×)`,
    `re-push of the unchanged image: pushImage ${repushMs.toFixed(0)} ms, ${requests.length} requests (${counts}); skopeo copy ${skopeoRepushMs.toFixed(0)} ms`,
    '',
  ].join('\n'),
);
emitRows([
  {
    section: 'publish',
    case: `push ${(bytes / 1e6).toFixed(0)} MB (${layers.length} layers) to a loopback registry`,
    graph: `${ms(median(ours))}, ${mbps(median(ours))} MB/s`,
    reference: `skopeo copy: ${ms(median(skopeo))}, ${mbps(median(skopeo))} MB/s`,
    ratio: median(ours) / median(skopeo),
  },
  { section: 'publish', case: 're-push, unchanged image', graph: `${ms(repushMs)}, ${requests.length} requests (${counts})`, reference: `skopeo copy: ${ms(skopeoRepushMs)}`, ratio: repushMs / skopeoRepushMs },
]);
rmSync(root, { recursive: true, force: true });
