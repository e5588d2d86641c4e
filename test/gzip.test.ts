/**
 * Parallel gzip: one valid gzip member, judged by the gzip tool itself (`gzip -t`, `gzip -dc`),
 * byte-identical whatever the concurrency and however the input is chunked.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { BLOCK_SIZE, gzipParallel } from '../rules/oci/gzip.js';

const test = suite('gzip');

/** Gzip `input` fed in chunks of `chunk` bytes. */
async function gzip(input: Buffer, options: { concurrency?: number; level?: number } = {}, chunk = 65_536): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (let i = 0; i < input.length; i += chunk) parts.push(input.subarray(i, i + chunk));
  const out: Buffer[] = [];
  for await (const c of gzipParallel(Readable.from(parts), options)) out.push(c);
  return Buffer.concat(out);
}

/** Text that compresses well, then noise that does not (a model's vocabulary and weights). */
function sample(length: number): Buffer {
  const text = Buffer.from(Array.from({ length: 40_000 }, (_, i) => `token_${i % 997}\t${i % 13}\n`).join(''));
  let seed = 7;
  const noise = Buffer.alloc(Math.max(0, length - text.length));
  for (let i = 0; i < noise.length; i++) noise[i] = (seed = (seed * 1103515245 + 12345) & 0x7fffffff) >>> 16;
  return Buffer.concat([text, noise]).subarray(0, length);
}

const CASES: Array<[string, number]> = [
  ['empty input', 0],
  ['smaller than one block', 1000],
  ['one byte short of a block', BLOCK_SIZE - 1],
  ['exactly one block', BLOCK_SIZE],
  ['one block and a byte', BLOCK_SIZE + 1],
  ['several blocks, text and noise', 5 * BLOCK_SIZE + 12_345],
];

for (const [name, length] of CASES) {
  test(`${name} (${length} bytes): gzip -t passes, gzip -dc gives the input back, the same bytes at any concurrency`, async () => {
    const input = sample(length);
    const one = await gzip(input, { concurrency: 1 });
    execFileSync('gzip', ['-t'], { input: one });
    assert.ok(execFileSync('gzip', ['-dc'], { input: one, maxBuffer: 1 << 30 }).equals(input), 'gzip -dc | cmp');
    for (const [concurrency, chunk] of [[4, 65_536], [2, 1], [3, 1 << 20]] as const) {
      if (chunk === 1 && length > 2 * BLOCK_SIZE) continue; // byte by byte is slow; small cases suffice
      const other = await gzip(input, { concurrency }, chunk);
      assert.ok(other.equals(one), `concurrency ${concurrency}, chunks of ${chunk}: same bytes`);
    }
  });
}

test('within one block the output is zlib gzip -6 exactly (same header, same deflate)', async () => {
  for (const length of [0, 1000, BLOCK_SIZE - 1]) {
    const input = sample(length);
    assert.ok((await gzip(input)).equals(gzipSync(input, { level: 6 })), `${length} bytes`);
  }
});

test('blocks primed with the previous 32 KiB: repeated text across a cut compresses as in one stream', async () => {
  // The same 200 KiB of text twice: the second copy is all matches only if blocks see their past.
  const text = sample(200 * 1024).subarray(0, 150 * 1024);
  const input = Buffer.concat([text, text, text, text]);
  const parallel = await gzip(input);
  const serial = gzipSync(input, { level: 6 });
  assert.ok(parallel.length < serial.length * 1.02, `${parallel.length} bytes vs zlib's ${serial.length}`);
});

test('the level is honoured and recorded in the header (XFL), the OS byte is fixed', async () => {
  const input = sample(3 * BLOCK_SIZE);
  const fast = await gzip(input, { level: 1 });
  const best = await gzip(input, { level: 9 });
  assert.equal([...fast.subarray(0, 10)], [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 3]);
  assert.equal([...best.subarray(0, 10)], [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 3]);
  for (const gz of [fast, best]) assert.ok(execFileSync('gzip', ['-dc'], { input: gz }).equals(input));
  const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
  assert.is.not(sha(fast), sha(best));
});

test('a source that fails fails the stream with its error', async () => {
  async function* failing() {
    yield sample(3 * BLOCK_SIZE);
    throw new Error('disk gone');
  }
  try {
    for await (const _ of gzipParallel(failing())) void _;
    assert.unreachable();
  } catch (e) {
    assert.is((e as Error).message, 'disk gone');
  }
});

test('a level zlib refuses fails the stream with zlib\'s error, on a worker as on this thread', async () => {
  for (const length of [1000, 3 * BLOCK_SIZE]) {
    try {
      await gzip(sample(length), { level: 42 });
      assert.unreachable();
    } catch (e) {
      assert.match((e as Error).message, /level/);
    }
  }
});

test('the worker pool does not keep the process alive once the stream is done', () => {
  const module = new URL('../rules/oci/gzip.js', import.meta.url).href;
  const script = `import { gzipParallel } from '${module}';
    let n = 0;
    for await (const c of gzipParallel([Buffer.alloc(3_000_000, 7)], { concurrency: 2 })) n += c.length;
    process.stdout.write(String(n));`;
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000 });
  assert.ok(Number(out) > 0, out);
});

test.run();
