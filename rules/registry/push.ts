/**
 * Pushing to OCI registries, written against the OCI distribution spec v1.1 (`spec.md`): "Pushing
 * blobs" (a session opened by POST, then one monolithic PUT, or PATCHes of `chunkSize` bytes and a
 * closing PUT), "Mounting a blob from another repository", "Pushing manifests"; and SIF files as
 * ORAS artifacts, in the manifest shape `apptainer push oras://…` writes.
 *
 * Request sequence for one image (`/v2/<repo>/…`, auth scope `repository:<repo>:pull,push`):
 *   1. per blob (config and layers, `concurrency` at a time): `HEAD blobs/<digest>`; 200 → skipped;
 *   2. else, with `mountFrom`: `HEAD /v2/<other>/blobs/<digest>` per candidate, then
 *      `POST blobs/uploads/?mount=<digest>&from=<other>` for the first that has it: 201 → mounted,
 *      202 → upload into the session it opened, 401/403 → upload as in 3;
 *   3. else `POST blobs/uploads/` → 202 + Location; blob ≤ chunkSize: `PUT <location>?digest=` with
 *      the bytes; larger: `PATCH <location>` per chunk (Content-Range `start-end`), following each
 *      answer's Location, then an empty `PUT <location>?digest=`; 201 → pushed;
 *   4. once every blob is in: `HEAD manifests/<tag>`; unless it already names this digest,
 *      `PUT manifests/<tag>` with the manifest's bytes and media type; the registry's
 *      Docker-Content-Digest must be the local digest.
 * So a fresh push of N blobs sends 3N+2 requests (plus a PATCH per chunk of a large blob), and a
 * push of an unchanged image N+1 HEADs.
 * The manifest goes last so a tag never names an image whose blobs are missing: a push that fails
 * anywhere before step 4 leaves the tag as it was.
 *
 * Blobs are streamed from their files (1 MiB reads); nothing is held in memory whole. Transient
 * failures (429, 5xx, resets) are retried by `RegistryClient.request`, re-reading the file range
 * for each attempt. When a registry loses an upload session (404 BLOB_UPLOAD_UNKNOWN or
 * BLOB_UPLOAD_INVALID, 416 RANGE_INVALID: e.g. a chunk re-sent after its answer was lost), the
 * blob starts over once from step 1.
 */
import { createHash } from 'node:crypto';
import { createReadStream, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { formatReference, type ImageReference } from '../../engine/validate/reference.js';
import type { ContentStore } from '../../engine/cache/store.js';
import {
  ImageError,
  MEDIA_TYPE_DOCKER_LIST,
  MEDIA_TYPE_DOCKER_MANIFEST,
  MEDIA_TYPE_INDEX,
  MEDIA_TYPE_MANIFEST,
  type Descriptor,
  type StoredImage,
  type StoredIndex,
} from '../oci/image.js';
import { readSif } from '../sif/sif.js';
import { referrersIndex, referrersTag, type StoredArtifact } from '../oci/artifact.js';
import { RegistryClient, RegistryError, type RequestOptions } from './client.js';

/** Default chunk size: 8 MiB (a blob up to this many bytes goes in one PUT). */
export const DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024;
/** Default number of blobs uploaded at once. */
export const DEFAULT_CONCURRENCY = 3;

/** The SIF layer media type of ORAS artifacts (apptainer `internal/pkg/client/oras/layer.go` `SifLayerMediaTypeV1`). */
export const MEDIA_TYPE_SIF_LAYER = 'application/vnd.sylabs.sif.layer.v1.sif';
/** The config media type of SIF artifacts (apptainer `internal/pkg/client/oras/config.go` `SifConfigMediaTypeV1`). */
export const MEDIA_TYPE_SIF_CONFIG = 'application/vnd.sylabs.sif.config.v1+json';
/** Annotation naming a layer's file (OCI image spec `annotations.md`); ORAS pulls restore the name from it. */
export const ANNOTATION_TITLE = 'org.opencontainers.image.title';

/** The empty JSON object `{}`: apptainer's SIF config blob (and the OCI 1.1 empty descriptor's content). */
const EMPTY_CONFIG = Buffer.from('{}');

const MANIFEST_ACCEPT = [MEDIA_TYPE_MANIFEST, MEDIA_TYPE_INDEX, MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_DOCKER_LIST].join(', ');
const READ_SIZE = 1 << 20;

/** Options of `pushImage` and `pushArtifact`. */
export interface PushOptions {
  readonly signal?: AbortSignal;
  /** Bytes: a blob up to this size is sent in one PUT, a larger one in PATCHes of this size. Default 8 MiB. */
  readonly chunkSize?: number;
  /** Blobs uploaded at once (the manifest always waits for all of them). Default 3. */
  readonly concurrency?: number;
  /** Receives one line per blob decision and one for the manifest. */
  readonly log?: (line: string) => void;
  /** Other repositories on the same registry that may hold the blobs: mounted from, not uploaded. */
  readonly mountFrom?: readonly string[];
}

/** What a push did; each distinct blob is counted once, in exactly one of the three counts. */
export interface PushResult {
  /** The manifest's digest, `sha256:<hex>` (what the tag now names). */
  readonly digest: string;
  /** Blobs uploaded. */
  readonly pushedBlobs: number;
  /** Blobs the repository already had (HEAD answered 200). */
  readonly skippedBlobs: number;
  /** Blobs mounted from a `mountFrom` repository. */
  readonly mountedBlobs: number;
  /** Bytes in upload and manifest bodies the registry accepted (retried attempts not counted). */
  readonly bytesSent: number;
}

/** Options of `pushArtifact`: those of a push, and the artifact's media types and annotations. */
export interface ArtifactOptions extends PushOptions {
  /** The config descriptor's media type. Default `MEDIA_TYPE_SIF_CONFIG`, as apptainer. */
  readonly configMediaType?: string;
  /** The layer's media type. Default `MEDIA_TYPE_SIF_LAYER`. */
  readonly layerMediaType?: string;
  /** The layer's `org.opencontainers.image.title` (the file name an ORAS pull writes). Default: the file's name. */
  readonly title?: string;
  /** The manifest's `artifactType` (image spec v1.1); apptainer writes none, so none by default. */
  readonly artifactType?: string;
  /** Manifest annotations (apptainer `push --annotation KEY=VALUE`). */
  readonly annotations?: Readonly<Record<string, string>>;
}

/** A blob to push: its descriptor and the file holding its bytes. */
interface BlobSource {
  readonly descriptor: Descriptor;
  readonly file: string;
}

/** A registry forgot an upload session mid-way; the blob can start over. */
class UploadLostError extends RegistryError {}

/** One push: the client, the repository and the tallies. */
class Pusher {
  readonly scope: string;
  readonly chunkSize: number;
  readonly pushed: string[] = [];
  readonly skipped: string[] = [];
  readonly mounted: string[] = [];
  readonly concurrency: number;
  bytesSent = 0;

  /** @param abort stops every request of this push (the other blobs', after one failed). */
  constructor(
    readonly client: RegistryClient,
    readonly repository: string,
    readonly options: PushOptions,
    private readonly abort: (reason: unknown) => void,
  ) {
    this.scope = `repository:${repository}:pull,push`;
    this.chunkSize = options.chunkSize ?? DEFAULT_CHUNK_SIZE;
    this.concurrency = options.concurrency ?? DEFAULT_CONCURRENCY;
    if (!Number.isSafeInteger(this.chunkSize) || this.chunkSize < 1) throw new RangeError(`chunkSize must be a whole number of bytes ≥ 1, not ${this.chunkSize}`);
    if (!Number.isSafeInteger(this.concurrency) || this.concurrency < 1) throw new RangeError(`concurrency must be a whole number ≥ 1, not ${this.concurrency}`);
  }

  private log(line: string): void {
    this.options.log?.(line);
  }

  /** `request`, with connection and auth failures named by what was being done and where. */
  async send(what: string, method: string, url: string, headers: Record<string, string> = {}, init: RequestOptions = {}, scope = this.scope): Promise<Response> {
    try {
      return await this.client.request(method, url, scope, headers, init);
    } catch (e) {
      if (e instanceof RegistryError) throw new RegistryError(`${e.message}, while ${what}`, e.status);
      throw e;
    }
  }

  /** A RegistryError for an unexpected answer, with the registry's error codes and messages. */
  async failure(what: string, res: Response): Promise<RegistryError> {
    const errors = await registryErrors(res);
    const detail = errors.map((e) => `${e.code}${e.message ? `: ${e.message}` : ''}`).join('; ');
    const message = `registry ${this.client.host}, repository ${this.repository}: ${what} answered ${res.status}${detail ? ` ${detail}` : ''}`;
    const lost = res.status === 416 || (res.status === 404 && errors.some((e) => e.code === 'BLOB_UPLOAD_UNKNOWN' || e.code === 'BLOB_UPLOAD_INVALID'));
    return lost ? new UploadLostError(message, res.status) : new RegistryError(message, res.status);
  }

  /**
   * `res` when its status is one of `statuses` (its body released), else the failure, read from
   * its body.
   */
  async expect(res: Response, statuses: readonly number[], what: string): Promise<Response> {
    if (!statuses.includes(res.status)) throw await this.failure(what, res);
    await res.body?.cancel();
    return res;
  }

  /** An absolute URL for a Location header, which may be relative to the registry. */
  location(what: string, res: Response): string {
    const location = res.headers.get('location');
    if (!location) throw new RegistryError(`registry ${this.client.host}, repository ${this.repository}: ${what} answered ${res.status} without a Location`, res.status);
    return new URL(location, this.client.base).href;
  }

  /** Does `repository` hold the blob? */
  async hasBlob(repository: string, digest: string, scope: string): Promise<boolean> {
    const res = await this.send(`checking for blob ${digest} in ${repository}`, 'HEAD', `/v2/${repository}/blobs/${digest}`, {}, {}, scope);
    return (await this.expect(res, [200, 404], `HEAD of blob ${digest} in ${repository}`)).status === 200;
  }

  /** Push one blob (spec "Pushing blobs"); starts over once when the registry loses the session. */
  async pushBlob(blob: BlobSource): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.pushBlobOnce(blob);
      } catch (e) {
        if (!(e instanceof UploadLostError) || attempt > 1) throw e;
        this.log(`blob ${blob.descriptor.digest}: ${e.message}; starting over`);
      }
    }
  }

  private async pushBlobOnce({ descriptor, file }: BlobSource): Promise<void> {
    const { digest, size } = descriptor;
    if (await this.hasBlob(this.repository, digest, this.scope)) {
      this.skipped.push(digest);
      this.log(`blob ${digest}: already in ${this.repository}`);
      return;
    }
    let location: string | undefined;
    const from = await this.mountSource(digest);
    const mounting = from ? await this.mount(digest, from) : undefined;
    if (mounting) {
      await this.expect(mounting, [201, 202], `POST mount of blob ${digest} from ${from}`);
      if (mounting.status === 201) {
        this.mounted.push(digest);
        this.log(`blob ${digest}: mounted from ${from}`);
        return;
      }
      // 202: the registry would not mount, but opened an upload session instead (spec: fall back).
      location = this.location(`POST mount of blob ${digest}`, mounting);
    }
    if (!location) {
      const res = await this.send(`starting the upload of blob ${digest} to ${this.repository}`, 'POST', `/v2/${this.repository}/blobs/uploads/`);
      await this.expect(res, [202], `POST upload of blob ${digest}`);
      location = this.location(`POST upload of blob ${digest}`, res);
    }
    let chunks = 0;
    if (size > this.chunkSize) {
      for (let start = 0; start < size; start += this.chunkSize) {
        const length = Math.min(this.chunkSize, size - start);
        const what = `PATCH of bytes ${start}-${start + length - 1} of blob ${digest}`;
        const res = await this.send(
          `uploading blob ${digest} to ${this.repository}`,
          'PATCH',
          location,
          { 'content-type': 'application/octet-stream', 'content-range': `${start}-${start + length - 1}`, 'content-length': String(length) },
          { body: fileRange(file, start, length) },
        );
        await this.expect(res, [202], what);
        location = this.location(what, res);
        this.bytesSent += length;
        chunks++;
      }
    }
    const body = chunks ? 0 : size;
    const res = await this.send(
      `uploading blob ${digest} to ${this.repository}`,
      'PUT',
      `${location}${location.includes('?') ? '&' : '?'}digest=${digest}`,
      { 'content-type': 'application/octet-stream', 'content-length': String(body) },
      body ? { body: fileRange(file, 0, body) } : {},
    );
    await this.expect(res, [201], `PUT of blob ${digest}`);
    this.bytesSent += body;
    this.pushed.push(digest);
    this.log(`blob ${digest}: uploaded ${size} bytes${chunks ? ` in ${chunks} chunks` : ''}`);
  }

  /** `POST ?mount=&from=`, or undefined when the registry denies it (then the blob is uploaded). */
  private async mount(digest: string, from: string): Promise<Response | undefined> {
    try {
      // One token for both repositories: the mount needs push here and pull there.
      return await this.send(`mounting blob ${digest} from ${from} into ${this.repository}`, 'POST', `/v2/${this.repository}/blobs/uploads/?mount=${digest}&from=${from}`, {}, {}, `${this.scope} repository:${from}:pull`);
    } catch (e) {
      if (e instanceof RegistryError && (e.status === 401 || e.status === 403)) {
        this.log(`blob ${digest}: mount from ${from} denied (${e.status}); uploading`);
        return undefined;
      }
      throw e;
    }
  }

  /** The first `mountFrom` repository holding the blob, if any; one we may not read is passed over. */
  private async mountSource(digest: string): Promise<string | undefined> {
    // Probing first, because a mount that fails still opens an upload session: this way a blob
    // gets at most one session however many candidates there are.
    for (const other of this.options.mountFrom ?? []) {
      if (other === this.repository) continue;
      try {
        if (await this.hasBlob(other, digest, `repository:${other}:pull`)) return other;
      } catch (e) {
        if (!(e instanceof RegistryError && (e.status === 401 || e.status === 403))) throw e;
      }
    }
    return undefined;
  }

  /** Push the blobs, `concurrency` at a time; on the first failure the others are stopped. */
  async pushBlobs(blobs: readonly BlobSource[]): Promise<void> {
    const unique = [...new Map(blobs.map((b) => [b.descriptor.digest, b])).values()];
    for (const b of unique) checkBlobFile(b);
    const queue = [...unique];
    let failure: unknown;
    const worker = async () => {
      for (let blob = queue.shift(); blob && failure === undefined; blob = queue.shift()) {
        try {
          await this.pushBlob(blob);
        } catch (e) {
          failure ??= e;
          this.abort(e);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.concurrency, Math.max(1, unique.length)) }, worker));
    if (failure !== undefined) throw failure;
  }

  /**
   * Put the manifest under `reference` (spec "Pushing manifests") unless the reference already
   * names it; checks the digest the registry computed.
   */
  async pushManifest(bytes: Buffer, mediaType: string, digest: string, reference: string): Promise<void> {
    // A HEAD first, so that pushing an unchanged image sends no PUT at all (and rewrites nothing).
    const head = await this.send(`checking manifest ${this.repository}:${reference}`, 'HEAD', `/v2/${this.repository}/manifests/${reference}`, { accept: MANIFEST_ACCEPT });
    await this.expect(head, [200, 404], `HEAD of manifest ${this.repository}:${reference}`);
    if (head.status === 200 && head.headers.get('docker-content-digest') === digest) {
      this.log(`manifest ${digest}: ${this.repository}:${reference} already names it`);
      return;
    }
    const what = `PUT of manifest ${digest} as ${this.repository}:${reference}`;
    const res = await this.send(`putting manifest ${digest} as ${this.repository}:${reference}`, 'PUT', `/v2/${this.repository}/manifests/${reference}`, { 'content-type': mediaType, 'content-length': String(bytes.length) }, { body: bytes });
    await this.expect(res, [201], what);
    const theirs = res.headers.get('docker-content-digest');
    // The header is a SHOULD in the spec: a registry that omits it cannot be checked.
    if (theirs && theirs !== digest) {
      throw new RegistryError(`registry ${this.client.host}, repository ${this.repository}: ${what} stored it as ${theirs}: the registry changed the manifest`);
    }
    this.bytesSent += bytes.length;
    this.log(`manifest ${digest}: ${this.repository}:${reference}`);
  }

  result(digest: string): PushResult {
    return { digest, pushedBlobs: this.pushed.length, skippedBlobs: this.skipped.length, mountedBlobs: this.mounted.length, bytesSent: this.bytesSent };
  }
}

/** A fresh stream of `length` bytes of `file` from `start`, for each attempt of a request. */
function fileRange(file: string, start: number, length: number) {
  return () => createReadStream(file, { start, end: start + length - 1, highWaterMark: READ_SIZE });
}

/** The blob file exists and has the descriptor's size. @throws ImageError */
function checkBlobFile({ descriptor, file }: BlobSource): void {
  let size: number;
  try {
    size = statSync(file).size;
  } catch {
    throw new ImageError(`blob ${descriptor.digest} is not in the store (${file})`);
  }
  if (size !== descriptor.size) throw new ImageError(`blob ${descriptor.digest} (${file}) is ${size} bytes, its descriptor says ${descriptor.size}`);
}

/** The `errors` of a registry's JSON error body (spec "Error Codes"), or none. */
async function registryErrors(res: Response): Promise<Array<{ code: string; message?: string }>> {
  let text: string;
  try {
    text = await res.text();
  } catch {
    return [];
  }
  try {
    const body = JSON.parse(text) as { errors?: Array<{ code?: unknown; message?: unknown }> };
    return (body.errors ?? []).filter((e) => typeof e.code === 'string').map((e) => ({ code: e.code as string, message: typeof e.message === 'string' ? e.message : undefined }));
  } catch {
    return [];
  }
}

/** The registry host of `ref`: its own or GRAPH_DEFAULT_REGISTRY. @throws RegistryError when neither names one. */
function registryOf(ref: ImageReference): string {
  const host = ref.registry ?? process.env.GRAPH_DEFAULT_REGISTRY;
  if (!host) throw new RegistryError(`'${formatReference(ref)}' names no registry: write REGISTRY/REPOSITORY:TAG, or set GRAPH_DEFAULT_REGISTRY`);
  return host;
}

/** The tag (or digest) a manifest is put under; a pinned digest must be the manifest's own. */
function manifestReference(ref: ImageReference, digest: string): string {
  if (ref.digest && ref.digest !== digest) throw new RegistryError(`cannot push manifest ${digest} as ${formatReference(ref)}: the reference pins a different digest`);
  return ref.tag ?? ref.digest ?? 'latest';
}

/** Run a push with one abort signal for all its requests, so a failed blob stops the others. */
async function withPusher<T>(ref: ImageReference, options: PushOptions, run: (pusher: Pusher) => Promise<T>): Promise<T> {
  const host = registryOf(ref);
  const controller = new AbortController();
  const signal = options.signal ? AbortSignal.any([options.signal, controller.signal]) : controller.signal;
  return run(new Pusher(new RegistryClient(host, signal), ref.repository, options, (reason) => controller.abort(reason)));
}

/**
 * Push an image from the store to `ref` (distribution spec v1.1 "Pushing blobs", "Mounting a blob
 * from another repository", "Pushing manifests"): blobs absent from the repository are mounted or
 * uploaded (streamed from the store), then the manifest is put under the tag (`latest` when the
 * reference has none) with its own media type as Content-Type.
 * @returns the manifest digest and what was pushed, skipped and mounted.
 * @throws RegistryError naming the registry, repository and the request that failed (status and
 *   the registry's error code and message, e.g. `400 DIGEST_INVALID`), never credentials; also when
 *   the registry stores the manifest under another digest. ImageError when a blob is missing from
 *   the store or has the wrong size. The signal's reason when aborted. The tag is untouched on any
 *   failure.
 */
export async function pushImage(store: ContentStore, image: StoredImage, ref: ImageReference, options: PushOptions = {}): Promise<PushResult> {
  const digest = image.manifestDescriptor.digest;
  const reference = manifestReference(ref, digest);
  const blobs = [image.manifest.config, ...image.manifest.layers].map((descriptor) => ({ descriptor, file: store.pathOf(descriptor.digest) }));
  let bytes: Buffer;
  try {
    bytes = readFileSync(store.pathOf(digest));
  } catch {
    throw new ImageError(`manifest ${digest} is not in the store`);
  }
  return withPusher(ref, options, async (pusher) => {
    await pusher.pushBlobs(blobs);
    await pusher.pushManifest(bytes, image.manifest.mediaType ?? image.manifestDescriptor.mediaType, digest, reference);
    return pusher.result(digest);
  });
}

/**
 * Push a multi-platform image (image spec `image-index.md`): each platform's blobs and manifest
 * (by digest), then the image index under `ref`'s tag, last, so the tag never names a manifest
 * that is missing (distribution spec "Pushing Manifests": an index's manifests must exist first).
 * @returns as `pushImage`, the index's digest; blobs counted over every platform.
 * @throws RegistryError and ImageError as `pushImage`.
 */
export async function pushIndex(store: ContentStore, stored: StoredIndex, ref: ImageReference, options: PushOptions = {}): Promise<PushResult> {
  const digest = stored.indexDescriptor.digest;
  const reference = manifestReference(ref, digest);
  const bytesOf = (d: string) => {
    try {
      return readFileSync(store.pathOf(d));
    } catch {
      throw new ImageError(`manifest ${d} is not in the store`);
    }
  };
  return withPusher(ref, options, async (pusher) => {
    for (const { image } of stored.images) {
      await pusher.pushBlobs([image.manifest.config, ...image.manifest.layers].map((descriptor) => ({ descriptor, file: store.pathOf(descriptor.digest) })));
      const m = image.manifestDescriptor.digest;
      await pusher.pushManifest(bytesOf(m), image.manifest.mediaType ?? image.manifestDescriptor.mediaType, m, m);
    }
    await pusher.pushManifest(bytesOf(digest), MEDIA_TYPE_INDEX, digest, reference);
    return pusher.result(digest);
  });
}

/**
 * Push a SIF file as an ORAS artifact, as `apptainer push FILE oras://REF` does (apptainer
 * `internal/pkg/client/oras/image.go` `NewImageFromSIF`): an OCI image manifest whose config is the
 * empty JSON `{}` under `application/vnd.sylabs.sif.config.v1+json` (embedded as `data` too) and
 * whose one layer is the SIF under `application/vnd.sylabs.sif.layer.v1.sif`, annotated with
 * `org.opencontainers.image.title: <file name>` (or `title`). Unlike apptainer, no
 * `org.opencontainers.image.created` annotation is added unless given in `annotations` (apptainer
 * takes the push time when the SIF records no creation label), so the same SIF always has the
 * same manifest digest. The manifest and config enter the store; the SIF
 * is streamed from `file`.
 * @param file absolute path of the SIF.
 * @returns the manifest digest.
 * @throws SifError when `file` is not a SIF (apptainer refuses those too); RegistryError and
 *   ImageError as `pushImage`.
 */
export async function pushArtifact(store: ContentStore, file: string, ref: ImageReference, options: ArtifactOptions = {}): Promise<string> {
  readSif(file);
  const layer: Descriptor = {
    mediaType: options.layerMediaType ?? MEDIA_TYPE_SIF_LAYER,
    digest: await fileDigest(file),
    size: statSync(file).size,
    annotations: { [ANNOTATION_TITLE]: options.title ?? path.basename(file) },
  };
  const config = store.putBytes(EMPTY_CONFIG);
  // Field order as go-containerregistry's v1.Manifest, which apptainer serializes.
  const manifest = {
    schemaVersion: 2,
    mediaType: MEDIA_TYPE_MANIFEST,
    ...(options.artifactType ? { artifactType: options.artifactType } : {}),
    config: { mediaType: options.configMediaType ?? MEDIA_TYPE_SIF_CONFIG, digest: config.digest, size: config.size, data: EMPTY_CONFIG.toString('base64') },
    layers: [layer],
    ...(options.annotations && Object.keys(options.annotations).length ? { annotations: options.annotations } : {}),
  };
  const bytes = Buffer.from(JSON.stringify(manifest));
  const { digest } = store.putBytes(bytes);
  const reference = manifestReference(ref, digest);
  return withPusher(ref, options, async (pusher) => {
    await pusher.pushBlobs([
      { descriptor: { mediaType: manifest.config.mediaType, digest: config.digest, size: config.size }, file: store.pathOf(config.digest) },
      { descriptor: layer, file },
    ]);
    await pusher.pushManifest(bytes, MEDIA_TYPE_MANIFEST, digest, reference);
    return digest;
  });
}

/** SHA-256 of a file, streamed. */
async function fileDigest(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: READ_SIZE })) hash.update(chunk as Buffer);
  return `sha256:${hash.digest('hex')}`;
}

/**
 * The digest the registry has for `ref`'s tag (its digest when untagged; `latest` when neither),
 * from a manifest HEAD (spec "Checking if content exists in the registry") sending the OCI and
 * Docker manifest Accept types (docker-registry answers 404 to a HEAD without an OCI one). Falls
 * back to a GET when the registry omits Docker-Content-Digest.
 * @returns `sha256:<hex>`, or undefined when the registry has no such manifest.
 * @throws RegistryError when the registry cannot be reached, denies access, or answers otherwise.
 */
export async function remoteDigest(ref: ImageReference, signal?: AbortSignal): Promise<string | undefined> {
  const host = registryOf(ref);
  const client = new RegistryClient(host, signal);
  const reference = ref.tag ?? ref.digest ?? 'latest';
  const res = await client.request('HEAD', `/v2/${ref.repository}/manifests/${reference}`, `repository:${ref.repository}:pull`, { accept: MANIFEST_ACCEPT });
  await res.body?.cancel();
  if (res.status === 404) return undefined;
  if (!res.ok) throw new RegistryError(`registry ${host}, repository ${ref.repository}: HEAD of manifest ${reference} answered ${res.status}`, res.status);
  return res.headers.get('docker-content-digest') ?? (await client.getManifest(ref.repository, reference)).digest;
}

/** How `pushReferrers` attached the artifacts. */
export interface ReferrersResult {
  /** Each artifact's manifest digest, in the order given. */
  readonly digests: readonly string[];
  /** `api` when the registry answers the referrers API, `tag` when the referrers tag schema was used. */
  readonly via: 'api' | 'tag';
  /** The referrers tag (`sha256-<hex>`) and its index's digest, when `via` is `tag`. */
  readonly tag?: string;
  readonly index?: string;
}

/**
 * Attach artifacts (rules/oci/artifact.ts: manifests whose `subject` is the image) to an image in
 * `ref`'s repository (distribution spec v1.1 "Pushing Manifests with Subject", "Listing
 * Referrers", "Referrers Tag Schema"). Each artifact's blobs, then its manifest (by digest), are
 * pushed; then `GET /v2/<repo>/referrers/<subject>` tells whether the registry keeps the
 * referrers itself (200). When it does not (404: the Debian docker-registry, GHCR, Docker Hub),
 * the image index at tag `sha256-<hex>` is read (absent: empty), the artifacts' descriptors merged
 * in, and the index put back under the tag: last, so the tag never names an artifact whose
 * manifest is missing.
 * @param subject the image manifest's digest (it must already be in the repository).
 * @throws RegistryError naming the registry, repository and request that failed (a registry
 *   that refuses artifacts: the manifest PUT's status and error code); nothing is tagged then.
 */
export async function pushReferrers(store: ContentStore, subject: string, artifacts: readonly StoredArtifact[], ref: ImageReference, options: PushOptions = {}): Promise<ReferrersResult> {
  return withPusher(ref, options, async (pusher) => {
    for (const a of artifacts) {
      await pusher.pushBlobs(a.blobs.map((descriptor) => ({ descriptor, file: store.pathOf(descriptor.digest) })));
      await pusher.pushManifest(a.bytes, MEDIA_TYPE_MANIFEST, a.descriptor.digest, a.descriptor.digest);
    }
    const digests = artifacts.map((a) => a.descriptor.digest);
    const repo = pusher.repository;
    const api = await pusher.send(`listing referrers of ${subject}`, 'GET', `/v2/${repo}/referrers/${subject}`, { accept: MEDIA_TYPE_INDEX }, {}, `repository:${repo}:pull`);
    const apiType = (api.headers.get('content-type') ?? '').split(';')[0].trim();
    await api.body?.cancel();
    if (api.status === 200 && apiType === MEDIA_TYPE_INDEX) return { digests, via: 'api' };
    const tag = referrersTag(subject);
    let old: Descriptor[] = [];
    try {
      const got = await pusher.client.getManifest(repo, tag);
      old = (JSON.parse(got.bytes.toString('utf8')) as { manifests?: Descriptor[] }).manifests ?? [];
    } catch (e) {
      if (!(e instanceof RegistryError && e.status === 404)) throw e;
    }
    const bytes = referrersIndex(old, artifacts.map((a) => a.descriptor));
    const index = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    await pusher.pushManifest(bytes, MEDIA_TYPE_INDEX, index, tag);
    return { digests, via: 'tag', tag, index };
  });
}

/**
 * The referrers of `subject` in `ref`'s repository: from the referrers API when the registry
 * answers it, else from the referrers tag `sha256-<hex>`; empty when neither has any.
 * @throws RegistryError when the registry cannot be reached or answers otherwise.
 */
export async function listReferrers(ref: ImageReference, subject: string, signal?: AbortSignal): Promise<Descriptor[]> {
  const host = registryOf(ref);
  const client = new RegistryClient(host, signal);
  const scope = `repository:${ref.repository}:pull`;
  const res = await client.request('GET', `/v2/${ref.repository}/referrers/${subject}`, scope, { accept: MEDIA_TYPE_INDEX });
  if (res.status === 200 && (res.headers.get('content-type') ?? '').startsWith(MEDIA_TYPE_INDEX)) {
    return ((await res.json()) as { manifests?: Descriptor[] }).manifests ?? [];
  }
  await res.body?.cancel();
  try {
    const got = await client.getManifest(ref.repository, referrersTag(subject));
    return (JSON.parse(got.bytes.toString('utf8')) as { manifests?: Descriptor[] }).manifests ?? [];
  } catch (e) {
    if (e instanceof RegistryError && e.status === 404) return [];
    throw e;
  }
}
