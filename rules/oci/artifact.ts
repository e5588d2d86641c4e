/**
 * OCI 1.1 artifacts that refer to an image: an image manifest (image spec v1.1 `manifest.md`,
 * "Guidelines for Artifact Usage") with an `artifactType`, the empty config
 * (`application/vnd.oci.empty.v1+json`, content `{}`), one layer holding the document, and a
 * `subject` descriptor naming the image manifest it is about. Registries with the referrers API
 * (distribution spec v1.1 "Listing Referrers") index them by subject; for others, and in an OCI
 * image layout, the referrers tag schema ("Referrers Tag Schema": tag `sha256-<hex>` of the subject
 * holding an image index of the referrers' descriptors) is kept (rules/registry/push.ts,
 * rules/oci/layout.ts).
 *
 * Manifests are serialized from objects built here in a fixed field order, with no time
 * annotation: the same document about the same image always has the same digest.
 */
import type { ContentStore } from '../../engine/cache/store.js';
import { MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST, type Descriptor } from './image.js';

/** The empty descriptor's media type (image spec v1.1 `manifest.md` "Guidance for an Empty Descriptor"). */
export const MEDIA_TYPE_EMPTY = 'application/vnd.oci.empty.v1+json';
/** The layer title annotation. */
const ANNOTATION_TITLE = 'org.opencontainers.image.title';

/** A descriptor with the artifact fields an index of referrers carries. */
export interface ArtifactDescriptor extends Descriptor {
  readonly artifactType: string;
}

/** An artifact manifest in the store, and the blobs it names. */
export interface StoredArtifact {
  /** Its descriptor as a referrers index lists it: media type, digest, size, artifactType, annotations. */
  readonly descriptor: ArtifactDescriptor;
  /** The manifest's bytes. */
  readonly bytes: Buffer;
  /** The config and layer descriptors (their bytes are in the store). */
  readonly blobs: readonly Descriptor[];
}

/**
 * Store `content` as an artifact about `subject`.
 * @param artifactType the document's media type (`application/spdx+json`), also its layer's.
 * @param title the layer's file name (`sbom.spdx.json`).
 * @param annotations manifest annotations (copied into the referrers descriptor too).
 */
export function putArtifact(
  store: ContentStore,
  subject: Descriptor,
  artifactType: string,
  content: string | Buffer,
  title: string,
  annotations: Readonly<Record<string, string>> = {},
): StoredArtifact {
  const empty = store.putBytes(Buffer.from('{}'));
  const layer = store.putBytes(typeof content === 'string' ? Buffer.from(content) : content);
  const config: Descriptor & { data: string } = { mediaType: MEDIA_TYPE_EMPTY, digest: empty.digest, size: empty.size, data: 'e30=' };
  const layerDescriptor: Descriptor = { mediaType: artifactType, digest: layer.digest, size: layer.size, annotations: { [ANNOTATION_TITLE]: title } };
  const manifest = {
    schemaVersion: 2,
    mediaType: MEDIA_TYPE_MANIFEST,
    artifactType,
    config,
    layers: [layerDescriptor],
    subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size },
    ...(Object.keys(annotations).length ? { annotations: sortedRecord(annotations) } : {}),
  };
  const bytes = Buffer.from(JSON.stringify(manifest));
  const stored = store.putBytes(bytes);
  return {
    descriptor: {
      mediaType: MEDIA_TYPE_MANIFEST,
      digest: stored.digest,
      size: stored.size,
      artifactType,
      ...(Object.keys(annotations).length ? { annotations: sortedRecord(annotations) } : {}),
    },
    bytes,
    blobs: [{ mediaType: MEDIA_TYPE_EMPTY, digest: empty.digest, size: empty.size }, layerDescriptor],
  };
}

function sortedRecord(r: Readonly<Record<string, string>>): Record<string, string> {
  return Object.fromEntries(Object.entries(r).sort(([a], [b]) => (a < b ? -1 : 1)));
}

/** The referrers tag of a subject digest: `sha256-<hex>` (distribution spec v1.1 "Referrers Tag Schema"). */
export function referrersTag(subject: string): string {
  return subject.replace(':', '-');
}

/**
 * An image index of referrers: `old`'s descriptors with `added` merged in (a descriptor with the
 * same digest replaced), sorted by digest, as the referrers tag and the referrers API hold them.
 * @returns the index's bytes.
 */
export function referrersIndex(old: readonly Descriptor[], added: readonly Descriptor[]): Buffer {
  const byDigest = new Map(old.map((d) => [d.digest, d]));
  for (const d of added) byDigest.set(d.digest, d);
  const manifests = [...byDigest.values()].sort((a, b) => (a.digest < b.digest ? -1 : 1));
  return Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPE_INDEX, manifests }));
}
