/**
 * Parallel gzip, made as pigz makes it: one gzip member (RFC 1952) around one raw deflate stream
 * (RFC 1951) whose parts are compressed independently, on several cores at once.
 *
 * The uncompressed stream is cut into blocks of BLOCK_SIZE bytes (by byte count only, so the cuts
 * and hence the output do not depend on timing or on how many workers run). Each block is
 * deflated on its own, primed with the 32 KiB before it as its dictionary (so matches reach back
 * across the cut, as in one deflate stream). Every block but the last ends with a sync flush (an
 * empty stored block, byte-aligned, not final); the last ends with Z_FINISH (the final block).
 * Concatenated, they form one valid deflate stream that any inflater reads.
 *
 * Blocks are deflated by a pool of worker threads (one per core, started on first use, kept for
 * the process and unref'd while idle, so they never keep it alive); a stream that fits in one
 * block is deflated on the calling thread, starting no worker. The header is fixed (no mtime, no
 * name, OS 3 = Unix on every platform); the trailer is the CRC-32 and length (mod 2^32) of the
 * whole uncompressed stream. So the same input gives the same bytes with the same zlib, whatever
 * the number of workers: within one block, exactly zlib's `gzip -6` output.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import zlib, { constants, deflateRawSync } from 'node:zlib';

/** Bytes of uncompressed input per independently deflated block (pigz's default, 128 KiB). */
export const BLOCK_SIZE = 128 * 1024;
/** Deflate's window: the dictionary each block is primed with. */
const WINDOW = 32 * 1024;

export interface GzipOptions {
  /** Compression level, 0–9; default 6 (as `gzip -6`). */
  readonly level?: number;
  /**
   * Worker threads deflating blocks (≥ 1); default: the machine's available parallelism. Never
   * changes the bytes. At most twice this many blocks are held in flight, so memory stays bounded.
   */
  readonly concurrency?: number;
}

type Crc32 = (data: Uint8Array, value: number) => number;

/** zlib.crc32 (Node ≥ 20.15); a table-driven CRC-32 (ISO-HDLC, as gzip's trailer) before that. */
const crc32: Crc32 = (zlib as { crc32?: Crc32 }).crc32 ?? tableCrc32();

/**
 * Gzip-compress `source` into one gzip member, deflating blocks in parallel (see the file's
 * header). For `stream.pipeline` between a readable of the uncompressed bytes and a writable.
 * @returns an async iterable of the compressed bytes, in order: header, blocks, trailer.
 * @throws zlib's error if a block cannot be deflated (an invalid level); the source's errors.
 */
export async function* gzipParallel(source: AsyncIterable<Uint8Array>, options: GzipOptions = {}): AsyncGenerator<Buffer> {
  const level = options.level ?? 6;
  const workers = Math.max(1, options.concurrency ?? availableParallelism());
  yield gzipHeader(level);
  let crc = 0;
  let length = 0;
  // The block being filled: WINDOW bytes of dictionary (the previous block's last WINDOW bytes;
  // none in the first block), then up to BLOCK_SIZE bytes of data. Its own ArrayBuffer, so it
  // moves to a worker without a copy.
  let block = Buffer.allocUnsafeSlow(WINDOW + BLOCK_SIZE);
  let dictionaryLength = 0;
  let fill = 0;
  let sent = 0;
  const inFlight: Array<Promise<Buffer>> = [];
  const send = (last: boolean) => {
    const job = { block, dictionaryLength, length: dictionaryLength + fill, level, last };
    if (!last) {
      const next = Buffer.allocUnsafeSlow(WINDOW + BLOCK_SIZE);
      block.copy(next, 0, job.length - WINDOW, job.length);
      block = next;
      dictionaryLength = WINDOW;
      fill = 0;
    }
    const deflated = last && sent === 0 ? Promise.resolve(deflateBlock(job)) : deflatePool(workers).deflate(job);
    // Awaited in order below; this only keeps a rejection that comes early from being unhandled.
    deflated.catch(() => undefined);
    inFlight.push(deflated);
    sent++;
  };
  try {
    for await (const chunk of source) {
      crc = crc32(chunk, crc);
      length += chunk.length;
      for (let offset = 0; offset < chunk.length; ) {
        const n = Math.min(chunk.length - offset, BLOCK_SIZE - fill);
        block.set(chunk.subarray(offset, offset + n), dictionaryLength + fill);
        fill += n;
        offset += n;
        if (fill === BLOCK_SIZE) {
          send(false);
          while (inFlight.length >= 2 * workers) yield await (inFlight.shift() as Promise<Buffer>);
        }
      }
    }
    send(true);
    while (inFlight.length > 0) yield await (inFlight.shift() as Promise<Buffer>);
  } finally {
    // On an early end (the pipeline failed or was aborted) the blocks still in flight finish on
    // their workers and are dropped; their rejections are already handled.
    inFlight.length = 0;
  }
  const trailer = Buffer.alloc(8);
  trailer.writeUInt32LE(crc >>> 0, 0);
  trailer.writeUInt32LE(length % 2 ** 32, 4);
  yield trailer;
}

/**
 * The 10-byte gzip header (RFC 1952 §2.3): deflate, no flags, MTIME 0, XFL as zlib writes it for
 * `level` (2 slowest, 4 fastest), OS 3 (Unix) whatever the platform, so output is reproducible.
 */
function gzipHeader(level: number): Buffer {
  const xfl = level === 9 ? 2 : level < 2 ? 4 : 0;
  return Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 3]);
}

/** A block to deflate: `block[0, dictionaryLength)` primes the window, the rest up to `length` is data. */
interface DeflateJob {
  readonly block: Buffer;
  readonly dictionaryLength: number;
  readonly length: number;
  readonly level: number;
  /** Z_FINISH (the final deflate block) instead of a sync flush. */
  readonly last: boolean;
}

/**
 * Deflate one block on this thread (a stream of one block), with the same call as the workers in
 * WORKER_SOURCE make.
 */
function deflateBlock(job: DeflateJob): Buffer {
  const bytes = job.block.subarray(0, job.length);
  return deflateRawSync(bytes.subarray(job.dictionaryLength), {
    level: job.level,
    dictionary: job.dictionaryLength > 0 ? bytes.subarray(0, job.dictionaryLength) : undefined,
    finishFlush: job.last ? constants.Z_FINISH : constants.Z_SYNC_FLUSH,
  });
}

/**
 * A worker's program: deflate each block it is sent, answer with the bytes (moved, not copied).
 * An ES module in a data: URL, loaded as such whatever the flags the process started with (an
 * `eval` worker's code is CommonJS or ESM depending on the inherited --input-type).
 */
const WORKER_SOURCE = `
import { parentPort } from 'node:worker_threads';
import { constants, deflateRawSync } from 'node:zlib';
parentPort.on('message', ({ id, buffer, dictionaryLength, length, level, last }) => {
  try {
    const bytes = new Uint8Array(buffer, 0, length);
    const out = deflateRawSync(bytes.subarray(dictionaryLength), {
      level,
      dictionary: dictionaryLength > 0 ? bytes.subarray(0, dictionaryLength) : undefined,
      finishFlush: last ? constants.Z_FINISH : constants.Z_SYNC_FLUSH,
    });
    const whole = out.byteOffset === 0 && out.byteLength === out.buffer.byteLength ? out : new Uint8Array(out);
    parentPort.postMessage({ id, buffer: whole.buffer, length: whole.byteLength }, [whole.buffer]);
  } catch (e) {
    parentPort.postMessage({ id, error: String((e && e.message) || e) });
  }
});
`;

const WORKER_URL = new URL(`data:text/javascript,${encodeURIComponent(WORKER_SOURCE)}`);

interface PoolWorker {
  readonly worker: Worker;
  /** Jobs sent and not yet answered; the worker is ref'd only while there are some. */
  pending: number;
}

/**
 * Worker threads deflating blocks for every gzip stream of the process. Workers start on first use
 * (up to `size`), each job goes to the least busy one, and a worker that dies fails its jobs and is
 * replaced on the next use.
 */
class DeflatePool {
  private readonly workers: PoolWorker[] = [];
  private readonly jobs = new Map<number, { resolve: (b: Buffer) => void; reject: (e: Error) => void; slot: PoolWorker }>();
  private nextId = 0;

  constructor(private readonly size: number) {}

  /** Deflate `job` on a worker; `job.block` moves there and must not be touched again. */
  deflate(job: DeflateJob): Promise<Buffer> {
    const slot = this.pick();
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.jobs.set(id, { resolve, reject, slot });
      if (slot.pending++ === 0) slot.worker.ref();
      const { block, dictionaryLength, length, level, last } = job;
      slot.worker.postMessage({ id, buffer: block.buffer, dictionaryLength, length, level, last }, [block.buffer as ArrayBuffer]);
    });
  }

  private pick(): PoolWorker {
    const idle = this.workers.find((w) => w.pending === 0);
    if (idle) return idle;
    if (this.workers.length < this.size) return this.start();
    return this.workers.reduce((a, b) => (b.pending < a.pending ? b : a));
  }

  private start(): PoolWorker {
    const slot: PoolWorker = { worker: new Worker(WORKER_URL), pending: 0 };
    slot.worker.unref();
    slot.worker.on('message', (m: { id: number; buffer?: ArrayBuffer; length?: number; error?: string }) => {
      const job = this.jobs.get(m.id);
      if (!job) return;
      this.jobs.delete(m.id);
      if (--slot.pending === 0) slot.worker.unref();
      if (m.error !== undefined) job.reject(new Error(`deflate: ${m.error}`));
      else job.resolve(Buffer.from(m.buffer as ArrayBuffer, 0, m.length));
    });
    const fail = (e: Error) => {
      const at = this.workers.indexOf(slot);
      if (at >= 0) this.workers.splice(at, 1);
      for (const [id, job] of this.jobs) {
        if (job.slot !== slot) continue;
        this.jobs.delete(id);
        job.reject(e);
      }
      slot.pending = 0;
    };
    slot.worker.on('error', fail);
    slot.worker.on('exit', (code) => fail(new Error(`deflate worker exited with code ${code}`)));
    this.workers.push(slot);
    return slot;
  }
}

const pools = new Map<number, DeflatePool>();

/** The process's pool of `size` workers (one per size asked for; graph asks for one). */
function deflatePool(size: number): DeflatePool {
  let pool = pools.get(size);
  if (!pool) pools.set(size, (pool = new DeflatePool(size)));
  return pool;
}

function tableCrc32(): Crc32 {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return (data, value) => {
    let c = ~value;
    for (let i = 0; i < data.length; i++) c = table[(c ^ data[i]) & 0xff] ^ (c >>> 8);
    return ~c >>> 0;
  };
}
