/**
 * The content-addressed store's verified-stat memo: an unchanged blob is proven by one stat, a
 * blob changed in place is hashed again, a corrupt one is removed and written anew, and a torn or
 * damaged memo costs a re-read, never a wrong answer.
 */
import { createHash } from 'node:crypto';
import { appendFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { ContentStore, DigestError } from '../../engine/cache/store.js';
import { flipByte } from '../helpers.js';

const test = suite('store');

const fresh = () => new ContentStore(path.join(mkdtempSync(path.join(tmpdir(), 'graph-store-')), 'cas'));
const digestOf = (bytes: string | Buffer) => `sha256:${createHash('sha256').update(bytes).digest('hex')}`;

/** Bytes this process has read through read(2) so far (Linux /proc/self/io `rchar`). */
function bytesRead(): number {
  return Number(/^rchar: (\d+)$/m.exec(readFileSync('/proc/self/io', 'utf8'))?.[1]);
}

test('an unchanged blob is proven intact by its stat alone, also by a new process (a new store object)', () => {
  const store = fresh();
  const big = Buffer.alloc(8 << 20, 7);
  const { digest } = store.putBytes(big);
  const again = new ContentStore(store.dir);
  const before = bytesRead();
  assert.is(again.check(digest), 'intact');
  assert.is(again.has(digest), true);
  // The memo (a line of ≈120 bytes) is read; the 8 MiB blob is not.
  assert.ok(bytesRead() - before < 4096, `read ${bytesRead() - before} bytes`);
});

test('a byte flipped in place is found, the blob removed, and the next put writes good bytes', () => {
  const store = fresh();
  const { digest } = store.putBytes('layer bytes');
  const file = store.pathOf(digest);
  flipByte(file);
  const reader = new ContentStore(store.dir);
  assert.is(reader.check(digest), 'corrupt');
  assert.is(existsSync(file), false);
  // Every node sharing the blob hears the same from this store; a new one only sees it gone.
  assert.is(reader.check(digest), 'corrupt');
  assert.is(new ContentStore(store.dir).check(digest), 'missing');
  reader.putBytes('layer bytes');
  assert.is(readFileSync(file, 'utf8'), 'layer bytes');
  assert.is(reader.check(digest), 'intact');
  assert.is(new ContentStore(store.dir).check(digest), 'intact');
});

test('putBytes, putFile and putStream replace a corrupt blob that exists by name', async () => {
  const store = fresh();
  const { digest } = store.putBytes('abc');
  const file = store.pathOf(digest);
  flipByte(file);
  store.putBytes('abc');
  assert.is(readFileSync(file, 'utf8'), 'abc');

  flipByte(file, 1);
  const src = path.join(path.dirname(store.dir), 'src');
  writeFileSync(src, 'abc');
  await store.putFile(src, digest);
  assert.is(readFileSync(file, 'utf8'), 'abc');

  flipByte(file, 2);
  await store.putStream(Readable.from([Buffer.from('abc')]), digest);
  assert.is(readFileSync(file, 'utf8'), 'abc');
  assert.is(new ContentStore(store.dir).check(digest), 'intact');
});

test('a blob whose stat changed but whose bytes did not is re-read once, then remembered', () => {
  const store = fresh();
  const { digest } = store.putBytes(Buffer.alloc(1 << 20, 1));
  const file = store.pathOf(digest);
  writeFileSync(file, Buffer.alloc(1 << 20, 1)); // same bytes, new mtime and ctime
  const reader = new ContentStore(store.dir);
  let before = bytesRead();
  assert.is(reader.check(digest), 'intact');
  assert.ok(bytesRead() - before >= 1 << 20, 'the blob was read');
  before = bytesRead();
  assert.is(new ContentStore(store.dir).check(digest), 'intact');
  assert.ok(bytesRead() - before < 4096, 'and not again');
});

test('a torn or damaged memo costs a re-read, never a wrong answer', () => {
  const store = fresh();
  const good = store.putBytes('good').digest;
  const bad = store.putBytes('bad').digest;
  flipByte(store.pathOf(bad));
  const memo = path.join(store.dir, 'verified.log');
  const text = readFileSync(memo, 'utf8');
  // Every number damaged, junk lines, and a torn last line claiming the corrupt blob's new stat.
  const st = statSync(store.pathOf(bad));
  writeFileSync(memo, `${text.replace(/ \d/g, ' 9')}not a memo line\n\u0000\u0001\n${bad.slice(7)} ${st.size} ${st.ino} ${st.mtimeMs} ${st.ctimeMs}`);
  const reader = new ContentStore(store.dir);
  assert.is(reader.check(good), 'intact');
  assert.is(reader.check(bad), 'corrupt');
});

test('the memo is compacted to one line per blob when it has grown past twice that', () => {
  const store = fresh();
  const { digest } = store.putBytes('x');
  const memo = path.join(store.dir, 'verified.log');
  const line = readFileSync(memo, 'utf8');
  for (let i = 0; i < 1100; i++) appendFileSync(memo, line);
  assert.is(new ContentStore(store.dir).check(digest), 'intact');
  assert.is(readFileSync(memo, 'utf8'), line);
});

test('linkTo: the link is remembered (no re-read), and a write through the link is found', () => {
  const store = fresh();
  const { digest } = store.putBytes(Buffer.alloc(1 << 20, 3));
  const out = path.join(path.dirname(store.dir), 'out', 'image.sif');
  store.linkTo(digest, out);
  assert.is(statSync(out).ino, statSync(store.pathOf(digest)).ino);
  const before = bytesRead();
  assert.is(new ContentStore(store.dir).check(digest), 'intact');
  assert.ok(bytesRead() - before < 4096, 'no re-read after the link');
  flipByte(out, 100);
  assert.is(new ContentStore(store.dir).check(digest), 'corrupt');
  assert.throws(() => store.linkTo(digest, out), (e: unknown) => e instanceof DigestError && e.message === `blob ${digest} is missing in the store`);
});

test('verify re-reads and remembers; a missing or malformed digest is missing', async () => {
  const store = fresh();
  const { digest } = store.putBytes('v');
  assert.is(await store.verify(digest), true);
  flipByte(store.pathOf(digest));
  assert.is(await store.verify(digest), false);
  assert.is(store.check(digestOf('never stored')), 'missing');
  assert.is(store.check('sha256:nothex'), 'missing');
});

test('putStream: a source that fails at once leaves no temp file (the write stream had not opened it yet)', async () => {
  const store = new ContentStore(mkdtempSync(path.join(tmpdir(), 'graph-store-')));
  for (let i = 0; i < 5; i++) {
    const failing = new Readable({ read() { this.destroy(new Error('interrupted')); } });
    const why = await store.putStream(failing).then(() => 'stored', (e: Error) => e.message);
    assert.is(why, 'interrupted');
  }
  assert.equal(readdirSync(path.join(store.dir, 'sha256')), []);
});

test.run();
