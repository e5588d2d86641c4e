/**
 * Writes `out/build-id`: the SHA-256 of graph's built modules (every file under `out/` but the
 * tests, benchmarks and scripts), so caches of what graph's code computes (the compiled graph,
 * engine/compile/snapshot.ts) are never used by other code. Run by `npm run build`.
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const OUT = fileURLToPath(new URL('..', import.meta.url));
const SKIP = new Set(['test', 'bench', 'scripts', 'build-id']);

const h = createHash('sha256');
const visit = (dir: string, rel: string): void => {
  for (const e of readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const r = rel ? `${rel}/${e.name}` : e.name;
    if (!rel && SKIP.has(e.name)) continue;
    if (e.isDirectory()) visit(path.join(dir, e.name), r);
    else if (e.isFile() && !e.name.endsWith('.map')) {
      const bytes = readFileSync(path.join(dir, e.name));
      h.update(`${r}\0${bytes.length}\0`).update(bytes);
    }
  }
};
visit(OUT, '');
writeFileSync(path.join(OUT, 'build-id'), `${h.digest('hex')}\n`);
