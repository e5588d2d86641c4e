/** The action cache's log: compaction counts the lines it read, and keeps each node's last line. */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { hash } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ActionCache } from '../../engine/cache/action-cache.js';
import type { NodeId } from '../../engine/rule.js';

const test = suite('cache');

/** Record `count` successes alternating between nodes a and b, each under a new key; returns the last key of each. */
async function fill(cache: ActionCache, count: number): Promise<Record<string, string>> {
  const last: Record<string, string> = {};
  for (let i = 0; i < count; i++) {
    const id = i % 2 ? 'b' : 'a';
    const record = `{"n":${i}}`;
    const key = hash('sha256', record, 'hex');
    await cache.put(id as NodeId, key, record, { outputs: {}, artifacts: [], duration_ms: 1 });
    last[id] = key;
  }
  return last;
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
