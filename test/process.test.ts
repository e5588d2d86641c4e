/** The real process runner (execa): exit codes, logs, and ending a whole process group. */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { fileURLToPath } from 'node:url';
import { captureOutput, ExecaRunner, INTERRUPT_SETTLE_MS, killAllProcesses, readOutput } from '../engine/process.js';
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
  await runner.run(['env'], { logFile: log, env: { ONLY: 'yes', PATH: process.env.PATH } });
  assert.equal(readFileSync(log, 'utf8').split('\n').filter(Boolean).sort(), ['ONLY=yes', `PATH=${process.env.PATH}`]);
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

test('killAllProcesses ends at once the groups that a SIGTERM would leave running for the grace period', async () => {
  const dir = tmp();
  const pidFile = path.join(dir, 'pid');
  const interrupt = new AbortController();
  const run = runner.run(['sh', '-c', `trap '' TERM; echo $$ > ${pidFile}; while :; do sleep 0.05; done`], { signal: interrupt.signal });
  while (!existsSync(pidFile) || !readFileSync(pidFile, 'utf8').trim()) await new Promise((r) => setTimeout(r, 10));
  interrupt.abort();
  await new Promise((r) => setTimeout(r, 200));
  assert.ok(alive(Number(readFileSync(pidFile, 'utf8'))), 'SIGTERM ignored: still running, within the grace period');
  const t0 = Date.now();
  killAllProcesses();
  assert.equal(await run, { exitCode: undefined, signal: 'SIGKILL', aborted: true });
  assert.ok(Date.now() - t0 < 500, `ended ${Date.now() - t0} ms after, not at the end of the grace period`);
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

test('readOutput streams stdout, ends only on exit 0, and fails with what `fail` makes of a bad end', async () => {
  const collect = async (argv: string[]) => {
    let text = '';
    for await (const c of readOutput(argv, (f) => new Error(`${f.error ? `cannot start: ${f.error.message}` : `exit ${f.exitCode ?? f.signal}`}; stderr ${f.stderr.trim()}`))) text += c;
    return text;
  };
  assert.is(await collect(['sh', '-c', 'printf hello']), 'hello');
  assert.is(await collect(['sh', '-c', 'printf partial; echo bad >&2; exit 4']).catch((e: Error) => e.message), 'exit 4; stderr bad');
  assert.match(await collect(['/nonexistent/tool']).catch((e: Error) => e.message), /^cannot start: .*ENOENT/);
});

/** Wait until `file` holds `n` lines (pids written by the children); returns them as numbers. */
async function pidsIn(file: string, n: number): Promise<number[]> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const lines = existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean) : [];
    if (lines.length >= n) return lines.map(Number);
    if (Date.now() > deadline) throw new Error(`only ${lines.length} of ${n} pids in ${file}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function ended(pids: number[], withinMs: number): Promise<number[]> {
  const deadline = Date.now() + withinMs;
  while (pids.some(alive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  return pids.filter(alive);
}

test('a child killed by SIGINT while its run aborts counts as aborted; killed by SIGINT alone, it does not', async () => {
  const dir = tmp();
  const pidFile = path.join(dir, 'pid');
  const start = (signal: AbortSignal) => runner.run(['sh', '-c', `echo $$ > ${pidFile}; exec sleep 30`], { signal });
  // The interrupt reaches the child first, graph's own handler a moment later.
  const interrupt = new AbortController();
  const run = start(interrupt.signal);
  const [pid] = await pidsIn(pidFile, 1);
  process.kill(pid, 'SIGINT');
  setTimeout(() => interrupt.abort(new Error('interrupted')), 100);
  assert.equal(await run, { exitCode: undefined, signal: 'SIGINT', aborted: true });
  // Nothing aborts: a SIGINT from elsewhere is the command's own failure, told after the settle time.
  writeFileSync(pidFile, '');
  const other = start(new AbortController().signal);
  const [pid2] = await pidsIn(pidFile, 1);
  const t0 = Date.now();
  process.kill(pid2, 'SIGINT');
  assert.equal(await other, { exitCode: undefined, signal: 'SIGINT', aborted: false });
  assert.ok(Date.now() - t0 >= INTERRUPT_SETTLE_MS - 10);
});

// A graph process (here a small script on the real runner) started as a terminal starts a
// foreground job: in a process group of its own, which the terminal's Ctrl-C signals whole. It
// writes `ready` once its children run and it has had its turn after starting them (they are
// registered with the reaper as they start, in the same turn).
const PROCESS_JS = fileURLToPath(new URL('../engine/process.js', import.meta.url));
function startGraphLike(pidFile: string) {
  const script = `
    import { existsSync, readFileSync, writeFileSync } from 'node:fs';
    import { ExecaRunner, captureOutput, readOutput } from ${JSON.stringify(PROCESS_JS)};
    process.on('SIGINT', () => {}); // graph handles its interrupt; it survives the Ctrl-C
    const child = (what) => ['sh', '-c', 'echo $$ >> ${pidFile}; exec sleep 30 # ' + what];
    new ExecaRunner().run(child('runner')).catch(() => {});
    captureOutput(child('captureOutput')).catch(() => {});
    readOutput(child('readOutput'), () => new Error('failed')).on('error', () => {}).resume();
    const poll = setInterval(() => {
      if (existsSync('${pidFile}') && readFileSync('${pidFile}', 'utf8').split('\\n').filter(Boolean).length === 3) {
        writeFileSync('${pidFile}.ready', '');
        clearInterval(poll);
      }
    }, 10);
    setInterval(() => {}, 1000);
  `;
  return spawn(process.execPath, ['--input-type=module', '-e', script], { detached: true, stdio: 'ignore' });
}

async function readyPids(pidFile: string): Promise<number[]> {
  const pids = await pidsIn(pidFile, 3);
  while (!existsSync(`${pidFile}.ready`)) await new Promise((r) => setTimeout(r, 10));
  return pids;
}

test("every child runs in its own process group: the terminal's Ctrl-C to graph's group reaches none of them", async () => {
  const pidFile = path.join(tmp(), 'pids');
  const graphLike = startGraphLike(pidFile);
  try {
    const pids = await readyPids(pidFile);
    process.kill(-(graphLike.pid as number), 'SIGINT');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(pids.filter((p) => !alive(p)), [], 'no child ended by the Ctrl-C');
  } finally {
    process.kill(-(graphLike.pid as number), 'SIGKILL');
  }
});

test('every child dies with graph, even when graph is killed with SIGKILL, and so does its whole group', async () => {
  const pidFile = path.join(tmp(), 'pids');
  const graphLike = startGraphLike(pidFile);
  const pids = await readyPids(pidFile);
  assert.equal(pids.filter((p) => !alive(p)), []);
  // graph's process group, as `kill -9 -PGID` does: the reaper is not in it.
  process.kill(-(graphLike.pid as number), 'SIGKILL');
  assert.equal(await ended(pids, 3000), [], 'every child ended');
});

test.run();
