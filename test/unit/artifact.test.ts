/**
 * OCI 1.1 artifacts (rules/oci/artifact.ts): the manifest's exact shape (empty config, one layer,
 * subject, artifactType), determinism, and the referrers index merge.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { ContentStore } from '../../engine/cache/store.js';
import { putArtifact, referrersIndex, referrersTag } from '../../rules/oci/artifact.js';

const test = suite('artifact');
const subject = { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: `sha256:${'d'.repeat(64)}`, size: 123 };
const sha = (s: string) => `sha256:${createHash('sha256').update(s).digest('hex')}`;

test('an artifact about an image: exact manifest, stored; the same document gives the same digest', () => {
  const store = new ContentStore(mkdtempSync(path.join(tmpdir(), 'graph-artifact-')));
  const a = putArtifact(store, subject, 'application/spdx+json', '{"x":1}\n', 'sbom.spdx.json', { 'b.key': '2', 'a.key': '1' });
  assert.equal(JSON.parse(a.bytes.toString()), {
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    artifactType: 'application/spdx+json',
    config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha('{}'), size: 2, data: 'e30=' },
    layers: [{ mediaType: 'application/spdx+json', digest: sha('{"x":1}\n'), size: 8, annotations: { 'org.opencontainers.image.title': 'sbom.spdx.json' } }],
    subject,
    annotations: { 'a.key': '1', 'b.key': '2' },
  });
  assert.equal(a.descriptor, { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: sha(a.bytes.toString()), size: a.bytes.length, artifactType: 'application/spdx+json', annotations: { 'a.key': '1', 'b.key': '2' } });
  assert.is(readFileSync(store.pathOf(a.descriptor.digest), 'utf8'), a.bytes.toString());
  assert.is(putArtifact(store, subject, 'application/spdx+json', '{"x":1}\n', 'sbom.spdx.json', { 'a.key': '1', 'b.key': '2' }).descriptor.digest, a.descriptor.digest);
});

test('referrers: the tag schema name, and an index merged by digest, sorted', () => {
  assert.is(referrersTag(`sha256:${'d'.repeat(64)}`), `sha256-${'d'.repeat(64)}`);
  const d = (c: string, t = 'x') => ({ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: `sha256:${c.repeat(64)}`, size: 1, artifactType: t });
  const index = JSON.parse(referrersIndex([d('b'), d('a')], [d('c'), d('a', 'y')]).toString());
  assert.equal(index, { schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [d('a', 'y'), d('b'), d('c')] });
});

test.run();
