/**
 * SIF signatures in the DSSE form `apptainer sign --key` writes (github.com/apptainer/sif
 * `pkg/integrity`: sign.go, metadata.go, dsse.go), so `apptainer verify --key` accepts them.
 *
 * What is signed is an object group (graph's SIFs hold one, group 1: every object). The signed
 * message is the image metadata JSON, in Go `encoding/json` field order:
 *   {"version":1,"header":{"digest":"sha256:<hex>"},
 *    "objects":[{"relativeId":N,"descriptorDigest":"sha256:<hex>","objectDigest":"sha256:<hex>"},…]}
 * - the header digest covers the launch script (32 bytes), magic (10), version (3) and image id
 *   (16): the fields pkg/sif `header.GetIntegrityReader` reads (not times, counts or sizes);
 * - each object of the group, by id, has a descriptor digest over its integrity fields
 *   (`Descriptor.GetIntegrityReader`: data type int32, used byte, id relative to the group's
 *   smallest id uint32, linked id uint32, size int64, created int64, uid int64, gid int64, name
 *   [128], extra [384], little endian) and an object digest over its bytes.
 * That message is wrapped in a DSSE envelope (github.com/secure-systems-lab/dsse `envelope.md`)
 * with payload type `application/vnd.sylabs.sif-metadata+json` (key id: the key's SSH fingerprint,
 * as sigstore writes it); the signature is ECDSA P-256 over
 * SHA-256 of the pre-authentication encoding `DSSEv1 <len> <type> <len> <payload>`, ASN.1 DER,
 * base64 — so `openssl dgst -sha256 -verify` checks it on the PAE bytes.
 *
 * The envelope becomes a new data object (`DataType.Signature`, in no group, linked to group 1,
 * hash type SHA-256, no entity) appended after the last object, in the first free descriptor slot
 * (its id is the slot's index + 1, as pkg/sif assigns ids), with the header's free count and data
 * size updated; its times are the image's creation time, so nothing depends on the clock.
 */
import { createHash, createPublicKey, type KeyObject } from 'node:crypto';
import { closeSync, openSync, readSync, writeSync } from 'node:fs';
import { DataType, DESCRIPTOR_SIZE, HEADER_SIZE, primaryPartition, readSif, type SifDescriptor } from '../sif/sif.js';
import { signBytes, verifyBytes } from './sign.js';

/** The DSSE payload type of SIF image metadata (pkg/integrity `metadataMediaType`). */
export const SIF_METADATA_TYPE = 'application/vnd.sylabs.sif-metadata+json';
/** pkg/sif `descrGroupMask`: group ids and linked group ids are stored with these bits set. */
const GROUP_MASK = 0xf0000000;
/** pkg/sif `hashSHA256`. */
const HASH_SHA256 = 1;

/**
 * The key id sigstore's DSSE signer writes (`signatures[].keyid`): the SSH fingerprint of the
 * public key, `SHA256:` + unpadded base64 of SHA-256 of its SSH wire form (RFC 5656 §3.1:
 * "ecdsa-sha2-nistp256", "nistp256", the uncompressed point), as `ssh-keygen -l` prints it.
 */
export function sshKeyId(key: KeyObject): string {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  const point = pub.export({ type: 'spki', format: 'der' }).subarray(-65);
  const str = (b: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(b.length);
    return Buffer.concat([len, b]);
  };
  const wire = Buffer.concat([str(Buffer.from('ecdsa-sha2-nistp256')), str(Buffer.from('nistp256')), str(point)]);
  return `SHA256:${createHash('sha256').update(wire).digest('base64').replace(/=+$/, '')}`;
}

/** DSSE's pre-authentication encoding (`protocol.md`). */
export function pae(payloadType: string, payload: Buffer): Buffer {
  const type = Buffer.from(payloadType);
  return Buffer.concat([Buffer.from(`DSSEv1 ${type.length} `), type, Buffer.from(` ${payload.length} `), payload]);
}

function readAt(fd: number, offset: number, length: number): Buffer {
  const b = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const n = readSync(fd, b, done, length - done, offset + done);
    if (n === 0) throw new Error(`unexpected end of file at ${offset + done}`);
    done += n;
  }
  return b;
}

function sha256Range(fd: number, offset: number, length: number): string {
  const hash = createHash('sha256');
  const chunk = Buffer.alloc(1 << 20);
  for (let done = 0; done < length; ) {
    const n = readSync(fd, chunk, 0, Math.min(chunk.length, length - done), offset + done);
    if (n === 0) throw new Error(`unexpected end of file at ${offset + done}`);
    hash.update(chunk.subarray(0, n));
    done += n;
  }
  return `sha256:${hash.digest('hex')}`;
}

/** The image metadata of `group` (see the module comment), as compact JSON. */
function imageMetadata(fd: number, descriptors: readonly SifDescriptor[], descriptorsOffset: number, group: number): Buffer {
  const header = readAt(fd, 0, HEADER_SIZE);
  const headerDigest = `sha256:${createHash('sha256').update(Buffer.concat([header.subarray(0, 45), header.subarray(48, 64)])).digest('hex')}`;
  const members = descriptors.filter((d) => d.groupId === group).sort((a, b) => a.id - b.id);
  const minId = members[0]?.id ?? 0;
  const objects = members.map((d) => {
    const raw = readAt(fd, descriptorsOffset + d.index * DESCRIPTOR_SIZE, DESCRIPTOR_SIZE);
    const fields = Buffer.alloc(4 + 1 + 4 + 4 + 8 * 4);
    raw.copy(fields, 0, 0, 5); // data type, used
    fields.writeUInt32LE(d.id - minId, 5);
    raw.copy(fields, 9, 13, 17); // linked id
    raw.copy(fields, 13, 25, 33); // size
    raw.copy(fields, 21, 41, 49); // created
    raw.copy(fields, 29, 57, 73); // uid, gid
    const descriptorDigest = `sha256:${createHash('sha256').update(Buffer.concat([fields, raw.subarray(73, 585)])).digest('hex')}`;
    return { relativeId: d.id - minId, descriptorDigest, objectDigest: sha256Range(fd, d.offset, d.size) };
  });
  return Buffer.from(JSON.stringify({ version: 1, header: { digest: headerDigest }, objects }));
}

/**
 * Sign object group 1 of the SIF `file` in place (it must be a private copy: a temp file the
 * caller renames).
 * @throws SifError when it is no SIF or has no free descriptor slot.
 */
export function signSif(file: string, key: KeyObject): void {
  const sif = readSif(file);
  const fd = openSync(file, 'r+');
  try {
    const { header } = sif;
    const metadata = imageMetadata(fd, sif.descriptors, header.descriptorsOffset, 1);
    const envelope = Buffer.from(
      JSON.stringify({ payloadType: SIF_METADATA_TYPE, payload: metadata.toString('base64'), signatures: [{ keyid: sshKeyId(key), sig: signBytes(key, pae(SIF_METADATA_TYPE, metadata)).toString('base64') }] }),
    );
    const used = new Set(sif.descriptors.map((d) => d.index));
    let slot = 0;
    while (used.has(slot)) slot++;
    if (slot >= header.descriptorsTotal) throw new Error(`${file}: no free descriptor slot for a signature`);
    const dataEnd = Math.max(header.dataOffset, ...sif.descriptors.map((d) => d.offset + d.size));
    const d = Buffer.alloc(DESCRIPTOR_SIZE);
    d.writeInt32LE(DataType.Signature, 0);
    d[4] = 1;
    d.writeUInt32LE(slot + 1, 5);
    d.writeUInt32LE(GROUP_MASK >>> 0, 9);
    d.writeUInt32LE((GROUP_MASK | 1) >>> 0, 13);
    d.writeBigInt64LE(BigInt(dataEnd), 17);
    d.writeBigInt64LE(BigInt(envelope.length), 25);
    d.writeBigInt64LE(BigInt(envelope.length), 33);
    d.writeBigInt64LE(BigInt(header.createdAt), 41);
    d.writeBigInt64LE(BigInt(header.createdAt), 49);
    d.writeInt32LE(HASH_SHA256, 201);
    writeSync(fd, envelope, 0, envelope.length, dataEnd);
    writeSync(fd, d, 0, DESCRIPTOR_SIZE, header.descriptorsOffset + slot * DESCRIPTOR_SIZE);
    const counts = Buffer.alloc(8);
    counts.writeBigInt64LE(BigInt(header.descriptorsFree - 1));
    writeSync(fd, counts, 0, 8, 80);
    counts.writeBigInt64LE(BigInt(dataEnd + envelope.length - header.dataOffset));
    writeSync(fd, counts, 0, 8, 120);
  } finally {
    closeSync(fd);
  }
}

/**
 * `sha256:<hex>` of the SIF's primary system partition (the root filesystem apptainer runs): what
 * a signature protects and published.lock.json records, whatever else the file holds.
 * @throws SifError when it is no SIF or has no single primary partition.
 */
export function partitionDigest(file: string): string {
  const partition = primaryPartition(readSif(file));
  const fd = openSync(file, 'r');
  try {
    return sha256Range(fd, partition.offset, partition.size);
  } finally {
    closeSync(fd);
  }
}

/** The DSSE envelopes of the signature objects linked to group 1, with their PAE and payload. */
export function sifSignatures(file: string): Array<{ id: number; envelope: { payloadType: string; payload: string; signatures: Array<{ keyid?: string; sig: string }> } }> {
  const sif = readSif(file);
  const fd = openSync(file, 'r');
  try {
    return sif.descriptors
      .filter((d) => d.dataType === DataType.Signature && d.linkedIsGroup && d.linkedId === 1)
      .map((d) => ({ id: d.id, envelope: JSON.parse(readAt(fd, d.offset, d.size).toString('utf8')) }));
  } finally {
    closeSync(fd);
  }
}

/**
 * Verify the SIF's DSSE signature of group 1 with `key`, and that the metadata it signs matches
 * the file (header, every object's descriptor and bytes, the same set of objects).
 * @returns undefined when it does, else what is wrong (naming the object).
 */
export function verifySifSignature(file: string, key: KeyObject): string | undefined {
  const sif = readSif(file);
  const signatures = sifSignatures(file);
  if (!signatures.length) return 'no signature object (DataType Signature linked to group 1)';
  const fd = openSync(file, 'r');
  try {
    const actual = JSON.parse(imageMetadata(fd, sif.descriptors, sif.header.descriptorsOffset, 1).toString('utf8')) as Metadata;
    const reasons: string[] = [];
    for (const { id, envelope } of signatures) {
      if (envelope.payloadType !== SIF_METADATA_TYPE) {
        reasons.push(`object ${id}: payload type ${envelope.payloadType}`);
        continue;
      }
      const payload = Buffer.from(envelope.payload, 'base64');
      if (!envelope.signatures.some((s) => verifyBytes(key, pae(envelope.payloadType, payload), Buffer.from(s.sig, 'base64')))) {
        reasons.push(`object ${id}: the DSSE signature does not verify with this key`);
        continue;
      }
      const signed = JSON.parse(payload.toString('utf8')) as Metadata;
      const why = compareMetadata(signed, actual, sif.descriptors);
      if (why) reasons.push(`object ${id}: ${why}`);
      else return undefined;
    }
    return reasons.join('; ');
  } finally {
    closeSync(fd);
  }
}

interface Metadata {
  header: { digest: string };
  objects: Array<{ relativeId: number; descriptorDigest: string; objectDigest: string }>;
}

function compareMetadata(signed: Metadata, actual: Metadata, descriptors: readonly SifDescriptor[]): string | undefined {
  if (signed.header?.digest !== actual.header.digest) return 'the header (launch script, magic, version or id) changed since it was signed';
  const group = descriptors.filter((d) => d.groupId === 1).sort((a, b) => a.id - b.id);
  const minId = group[0]?.id ?? 0;
  const name = (rel: number) => {
    const d = group.find((x) => x.id - minId === rel);
    return d ? `object ${d.id}${d.dataType === DataType.Partition ? ' (partition)' : ''}` : `object ${rel + minId}`;
  };
  for (const o of actual.objects) {
    const s = signed.objects?.find((x) => x.relativeId === o.relativeId);
    if (!s) return `${name(o.relativeId)} is not signed`;
    if (s.descriptorDigest !== o.descriptorDigest) return `${name(o.relativeId)}: its descriptor changed since it was signed`;
    if (s.objectDigest !== o.objectDigest) return `${name(o.relativeId)}: its data changed since it was signed (${s.objectDigest.slice(0, 19)} → ${o.objectDigest.slice(0, 19)})`;
  }
  for (const s of signed.objects ?? []) if (!actual.objects.some((o) => o.relativeId === s.relativeId)) return `${name(s.relativeId)} was signed but is gone`;
  return undefined;
}
