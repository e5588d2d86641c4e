/** The real process runner (execa): exit codes, logs, and ending a whole process group. */
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { captureOutput, ExecaRunner } from '../engine/process.js';
import { processAlive } from './helpers.js';

const test = suite('process');
const runner = new ExecaRunner();
const tmp = () => mkdtempSync(path.join(tmpdir(), 'graph-proc-'));

const alive = processAlive;

test('exit codes and output appended to the log file', async () => {
  const log = path.join(tmp(), 'node.log');
  const ok = await runner.run(['sh', '-c', 'echo out; echo err >&2'], { logFile: log });
  assert.equal(ok, { exitCode: 0, signal: undefined, aborted: false });
  const bad = await runner.run(['sh', '-c', 'echo again; exit 3'], { logFile: log });
  assert.is(bad.exitCode, 3);
  assert.is(readFileSync(log, 'utf8'), 'out\nerr\nagain\n');
});

test('the environment given is the whole environment', async () => {
  const log = path.join(tmp(), 'env.log');
  await runner.run(['sh', '-c', 'echo "[$ONLY][$HOME]"'], { logFile: log, env: { ONLY: 'yes', PATH: process.env.PATH } });
  assert.is(readFileSync(log, 'utf8'), '[yes][]\n');
});

test('a missing program is an error, not an exit code', async () => {
  try {
    await runner.run(['/nonexistent/tool', 'x']);
    assert.unreachable('should throw');
  } catch (e) {
    assert.match((e as Error).message, 'ENOENT');
  }
});

test('abort ends the whole process group, grandchildren included', async () => {
  const dir = tmp();
  const pidFile = path.join(dir, 'grandchild.pid');
  const controller = new AbortController();
  const run = runner.run(['sh', '-c', `sleep 60 & echo $! > ${pidFile}; wait`], { signal: controller.signal });
  while (!existsSync(pidFile) || !readFileSync(pidFile, 'utf8').trim()) await new Promise((r) => setTimeout(r, 10));
  const grandchild = Number(readFileSync(pidFile, 'utf8'));
  assert.ok(alive(grandchild));
  const t0 = Date.now();
  controller.abort();
  const r = await run;
  assert.ok(r.aborted);
  assert.ok(Date.now() - t0 < 1500, 'ended promptly by SIGTERM');
  await new Promise((res) => setTimeout(res, 50));
  assert.not.ok(alive(grandchild), 'grandchild ended with its group');
});

test('captureOutput returns stdout, and names the command and its stderr on failure', async () => {
  assert.is(await captureOutput(['sh', '-c', 'printf hello']), 'hello');
  try {
    await captureOutput(['sh', '-c', 'echo broken >&2; exit 1']);
    assert.unreachable('should throw');
  } catch (e) {
    assert.is((e as Error).message, "sh -c echo broken >&2; exit 1 failed: broken");
  }
});

test.run();
