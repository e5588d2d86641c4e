/**
 * What a publication says about its image, made in the publish node: two SBOMs (SPDX 2.3 and
 * CycloneDX 1.6, rules/sbom/), the SLSA provenance and the test results (in-toto statements,
 * ./provenance.ts), each stored as an OCI 1.1 artifact whose subject is the image manifest
 * (rules/oci/artifact.ts), ready to be pushed beside the image or written into dist/.
 *
 * Everything comes from the publish node's `decl` (`AttestDecl`: the image's and its declared
 * bases' build declarations, images.lock entries included), its dependencies' outputs and keys,
 * and the store: nothing else is read, so what is attested is what the action key covers.
 */
import { readFileSync } from 'node:fs';
import type { Boundary } from '../../engine/validate/boundary.js';
import { expandInputs, FileDigester, type InputSpec } from '../../engine/key/files.js';
import type { Json } from '../../engine/rule.js';
import type { ContentStore } from '../../engine/cache/store.js';
import type { StoredArtifact } from '../oci/artifact.js';
import { putArtifact } from '../oci/artifact.js';
import type { Descriptor, StoredImage } from '../oci/image.js';
import { cycloneDxDocument, MEDIA_TYPE_CYCLONEDX, MEDIA_TYPE_SPDX, spdxDocument, type PinnedDeb, type SbomImage } from '../sbom/sbom.js';
import { scanImage, type ImageContents } from '../sbom/scan.js';
import {
  ANNOTATION_PREDICATE_TYPE,
  digestOf,
  MEDIA_TYPE_IN_TOTO,
  provenanceStatement,
  SLSA_PROVENANCE_V1,
  TEST_RESULT_V01,
  testResultStatement,
  type GatingTest,
  type ResourceDescriptor,
} from './provenance.js';

/** One image of a publication's chain (the image, then its bases declared in images.yaml). */
export interface ChainLink {
  readonly name: string;
  /** Its build node's `decl` (rules/build.ts `buildDeclOf`). */
  readonly build: Json;
}

/** The attestation part of a publish node's `decl`. */
export interface AttestDecl {
  /** The image first, then each declared base down to the first that is not declared here. */
  readonly chain: readonly ChainLink[];
}

/** The kinds of attachment, their file names and media types; the keys name them in published.lock.json. */
export const ATTACHMENTS = {
  spdx: { title: 'sbom.spdx.json', artifactType: MEDIA_TYPE_SPDX },
  cyclonedx: { title: 'sbom.cdx.json', artifactType: MEDIA_TYPE_CYCLONEDX },
  provenance: { title: 'provenance.intoto.json', artifactType: MEDIA_TYPE_IN_TOTO, predicateType: SLSA_PROVENANCE_V1 },
  tests: { title: 'test-result.intoto.json', artifactType: MEDIA_TYPE_IN_TOTO, predicateType: TEST_RESULT_V01 },
} as const;

export type AttachmentKind = keyof typeof ATTACHMENTS;

/** graph's name and version (package.json), the builder of provenance and the SBOMs' tool. */
export function graphVersion(): string {
  return (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
}

/** The builder id in provenance: graph and its version. */
export const builderId = (version: string) => `https://graph.invalid/builder/graph@${version}`;

/** Contents of images already scanned in this process, by manifest digest (bases are shared). */
const scans = new Map<string, Promise<ImageContents>>();

function scanOnce(store: ContentStore, image: StoredImage, signal?: AbortSignal): Promise<ImageContents> {
  const digest = image.manifestDescriptor.digest;
  let p = scans.get(digest);
  if (!p) {
    p = scanImage(store, image, signal);
    scans.set(digest, p);
    p.catch(() => scans.delete(digest));
  }
  return p;
}

/**
 * The .debs a build decl's images.lock entry pins (of a multi-platform image, whose `lock` has an
 * entry per platform: those of `platform`, the image the SBOM describes).
 */
function pinnedDebs(build: Json, platform: string): PinnedDeb[] {
  let lock = (build as { lock?: { packages?: PinnedDeb[] } | null | string }).lock;
  if (lock && typeof lock === 'object' && !Array.isArray(lock.packages)) lock = (lock as Record<string, { packages?: PinnedDeb[] } | null>)[platform];
  return lock && typeof lock === 'object' && Array.isArray(lock.packages) ? lock.packages.map((p) => ({ name: p.name, version: p.version, architecture: p.architecture, sha256: p.sha256 })) : [];
}

/** `YYYY-MM-DDTHH:MM:SSZ` of an image config's `created` (the build's SOURCE_DATE_EPOCH), else the epoch. */
function createdOf(image: StoredImage): string {
  const t = Date.parse(image.config.created ?? '');
  return new Date(Number.isFinite(t) ? Math.floor(t / 1000) * 1000 : 0).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** What `attest` needs besides the decl. */
export interface AttestInput {
  readonly store: ContentStore;
  readonly root: string;
  readonly boundary: Boundary;
  /** The images of the chain, loaded, in the chain's order. */
  readonly images: readonly StoredImage[];
  /** The publish node's input files (its build's and its bases'). */
  readonly inputs: readonly InputSpec[];
  /** Action keys of the build and convert nodes, by node id (provenance's internal parameters). */
  readonly keys: Readonly<Record<string, string>>;
  readonly tests: readonly GatingTest[];
  readonly signal?: AbortSignal;
  /**
   * What the attestations are about when it is not `images[0]`'s manifest: a multi-platform
   * image's index (image-index.md), whose first platform's image `images[0]` is (its contents are
   * what the SBOMs list).
   */
  readonly subject?: Descriptor;
}

/** The documents and their artifacts. */
export interface Attestation {
  readonly documents: Readonly<Record<AttachmentKind, string>>;
  readonly artifacts: Readonly<Record<AttachmentKind, StoredArtifact>>;
}

/**
 * The image's resolved dependencies: every input file (its fingerprint as the action key has it),
 * every pinned .deb, every declared base by manifest digest, an external base by reference.
 */
export function resolvedDependencies(decl: AttestDecl, images: readonly StoredImage[], files: Readonly<Record<string, string>>): ResourceDescriptor[] {
  const out: ResourceDescriptor[] = [];
  for (const [p, fp] of Object.entries(files)) {
    const digest = digestOf(fp);
    out.push(digest ? { uri: `file:${p}`, digest } : { uri: `file:${p}`, digest: {}, annotations: { fingerprint: fp } });
  }
  decl.chain.forEach((link, i) => {
    for (const d of pinnedDebs(link.build, `${images[i].config.os}/${images[i].config.architecture}`)) out.push({ uri: `pkg:deb/debian/${encodeURIComponent(d.name)}@${encodeURIComponent(d.version)}?arch=${encodeURIComponent(d.architecture)}`, digest: { sha256: d.sha256 } });
    if (i > 0) out.push({ uri: `pkg:oci/${encodeURIComponent(link.name)}@${encodeURIComponent(images[i].manifestDescriptor.digest)}`, digest: { sha256: images[i].manifestDescriptor.digest.slice(7) } });
  });
  const from = (decl.chain[decl.chain.length - 1].build as { from?: Json }).from;
  if (from && typeof from === 'object' && 'registry' in from) out.push({ uri: `docker://${String(from.registry)}`, digest: {} });
  if (from && typeof from === 'object' && 'ociLayout' in from) out.push({ uri: `oci-layout:${String(from.ociLayout)}${from.tag ? `:${String(from.tag)}` : ''}`, digest: {} });
  return out;
}

/**
 * The fingerprints of the publish node's input files, as the action key records them
 * (engine/key/files.ts): `path → sha256:<hex>[+x]`.
 */
export function inputFingerprints(root: string, boundary: Boundary, inputs: readonly InputSpec[]): Record<string, string> {
  const digester = new FileDigester(root, undefined, boundary);
  return Object.fromEntries(expandInputs(root, inputs).map((f) => [f, digester.fingerprint(f)]));
}

/** Make the four documents and store them as artifacts about `images[0]`. */
export async function attest(decl: AttestDecl, input: AttestInput): Promise<Attestation> {
  const { store, images } = input;
  const version = graphVersion();
  const contents = await Promise.all(images.map((i) => scanOnce(store, i, input.signal)));
  // From the bottom up, so each image names its base described in full.
  let sbom: SbomImage | undefined;
  for (let i = decl.chain.length - 1; i >= 0; i--) {
    const link = decl.chain[i];
    const image = images[i];
    const build = link.build as { recipe?: { kind?: string }; from?: Json };
    const from = build.from;
    const base = sbom ?? (from && typeof from === 'object' && 'registry' in from ? { reference: String(from.registry) } : undefined);
    sbom = {
      name: link.name,
      manifest: (i === 0 ? input.subject?.digest : undefined) ?? image.manifestDescriptor.digest,
      architecture: image.config.architecture,
      os: image.config.os,
      recipe: build.recipe?.kind ?? 'unknown',
      contents: contents[i],
      ownLayersFrom: images[i + 1]?.manifest.layers.length ?? 0,
      debs: pinnedDebs(link.build, `${image.config.os}/${image.config.architecture}`),
      ...(base ? { base } : {}),
    };
  }
  const subject = sbom as SbomImage;
  const options = { created: createdOf(images[0]), tool: { name: 'graph', version } };
  const statementSubject = { name: subject.name, manifest: subject.manifest };
  const files = inputFingerprints(input.root, input.boundary, input.inputs);
  const documents: Record<AttachmentKind, string> = {
    spdx: spdxDocument(subject, options),
    cyclonedx: cycloneDxDocument(subject, options),
    provenance: provenanceStatement(statementSubject, decl.chain[0].build, resolvedDependencies(decl, images, files), { id: builderId(version), version }, input.keys),
    tests: testResultStatement(statementSubject, input.tests),
  };
  const artifacts = Object.fromEntries(
    (Object.keys(ATTACHMENTS) as AttachmentKind[]).map((kind) => {
      const a = ATTACHMENTS[kind];
      const annotations: Record<string, string> = 'predicateType' in a ? { [ANNOTATION_PREDICATE_TYPE]: a.predicateType } : {};
      return [kind, putArtifact(store, input.subject ?? images[0].manifestDescriptor, a.artifactType, documents[kind], a.title, annotations)];
    }),
  ) as Record<AttachmentKind, StoredArtifact>;
  return { documents, artifacts };
}
