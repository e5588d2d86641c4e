/**
 * OCI images in the content-addressed store: image configs, manifests and their descriptors,
 * following the OCI image spec v1.1 (`config.md`, `manifest.md`, `descriptor.md`).
 *
 * JSON we write is serialized from objects built here in a fixed field order, so the same image
 * always has the same bytes and digest. JSON we read (a base image's config) keeps its original
 * bytes: a base is reused by digest, never re-serialized.
 */
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import type { ContentStore } from '../../engine/cache/store.js';

export const MEDIA_TYPE_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const MEDIA_TYPE_INDEX = 'application/vnd.oci.image.index.v1+json';
export const MEDIA_TYPE_CONFIG = 'application/vnd.oci.image.config.v1+json';
export const MEDIA_TYPE_DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
export const MEDIA_TYPE_DOCKER_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';

/** A content descriptor (descriptor.md): what a manifest or index points at. */
export interface Descriptor {
  readonly mediaType: string;
  /** `sha256:<hex>`. */
  readonly digest: string;
  /** Bytes. */
  readonly size: number;
  readonly annotations?: Readonly<Record<string, string>>;
  readonly platform?: { readonly architecture: string; readonly os: string; readonly variant?: string };
}

/** The parts of an image config (config.md) that graph reads and writes. */
export interface ImageConfig {
  readonly created?: string;
  readonly architecture: string;
  readonly os: string;
  readonly config?: {
    readonly Env?: readonly string[];
    readonly Entrypoint?: readonly string[] | null;
    readonly Cmd?: readonly string[] | null;
    readonly WorkingDir?: string;
    readonly Labels?: Readonly<Record<string, string>> | null;
    readonly User?: string;
    readonly [k: string]: unknown;
  };
  readonly rootfs: { readonly type: 'layers'; readonly diff_ids: readonly string[] };
  readonly history?: ReadonlyArray<{ readonly created?: string; readonly created_by?: string; readonly comment?: string; readonly empty_layer?: boolean }>;
}

export interface ImageManifest {
  readonly schemaVersion: 2;
  readonly mediaType?: string;
  readonly config: Descriptor;
  readonly layers: readonly Descriptor[];
  readonly annotations?: Readonly<Record<string, string>>;
}

/** An image loaded from the store. */
export interface StoredImage {
  readonly manifest: ImageManifest;
  readonly manifestDescriptor: Descriptor;
  readonly config: ImageConfig;
}

/** Thrown for a malformed or inconsistent image (bad JSON, digest mismatch, missing blob). */
export class ImageError extends Error {}

/** The OCI architecture name (GOARCH) of this machine. */
export function hostArchitecture(): string {
  const map: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' };
  return map[process.arch] ?? process.arch;
}

/** Store JSON bytes; returns its descriptor. */
export function putJson(store: ContentStore, value: unknown, mediaType: string): Descriptor {
  const { digest, size } = store.putBytes(JSON.stringify(value));
  return { mediaType, digest, size };
}

/**
 * Read a JSON blob from the store, verifying its digest.
 * @throws ImageError when missing, corrupt or not JSON.
 */
export function readJsonBlob<T>(store: ContentStore, digest: string): T {
  let bytes: Buffer;
  try {
    bytes = readFileSync(store.pathOf(digest));
  } catch {
    throw new ImageError(`blob ${digest} is not in the store`);
  }
  if (`sha256:${createHash('sha256').update(bytes).digest('hex')}` !== digest) throw new ImageError(`blob ${digest} in the store is corrupt`);
  try {
    return JSON.parse(bytes.toString('utf8')) as T;
  } catch {
    throw new ImageError(`blob ${digest} is not JSON`);
  }
}

/** Load an image (manifest and config) by manifest digest. @throws ImageError */
export function loadImage(store: ContentStore, manifestDigest: string): StoredImage {
  const manifest = readJsonBlob<ImageManifest>(store, manifestDigest);
  if (manifest.schemaVersion !== 2 || !manifest.config || !Array.isArray(manifest.layers)) {
    throw new ImageError(`blob ${manifestDigest} is not an image manifest`);
  }
  const config = readJsonBlob<ImageConfig>(store, manifest.config.digest);
  if (!config.rootfs || !Array.isArray(config.rootfs.diff_ids) || config.rootfs.diff_ids.length !== manifest.layers.length) {
    throw new ImageError(`image ${manifestDigest}: config has ${config.rootfs?.diff_ids?.length ?? 0} diff_ids for ${manifest.layers.length} layers`);
  }
  const size = readFileSync(store.pathOf(manifestDigest)).length;
  return { manifest, config, manifestDescriptor: { mediaType: manifest.mediaType ?? MEDIA_TYPE_MANIFEST, digest: manifestDigest, size } };
}

/** What an image declaration sets on top of its base. */
export interface ConfigChanges {
  /** Added or replacing the base's variables, in this order. */
  readonly env: Readonly<Record<string, string>>;
  readonly entrypoint?: readonly string[];
  readonly cmd?: readonly string[];
  readonly workdir?: string;
  readonly labels: Readonly<Record<string, string>>;
}

/** `YYYY-MM-DDTHH:MM:SSZ` for seconds since the epoch. */
export function isoTime(seconds: number): string {
  return new Date(seconds * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/**
 * Compose an image: the base's layers (reused by digest) plus new ones, and a config merging the
 * base's with `changes` (Docker semantics: a new ENTRYPOINT resets an inherited CMD).
 * Writes the config and manifest into the store.
 * @param created seconds since the epoch for `created` and history (SOURCE_DATE_EPOCH).
 * @param platform `architecture` and `os` of the config when there is no base (default: this
 *   machine's); a base's own are always kept.
 */
export function composeImage(
  store: ContentStore,
  base: StoredImage | undefined,
  layers: ReadonlyArray<{ descriptor: Descriptor; diffId: string; createdBy: string }>,
  changes: ConfigChanges,
  created: number,
  platform?: { readonly architecture: string; readonly os: string },
): StoredImage {
  const baseConfig = base?.config.config ?? {};
  const env = new Map<string, string>();
  for (const kv of baseConfig.Env ?? []) {
    const i = kv.indexOf('=');
    env.set(i === -1 ? kv : kv.slice(0, i), i === -1 ? '' : kv.slice(i + 1));
  }
  for (const [k, v] of Object.entries(changes.env)) env.set(k, v);
  const entrypoint = changes.entrypoint ?? baseConfig.Entrypoint ?? undefined;
  const cmd = changes.cmd ?? (changes.entrypoint ? undefined : (baseConfig.Cmd ?? undefined));
  const labels = { ...(baseConfig.Labels ?? {}), ...changes.labels };
  const when = isoTime(created);
  const runtime: Record<string, unknown> = {};
  if (baseConfig.User) runtime.User = baseConfig.User;
  if (env.size) runtime.Env = [...env].map(([k, v]) => `${k}=${v}`);
  if (entrypoint) runtime.Entrypoint = entrypoint;
  if (cmd) runtime.Cmd = cmd;
  const workdir = changes.workdir ?? baseConfig.WorkingDir;
  if (workdir) runtime.WorkingDir = workdir;
  if (Object.keys(labels).length) runtime.Labels = labels;
  const config: ImageConfig = {
    created: when,
    architecture: base?.config.architecture ?? platform?.architecture ?? hostArchitecture(),
    os: base?.config.os ?? platform?.os ?? 'linux',
    config: runtime,
    rootfs: { type: 'layers', diff_ids: [...(base?.config.rootfs.diff_ids ?? []), ...layers.map((l) => l.diffId)] },
    history: [...(base?.config.history ?? []), ...layers.map((l) => ({ created: when, created_by: l.createdBy }))],
  };
  const configDescriptor = putJson(store, config, MEDIA_TYPE_CONFIG);
  const manifest: ImageManifest = {
    schemaVersion: 2,
    mediaType: MEDIA_TYPE_MANIFEST,
    config: configDescriptor,
    // A Docker base's layers are the same bytes under Docker media types; an OCI manifest names
    // them by their OCI equivalents (the digests do not change).
    layers: [...(base?.manifest.layers ?? []).map(ociLayer), ...layers.map((l) => l.descriptor)],
  };
  const manifestDescriptor = putJson(store, manifest, MEDIA_TYPE_MANIFEST);
  return { manifest, config, manifestDescriptor };
}

const DOCKER_LAYER_TYPES: Record<string, string> = {
  'application/vnd.docker.image.rootfs.diff.tar.gzip': 'application/vnd.oci.image.layer.v1.tar+gzip',
  'application/vnd.docker.image.rootfs.diff.tar': 'application/vnd.oci.image.layer.v1.tar',
};

function ociLayer(d: Descriptor): Descriptor {
  const mediaType = DOCKER_LAYER_TYPES[d.mediaType];
  return mediaType ? { ...d, mediaType } : d;
}

/**
 * The manifest annotation recording the action key of the build that made the image (64 hex
 * digits): graph's own reverse-DNS key (image spec `annotations.md`: `org.opencontainers.image.*`
 * is reserved), so a registry holding the image can answer "which key built this".
 */
export const ACTION_KEY_ANNOTATION = 'dev.graph.action-key';

/**
 * The image with `annotations` set in its manifest (image spec `manifest.md` "annotations"; keys
 * sorted, existing ones kept unless named), written into the store. The config and layers are
 * untouched; only the manifest (and so its digest) changes. A Docker schema 2 manifest, which has
 * no annotations, is returned as it is.
 */
export function annotateImage(store: ContentStore, image: StoredImage, annotations: Readonly<Record<string, string>>): StoredImage {
  if (image.manifestDescriptor.mediaType === MEDIA_TYPE_DOCKER_MANIFEST) return image;
  const merged = { ...(image.manifest.annotations ?? {}), ...annotations };
  const manifest: ImageManifest = { ...image.manifest, annotations: Object.fromEntries(Object.keys(merged).sort().map((k) => [k, merged[k]])) };
  const manifestDescriptor = putJson(store, manifest, image.manifestDescriptor.mediaType);
  return { manifest, config: image.config, manifestDescriptor };
}

/** Every blob an image needs: manifest, config, layers. */
export function imageBlobs(image: StoredImage): string[] {
  return [image.manifestDescriptor.digest, image.manifest.config.digest, ...image.manifest.layers.map((l) => l.digest)];
}

/** An image index (image-index.md): one manifest per platform. */
export interface ImageIndex {
  readonly schemaVersion: 2;
  readonly mediaType: typeof MEDIA_TYPE_INDEX;
  readonly manifests: readonly Descriptor[];
}

/** A multi-platform image in the store: its index, and each platform's image in index order. */
export interface StoredIndex {
  readonly index: ImageIndex;
  readonly indexDescriptor: Descriptor;
  /** `platform` is `OS/ARCH` (`linux/arm64`). */
  readonly images: ReadonlyArray<{ readonly platform: string; readonly image: StoredImage }>;
}

/**
 * Compose and store an image index (image-index.md) over per-platform images: one manifest
 * descriptor each, in the given order, with `platform.os` and `platform.architecture` from the
 * image's config (image-index.md requires them to match the config's).
 * @throws ImageError when an image's config does not say the platform it is listed under.
 */
export function composeIndex(store: ContentStore, images: ReadonlyArray<{ readonly platform: string; readonly image: StoredImage }>): StoredIndex {
  const manifests = images.map(({ platform, image }) => {
    const [os, architecture] = platform.split('/');
    if (image.config.os !== os || image.config.architecture !== architecture) {
      throw new ImageError(`image ${image.manifestDescriptor.digest} is ${image.config.os}/${image.config.architecture}, not ${platform}`);
    }
    return { mediaType: MEDIA_TYPE_MANIFEST, digest: image.manifestDescriptor.digest, size: image.manifestDescriptor.size, platform: { architecture, os } };
  });
  const index: ImageIndex = { schemaVersion: 2, mediaType: MEDIA_TYPE_INDEX, manifests };
  return { index, indexDescriptor: putJson(store, index, MEDIA_TYPE_INDEX), images };
}

/**
 * Load an image index and each of its platforms' images by the index's digest.
 * @throws ImageError when a blob is missing or corrupt, or an entry has no platform.
 */
export function loadImageIndex(store: ContentStore, indexDigest: string): StoredIndex {
  const index = readJsonBlob<ImageIndex>(store, indexDigest);
  if (index.schemaVersion !== 2 || !Array.isArray(index.manifests)) throw new ImageError(`blob ${indexDigest} is not an image index`);
  const images = index.manifests.map((m) => {
    if (!m.platform) throw new ImageError(`image index ${indexDigest}: manifest ${m.digest} has no platform`);
    return { platform: `${m.platform.os}/${m.platform.architecture}`, image: loadImage(store, m.digest) };
  });
  const size = readFileSync(store.pathOf(indexDigest)).length;
  return { index, indexDescriptor: { mediaType: MEDIA_TYPE_INDEX, digest: indexDigest, size }, images };
}

/** Every blob a multi-platform image needs: the index and each image's. */
export function indexBlobs(stored: StoredIndex): string[] {
  return [...new Set([stored.indexDescriptor.digest, ...stored.images.flatMap(({ image }) => imageBlobs(image))])];
}
