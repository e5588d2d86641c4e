/** Atomic writes: visible names for store blobs (links inside .graph, copies for published files). */
import { mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { copyFileAtomic, linkOrCopy } from '../../engine/atomic.js';

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

test.run();
