/**
 * Fault run for interrupts and crashes (issue 12): `graph build` of this repository's zoo, from a
 * clean state, ended at a random moment; then the ending is judged.
 *
 *   node out/scripts/fault-interrupt.js [TRIALS] [MODE,…] [FROM_S] [TO_S]
 *
 * Modes: `group-int` (a terminal's Ctrl-C: SIGINT to graph's whole process group), `int` (SIGINT
 * to graph alone), `term` (SIGTERM to graph alone), `npx-group-int` (Ctrl-C to `npx graph build`,
 * which forwards it: graph gets it twice), `kill9` (SIGKILL to graph alone, then a second build).
 * An interrupt must end with exit 130 (under npx: npm re-raises SIGINT), the `interrupted`
 * summary, no crash, no failed node, no temp file and no process left. After a kill -9, no process
 * may be left (2.5 s later) and the next build must succeed and remove every temp file.
 *
 * The workspace is copied (tracked files, out/, node_modules linked) into a temp directory with a
 * build's Debian downloads, so the trials measure graph and not the mirror. Prints one line per
 * trial and a tally.
 */
import { execFileSync, spawn } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const [trialsArg = '12', modesArg = 'group-int,npx-group-int,int,term,kill9', fromArg = '2', toArg = '16'] = process.argv.slice(2);
const modes = modesArg.split(',');
const [from, to] = [Number(fromArg), Number(toArg)];
const top = mkdtempSync(path.join(tmpdir(), 'graph-fault-'));
const base = path.join(top, 'base');
const work = path.join(top, 'trial');

/** A copy of the repository's tracked files, its out/ and a link to its node_modules, in `dir`. */
function copyRepo(dir: string): void {
  mkdirSync(dir, { recursive: true });
  for (const f of execFileSync('git', ['ls-files', '-z'], { cwd: REPO, encoding: 'utf8' }).split('\0').filter(Boolean)) {
    mkdirSync(path.dirname(path.join(dir, f)), { recursive: true });
    cpSync(path.join(REPO, f), path.join(dir, f));
  }
  cpSync(path.join(REPO, 'out'), path.join(dir, 'out'), { recursive: true });
  symlinkSync(path.join(REPO, 'node_modules'), path.join(dir, 'node_modules'));
}

function build(dir: string): string {
  return execFileSync(process.execPath, ['out/cli.js', 'build'], { cwd: dir, env: { ...process.env, CI: '1' }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Live processes whose command line names `dir`, or whose working directory is in it. */
function processesIn(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e) || Number(e) === process.pid) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
      if (stat.slice(stat.lastIndexOf(')') + 2)[0] === 'Z') continue;
      const cmd = readFileSync(`/proc/${e}/cmdline`, 'utf8').replace(/\0/g, ' ');
      let cwd = '';
      try {
        cwd = readlinkSync(`/proc/${e}/cwd`);
      } catch {
        // another user's
      }
      if (cmd.includes(dir) || cwd === dir || cwd.startsWith(`${dir}/`)) out.push(`${e}: ${cmd.slice(0, 100)}`);
    } catch {
      // ended while we looked
    }
  }
  return out;
}

/** Temp files and directories graph names (see engine/tmp.ts) anywhere in `dir` but unpacked roots. */
function tempsIn(dir: string): string[] {
  const found: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (/(^\.tmp-|\.(tmp|old|partial|trash)-\d)/.test(e.name) || (d === path.join(dir, '.graph', 'tmp'))) found.push(path.relative(dir, p));
      else if (e.isDirectory() && !['node_modules', '.git'].includes(e.name) && !/^[0-9a-f]{64}$/.test(e.name)) walk(p);
    }
  };
  walk(dir);
  return found;
}

function prepareTrial(): void {
  rmSync(work, { recursive: true, force: true });
  cpSync(base, work, { recursive: true, verbatimSymlinks: true, filter: (src) => src !== path.join(base, '.graph') && src !== path.join(base, 'dist') });
  mkdirSync(path.join(work, '.graph', 'cache'), { recursive: true });
  cpSync(path.join(base, '.graph', 'cache', 'debian'), path.join(work, '.graph', 'cache', 'debian'), { recursive: true });
  execFileSync('git', ['checkout', '-q', '--', '.'], { cwd: work });
}

copyRepo(base);
execFileSync('git', ['init', '-q'], { cwd: base });
execFileSync('git', ['add', '-A'], { cwd: base });
execFileSync('git', ['-c', 'user.name=f', '-c', 'user.email=f@example.invalid', 'commit', '-qm', 'base'], { cwd: base });
console.log(`warm-up build in ${base} (fills the Debian download cache)`);
build(base);

const tally = new Map<string, number>();
for (let i = 0; i < Number(trialsArg); i++) {
  const mode = modes[i % modes.length];
  prepareTrial();
  const at = from + Math.random() * (to - from);
  const [file, args] = mode.startsWith('npx') ? ['npx', ['graph', 'build']] : [process.execPath, ['out/cli.js', 'build']];
  const t0 = Date.now();
  // Own process group, as a shell starts a foreground job.
  const child = spawn(file, args as string[], { cwd: work, detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, CI: '1' } });
  let output = '';
  child.stdout.on('data', (c: Buffer) => (output += c));
  child.stderr.on('data', (c: Buffer) => (output += c));
  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
  const timer = setTimeout(() => {
    const pid = child.pid as number;
    const send: Record<string, () => void> = {
      'group-int': () => process.kill(-pid, 'SIGINT'),
      'npx-group-int': () => process.kill(-pid, 'SIGINT'),
      int: () => process.kill(pid, 'SIGINT'),
      term: () => process.kill(pid, 'SIGTERM'),
      kill9: () => process.kill(pid, 'SIGKILL'),
    };
    send[mode]();
  }, at * 1000);
  const hang = setTimeout(() => process.kill(-(child.pid as number), 'SIGKILL'), (at + 120) * 1000);
  const { code, signal } = await exited;
  clearTimeout(timer);
  clearTimeout(hang);
  let outcome: string;
  if (Date.now() - t0 < at * 1000) outcome = 'finished before the signal';
  else if (mode === 'kill9') {
    await new Promise((r) => setTimeout(r, 2500));
    const left = processesIn(work);
    const before = tempsIn(work).length;
    let again = 'rebuild ok';
    try {
      build(work);
    } catch (e) {
      again = `rebuild FAILED: ${(e as Error).message.split('\n')[0]}`;
    }
    const after = tempsIn(work);
    outcome = `${left.length ? `PROCESSES LEFT (${left.join(' | ')})` : 'no process left'}, ${before ? 'temps left' : 'no temps'}, ${again}, ${after.length ? `TEMPS AFTER (${after.join(' ')})` : 'no temps after'}`;
  } else {
    await new Promise((r) => setTimeout(r, 300));
    const summary = /^(interrupted|ok|FAILED): .*$/m.exec(output)?.[0];
    const started = / to run, \d+ cached/.test(output);
    const problems: string[] = [];
    // Under npx the exit status is npm's: it re-raises the SIGINT it forwarded (a shell shows 130).
    if (!(code === 130 || (mode.startsWith('npx') && signal === 'SIGINT'))) problems.push(`exit ${code ?? signal}`);
    if (started && !summary?.startsWith('interrupted')) problems.push(`summary: ${summary ?? 'none'}`);
    if (/AbortError|internal error|Unhandled|while stopping|\n\s+at /.test(output)) problems.push('CRASH');
    if (/FAILED\s+\S+/.test(output)) problems.push(`FAILED NODE ${/FAILED\s+(.*)/.exec(output)?.[1]}`);
    const temps = tempsIn(work);
    if (temps.length) problems.push(`TEMPS (${temps.join(' ')})`);
    const left = processesIn(work);
    if (left.length) problems.push(`PROCESSES (${left.join(' | ')})`);
    outcome = problems.length ? problems.join('; ') : started ? 'clean' : 'clean (before the build started)';
    for (const p of left) process.kill(Number(p.split(':')[0]), 'SIGKILL');
  }
  const key = `${mode}: ${outcome.replace(/\d+(\.\d+)?m?s\b/g, 'T').replace(/-\d+-[0-9a-f]+/g, '-PID-X')}`;
  tally.set(key, (tally.get(key) ?? 0) + 1);
  console.log(`#${i} ${mode} at ${at.toFixed(1)} s: ${outcome}`);
}
console.log('\ntally:');
for (const [k, n] of [...tally].sort()) console.log(`  ${String(n).padStart(3)}  ${k}`);
rmSync(top, { recursive: true, force: true });
