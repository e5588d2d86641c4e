/** Preloaded by bench/run.ts (`node --import`): writes the process's peak RSS (kB) at exit. */
import { writeFileSync } from 'node:fs';

const file = process.env.GRAPH_BENCH_RSS;
if (file) process.on('exit', () => writeFileSync(file, String(process.resourceUsage().maxRSS)));
