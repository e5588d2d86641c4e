/**
 * Test runner (`npm test`, `npm run test:unit`, `npm run test:e2e`): runs uvu over the compiled
 * tests with TMPDIR pointing at a fresh directory, and removes that directory afterwards, so the
 * thousands of workspaces, stores and image layouts the tests make (gigabytes per run) never pile
 * up in the system's temp directory. `GRAPH_KEEP_TEST_TMP=1` keeps it (its path is printed) for a
 * look at a failure.
 *
 * Usage: node out/scripts/test.js DIR PATTERN  (as `uvu DIR PATTERN`); exit status: uvu's, or 130
 * on an interrupt.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';

// uvu exports no package.json: its bin sits beside the main entry's folder (dist/).
const uvu = path.join(path.dirname(createRequire(import.meta.url).resolve('uvu')), '..', 'bin.js');
const dir = mkdtempSync(path.join(tmpdir(), 'graph-tests-'));
const child = spawn(process.execPath, [uvu, ...process.argv.slice(2)], { stdio: 'inherit', env: { ...process.env, TMPDIR: dir } });
// The child gets the terminal's interrupt too; we only wait for it, then clean up.
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => child.kill(signal));
child.on('exit', (code, signal) => {
  if (process.env.GRAPH_KEEP_TEST_TMP) process.stderr.write(`test temp directory kept: ${dir}\n`);
  else rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
  process.exit(signal ? 130 : (code ?? 1));
});
