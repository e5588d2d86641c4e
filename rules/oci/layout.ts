/**
 * OCI image layouts (image spec v1.1, `image-layout.md`): a directory with `oci-layout`,
 * `index.json` and `blobs/sha256/<hex>`. graph writes one for every image it builds (so skopeo,
 * umoci, buildah and podman can read it) and imports them as bases (`from: oci-layout:DIR[:TAG]`)
 * or from external builders.
 */
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { copyFileAtomic, withLock, writeFileAtomic } from '../../engine/atomic.js';
import { DigestError, type ContentStore } from '../../engine/cache/store.js';
import {
  ImageError,
  hostArchitecture,
  imageBlobs,
  indexBlobs,
  loadImage,
  MEDIA_TYPE_DOCKER_LIST,
  MEDIA_TYPE_DOCKER_MANIFEST,
  MEDIA_TYPE_INDEX,
  MEDIA_TYPE_MANIFEST,
  type Descriptor,
  type StoredImage,
  type StoredIndex,
} from './image.js';

/** Annotation naming a manifest's tag in an image layout's index.json. */
export const REF_NAME = 'org.opencontainers.image.ref.name';

interface Index {
  readonly schemaVersion: 2;
  readonly mediaType?: string;
  readonly manifests: readonly Descriptor[];
}

/**
 * Write an image layout at `dir` (inside graph's state: `.graph/out/oci/NAME`) holding `images`
 * under their tags. Blobs are hard links into the store when it is on the same file system (else
 * copies), made by `ContentStore.linkTo`, so the store's memo sees a write through either name.
 * The layout is assembled in a temp directory and renamed into place, replacing any previous one:
 * readers never see half of it.
 * @throws DigestError when a blob is missing or corrupt in the store.
 */
export function writeLayout(store: ContentStore, dir: string, images: ReadonlyArray<{ tag: string; image: StoredImage }>): void {
  writeLayoutEntries(
    store,
    dir,
    images.flatMap(({ image }) => imageBlobs(image)),
    images.map(({ tag, image }) => ({ ...image.manifestDescriptor, annotations: { [REF_NAME]: tag } })),
  );
}

/**
 * The tag of one platform's manifest in a multi-platform image's layout: `TAG-OS-ARCH`
 * (`latest-linux-arm64`), for tools that read a manifest, not an index (umoci).
 */
export function platformTag(tag: string, platform: string): string {
  return `${tag}-${platform.replace(/\//g, '-')}`;
}

/**
 * Write a multi-platform image's layout at `dir`, as `writeLayout` does: index.json names the
 * image index (image-index.md) under `tag` (skopeo, buildah and podman pick a platform from it),
 * and each platform's manifest, with its `platform`, under `platformTag(tag, platform)`.
 * @throws DigestError when a blob is missing or corrupt in the store.
 */
export function writeIndexLayout(store: ContentStore, dir: string, tag: string, stored: StoredIndex): void {
  writeLayoutEntries(store, dir, indexBlobs(stored), [
    { ...stored.indexDescriptor, annotations: { [REF_NAME]: tag } },
    ...stored.index.manifests.map((m, i) => ({ ...m, annotations: { [REF_NAME]: platformTag(tag, stored.images[i].platform) } })),
  ]);
}

function writeLayoutEntries(store: ContentStore, dir: string, digests: readonly string[], manifests: readonly Descriptor[]): void {
  const tmp = `${dir}.tmp-${process.pid}-${Date.now()}`;
  rmSync(tmp, { recursive: true, force: true });
  const blobs = path.join(tmp, 'blobs', 'sha256');
  mkdirSync(blobs, { recursive: true });
  try {
    for (const digest of digests) {
      const target = path.join(blobs, digest.slice('sha256:'.length));
      if (!existsSync(target)) store.linkTo(digest, target);
    }
    writeFileSync(path.join(tmp, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    const index: Index = { schemaVersion: 2, mediaType: MEDIA_TYPE_INDEX, manifests };
    writeFileSync(path.join(tmp, 'index.json'), JSON.stringify(index));
    const old = `${dir}.old-${process.pid}-${Date.now()}`;
    if (existsSync(dir)) renameSync(dir, old);
    renameSync(tmp, dir);
    rmSync(old, { recursive: true, force: true });
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}

/**
 * Add (or replace) the image tagged `tag` in the layout at `dir` (a published one: `dist/oci`), or
 * a multi-platform image's index (tagged `tag`; its manifests reached through it),
 * keeping the other tags: one layout shared by many images, updated under a lock so concurrent
 * nodes lose nothing. Blobs are copies (reflinks where the file system has them), never hard
 * links: editing the layout must not reach the store. A blob already there is kept only when its
 * bytes match its digest, else replaced; index.json is replaced atomically.
 * @throws DigestError when a blob is missing or corrupt in the store.
 */
export async function addToLayout(store: ContentStore, dir: string, tag: string, image: StoredImage | StoredIndex): Promise<void> {
  // A multi-platform image is added as its image index (image-index.md) with every platform's blobs.
  const descriptor = 'indexDescriptor' in image ? image.indexDescriptor : image.manifestDescriptor;
  await withLock(dir, async () => {
    const blobs = path.join(dir, 'blobs', 'sha256');
    mkdirSync(blobs, { recursive: true });
    await copyBlobs(store, blobs, 'indexDescriptor' in image ? indexBlobs(image) : imageBlobs(image));
    writeFileAtomic(path.join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    const indexFile = path.join(dir, 'index.json');
    const old = existsSync(indexFile) ? readJson<Index>(indexFile, `OCI image layout ${dir}`).manifests : [];
    const manifests = [...old.filter((m) => m.annotations?.[REF_NAME] !== undefined && m.annotations[REF_NAME] !== tag), { ...descriptor, annotations: { [REF_NAME]: tag } }];
    manifests.sort((a, b) => ((a.annotations?.[REF_NAME] ?? '') < (b.annotations?.[REF_NAME] ?? '') ? -1 : 1));
    // Artifacts (untagged) stay after the images, in their order (addArtifactsToLayout's).
    const untagged = old.filter((m) => m.annotations?.[REF_NAME] === undefined);
    writeFileAtomic(indexFile, JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPE_INDEX, manifests: [...manifests, ...untagged] } satisfies Index));
  });
}

/**
 * Copy blobs from the store into a layout's `blobs/sha256` (copies, never hard links); a blob
 * already there is kept only when its bytes match its digest.
 * @throws DigestError when a blob is missing or corrupt in the store.
 */
async function copyBlobs(store: ContentStore, blobs: string, digests: readonly string[]): Promise<void> {
  for (const digest of digests) {
    const target = path.join(blobs, digest.slice('sha256:'.length));
    const source = store.pathOf(digest);
    // A hard link left by an older graph is replaced too, though its bytes are good.
    const there = statSync(target, { throwIfNoEntry: false });
    if (there && there.ino !== statSync(source, { throwIfNoEntry: false })?.ino && (await fileDigest(target)) === digest) continue;
    if (!store.has(digest)) throw new DigestError(`blob ${digest} is missing or corrupt in the store`);
    copyFileAtomic(source, target);
  }
}

/** The annotation graph puts on an artifact's index.json entry: the manifest digest it is about. */
export const ANNOTATION_SUBJECT = 'dev.graph.subject';

/**
 * Add artifacts about the image `subject` (rules/oci/artifact.ts) to the layout at `dir`, as
 * `addToLayout` adds images (copies, under the lock): their blobs and manifests, and an index.json
 * entry each (untagged, with its `artifactType`, its annotations and `dev.graph.subject`: the
 * subject's digest, as the image index of a referrers tag would list it). Entries about a subject
 * no tag names any more are dropped; artifact entries are sorted by subject, then digest, after
 * the tagged images.
 * @throws DigestError when a blob is missing or corrupt in the store.
 */
export async function addArtifactsToLayout(store: ContentStore, dir: string, subject: string, artifacts: ReadonlyArray<{ readonly descriptor: Descriptor & { readonly artifactType?: string }; readonly blobs: readonly Descriptor[] }>): Promise<void> {
  await withLock(dir, async () => {
    const blobs = path.join(dir, 'blobs', 'sha256');
    mkdirSync(blobs, { recursive: true });
    await copyBlobs(store, blobs, artifacts.flatMap((a) => [...a.blobs.map((b) => b.digest), a.descriptor.digest]));
    const indexFile = path.join(dir, 'index.json');
    const old = existsSync(indexFile) ? readJson<Index>(indexFile, `OCI image layout ${dir}`).manifests : [];
    const tagged = old.filter((m) => m.annotations?.[REF_NAME] !== undefined);
    const live = new Set([...tagged.map((m) => m.digest), subject]);
    const kept = old.filter((m) => m.annotations?.[REF_NAME] === undefined && live.has(m.annotations?.[ANNOTATION_SUBJECT] ?? '') && !artifacts.some((a) => a.descriptor.digest === m.digest));
    const added = artifacts.map((a) => ({ ...a.descriptor, annotations: { ...a.descriptor.annotations, [ANNOTATION_SUBJECT]: subject } }));
    const key = (m: Descriptor) => `${m.annotations?.[ANNOTATION_SUBJECT] ?? ''} ${m.digest}`;
    const untagged = [...kept, ...added].sort((a, b) => (key(a) < key(b) ? -1 : 1));
    writeFileAtomic(indexFile, JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPE_INDEX, manifests: [...tagged, ...untagged] } satisfies Index));
  });
}

/** `sha256:<hex>` of a file's bytes, streamed. */
async function fileDigest(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return `sha256:${hash.digest('hex')}`;
}

function readJson<T>(file: string, what: string): T {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as T;
  } catch (e) {
    throw new ImageError(`${what}: cannot read ${file}: ${(e as Error).message}`);
  }
}

/**
 * The descriptor `tag` names in the layout at `dir` (its index.json entry annotated with
 * `org.opencontainers.image.ref.name`), or the only entry when `tag` is undefined.
 * @throws ImageError when the layout is unreadable, or the tag is absent or ambiguous (naming the
 *   tags present).
 */
export function layoutDescriptor(dir: string, tag?: string): Descriptor {
  const where = `OCI image layout ${dir}`;
  const layout = readJson<{ imageLayoutVersion?: string }>(path.join(dir, 'oci-layout'), where);
  if (!layout.imageLayoutVersion) throw new ImageError(`${where}: oci-layout has no imageLayoutVersion`);
  const index = readJson<Index>(path.join(dir, 'index.json'), where);
  const candidates = tag === undefined ? index.manifests : index.manifests.filter((m) => m.annotations?.[REF_NAME] === tag);
  if (candidates.length !== 1) {
    const tags = index.manifests.map((m) => m.annotations?.[REF_NAME]).filter(Boolean);
    throw new ImageError(
      tag === undefined
        ? `${where} holds ${index.manifests.length} images: name one with oci-layout:DIR:TAG (tags: ${tags.join(', ') || 'none'})`
        : `${where} has no image tagged '${tag}' (tags: ${tags.join(', ') || 'none'})`,
    );
  }
  return candidates[0];
}

/**
 * Copy the image tagged `tag` (or the only image, when `tag` is undefined) from the layout at
 * `dir` into the store, verifying every blob's digest, and load it. An image index is resolved to
 * the manifest for `architecture` (default: this machine's; linux).
 * @throws ImageError naming the layout and what is wrong (no such tag, digest mismatch…).
 */
export async function importLayout(store: ContentStore, dir: string, tag?: string, architecture: string = hostArchitecture()): Promise<StoredImage> {
  const where = `OCI image layout ${dir}`;
  const blob = async (d: Descriptor) => {
    const file = path.join(dir, 'blobs', ...d.digest.split(':'));
    if (!existsSync(file)) throw new ImageError(`${where}: blob ${d.digest} is missing`);
    try {
      await store.putFile(file, d.digest);
    } catch (e) {
      throw new ImageError(`${where}: ${(e as Error).message}`);
    }
  };
  let desc = layoutDescriptor(dir, tag);
  // An index (multi-platform image): pick linux on this machine's architecture.
  while (desc.mediaType === MEDIA_TYPE_INDEX || desc.mediaType === MEDIA_TYPE_DOCKER_LIST) {
    await blob(desc);
    const nested = readJson<Index>(store.pathOf(desc.digest), where);
    const arch = architecture;
    const match = nested.manifests.find((m) => m.platform?.os === 'linux' && m.platform.architecture === arch);
    if (!match) throw new ImageError(`${where}: no linux/${arch} image in index ${desc.digest}`);
    desc = match;
  }
  if (desc.mediaType !== MEDIA_TYPE_MANIFEST && desc.mediaType !== MEDIA_TYPE_DOCKER_MANIFEST) {
    throw new ImageError(`${where}: ${desc.digest} has media type ${desc.mediaType}, not an image manifest`);
  }
  await blob(desc);
  const manifest = readJson<{ config: Descriptor; layers: Descriptor[] }>(store.pathOf(desc.digest), where);
  for (const d of [manifest.config, ...manifest.layers]) await blob(d);
  return loadImage(store, desc.digest);
}
