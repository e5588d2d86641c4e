/**
 * The Singularity Image Format (SIF) container, as github.com/sylabs/sif `pkg/sif` defines it
 * (spec version "01"), and as apptainer loads it (`pkg/image/sif.go`). All integers are little
 * endian and structs are packed (Go `encoding/binary`, no padding).
 *
 * Layout written here, the one `sif.CreateContainer` produces with its defaults:
 *
 *   [0, 128)            global header (launch script, magic, version, arch, id, times, counts)
 *   [128, 4096)         zeros
 *   [4096, 32176)       descriptor table: 48 slots of 585 bytes, the used ones first
 *   [32176, …)          data objects in descriptor order: the definition file, the JSON objects
 *                       (by name), each right after the previous one (pkg/sif aligns nothing but
 *                       partitions), then zeros up to the next multiple of 4096 and the primary
 *                       system partition (a squashfs image); the file ends where it ends.
 *
 * Object ids are 1, 2, 3… in that order, all in object group 1 (stored as 0xf0000001), linked to
 * nothing, as pkg/sif assigns them. Reproducible: every time field is the given epoch
 * (SOURCE_DATE_EPOCH), and the image id is the name-based UUID (RFC 4122 §4.3, version 5) in
 * namespace `ID_NAMESPACE` of the name `sha256:<hex SHA-256 of every byte after the 128-byte
 * header>`: the same objects always give the same file, different objects a different id, and
 * anyone can recompute the id from the file.
 */
import { createHash } from 'node:crypto';
import { closeSync, fstatSync, openSync, readSync, statSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { Worker } from 'node:worker_threads';
import { withTempFile } from '../../engine/atomic.js';

/** The SIF data object types (pkg/sif `DataType`, `sif.go`). */
export const DataType = {
  Deffile: 0x4001,
  EnvVar: 0x4002,
  Labels: 0x4003,
  Partition: 0x4004,
  Signature: 0x4005,
  GenericJSON: 0x4006,
  Generic: 0x4007,
  CryptoMessage: 0x4008,
  SBOM: 0x4009,
  OCIRootIndex: 0x400a,
  OCIBlob: 0x400b,
} as const;

/** Filesystem types of partition objects (pkg/sif `FSType`; 6 is apptainer's gocryptfs squashfs). */
export const FsType = { Squashfs: 1, Ext3: 2, ImmuObj: 3, Raw: 4, EncryptedSquashfs: 5, GocryptfsSquashfs: 6 } as const;

/** Partition types (pkg/sif `PartType`): `PrimSys` is the root filesystem apptainer runs. */
export const PartType = { System: 1, PrimSys: 2, Data: 3, Overlay: 4 } as const;

/** Architecture codes of the header and partition descriptors (pkg/sif `arch.go`), by Go/OCI name. */
export const SIF_ARCH_CODES: Readonly<Record<string, string>> = {
  '386': '01',
  amd64: '02',
  arm: '03',
  arm64: '04',
  ppc64: '05',
  ppc64le: '06',
  mips: '07',
  mipsle: '08',
  mips64: '09',
  mips64le: '10',
  s390x: '11',
  riscv64: '12',
  loong64: '13',
};

/** The launch script apptainer writes (`internal/pkg/build/assemblers/sif.go`), so `./image.sif` runs it. */
export const LAUNCH_SCRIPT = '#!/usr/bin/env run-singularity\n';
/** Global header size in bytes (pkg/sif `header`). */
export const HEADER_SIZE = 128;
/** One descriptor in bytes (pkg/sif `rawDescriptor`). */
export const DESCRIPTOR_SIZE = 585;
/** Where the descriptor table starts (pkg/sif `CreateContainer` default `descriptorsOffset`). */
export const DESCRIPTORS_OFFSET = 4096;
/** Descriptor slots in the table (pkg/sif default capacity). */
export const DESCRIPTOR_CAPACITY = 48;
/** Partitions start on a multiple of this (pkg/sif `NewDescriptorInput` for `DataPartition`). */
export const PARTITION_ALIGNMENT = 4096;
/** The object group every object is placed in (pkg/sif `DefaultObjectGroup`). */
export const DEFAULT_GROUP = 1;

const MAGIC = 'SIF_MAGIC';
const VERSION = '01';
const GROUP_MASK = 0xf0000000;
const NAME_LEN = 128;
const SQUASHFS_MAGIC = Buffer.from('hsqs');
const CHUNK = 4 << 20;
/** Namespace of the version-5 UUIDs graph gives SIF images (a fixed random UUID). */
export const ID_NAMESPACE = 'a6af9e60-406b-4330-a940-52e990a7d1ed';

/** Thrown for a SIF that cannot be written (bad arguments, not a squashfs) or read (malformed). */
export class SifError extends Error {}

/** The global header (pkg/sif `header`); times in seconds since the epoch, sizes and offsets in bytes. */
export interface SifHeader {
  readonly launchScript: string;
  /** `SIF_MAGIC`. */
  readonly magic: string;
  /** `01`. */
  readonly version: string;
  /** Go/OCI architecture name of the primary partition, or `unknown` (code `00`). */
  readonly arch: string;
  /** The two-digit code as stored. */
  readonly archCode: string;
  /** The image id, a UUID in its string form. */
  readonly id: string;
  readonly createdAt: number;
  readonly modifiedAt: number;
  readonly descriptorsFree: number;
  readonly descriptorsTotal: number;
  readonly descriptorsOffset: number;
  readonly descriptorsSize: number;
  readonly dataOffset: number;
  readonly dataSize: number;
}

/** One used descriptor (pkg/sif `rawDescriptor`), with the partition metadata for partitions. */
export interface SifDescriptor {
  /** Slot in the descriptor table, from 0. */
  readonly index: number;
  /** One of `DataType`. */
  readonly dataType: number;
  /** Object id, from 1. */
  readonly id: number;
  /** Object group id without the 0xf0000000 mark; 0 for none. */
  readonly groupId: number;
  /** Linked object id (or group id when `linkedIsGroup`); 0 for none. */
  readonly linkedId: number;
  readonly linkedIsGroup: boolean;
  /** Bytes from the start of the file. */
  readonly offset: number;
  /** Bytes of the object. */
  readonly size: number;
  /** Bytes of the object plus the alignment padding before it. */
  readonly sizeWithPadding: number;
  readonly createdAt: number;
  readonly modifiedAt: number;
  readonly name: string;
  /** Partitions only: one of `FsType`. */
  readonly fsType?: number;
  /** Partitions only: one of `PartType`. */
  readonly partType?: number;
  /** Partitions only: Go/OCI architecture name, or `unknown`. */
  readonly arch?: string;
}

/** A parsed SIF file: its header and the descriptors in use, in table order. */
export interface SifImage {
  readonly header: SifHeader;
  readonly descriptors: readonly SifDescriptor[];
}

/** What a SIF holds besides its partition's bytes. */
export interface SifContents {
  /** The root filesystem's OCI architecture (the image config's `architecture`, a Go arch name). */
  readonly arch: string;
  /** Seconds since the epoch for the header's and descriptors' times (SOURCE_DATE_EPOCH); default 0. */
  readonly epoch?: number;
  /** The definition file object (`DataType.Deffile`, object 1 when given), as apptainer's builds record. */
  readonly definition?: string | Uint8Array;
  /**
   * JSON objects (`DataType.GenericJSON`) by descriptor name, written in name order as apptainer
   * does; apptainer reads `oci-config.json` (`pkg/image/sif.go` `SIFDescOCIConfigJSON`).
   */
  readonly json?: Readonly<Record<string, string | Uint8Array>>;
}

/** What to put in a SIF, and where. */
export interface WriteSifOptions extends SifContents {
  /** A squashfs image, streamed into the primary system partition (never read whole into memory). */
  readonly partitionFile: string;
  /** Where the SIF goes; written to a temp file beside it and renamed, so it is never half-written. */
  readonly outFile: string;
  readonly signal?: AbortSignal;
}

/** A SIF written by `writeSif` or `completeSif`: its layout and the digests of the whole file. */
export interface WrittenSif extends SifImage {
  /** Hex SHA-256 of the file. */
  readonly sha256: string;
  /** Hex MD5 of the file. */
  readonly md5: string;
  /** Bytes. */
  readonly size: number;
}

/**
 * The two-digit SIF architecture code for an OCI/Go architecture name (pkg/sif `getSIFArch`).
 * @throws SifError for a name SIF has no code for (pkg/sif refuses those for partitions too).
 */
export function sifArchCode(arch: string): string {
  const code = SIF_ARCH_CODES[arch];
  if (!code) throw new SifError(`architecture '${arch}' has no SIF code; SIF knows ${Object.keys(SIF_ARCH_CODES).join(', ')}`);
  return code;
}

function archName(code: string): string {
  return Object.entries(SIF_ARCH_CODES).find(([, c]) => c === code)?.[0] ?? 'unknown';
}

interface PlannedObject {
  readonly dataType: number;
  readonly name: string;
  readonly data?: Buffer;
  readonly offset: number;
  readonly size: number;
  readonly sizeWithPadding: number;
  readonly partition?: { readonly fsType: number; readonly partType: number; readonly archCode: string };
}

/** Where everything but the partition goes. */
interface Layout {
  readonly archCode: string;
  readonly epoch: number;
  /** The data objects before the partition, placed. */
  readonly objects: readonly PlannedObject[];
  /** Where the data objects start (right after the descriptor table). */
  readonly dataOffset: number;
  /** Where the last of them ends. */
  readonly end: number;
  /** Where the partition starts: `end` rounded up to `PARTITION_ALIGNMENT`. */
  readonly partitionOffset: number;
}

function layout(contents: SifContents): Layout {
  const epoch = contents.epoch ?? 0;
  if (!Number.isSafeInteger(epoch)) throw new SifError(`epoch must be a whole number of seconds, not ${epoch}`);
  const archCode = sifArchCode(contents.arch);
  // Objects in pkg/sif's order for apptainer builds: definition file, JSON objects by name, partition.
  const inputs: Array<{ dataType: number; name: string; data: Buffer }> = [];
  if (contents.definition !== undefined) inputs.push({ dataType: DataType.Deffile, name: '', data: Buffer.from(contents.definition) });
  for (const name of Object.keys(contents.json ?? {}).sort()) {
    if (Buffer.byteLength(name) > NAME_LEN) throw new SifError(`SIF object name '${name}' is longer than ${NAME_LEN} bytes`);
    inputs.push({ dataType: DataType.GenericJSON, name, data: Buffer.from(contents.json![name]) });
  }
  if (inputs.length + 1 > DESCRIPTOR_CAPACITY) throw new SifError(`${inputs.length + 1} objects do not fit the ${DESCRIPTOR_CAPACITY} descriptor slots`);
  const dataOffset = DESCRIPTORS_OFFSET + DESCRIPTOR_CAPACITY * DESCRIPTOR_SIZE;
  const objects: PlannedObject[] = [];
  let end = dataOffset;
  for (const input of inputs) {
    objects.push({ ...input, offset: end, size: input.data.length, sizeWithPadding: input.data.length });
    end += input.data.length;
  }
  return { archCode, epoch, objects, dataOffset, end, partitionOffset: alignUp(end, PARTITION_ALIGNMENT) };
}

/**
 * Where the primary system partition starts in a SIF holding `contents`, in bytes from the start
 * of the file: where `completeSif` expects it (`mksquashfs -offset` writes it there).
 * @throws SifError for an unknown architecture, a bad epoch or an over-long name.
 */
export function sifPartitionOffset(contents: SifContents): number {
  return layout(contents).partitionOffset;
}

/**
 * Write a SIF holding `definition`, `json` objects and `partitionFile` as the primary system
 * partition (squashfs, `arch`), atomically at `outFile`: the partition is copied into a temp file
 * beside it (the content id computed on the way), the rest is written in front of it and the
 * file's digests computed (`completeSif`'s last steps), and the temp file is renamed. Reads the
 * partition twice: once to copy it, once for the file's SHA-256 and MD5.
 * @returns the header and descriptors written, and the file's SHA-256, MD5 and size.
 * @throws SifError for an unknown architecture, a partition that is not a squashfs image, a bad
 *   epoch or an over-long name; the fs error if a file cannot be read or written; the signal's
 *   reason when aborted. `outFile` is untouched on any failure.
 */
export async function writeSif(options: WriteSifOptions): Promise<WrittenSif> {
  const front = planFront(layout(options), squashfsSize(options.partitionFile));
  return withTempFile(options.outFile, async (tmp) => {
    const content = createHash('sha256').update(front.bytes.subarray(HEADER_SIZE));
    const out = await open(tmp, 'w', 0o644);
    try {
      let position = front.partitionOffset;
      await readRange(
        options.partitionFile,
        0,
        front.partitionSize,
        async (chunk) => {
          content.update(chunk);
          await writeAll(out, chunk, position);
          position += chunk.length;
        },
        options.signal,
      );
    } finally {
      await out.close();
    }
    return sealSif(tmp, front, content.digest('hex'), options.signal);
  });
}

/**
 * Make `file`, which holds a squashfs image at `sifPartitionOffset(contents)` and nothing after
 * it (what `mksquashfs -offset` writes), a SIF: write the global header, the descriptor table and
 * the data objects in front of the partition, in place. Reads the partition twice, never writes
 * it: once for the content id, once for the file's SHA-256 and MD5 (computed on worker threads,
 * side by side).
 * @returns the header and descriptors written, and the file's SHA-256, MD5 and size.
 * @throws SifError for an unknown architecture, a bad epoch or name, or no squashfs superblock at
 *   the partition offset; the fs error if the file cannot be read or written; the signal's reason
 *   when aborted. On failure the file is no SIF; callers write it under a temp name.
 */
export async function completeSif(file: string, contents: SifContents, signal?: AbortSignal): Promise<WrittenSif> {
  const placed = layout(contents);
  const { partitionOffset } = placed;
  const partitionSize = statSync(file).size - partitionOffset;
  const magic = Buffer.alloc(4);
  const fd = openSync(file, 'r');
  try {
    readSync(fd, magic, 0, 4, partitionOffset);
  } finally {
    closeSync(fd);
  }
  if (partitionSize < 96 || !magic.equals(SQUASHFS_MAGIC)) throw new SifError(`${file} has no squashfs image at offset ${partitionOffset} (no 'hsqs' superblock), so it cannot become a SIF`);
  const front = planFront(placed, partitionSize);
  return sealSif(file, front, await contentSha256(front, file, partitionOffset, signal), signal);
}

/** Everything in front of a partition of `partitionSize` bytes, but the header's id. */
interface Front {
  /** `partitionOffset` bytes: [header, zeros until the id is known][zeros][descriptor table][objects][zeros]. */
  readonly bytes: Buffer;
  readonly partitionOffset: number;
  readonly partitionSize: number;
  /** The header, given the id. */
  readonly header: (id: Buffer) => Buffer;
}

function planFront(placed: Layout, partitionSize: number): Front {
  const { archCode, epoch, objects: dataObjects, dataOffset, end, partitionOffset } = placed;
  const objects: PlannedObject[] = [
    ...dataObjects,
    {
      dataType: DataType.Partition,
      name: '',
      offset: partitionOffset,
      size: partitionSize,
      sizeWithPadding: partitionOffset - end + partitionSize,
      partition: { fsType: FsType.Squashfs, partType: PartType.PrimSys, archCode },
    },
  ];
  const bytes = Buffer.alloc(partitionOffset);
  objects.forEach((o, i) => encodeDescriptor(o, i + 1, epoch).copy(bytes, DESCRIPTORS_OFFSET + i * DESCRIPTOR_SIZE));
  for (const o of dataObjects) o.data!.copy(bytes, o.offset);
  const dataSize = partitionOffset + partitionSize - dataOffset;
  const header = (id: Buffer) => encodeHeader({ archCode, id, epoch, descriptorsFree: DESCRIPTOR_CAPACITY - objects.length, dataOffset, dataSize });
  return { bytes, partitionOffset, partitionSize, header };
}

/**
 * Make `file`, a squashfs image and nothing else (what tar2sqfs writes, which cannot write at an
 * offset), a SIF: compute the content id and the finished file's SHA-256 and MD5 while the
 * squashfs is where it is (just written, so read from the page cache), then call
 * `makeRoom(offset)`, which must move the squashfs `offset` bytes further into the file (zeros
 * before it; `fallocate --insert-range` does it without moving data), and write the rest in front.
 * @returns the header and descriptors written, and the file's SHA-256, MD5 and size.
 * @throws SifError for an unknown architecture, a bad epoch or name, a file that is not a squashfs
 *   image, or one whose size `makeRoom` did not grow by exactly `offset`; the fs error if the file
 *   cannot be read or written; what `makeRoom` throws; the signal's reason when aborted. On
 *   failure the file is no SIF; callers write it under a temp name.
 */
export async function squashfsToSif(file: string, contents: SifContents, makeRoom: (offset: number) => Promise<void>, signal?: AbortSignal): Promise<WrittenSif> {
  const front = planFront(layout(contents), squashfsSize(file));
  setId(front, await contentSha256(front, file, 0, signal));
  const digests = await fileDigests(Buffer.from(front.bytes), file, 0, front.partitionSize, signal);
  await makeRoom(front.partitionOffset);
  const size = statSync(file).size;
  if (size !== front.partitionOffset + front.partitionSize) {
    throw new SifError(`${file} is ${size} bytes after moving its squashfs, not ${front.partitionOffset} + ${front.partitionSize}`);
  }
  await writeFront(file, front);
  return { ...readSif(file), ...digests, size };
}

/** Hex SHA-256 of every byte after the header: `front`'s, then the partition at `start` in `file`. */
async function contentSha256(front: Front, file: string, start: number, signal?: AbortSignal): Promise<string> {
  const content = createHash('sha256').update(front.bytes.subarray(HEADER_SIZE));
  await readRange(file, start, front.partitionSize, async (chunk) => void content.update(chunk), signal);
  return content.digest('hex');
}

/** Put the id named by `contentSha256` (SHA-256 of every byte after the header) in `front`'s header. */
function setId(front: Front, contentSha256: string): void {
  front.header(uuidV5(ID_NAMESPACE, `sha256:${contentSha256}`)).copy(front.bytes, 0);
}

async function writeFront(file: string, front: Front): Promise<void> {
  const out = await open(file, 'r+');
  try {
    await writeAll(out, front.bytes, 0);
  } finally {
    await out.close();
  }
}

/**
 * Finish `file`, which holds the partition already: the header carrying the id named by
 * `contentSha256`, the front written, then the file's SHA-256 and MD5.
 */
async function sealSif(file: string, front: Front, contentSha256: string, signal?: AbortSignal): Promise<WrittenSif> {
  setId(front, contentSha256);
  await writeFront(file, front);
  const digests = await fileDigests(front.bytes, file, front.partitionOffset, front.partitionSize, signal);
  return { ...readSif(file), ...digests, size: front.partitionOffset + front.partitionSize };
}

/**
 * SHA-256 and MD5 of `head` followed by `size` bytes of `file` from `start`, on worker threads fed
 * the same chunks (MD5, half as fast as SHA-256, sets the pace). `head` is handed to a worker:
 * the caller must not use it afterwards.
 */
async function fileDigests(head: Buffer, file: string, start: number, size: number, signal?: AbortSignal): Promise<{ sha256: string; md5: string }> {
  const sha256 = new HashWorker('sha256');
  const md5 = new HashWorker('md5');
  try {
    const feed = async (chunk: Buffer) => {
      await sha256.update(chunk, false);
      await md5.update(chunk, true);
    };
    await feed(head);
    await readRange(file, start, size, feed, signal);
    const [sha256hex, md5hex] = await Promise.all([sha256.digest(), md5.digest()]);
    return { sha256: sha256hex, md5: md5hex };
  } finally {
    await Promise.all([sha256.close(), md5.close()]);
  }
}

/**
 * Parse a SIF file's global header and its used descriptors, in table order (pkg/sif
 * `LoadContainer`); reads only the header and the table.
 * @throws SifError when the file is too short, the magic or version is wrong, or the descriptor
 *   table or an object lies outside the file; the fs error when it cannot be read.
 */
export function readSif(file: string): SifImage {
  const fd = openSync(file, 'r');
  try {
    const fileSize = fstatSync(fd).size;
    const raw = readExactly(fd, 0, HEADER_SIZE, fileSize, `${file} is ${fileSize} bytes, shorter than the ${HEADER_SIZE}-byte SIF global header`);
    const magic = cString(raw.subarray(32, 42));
    if (magic !== MAGIC) throw new SifError(`${file} is not a SIF file: the magic at offset 32 is '${magic}', not '${MAGIC}'`);
    const version = cString(raw.subarray(42, 45));
    if (version !== VERSION) throw new SifError(`${file} is SIF version '${version}'; only version '${VERSION}' is supported`);
    const archCode = cString(raw.subarray(45, 48));
    const header: SifHeader = {
      launchScript: cString(raw.subarray(0, 32)),
      magic,
      version,
      arch: archName(archCode),
      archCode,
      id: formatUuid(raw.subarray(48, 64)),
      createdAt: int64(raw, 64),
      modifiedAt: int64(raw, 72),
      descriptorsFree: int64(raw, 80),
      descriptorsTotal: int64(raw, 88),
      descriptorsOffset: int64(raw, 96),
      descriptorsSize: int64(raw, 104),
      dataOffset: int64(raw, 112),
      dataSize: int64(raw, 120),
    };
    const total = header.descriptorsTotal;
    if (total < 0 || header.descriptorsOffset < HEADER_SIZE || header.descriptorsSize < total * DESCRIPTOR_SIZE) {
      throw new SifError(`${file}: descriptor table of ${total} entries at offset ${header.descriptorsOffset} (${header.descriptorsSize} bytes) is malformed`);
    }
    const table = readExactly(
      fd,
      header.descriptorsOffset,
      total * DESCRIPTOR_SIZE,
      fileSize,
      `${file}: the descriptor table [${header.descriptorsOffset}, ${header.descriptorsOffset + total * DESCRIPTOR_SIZE}) extends past the end of the file (${fileSize} bytes)`,
    );
    const descriptors: SifDescriptor[] = [];
    for (let i = 0; i < total; i++) {
      const d = table.subarray(i * DESCRIPTOR_SIZE, (i + 1) * DESCRIPTOR_SIZE);
      if (d[4] !== 1) continue;
      const descriptor = decodeDescriptor(d, i);
      if (descriptor.offset < 0 || descriptor.size < 0 || descriptor.offset + descriptor.size > fileSize) {
        throw new SifError(`${file}: object ${descriptor.id} [${descriptor.offset}, ${descriptor.offset + descriptor.size}) lies outside the file (${fileSize} bytes)`);
      }
      descriptors.push(descriptor);
    }
    return { header, descriptors };
  } finally {
    closeSync(fd);
  }
}

/**
 * The primary system partition of a parsed SIF (what apptainer mounts as the root filesystem).
 * @throws SifError when there is none, or more than one.
 */
export function primaryPartition(image: SifImage): SifDescriptor {
  const found = image.descriptors.filter((d) => d.dataType === DataType.Partition && d.partType === PartType.PrimSys);
  if (found.length !== 1) throw new SifError(`the SIF has ${found.length} primary system partitions; exactly one is needed`);
  return found[0];
}

function alignUp(offset: number, alignment: number): number {
  return Math.ceil(offset / alignment) * alignment;
}

/** Size of a squashfs image file. @throws SifError when it does not start with the squashfs magic. */
function squashfsSize(file: string): number {
  const fd = openSync(file, 'r');
  try {
    const size = fstatSync(fd).size;
    const magic = Buffer.alloc(4);
    readSync(fd, magic, 0, 4, 0);
    if (size < 96 || !magic.equals(SQUASHFS_MAGIC)) throw new SifError(`${file} is not a squashfs image (no 'hsqs' superblock), so it cannot be a SIF squashfs partition`);
    return size;
  } finally {
    closeSync(fd);
  }
}

function encodeHeader(h: { archCode: string; id: Buffer; epoch: number; descriptorsFree: number; dataOffset: number; dataSize: number }): Buffer {
  const b = Buffer.alloc(HEADER_SIZE);
  b.write(LAUNCH_SCRIPT, 0, 'latin1');
  b.write(MAGIC, 32, 'latin1'); // NUL-terminated by the zeroed buffer
  b.write(VERSION, 42, 'latin1');
  b.write(h.archCode, 45, 'latin1');
  h.id.copy(b, 48);
  b.writeBigInt64LE(BigInt(h.epoch), 64);
  b.writeBigInt64LE(BigInt(h.epoch), 72);
  b.writeBigInt64LE(BigInt(h.descriptorsFree), 80);
  b.writeBigInt64LE(BigInt(DESCRIPTOR_CAPACITY), 88);
  b.writeBigInt64LE(BigInt(DESCRIPTORS_OFFSET), 96);
  b.writeBigInt64LE(BigInt(DESCRIPTOR_CAPACITY * DESCRIPTOR_SIZE), 104);
  b.writeBigInt64LE(BigInt(h.dataOffset), 112);
  b.writeBigInt64LE(BigInt(h.dataSize), 120);
  return b;
}

function encodeDescriptor(o: PlannedObject, id: number, epoch: number): Buffer {
  const b = Buffer.alloc(DESCRIPTOR_SIZE);
  b.writeInt32LE(o.dataType, 0);
  b.writeUInt8(1, 4); // used
  b.writeUInt32LE(id, 5);
  b.writeUInt32LE((DEFAULT_GROUP | GROUP_MASK) >>> 0, 9);
  b.writeUInt32LE(0, 13); // linked to nothing
  b.writeBigInt64LE(BigInt(o.offset), 17);
  b.writeBigInt64LE(BigInt(o.size), 25);
  b.writeBigInt64LE(BigInt(o.sizeWithPadding), 33);
  b.writeBigInt64LE(BigInt(epoch), 41);
  b.writeBigInt64LE(BigInt(epoch), 49);
  // UID and GID (offsets 57, 65) stay 0, as pkg/sif writes them.
  b.write(o.name, 73, 'utf8');
  if (o.partition) {
    b.writeInt32LE(o.partition.fsType, 201);
    b.writeInt32LE(o.partition.partType, 205);
    b.write(o.partition.archCode, 209, 'latin1');
  }
  return b;
}

function decodeDescriptor(d: Buffer, index: number): SifDescriptor {
  const linked = d.readUInt32LE(13);
  const base = {
    index,
    dataType: d.readInt32LE(0),
    id: d.readUInt32LE(5),
    groupId: (d.readUInt32LE(9) & ~GROUP_MASK) >>> 0,
    linkedId: (linked & ~GROUP_MASK) >>> 0,
    linkedIsGroup: ((linked & GROUP_MASK) >>> 0) === GROUP_MASK,
    offset: int64(d, 17),
    size: int64(d, 25),
    sizeWithPadding: int64(d, 33),
    createdAt: int64(d, 41),
    modifiedAt: int64(d, 49),
    name: cString(d.subarray(73, 73 + NAME_LEN)),
  };
  if (base.dataType !== DataType.Partition) return base;
  return { ...base, fsType: d.readInt32LE(201), partType: d.readInt32LE(205), arch: archName(cString(d.subarray(209, 212))) };
}

function int64(b: Buffer, offset: number): number {
  const v = b.readBigInt64LE(offset);
  if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) throw new SifError(`64-bit field at offset ${offset} (${v}) is too large`);
  return Number(v);
}

function cString(b: Buffer): string {
  const nul = b.indexOf(0);
  return b.subarray(0, nul === -1 ? b.length : nul).toString('utf8');
}

function readExactly(fd: number, position: number, length: number, fileSize: number, tooShort: string): Buffer {
  if (position + length > fileSize) throw new SifError(tooShort);
  const b = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const n = readSync(fd, b, done, length - done, position + done);
    if (n === 0) throw new SifError(tooShort);
    done += n;
  }
  return b;
}

/** RFC 4122 §4.3 name-based UUID, version 5 (SHA-1 of namespace bytes + name). */
function uuidV5(namespace: string, name: string): Buffer {
  const ns = Buffer.from(namespace.replace(/-/g, ''), 'hex');
  const b = createHash('sha1').update(ns).update(name, 'utf8').digest().subarray(0, 16);
  b[6] = (b[6] & 0x0f) | 0x50;
  b[8] = (b[8] & 0x3f) | 0x80;
  return b;
}

function formatUuid(b: Buffer): string {
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

async function writeAll(out: FileHandle, bytes: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < bytes.length) {
    const { bytesWritten } = await out.write(bytes, done, bytes.length - done, position + done);
    done += bytesWritten;
  }
}

/**
 * Stream `size` bytes of `file` from byte `start` into `sink` in 4 MiB chunks, reading the next
 * chunk while the sink works. Each chunk has its own memory, so the sink may keep it (or hand it
 * to a worker).
 * @throws SifError if the file is shorter.
 */
async function readRange(file: string, start: number, size: number, sink: (chunk: Buffer) => Promise<void>, signal?: AbortSignal): Promise<void> {
  const input = await open(file, 'r');
  let pending: Promise<{ bytesRead: number; buffer: Buffer }> | undefined;
  const readAt = (done: number) => input.read(Buffer.allocUnsafeSlow(Math.min(CHUNK, size - done)), 0, Math.min(CHUNK, size - done), start + done);
  try {
    let done = 0;
    if (size > 0) pending = readAt(0);
    while (done < size) {
      signal?.throwIfAborted();
      const { bytesRead, buffer } = await pending!;
      pending = undefined;
      if (bytesRead === 0) throw new SifError(`${file} ended after ${start + done} of ${start + size} bytes while it was being read`);
      done += bytesRead;
      if (done < size) pending = readAt(done);
      await sink(buffer.subarray(0, bytesRead));
    }
  } finally {
    await pending?.catch(() => undefined); // never close the file under a read in flight
    await input.close();
  }
}

/**
 * A hash computed on a worker thread. `update` hands a chunk over (with `transfer`, its memory
 * moves to the worker when it is a whole ArrayBuffer, and the caller must not touch it again;
 * otherwise it is copied) and waits only when more than a few chunks are queued, so memory stays
 * bounded whichever side is faster.
 */
class HashWorker {
  private readonly worker: Worker;
  private inFlight = 0;
  private wake: (() => void) | undefined;
  private failure: Error | undefined;
  private result: ((hex: string) => void) | undefined;

  constructor(algorithm: string) {
    this.worker = new Worker(
      `const { parentPort, workerData } = require('node:worker_threads');
       const hash = require('node:crypto').createHash(workerData);
       parentPort.on('message', (m) => {
         if (m === null) parentPort.postMessage(hash.digest('hex'));
         else { hash.update(new Uint8Array(m.buffer, m.offset, m.length)); parentPort.postMessage(0); }
       });`,
      { eval: true, workerData: algorithm },
    );
    this.worker.on('message', (m: number | string) => {
      if (typeof m === 'string') this.result?.(m);
      else this.inFlight--;
      this.wake?.();
    });
    this.worker.on('error', (e) => {
      this.failure = e;
      this.wake?.();
    });
  }

  async update(chunk: Buffer, transfer: boolean): Promise<void> {
    while (this.inFlight >= 4 && !this.failure) await new Promise<void>((r) => (this.wake = r));
    if (this.failure) throw this.failure;
    const whole = transfer && chunk.byteOffset === 0 && chunk.byteLength === chunk.buffer.byteLength && chunk.buffer instanceof ArrayBuffer;
    const message = { buffer: chunk.buffer, offset: chunk.byteOffset, length: chunk.byteLength };
    this.worker.postMessage(message, whole ? [chunk.buffer as ArrayBuffer] : []);
    this.inFlight++;
  }

  async digest(): Promise<string> {
    const hex = new Promise<string>((resolve) => (this.result = resolve));
    this.worker.postMessage(null);
    while (!this.failure) {
      const done = await Promise.race([hex, new Promise<undefined>((r) => (this.wake = () => r(undefined)))]);
      if (done !== undefined) return done;
    }
    throw this.failure;
  }

  async close(): Promise<void> {
    await this.worker.terminate();
  }
}
