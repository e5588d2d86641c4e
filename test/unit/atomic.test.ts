/** Atomic writes: visible names for store blobs (links inside .graph, copies for published files). */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { copyFileAtomic, linkOrCopy, withLock } from '../../engine/atomic.js';

const test = suite('atomic');

test('linkOrCopy onto a name that already links to the same file leaves no temp file', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'graph-atomic-'));
  const blob = path.join(dir, 'blob');
  writeFileSync(blob, 'sif bytes');
  const target = path.join(dir, 'sif', 'model.sif');
  linkOrCopy(blob, target);
  // rename(2) of a second link onto the first is a successful no-op: the temp link used to stay.
  linkOrCopy(blob, target);
  assert.equal(readdirSync(path.join(dir, 'sif')), ['model.sif']);
  assert.is(statSync(target).ino, statSync(blob).ino);
  assert.is(statSync(blob).nlink, 2);
});

test('copyFileAtomic: a copy that never shares an inode; writes to one never reach the other; no temp file', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'graph-atomic-'));
  const blob = path.join(dir, 'blob');
  writeFileSync(blob, 'layer bytes');
  const target = path.join(dir, 'dist', 'blob');
  copyFileAtomic(blob, target);
  copyFileAtomic(blob, target);
  assert.not.equal(statSync(target).ino, statSync(blob).ino);
  assert.is(statSync(blob).nlink, 1);
  writeFileSync(target, 'edited');
  assert.is(readFileSync(blob, 'utf8'), 'layer bytes');
  assert.equal(readdirSync(path.join(dir, 'dist')), ['blob']);
});

test('withLock: a lock whose owner on this host is gone (kill -9) is broken at once; a live owner\'s is waited for', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'graph-lock-'));
  const target = path.join(dir, 'index.json');
  const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' }).stdout;
  mkdirSync(`${target}.lock`);
  writeFileSync(`${target}.lock/owner`, `${hostname()} ${dead}\n`);
  const t0 = Date.now();
  assert.is(await withLock(target, () => 'done', 2000), 'done');
  assert.ok(Date.now() - t0 < 1000, `took ${Date.now() - t0} ms`);
  assert.not.ok(existsSync(`${target}.lock`), 'released');
  // Held by a process that runs (this one): not broken; the wait ends with a clear error.
  mkdirSync(`${target}.lock`);
  writeFileSync(`${target}.lock/owner`, `${hostname()} ${process.pid}\n`);
  const err = await withLock(target, () => 'done', 100).catch((e: Error) => e.message);
  assert.match(String(err), /^could not lock .*index\.json within 0\.1 s/);
});

test.run();
