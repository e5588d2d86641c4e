/**
 * Software bills of materials for an image, in the two standard JSON forms:
 * - SPDX 2.3 (spdx.github.io/spdx-spec/v2.3: §6 document creation, §7 packages, §8 files, §10
 *   other licences, §11 relationships);
 * - CycloneDX 1.6 (cyclonedx.org/docs/1.6/json).
 *
 * What they list: the image itself (a container, by manifest digest), its base images declared in
 * images.yaml (each by digest, with their own packages: the base's SBOM merged in, each package
 * attributed to the lowest image that has it), or an external base by reference; every Debian
 * package `/var/lib/dpkg/status` lists (name, version, architecture, purl
 * `pkg:deb/debian/NAME@VERSION?arch=ARCH`, the .deb's SHA-256 when images.lock pins it, the
 * licences its copyright file states); every Python distribution (`*.dist-info/METADATA`, purl
 * `pkg:pypi/NAME@VERSION`); and for `layers:` images every file their own layers added (path,
 * SHA-256 and SHA-1).
 *
 * Deterministic: everything is sorted, the creation time is the build's SOURCE_DATE_EPOCH, and the
 * SPDX namespace and the CycloneDX serial number are derived from the manifest digest, so the same
 * image gives byte-identical documents.
 */
import { createHash } from 'node:crypto';
import type { DebianPackage, ImageContents, PythonPackage } from './scan.js';

/** SPDX 2.3 JSON's media type (IANA), the artifact type of its OCI artifact. */
export const MEDIA_TYPE_SPDX = 'application/spdx+json';
/** CycloneDX JSON's media type (IANA), the artifact type of its OCI artifact. */
export const MEDIA_TYPE_CYCLONEDX = 'application/vnd.cyclonedx+json';

/** A .deb pinned in images.lock. */
export interface PinnedDeb {
  readonly name: string;
  readonly version: string;
  readonly architecture: string;
  /** Hex SHA-256 of the .deb file. */
  readonly sha256: string;
}

/** One image of an SBOM: the subject, or a base declared in images.yaml. */
export interface SbomImage {
  readonly name: string;
  /** Manifest digest, `sha256:<hex>`. */
  readonly manifest: string;
  /** The image config's `architecture` and `os`. */
  readonly architecture: string;
  readonly os: string;
  /** Its recipe (`layers`, `debian`, `dockerfile`). */
  readonly recipe: string;
  readonly contents: ImageContents;
  /** Index of the first layer this image added on its base (the base's layer count; 0 for none). */
  readonly ownLayersFrom: number;
  /** The .debs images.lock pins for it (a `debian:` image). */
  readonly debs: readonly PinnedDeb[];
  /** Its base: declared here (described in full), external (by reference), or none. */
  readonly base?: SbomImage | { readonly reference: string };
}

/** What the documents say about their making. */
export interface SbomOptions {
  /** ISO 8601 time, `YYYY-MM-DDTHH:MM:SSZ` (the build's SOURCE_DATE_EPOCH). */
  readonly created: string;
  /** The tool's name and version, e.g. `graph-0.1.0`. */
  readonly tool: { readonly name: string; readonly version: string };
}

/** Debian copyright short names → SPDX licence ids (SPDX 2.3 Annex A, DEP-5 §7.1). */
const SPDX_IDS: Readonly<Record<string, string>> = {
  'Apache-2.0': 'Apache-2.0',
  Artistic: 'Artistic-1.0-Perl',
  'BSD-2-clause': 'BSD-2-Clause',
  'BSD-3-clause': 'BSD-3-Clause',
  'BSD-4-clause': 'BSD-4-Clause',
  Expat: 'MIT',
  MIT: 'MIT',
  'GPL-1+': 'GPL-1.0-or-later',
  'GPL-2': 'GPL-2.0-only',
  'GPL-2+': 'GPL-2.0-or-later',
  'GPL-3': 'GPL-3.0-only',
  'GPL-3+': 'GPL-3.0-or-later',
  'LGPL-2': 'LGPL-2.0-only',
  'LGPL-2+': 'LGPL-2.0-or-later',
  'LGPL-2.1': 'LGPL-2.1-only',
  'LGPL-2.1+': 'LGPL-2.1-or-later',
  'LGPL-3': 'LGPL-3.0-only',
  'LGPL-3+': 'LGPL-3.0-or-later',
  'MPL-2.0': 'MPL-2.0',
  'PSF-2': 'PSF-2.0',
  Zlib: 'Zlib',
  ISC: 'ISC',
  'CC0-1.0': 'CC0-1.0',
  'public-domain': '',
};

/** The SPDX ids above, which are also taken as written (Python METADATA often states one). */
const KNOWN_IDS = new Set(Object.values(SPDX_IDS).filter(Boolean));

/** A licence name as an SPDX id, or undefined when it has none here. */
function spdxId(name: string): string | undefined {
  if (Object.hasOwn(SPDX_IDS, name)) return SPDX_IDS[name] || undefined;
  return KNOWN_IDS.has(name) ? name : undefined;
}

/** `LicenseRef-` + the name with what SPDX ids may not hold replaced (SPDX 2.3 §10.1). */
const licenseRef = (name: string) => `LicenseRef-${name.replace(/\+/g, '-plus').replace(/[^A-Za-z0-9.-]/g, '-')}`;

/** A package as both documents list it. */
interface Pkg {
  readonly ref: string;
  readonly kind: 'deb' | 'pypi' | 'oci';
  readonly name: string;
  readonly version: string;
  readonly purl: string;
  readonly licenses: readonly string[];
  readonly sha256?: string;
  readonly owner: string;
  readonly architecture?: string;
}

const enc = (s: string) => encodeURIComponent(s);
const hexOf = (digest: string) => digest.replace(/^sha256:/, '');
const debPurl = (p: DebianPackage) => `pkg:deb/debian/${enc(p.name)}@${enc(p.version)}?arch=${enc(p.architecture)}`;
const pypiName = (name: string) => name.toLowerCase().replace(/[-_.]+/g, '-');
const pypiPurl = (p: PythonPackage) => `pkg:pypi/${enc(pypiName(p.name))}@${enc(p.version)}`;
const ociPurl = (image: { name: string; manifest: string; architecture: string }) => `pkg:oci/${enc(image.name)}@${enc(image.manifest)}?arch=${enc(image.architecture)}`;

/** The image and its declared bases, subject first. */
function chainOf(image: SbomImage): SbomImage[] {
  const out: SbomImage[] = [];
  for (let i: SbomImage | undefined = image; i; i = i.base && 'manifest' in i.base ? i.base : undefined) out.push(i);
  return out;
}

/** A reference made of a name: letters, digits, `.` and `-` only (SPDX ids), unique in `used`. */
function uniqueRef(prefix: string, name: string, used: Set<string>): string {
  const base = `${prefix}-${name.replace(/[^A-Za-z0-9.-]/g, '-')}`;
  let ref = base;
  for (let n = 2; used.has(ref); n++) ref = `${base}-${n}`;
  used.add(ref);
  return ref;
}

/** Everything both documents say, in document order. */
interface Model {
  readonly chain: readonly SbomImage[];
  readonly external?: string;
  readonly imageRefs: ReadonlyMap<string, string>;
  readonly packages: readonly Pkg[];
  readonly files: ReadonlyArray<{ readonly ref: string; readonly path: string; readonly sha256: string; readonly sha1: string; readonly owner: string }>;
}

function modelOf(image: SbomImage): Model {
  const chain = chainOf(image);
  const last = chain[chain.length - 1];
  const external = last.base && 'reference' in last.base ? last.base.reference : undefined;
  const used = new Set<string>();
  const imageRefs = new Map(chain.map((i, n) => [i.name, n === 0 ? 'SPDXRef-Image' : uniqueRef('SPDXRef-Base', i.name, used)]));
  const pinned = new Map<string, string>(chain.flatMap((i) => i.debs.map((d) => [`${d.name}\0${d.version}\0${d.architecture}`, d.sha256] as [string, string])));
  /** The lowest image of the chain whose own scan lists a package. */
  const ownerOf = (has: (i: SbomImage) => boolean) => [...chain].reverse().find(has)?.name ?? image.name;
  const packages: Pkg[] = [];
  for (const p of image.contents.debian) {
    const id = `${p.name}\0${p.version}\0${p.architecture}`;
    const owner = ownerOf((i) => i.contents.debian.some((q) => `${q.name}\0${q.version}\0${q.architecture}` === id));
    packages.push({ ref: uniqueRef('SPDXRef-Package-deb', `${p.name}-${p.architecture}`, used), kind: 'deb', name: p.name, version: p.version, architecture: p.architecture, purl: debPurl(p), licenses: p.licenses, sha256: pinned.get(id), owner });
  }
  for (const p of image.contents.python) {
    const owner = ownerOf((i) => i.contents.python.some((q) => q.path === p.path && q.version === p.version));
    packages.push({ ref: uniqueRef('SPDXRef-Package-pypi', `${pypiName(p.name)}`, used), kind: 'pypi', name: p.name, version: p.version, purl: pypiPurl(p), licenses: p.licenses, owner });
  }
  // A file belongs to the image whose own layers wrote it (a base's layers are a prefix of its image's).
  const ownerOfLayer = (layer: number) => chain.find((i) => layer >= i.ownLayersFrom) as SbomImage;
  const files = image.contents.files.flatMap((f) => {
    const owner = ownerOfLayer(f.layer);
    return owner.recipe === 'layers' ? [{ ref: uniqueRef('SPDXRef-File', f.path, used), path: f.path, sha256: f.sha256, sha1: f.sha1, owner: owner.name }] : [];
  });
  return { chain, external, imageRefs, packages, files };
}

/** The licence expression SPDX takes: ids joined with AND; NOASSERTION when none are stated. */
function spdxExpression(licenses: readonly string[], extracted: Map<string, string>): string {
  if (!licenses.length) return 'NOASSERTION';
  const parts = [...new Set(licenses.map((l) => {
    const id = spdxId(l);
    if (id) return id;
    const ref = licenseRef(l);
    extracted.set(ref, l);
    return ref;
  }))].sort();
  return parts.length === 1 ? parts[0] : parts.map((p) => (p.includes(' ') ? `(${p})` : p)).join(' AND ');
}

/** A UUID (RFC 9562 version 5 layout) from a digest: the same image, the same serial number. */
function uuidFrom(text: string): string {
  const b = createHash('sha256').update(text).digest();
  b[6] = (b[6] & 0x0f) | 0x50;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = b.subarray(0, 16).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

/**
 * The image's SBOM as an SPDX 2.3 JSON document (two-space indented, ending in a newline).
 * Relationships: the document DESCRIBES the image; each image CONTAINS its own packages and
 * files; an image is a DESCENDANT_OF its base.
 */
export function spdxDocument(image: SbomImage, options: SbomOptions): string {
  const m = modelOf(image);
  const extracted = new Map<string, string>();
  const imagePackages = m.chain.map((i) => ({
    name: i.name,
    SPDXID: m.imageRefs.get(i.name) as string,
    versionInfo: i.manifest,
    downloadLocation: 'NOASSERTION',
    filesAnalyzed: false,
    checksums: [{ algorithm: 'SHA256', checksumValue: hexOf(i.manifest) }],
    licenseConcluded: 'NOASSERTION',
    licenseDeclared: 'NOASSERTION',
    copyrightText: 'NOASSERTION',
    externalRefs: [{ referenceCategory: 'PACKAGE-MANAGER', referenceType: 'purl', referenceLocator: ociPurl(i) }],
    primaryPackagePurpose: 'CONTAINER',
  }));
  const external = m.external
    ? [{ name: m.external, SPDXID: 'SPDXRef-Base-external', downloadLocation: 'NOASSERTION', filesAnalyzed: false, licenseConcluded: 'NOASSERTION', licenseDeclared: 'NOASSERTION', copyrightText: 'NOASSERTION', primaryPackagePurpose: 'CONTAINER' }]
    : [];
  const packages = m.packages.map((p) => ({
    name: p.name,
    SPDXID: p.ref,
    versionInfo: p.version,
    ...(p.kind === 'deb' ? { supplier: 'Organization: Debian' } : {}),
    downloadLocation: 'NOASSERTION',
    filesAnalyzed: false,
    ...(p.sha256 ? { checksums: [{ algorithm: 'SHA256', checksumValue: p.sha256 }] } : {}),
    licenseConcluded: 'NOASSERTION',
    licenseDeclared: spdxExpression(p.licenses, extracted),
    copyrightText: 'NOASSERTION',
    externalRefs: [{ referenceCategory: 'PACKAGE-MANAGER', referenceType: 'purl', referenceLocator: p.purl }],
    primaryPackagePurpose: p.kind === 'deb' ? 'INSTALL' : 'LIBRARY',
  }));
  const files = m.files.map((f) => ({
    fileName: `./${f.path}`,
    SPDXID: f.ref,
    checksums: [
      { algorithm: 'SHA1', checksumValue: f.sha1 },
      { algorithm: 'SHA256', checksumValue: f.sha256 },
    ],
    licenseConcluded: 'NOASSERTION',
    copyrightText: 'NOASSERTION',
  }));
  const rel = (a: string, type: string, b: string) => ({ spdxElementId: a, relationshipType: type, relatedSpdxElement: b });
  const relationships = [
    rel('SPDXRef-DOCUMENT', 'DESCRIBES', 'SPDXRef-Image'),
    ...m.chain.slice(1).map((b, n) => rel(m.imageRefs.get(m.chain[n].name) as string, 'DESCENDANT_OF', m.imageRefs.get(b.name) as string)),
    ...(m.external ? [rel(m.imageRefs.get(m.chain[m.chain.length - 1].name) as string, 'DESCENDANT_OF', 'SPDXRef-Base-external')] : []),
    ...m.packages.map((p) => rel(m.imageRefs.get(p.owner) as string, 'CONTAINS', p.ref)),
    ...m.files.map((f) => rel(m.imageRefs.get(f.owner) as string, 'CONTAINS', f.ref)),
  ];
  const doc = {
    spdxVersion: 'SPDX-2.3',
    dataLicense: 'CC0-1.0',
    SPDXID: 'SPDXRef-DOCUMENT',
    name: `${image.name}@${image.manifest}`,
    documentNamespace: `https://graph.invalid/spdx/${enc(image.name)}/${hexOf(image.manifest)}`,
    creationInfo: { created: options.created, creators: [`Tool: ${options.tool.name}-${options.tool.version}`] },
    documentDescribes: ['SPDXRef-Image'],
    packages: [...imagePackages, ...external, ...packages],
    ...(files.length ? { files } : {}),
    ...(extracted.size
      ? { hasExtractedLicensingInfos: [...extracted].sort(([a], [b]) => (a < b ? -1 : 1)).map(([licenseId, name]) => ({ licenseId, name, extractedText: `The licence the package's Debian copyright file calls '${name}'.` })) }
      : {}),
    relationships,
  };
  return `${JSON.stringify(doc, null, 2)}\n`;
}

/** CycloneDX licences: an SPDX id where there is one, else the name as written. */
function cdxLicenses(licenses: readonly string[]) {
  const seen = new Set<string>();
  const out: Array<{ license: { id: string } | { name: string } }> = [];
  for (const l of licenses) {
    const id = spdxId(l);
    const key = id ?? `name:${l}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push({ license: id ? { id } : { name: l } });
  }
  return out;
}

/**
 * The image's SBOM as a CycloneDX 1.6 JSON document (two-space indented, ending in a newline):
 * the image is `metadata.component`; its bases, packages and files are `components`, and
 * `dependencies` says which image holds what.
 */
export function cycloneDxDocument(image: SbomImage, options: SbomOptions): string {
  const m = modelOf(image);
  const imageRef = (name: string) => ociPurl(m.chain.find((i) => i.name === name) as SbomImage);
  const container = (i: SbomImage) => ({
    type: 'container',
    'bom-ref': ociPurl(i),
    name: i.name,
    version: i.manifest,
    hashes: [{ alg: 'SHA-256', content: hexOf(i.manifest) }],
    purl: ociPurl(i),
  });
  const components = [
    ...m.chain.slice(1).map(container),
    ...(m.external ? [{ type: 'container', 'bom-ref': `external:${m.external}`, name: m.external }] : []),
    ...m.packages.map((p) => ({
      type: p.kind === 'deb' ? 'application' : 'library',
      'bom-ref': p.ref,
      ...(p.kind === 'deb' ? { supplier: { name: 'Debian' } } : {}),
      name: p.name,
      version: p.version,
      ...(p.sha256 ? { hashes: [{ alg: 'SHA-256', content: p.sha256 }] } : {}),
      ...(p.licenses.length ? { licenses: cdxLicenses(p.licenses) } : {}),
      purl: p.purl,
      ...(p.architecture ? { properties: [{ name: 'graph:debian:architecture', value: p.architecture }] } : {}),
    })),
    ...m.files.map((f) => ({
      type: 'file',
      'bom-ref': `file:${f.owner}:/${f.path}`,
      name: `/${f.path}`,
      hashes: [
        { alg: 'SHA-1', content: f.sha1 },
        { alg: 'SHA-256', content: f.sha256 },
      ],
    })),
  ];
  const dependencies = m.chain.map((i, n) => ({
    ref: imageRef(i.name),
    dependsOn: [
      ...(n + 1 < m.chain.length ? [imageRef(m.chain[n + 1].name)] : m.external ? [`external:${m.external}`] : []),
      ...m.packages.filter((p) => p.owner === i.name).map((p) => p.ref),
      ...m.files.filter((f) => f.owner === i.name).map((f) => `file:${f.owner}:/${f.path}`),
    ],
  }));
  const doc = {
    bomFormat: 'CycloneDX',
    specVersion: '1.6',
    serialNumber: `urn:uuid:${uuidFrom(`cyclonedx:${image.name}:${image.manifest}`)}`,
    version: 1,
    metadata: {
      timestamp: options.created,
      tools: { components: [{ type: 'application', name: options.tool.name, version: options.tool.version }] },
      component: container(image),
    },
    components,
    dependencies,
  };
  return `${JSON.stringify(doc, null, 2)}\n`;
}
