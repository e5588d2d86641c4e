/**
 * SBOMs (rules/sbom/): what the scan reads from layers (dpkg status, copyright licences, Python
 * METADATA, whiteouts) and the SPDX 2.3 and CycloneDX 1.6 documents, checked against the official
 * schemas and for determinism.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import tar from 'tar-stream';
import { ContentStore } from '../../engine/cache/store.js';
import { MEDIA_TYPE_CONFIG, MEDIA_TYPE_MANIFEST, type StoredImage } from '../../rules/oci/image.js';
import { copyrightLicenses, scanImage } from '../../rules/sbom/scan.js';
import { cycloneDxDocument, spdxDocument, type SbomImage } from '../../rules/sbom/sbom.js';
import { cycloneDxErrors, spdxErrors } from '../sbom-schemas.js';

const test = suite('sbom');

const STATUS = `Package: libc6
Status: install ok installed
Architecture: amd64
Version: 2.36-9+deb12u14
Source: glibc

Package: python3-minimal
Status: install ok installed
Architecture: amd64
Version: 3.11.2-1+b1

Package: gone
Status: deinstall ok config-files
Architecture: amd64
Version: 1
`;
const COPYRIGHT = `Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/

Files: *
Copyright: someone
License: LGPL-2.1+

Files: debian/*
License: GPL-2+ or Odd-Licence
`;

/** An uncompressed layer holding `files` (path → content; `null` a directory); `.wh.` names delete. */
async function layer(store: ContentStore, files: Record<string, string | null>) {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (c: unknown) => chunks.push(c as Buffer));
  const done = new Promise<void>((r) => pack.on('end', () => r()));
  for (const [name, content] of Object.entries(files)) {
    if (content === null) pack.entry({ name, type: 'directory', mode: 0o755 });
    else pack.entry({ name, mode: 0o644 }, content);
  }
  pack.finalize();
  await done;
  const { digest, size } = store.putBytes(Buffer.concat(chunks));
  return { mediaType: 'application/vnd.oci.image.layer.v1.tar', digest, size };
}

function image(layers: Awaited<ReturnType<typeof layer>>[]): StoredImage {
  return {
    manifest: { schemaVersion: 2, mediaType: MEDIA_TYPE_MANIFEST, config: { mediaType: MEDIA_TYPE_CONFIG, digest: `sha256:${'0'.repeat(64)}`, size: 2 }, layers },
    manifestDescriptor: { mediaType: MEDIA_TYPE_MANIFEST, digest: `sha256:${'a'.repeat(64)}`, size: 100 },
    config: { architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) } },
  };
}

test('copyright: machine-readable licences, split and sorted; a free-form file names none', () => {
  assert.equal(copyrightLicenses(COPYRIGHT), ['GPL-2+', 'LGPL-2.1+', 'Odd-Licence']);
  assert.equal(copyrightLicenses('This package was debianized by someone.\nLicense: GPL\n'), []);
});

test('scan: packages from dpkg status with licences, Python METADATA, files by layer, whiteouts applied', async () => {
  const store = new ContentStore(mkdtempSync(path.join(tmpdir(), 'graph-sbom-')));
  const base = await layer(store, {
    'var/lib/dpkg/status': STATUS,
    'usr/share/doc/libc6/copyright': COPYRIGHT,
    'etc/old': 'x',
    'opt/a/1': '1',
  });
  const top = await layer(store, {
    'usr/local/bin/run': '#!/bin/sh\n',
    'etc/.wh.old': '',
    'opt/a/.wh..wh..opq': '',
    'opt/a/2': '2',
    'usr/lib/python3/dist-packages/numpy-1.24.2.dist-info/METADATA': 'Metadata-Version: 2.1\nName: numpy\nVersion: 1.24.2\nLicense: BSD-3-Clause\nClassifier: License :: OSI Approved :: BSD License\n\nNumPy is the fundamental package.\nLicense: not a header\n',
  });
  const got = await scanImage(store, image([base, top]));
  assert.equal(got.debian, [
    { name: 'libc6', version: '2.36-9+deb12u14', architecture: 'amd64', source: 'glibc', licenses: ['GPL-2+', 'LGPL-2.1+', 'Odd-Licence'] },
    { name: 'python3-minimal', version: '3.11.2-1+b1', architecture: 'amd64', licenses: [] },
  ]);
  assert.equal(got.python, [{ name: 'numpy', version: '1.24.2', path: 'usr/lib/python3/dist-packages/numpy-1.24.2.dist-info/METADATA', licenses: ['BSD License', 'BSD-3-Clause'] }]);
  assert.equal(
    got.files.map((f) => `${f.path}@${f.layer}`),
    ['opt/a/2@1', 'usr/lib/python3/dist-packages/numpy-1.24.2.dist-info/METADATA@1', 'usr/local/bin/run@1', 'usr/share/doc/libc6/copyright@0', 'var/lib/dpkg/status@0'],
  );
  const run = got.files.find((f) => f.path === 'usr/local/bin/run');
  assert.is(run?.sha256, createHash('sha256').update('#!/bin/sh\n').digest('hex'));
  assert.is(run?.sha1, createHash('sha1').update('#!/bin/sh\n').digest('hex'));
});

/** A base from Debian packages and a `layers:` image on it, as a publish describes them. */
function chain(): SbomImage {
  const base: SbomImage = {
    name: 'py3-base',
    manifest: `sha256:${'b'.repeat(64)}`,
    architecture: 'amd64',
    os: 'linux',
    recipe: 'debian',
    contents: {
      files: [{ path: 'usr/bin/python3', sha256: '1'.repeat(64), sha1: '2'.repeat(40), layer: 0 }],
      debian: [
        { name: 'libc6', version: '2.36-9+deb12u14', architecture: 'amd64', licenses: ['GPL-2+', 'LGPL-2.1+', 'Odd-Licence'] },
        { name: 'libstdc++6', version: '12.2.0-14', architecture: 'amd64', licenses: [] },
      ],
      python: [],
    },
    ownLayersFrom: 0,
    debs: [{ name: 'libc6', version: '2.36-9+deb12u14', architecture: 'amd64', sha256: 'c'.repeat(64) }],
  };
  return {
    name: 'pwm-scanner',
    manifest: `sha256:${'d'.repeat(64)}`,
    architecture: 'amd64',
    os: 'linux',
    recipe: 'layers',
    contents: {
      files: [...base.contents.files, { path: 'usr/local/bin/predict', sha256: '3'.repeat(64), sha1: '4'.repeat(40), layer: 1 }],
      debian: base.contents.debian,
      python: [{ name: 'Jinja2', version: '3.1.2', path: 'usr/lib/python3/dist-packages/Jinja2-3.1.2.dist-info/METADATA', licenses: ['BSD-3-Clause'] }],
    },
    ownLayersFrom: 1,
    debs: [],
    base,
  };
}

const OPTIONS = { created: '2026-01-02T03:04:05Z', tool: { name: 'graph', version: '0.1.0' } };

test('SPDX 2.3: valid against the official schema; base merged, packages attributed, purls and .deb digests', () => {
  const text = spdxDocument(chain(), OPTIONS);
  assert.equal(spdxErrors(text), []);
  assert.is(spdxDocument(chain(), OPTIONS), text);
  const doc = JSON.parse(text);
  assert.is(doc.spdxVersion, 'SPDX-2.3');
  assert.is(doc.documentNamespace, `https://graph.invalid/spdx/pwm-scanner/${'d'.repeat(64)}`);
  assert.equal(doc.creationInfo, { created: '2026-01-02T03:04:05Z', creators: ['Tool: graph-0.1.0'] });
  const libc = doc.packages.find((p: { name: string }) => p.name === 'libc6');
  assert.equal(libc, {
    name: 'libc6',
    SPDXID: 'SPDXRef-Package-deb-libc6-amd64',
    versionInfo: '2.36-9+deb12u14',
    supplier: 'Organization: Debian',
    downloadLocation: 'NOASSERTION',
    filesAnalyzed: false,
    checksums: [{ algorithm: 'SHA256', checksumValue: 'c'.repeat(64) }],
    licenseConcluded: 'NOASSERTION',
    licenseDeclared: 'GPL-2.0-or-later AND LGPL-2.1-or-later AND LicenseRef-Odd-Licence',
    copyrightText: 'NOASSERTION',
    externalRefs: [{ referenceCategory: 'PACKAGE-MANAGER', referenceType: 'purl', referenceLocator: 'pkg:deb/debian/libc6@2.36-9%2Bdeb12u14?arch=amd64' }],
    primaryPackagePurpose: 'INSTALL',
  });
  assert.is(doc.packages.find((p: { name: string }) => p.name === 'libstdc++6').SPDXID, 'SPDXRef-Package-deb-libstdc--6-amd64');
  assert.equal(doc.hasExtractedLicensingInfos.map((l: { licenseId: string }) => l.licenseId), ['LicenseRef-Odd-Licence']);
  assert.equal(doc.files.map((f: { fileName: string }) => f.fileName), ['./usr/local/bin/predict']);
  const rels = doc.relationships.map((r: Record<string, string>) => `${r.spdxElementId} ${r.relationshipType} ${r.relatedSpdxElement}`);
  assert.equal(rels, [
    'SPDXRef-DOCUMENT DESCRIBES SPDXRef-Image',
    'SPDXRef-Image DESCENDANT_OF SPDXRef-Base-py3-base',
    'SPDXRef-Base-py3-base CONTAINS SPDXRef-Package-deb-libc6-amd64',
    'SPDXRef-Base-py3-base CONTAINS SPDXRef-Package-deb-libstdc--6-amd64',
    'SPDXRef-Image CONTAINS SPDXRef-Package-pypi-jinja2',
    'SPDXRef-Image CONTAINS SPDXRef-File-usr-local-bin-predict',
  ]);
});

test('CycloneDX 1.6: valid against the official schema; the image as metadata.component, dependencies by image', () => {
  const text = cycloneDxDocument(chain(), OPTIONS);
  assert.equal(cycloneDxErrors(text), []);
  assert.is(cycloneDxDocument(chain(), OPTIONS), text);
  const doc = JSON.parse(text);
  assert.match(doc.serialNumber, /^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.is(doc.metadata.component.purl, `pkg:oci/pwm-scanner@sha256%3A${'d'.repeat(64)}?arch=amd64`);
  const libc = doc.components.find((c: { name: string }) => c.name === 'libc6');
  assert.equal(libc.licenses, [{ license: { id: 'GPL-2.0-or-later' } }, { license: { id: 'LGPL-2.1-or-later' } }, { license: { name: 'Odd-Licence' } }]);
  assert.equal(libc.hashes, [{ alg: 'SHA-256', content: 'c'.repeat(64) }]);
  assert.equal(doc.dependencies, [
    { ref: `pkg:oci/pwm-scanner@sha256%3A${'d'.repeat(64)}?arch=amd64`, dependsOn: [`pkg:oci/py3-base@sha256%3A${'b'.repeat(64)}?arch=amd64`, 'SPDXRef-Package-pypi-jinja2', 'file:pwm-scanner:/usr/local/bin/predict'] },
    { ref: `pkg:oci/py3-base@sha256%3A${'b'.repeat(64)}?arch=amd64`, dependsOn: ['SPDXRef-Package-deb-libc6-amd64', 'SPDXRef-Package-deb-libstdc--6-amd64'] },
  ]);
});

test('a broken document fails the schemas (the check is real)', () => {
  const spdx = JSON.parse(spdxDocument(chain(), OPTIONS));
  delete spdx.packages[0].SPDXID;
  assert.ok(spdxErrors(JSON.stringify(spdx)).length > 0);
  const cdx = JSON.parse(cycloneDxDocument(chain(), OPTIONS));
  cdx.components[0].type = 'nonsense';
  assert.ok(cycloneDxErrors(JSON.stringify(cdx)).length > 0);
});

test.run();
