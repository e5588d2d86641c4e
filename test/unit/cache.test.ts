/** The action cache's logs: entries appended to records.log, compaction counts the lines it read and keeps each node's last line. */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { hash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ActionCache } from '../../engine/cache/action-cache.js';
import type { NodeId } from '../../engine/rule.js';

const test = suite('cache');

/** The key record of success number `i` (a real record's shape: entries that are not are corrupt). */
const recordOf = (i: number) => `{"decl":null,"deps":{},"env":{},"files":{},"rule":"fake","ruleVersion":1,"tool":"n${i}"}`;
const keyOf = (i: number) => hash('sha256', recordOf(i), 'hex');

/** Record `count` successes alternating between nodes a and b, each under a new key; returns the last key of each. */
async function fill(cache: ActionCache, count: number): Promise<Record<string, string>> {
  const last: Record<string, string> = {};
  for (let i = 0; i < count; i++) {
    const id = i % 2 ? 'b' : 'a';
    const record = recordOf(i);
    const key = keyOf(i);
    await cache.put(id as NodeId, key, record, { outputs: {}, artifacts: [], duration_ms: 1 });
    last[id] = key;
  }
  return last;
}

/** The records.log line `fill` writes for success number `i` (without its newlines). */
function entryLine(i: number): string {
  const record = recordOf(i);
  const result = `{"format":1,"id":"${i % 2 ? 'b' : 'a'}","outputs":{},"artifacts":[],"duration_ms":1}`;
  return `${hash('sha256', record, 'hex')} ${hash('sha256', result, 'hex')} ${record} ${result}`;
}

const lines = (dir: string) => readFileSync(path.join(dir, 'actions.log'), 'utf8').split('\n').length - 1;

test('compact keeps actions.log while it has at most 2 × nodes + 1000 lines, then rewrites it to each node\'s last line', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'graph-cache-'));
  const cache = new ActionCache(dir);
  cache.lastKey('a' as NodeId); // the index is read (as a plan reads it) before the puts
  await fill(cache, 1004);
  cache.compact();
  assert.is(lines(dir), 1004, 'not past 2 × 2 + 1000');
  const last = await fill(cache, 1);
  cache.compact();
  assert.is(lines(dir), 2);
  const again = new ActionCache(dir);
  assert.is(again.lastKey('a' as NodeId), last.a);
  assert.is(again.get(last.a, 'a' as NodeId)?.id, 'a');
});

test('a success appends its entry to ac/records.log and makes no file; compact moves the superseded entries to entry files, so they still serve', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'graph-cache-'));
  const cache = new ActionCache(dir);
  const first = await fill(cache, 2);
  assert.equal(readdirSync(path.join(dir, 'ac')), ['records.log']);
  const records = readFileSync(path.join(dir, 'ac', 'records.log'), 'utf8');
  assert.is(records, [0, 1].map((i) => `\n${entryLine(i)}\n`).join(''));
  const last = await fill(new ActionCache(dir), 1005); // from n = 0 again: a's and b's first keys come back
  assert.is(last.a, keyOf(1004));
  const compacting = new ActionCache(dir);
  compacting.compact();
  assert.is(lines(dir), 2);
  // records.log keeps each node's last entry; every other key is an entry file now.
  assert.equal(readFileSync(path.join(dir, 'ac', 'records.log'), 'utf8'), `${entryLine(1003)}\n${entryLine(1004)}\n`);
  const again = new ActionCache(dir);
  for (let i = 0; i < 1005; i++) {
    const key = keyOf(i);
    assert.is(again.get(key)?.id, i % 2 ? 'b' : 'a', `n = ${i}`);
    assert.equal(again.get(key)?.record, JSON.parse(recordOf(i)));
    assert.is(existsSync(path.join(dir, 'ac', key.slice(0, 2), key)), i < 1003, `entry file of n = ${i}`);
  }
  assert.is(first.a, keyOf(0));
});

test('with entryFiles (a cache machines share), each entry is its own file and records.log is not written', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'graph-cache-'));
  await fill(new ActionCache(dir, { entryFiles: true }), 2);
  assert.equal(readdirSync(path.join(dir, 'ac')).sort(), [keyOf(0).slice(0, 2), keyOf(1).slice(0, 2)].sort());
  assert.is(readFileSync(path.join(dir, 'ac', keyOf(1).slice(0, 2), keyOf(1)), 'utf8'), entryLine(1).slice(130).replace(' {"format":', '\n{"format":') + `\n${entryLine(1).slice(65, 129)}\n`);
  const reader = new ActionCache(dir);
  assert.equal(reader.get(keyOf(0))?.record, JSON.parse(recordOf(0)));
});

test('a cache object that read records.log before another process appended to it finds the new entries', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'graph-cache-'));
  await fill(new ActionCache(dir), 1);
  const reader = new ActionCache(dir);
  assert.is(reader.get(keyOf(0))?.id, 'a');
  const writer = new ActionCache(dir);
  const record = recordOf(7);
  const key = keyOf(7);
  assert.is(reader.get(key), undefined);
  await writer.put('b' as NodeId, key, record, { outputs: {}, artifacts: [], duration_ms: 1 });
  assert.is(reader.get(key)?.id, 'b');
});

test('a cache object that read the log after another wrote it counts that log\'s lines', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'graph-cache-'));
  await fill(new ActionCache(dir), 1005);
  const reader = new ActionCache(dir);
  reader.compact();
  assert.is(lines(dir), 2);
});

test('an entry file whose record hashes to its key but is not a key record is corrupt: not served, never explained', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'graph-cache-'));
  const record = '{"rule":"build","files":"not a map"}';
  const key = hash('sha256', record, 'hex');
  await new ActionCache(dir).put('a' as NodeId, key, record, { outputs: {}, artifacts: [], duration_ms: 1 });
  const cache = new ActionCache(dir);
  assert.is(cache.get(key), undefined);
  assert.ok(cache.isCorrupt(key, 'a' as NodeId));
});

test.run();
