/**
 * `node out/bench/remote.js [NODES]`: a fresh CI runner's no-op against a warm remote cache. The
 * synthetic zoo of about NODES nodes (default 4,500; bench/zoo.ts) is run once with instant rules
 * on "machine A", uploading every result to a loopback nginx (WebDAV, test/nginx.ts); then
 * "machine B", a checkout with no .graph/ at all, runs `graph build --remote-cache URL`, every
 * time from scratch (its .graph/ removed before each run). Next to it, side by side: the local
 * no-op (`graph build` on A, its .graph/ warm). Reports both medians, their ratio (target ≤ 3),
 * and B's requests and bytes per run from nginx's access log.
 */
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { openRemoteCache } from '../engine/cache/remote/config.js';
import { startNginx } from '../test/nginx.js';
import { fillCache, instantRules } from './plan-once.js';
import { emitRows, median, ms } from './rows.js';
import { modelsForNodes, writeZoo } from './zoo.js';

const CLI = fileURLToPath(new URL('../cli.js', import.meta.url));
const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const target = Number(process.argv[2] ?? 4500);
const log = (line: string) => process.stderr.write(`${line}\n`);
/** As bench/run.ts: graph's processes without the host's CA bundle (≈50 ms a start). */
const env = { ...process.env, CI: 'true', NODE_EXTRA_CA_CERTS: undefined };

const server = await startNginx();
const a = mkdtempSync(path.join(tmpdir(), 'graph-bench-remote-a-'));
const b = mkdtempSync(path.join(tmpdir(), 'graph-bench-remote-b-'));
try {
  writeZoo(a, { models: modelsForNodes(target) });
  for (const f of readdirSync(a)) cpSync(path.join(a, f), path.join(b, f), { recursive: true });

  log(`remote cache: ≈${target} nodes: filling the local cache and the remote one…`);
  const { nodes } = await fillCache(a, instantRules, 8, await openRemoteCache({ flag: server.url }, {}, log));

  const run = (dir: string, args: string[]) => {
    const t0 = performance.now();
    const r = spawnSync(process.execPath, [CLI, 'build', ...args], { cwd: dir, env, stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
    const wall = performance.now() - t0;
    if (r.status !== 0) throw new Error(`graph build in ${dir} exited ${r.status}: ${r.stderr.slice(-400)}`);
    if (!r.stderr.includes(`ok: 0 ran, ${nodes.toLocaleString('en-US')} cached`) && !r.stderr.includes(`ok: 0 ran, ${nodes} cached`)) throw new Error(`not a no-op: ${r.stderr.slice(-400)}`);
    return wall;
  };
  const local: number[] = [];
  const fresh: number[] = [];
  const requests: number[] = [];
  const bytes: number[] = [];
  log(`remote cache: ${nodes} nodes: measuring the fresh runner and the local no-op side by side, ${RUNS} runs…`);
  for (let i = 0; i <= RUNS; i++) {
    const l = run(a, []);
    rmSync(path.join(b, '.graph'), { recursive: true, force: true });
    const before = server.requests().length;
    const f = run(b, ['--remote-cache', server.url]);
    const reqs = server.requests().slice(before);
    if (i === 0) continue; // warm-up
    local.push(l);
    fresh.push(f);
    requests.push(reqs.length);
    bytes.push(reqs.reduce((n, q) => n + q.bytes, 0));
  }
  const gets = (kind: string) => server.requests().filter((q) => q.method === 'GET' && q.path.startsWith(`/${kind}/`)).length;
  const label = `${nodes.toLocaleString('en-US')} nodes, fresh runner, warm remote cache (loopback nginx)`;
  const ratio = median(fresh) / median(local);
  log(`remote cache: ${label}: ${ms(median(fresh))} vs local no-op ${ms(median(local))}; ${median(requests)} requests, ${(median(bytes) / 1024).toFixed(0)} KiB per run (GET ac: ${gets('ac')}, GET cas: ${gets('cas')} over all runs)`);
  emitRows([
    {
      section: 'remote cache',
      case: label,
      graph: `${ms(median(fresh))}; ${median(requests).toLocaleString('en-US')} requests, ${(median(bytes) / 2 ** 20).toFixed(1)} MiB down`,
      reference: `local no-op (warm .graph/): ${ms(median(local))}`,
      ratio,
      target: '≤ 3',
      met: ratio <= 3,
    },
  ]);
} finally {
  await server.stop();
  rmSync(a, { recursive: true, force: true });
  rmSync(b, { recursive: true, force: true });
}
