/**
 * Signing keys and cosign-compatible image signatures.
 *
 * Keys are ECDSA P-256 (prime256v1), PEM: a private key as PKCS#8 (`BEGIN PRIVATE KEY`) or SEC 1
 * (`BEGIN EC PRIVATE KEY`), unencrypted; a public key as SPKI (`BEGIN PUBLIC KEY`). A key is named
 * by its fingerprint, `sha256:<hex>` of the public key's SPKI DER: that, never the private key,
 * goes into action keys, logs and messages. The private key's bytes are read when a signature is
 * made and never copied anywhere.
 *
 * Image signatures follow cosign (github.com/sigstore/cosign `specs/SIGNATURE_SPEC.md`): the
 * payload is the "simple signing" JSON naming the manifest digest
 * (`{"critical":{"identity":{"docker-reference":REPO},"image":{"docker-manifest-digest":DIGEST},
 * "type":"cosign container image signature"},"optional":null}`), the signature an ASN.1 DER ECDSA
 * signature over the payload's SHA-256, base64, in the layer annotation
 * `dev.cosignproject.cosign/signature`; the manifest holding it goes to tag `sha256-<hex>.sig`.
 * `openssl dgst -sha256 -verify PUB.pem -signature SIG payload` accepts it.
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { ContentStore } from '../../engine/cache/store.js';
import { MEDIA_TYPE_CONFIG, MEDIA_TYPE_MANIFEST, type Descriptor } from '../oci/image.js';

/** A key that cannot be used; the message names the file and what is wrong, never its bytes. */
export class KeyError extends Error {}

/** The simple-signing payload's media type (cosign). */
export const MEDIA_TYPE_SIMPLE_SIGNING = 'application/vnd.dev.cosign.simplesigning.v1+json';
/** The annotation holding the base64 signature (cosign). */
export const ANNOTATION_SIGNATURE = 'dev.cosignproject.cosign/signature';

/** `sha256:<hex>` of a public key's SPKI DER. */
export function keyFingerprint(key: KeyObject): string {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  return `sha256:${createHash('sha256').update(pub.export({ type: 'spki', format: 'der' })).digest('hex')}`;
}

function checkP256(key: KeyObject, file: string): KeyObject {
  if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    const what = key.asymmetricKeyType === 'ec' ? `an EC key on ${key.asymmetricKeyDetails?.namedCurve}` : `a${key.asymmetricKeyType === 'rsa' ? 'n' : ''} ${key.asymmetricKeyType ?? 'unknown'} key`;
    throw new KeyError(`${file}: ${what}, not an ECDSA P-256 key (make one with 'graph key generate')`);
  }
  return key;
}

function readPem(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    throw new KeyError(`${file}: cannot read the key (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
}

/**
 * Load an ECDSA P-256 private key.
 * @throws KeyError naming `file` when it is missing, not a PEM private key, encrypted, or another type.
 */
export function loadPrivateKey(file: string): KeyObject {
  const pem = readPem(file);
  if (!/-----BEGIN (EC |ENCRYPTED )?PRIVATE KEY-----/.test(pem)) throw new KeyError(`${file}: not a PEM private key (expected 'BEGIN PRIVATE KEY' or 'BEGIN EC PRIVATE KEY')`);
  if (/ENCRYPTED/.test(pem)) throw new KeyError(`${file}: the private key is encrypted; graph takes an unencrypted PEM key`);
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: pem, format: 'pem' });
  } catch {
    throw new KeyError(`${file}: malformed PEM private key`);
  }
  return checkP256(key, file);
}

/**
 * Load an ECDSA P-256 public key (SPKI PEM; a private key file gives its public half).
 * @throws KeyError naming `file`.
 */
export function loadPublicKey(file: string): KeyObject {
  const pem = readPem(file);
  if (/PRIVATE KEY-----/.test(pem)) return createPublicKey(loadPrivateKey(file));
  if (!/-----BEGIN PUBLIC KEY-----/.test(pem)) throw new KeyError(`${file}: not a PEM public key (expected 'BEGIN PUBLIC KEY')`);
  let key: KeyObject;
  try {
    key = createPublicKey({ key: pem, format: 'pem' });
  } catch {
    throw new KeyError(`${file}: malformed PEM public key`);
  }
  return checkP256(key, file);
}

/** A new key pair as PEM: PKCS#8 private, SPKI public. */
export function generateKeyPair(): { privatePem: string; publicPem: string; fingerprint: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  return {
    privatePem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    publicPem: publicKey.export({ type: 'spki', format: 'pem' }) as string,
    fingerprint: keyFingerprint(publicKey),
  };
}

/** An ASN.1 DER ECDSA signature over SHA-256 of `data`. */
export function signBytes(key: KeyObject, data: Buffer): Buffer {
  return sign('sha256', data, key);
}

/** Does `signature` (DER) sign SHA-256 of `data` under `key`? */
export function verifyBytes(key: KeyObject, data: Buffer, signature: Buffer): boolean {
  try {
    return verify('sha256', data, key, signature);
  } catch {
    return false;
  }
}

/** The simple-signing payload for `digest` at `repository` (`HOST/REPO`, or the image's name in a layout). */
export function simpleSigningPayload(repository: string, digest: string): Buffer {
  return Buffer.from(
    JSON.stringify({ critical: { identity: { 'docker-reference': repository }, image: { 'docker-manifest-digest': digest }, type: 'cosign container image signature' }, optional: null }),
  );
}

/** The tag of an image's cosign signature: `sha256-<hex>.sig`. */
export const signatureTag = (digest: string) => `${digest.replace(':', '-')}.sig`;

/** A signature manifest in the store, ready to push or write into a layout. */
export interface StoredSignature {
  readonly descriptor: Descriptor;
  readonly bytes: Buffer;
  readonly blobs: readonly Descriptor[];
  /** The payload and the DER signature (for `openssl dgst -verify`). */
  readonly payload: Buffer;
  readonly signature: Buffer;
}

/**
 * Sign `digest` as cosign does and store the signature image: the payload as its one layer
 * (annotated with the signature), a config naming that layer, fixed times (cosign's zero time), so
 * the same key and digest give the same manifest (ECDSA signatures are randomized: the signature
 * and so the manifest differ per signing).
 */
export function putSignature(store: ContentStore, key: KeyObject, repository: string, digest: string): StoredSignature {
  const payload = simpleSigningPayload(repository, digest);
  const signature = signBytes(key, payload);
  const layer = store.putBytes(payload);
  const zero = '0001-01-01T00:00:00Z';
  const config = store.putBytes(JSON.stringify({ architecture: '', created: zero, history: [{ created: zero }], os: '', rootfs: { type: 'layers', diff_ids: [layer.digest] }, config: {} }));
  const layerDescriptor: Descriptor = { mediaType: MEDIA_TYPE_SIMPLE_SIGNING, digest: layer.digest, size: layer.size, annotations: { [ANNOTATION_SIGNATURE]: signature.toString('base64') } };
  const manifest = { schemaVersion: 2, mediaType: MEDIA_TYPE_MANIFEST, config: { mediaType: MEDIA_TYPE_CONFIG, digest: config.digest, size: config.size }, layers: [layerDescriptor] };
  const bytes = Buffer.from(JSON.stringify(manifest));
  const stored = store.putBytes(bytes);
  return {
    descriptor: { mediaType: MEDIA_TYPE_MANIFEST, digest: stored.digest, size: stored.size },
    bytes,
    blobs: [{ mediaType: MEDIA_TYPE_CONFIG, digest: config.digest, size: config.size }, layerDescriptor],
    payload,
    signature,
  };
}

/**
 * Check a cosign signature manifest's layers: one whose payload names `digest` and whose
 * signature verifies under `key`.
 * @param blob reads a layer's bytes by digest (verified by the caller).
 * @returns undefined when one does, else why not.
 */
export function checkSignatureManifest(manifest: { layers?: Descriptor[] }, blob: (digest: string) => Buffer, key: KeyObject, digest: string): string | undefined {
  const reasons: string[] = [];
  for (const layer of manifest.layers ?? []) {
    const sig = layer.annotations?.[ANNOTATION_SIGNATURE];
    if (layer.mediaType !== MEDIA_TYPE_SIMPLE_SIGNING || !sig) continue;
    const payload = blob(layer.digest);
    let named: unknown;
    try {
      named = (JSON.parse(payload.toString('utf8')) as { critical?: { image?: { 'docker-manifest-digest'?: string } } }).critical?.image?.['docker-manifest-digest'];
    } catch {
      reasons.push(`payload ${layer.digest} is not JSON`);
      continue;
    }
    if (named !== digest) {
      reasons.push(`payload ${layer.digest} names ${String(named)}, not ${digest}`);
      continue;
    }
    if (verifyBytes(key, payload, Buffer.from(sig, 'base64'))) return undefined;
    reasons.push(`the signature on payload ${layer.digest} does not verify with key ${keyFingerprint(key)}`);
  }
  return reasons.length ? reasons.join('; ') : 'no cosign signature layer';
}
