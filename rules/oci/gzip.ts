/**
 * Parallel gzip, made as pigz makes it: one gzip member (RFC 1952) around one raw deflate stream
 * (RFC 1951) whose parts are compressed independently, several at once.
 *
 * The uncompressed stream is cut into blocks of BLOCK_SIZE bytes (by byte count only, so the cuts
 * and hence the output do not depend on timing or on how many blocks run at once). Each block is
 * deflated on its own, primed with the 32 KiB before it as its dictionary (so matches reach back
 * across the cut, as in one deflate stream). Every block but the last ends with a sync flush (an
 * empty stored block, byte-aligned, not final); the last ends with Z_FINISH (the final block).
 * Concatenated, they form one valid deflate stream that any inflater reads.
 *
 * Blocks are deflated by zlib's asynchronous API, which runs on libuv's thread pool: the event
 * loop stays free for tar packing, hashing and writing, no worker threads or files to load, and
 * nothing to keep alive or unref. The header is fixed (no mtime, no name, OS 3 = Unix on every
 * platform), the trailer is the CRC-32 and length (mod 2^32) of the whole uncompressed stream, so
 * the same input gives the same bytes with the same zlib, whatever the concurrency.
 */
import { availableParallelism } from 'node:os';
import zlib, { constants, deflateRaw } from 'node:zlib';

/** Bytes of uncompressed input per independently deflated block (pigz's default, 128 KiB). */
export const BLOCK_SIZE = 128 * 1024;
/** Deflate's window: the dictionary each block is primed with. */
const WINDOW = 32 * 1024;

export interface GzipOptions {
  /** Compression level, 0–9; default 6 (as `gzip -6`). */
  readonly level?: number;
  /**
   * Blocks deflated at once (≥ 1); default: the machine's available parallelism. Also bounds
   * memory: at most this many blocks (plus the one being filled) are held.
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
  const concurrency = Math.max(1, options.concurrency ?? availableParallelism());
  yield gzipHeader(level);
  let crc = 0;
  let length = 0;
  // The block being filled: its dictionary (the previous block's last WINDOW bytes), then its data.
  let block = Buffer.allocUnsafe(BLOCK_SIZE);
  let dictionary: Buffer | undefined;
  let fill = 0;
  const inFlight: Array<Promise<Buffer>> = [];
  const send = (last: boolean) => {
    const data = block.subarray(0, fill);
    const deflated = deflateBlock(data, dictionary, level, last);
    // Awaited in order below; this only keeps a rejection that comes early from being unhandled.
    deflated.catch(() => undefined);
    inFlight.push(deflated);
    dictionary = data.subarray(fill - WINDOW);
    block = Buffer.allocUnsafe(BLOCK_SIZE);
    fill = 0;
  };
  try {
    for await (const chunk of source) {
      crc = crc32(chunk, crc);
      length += chunk.length;
      for (let offset = 0; offset < chunk.length; ) {
        const n = Math.min(chunk.length - offset, BLOCK_SIZE - fill);
        block.set(chunk.subarray(offset, offset + n), fill);
        fill += n;
        offset += n;
        if (fill === BLOCK_SIZE) {
          send(false);
          while (inFlight.length >= concurrency) yield await (inFlight.shift() as Promise<Buffer>);
        }
      }
    }
    send(true);
    while (inFlight.length > 0) yield await (inFlight.shift() as Promise<Buffer>);
  } finally {
    // On an early end (the pipeline failed or was aborted) the blocks still in flight finish on
    // the thread pool and are dropped; their rejections are already handled.
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

/** One block deflated on libuv's thread pool: a sync flush at its end, or Z_FINISH if `last`. */
function deflateBlock(data: Buffer, dictionary: Buffer | undefined, level: number, last: boolean): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    deflateRaw(
      data,
      {
        level,
        dictionary,
        finishFlush: last ? constants.Z_FINISH : constants.Z_SYNC_FLUSH,
        // Room for the whole block's output at once: one trip to the thread pool per block.
        chunkSize: BLOCK_SIZE + 1024,
      },
      (err, out) => (err ? reject(err) : resolve(out)),
    );
  });
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
