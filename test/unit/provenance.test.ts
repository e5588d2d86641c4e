/**
 * In-toto statements (rules/trust/provenance.ts): the SLSA Provenance v1 and test-result
 * statements, field by field, and their determinism (dependencies sorted, no times).
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { digestOf, provenanceStatement, testResultStatement } from '../../rules/trust/provenance.js';

const test = suite('provenance');
const subject = { name: 'pwm-scanner', manifest: `sha256:${'d'.repeat(64)}` };

test('SLSA Provenance v1: subject, declaration, sorted dependencies, builder, internal keys', () => {
  const deps = [
    { uri: 'pkg:deb/debian/libc6@2.36?arch=amd64', digest: { sha256: 'c'.repeat(64) } },
    { uri: 'file:zoo/pwm/predict.py', digest: { sha256: 'a'.repeat(64) } },
  ];
  const text = provenanceStatement(subject, { recipe: { kind: 'layers' } }, deps, { id: 'https://graph.invalid/builder/graph@0.1.0', version: '0.1.0' }, { 'build:pwm-scanner': 'e'.repeat(64) });
  assert.equal(JSON.parse(text), {
    _type: 'https://in-toto.io/Statement/v1',
    subject: [{ name: 'pwm-scanner', digest: { sha256: 'd'.repeat(64) } }],
    predicateType: 'https://slsa.dev/provenance/v1',
    predicate: {
      buildDefinition: {
        buildType: 'https://graph.invalid/build-types/image/v1',
        externalParameters: { image: { recipe: { kind: 'layers' } } },
        internalParameters: { keys: { 'build:pwm-scanner': 'e'.repeat(64) } },
        resolvedDependencies: [deps[1], deps[0]],
      },
      runDetails: { builder: { id: 'https://graph.invalid/builder/graph@0.1.0', version: { graph: '0.1.0' } } },
    },
  });
  assert.is(provenanceStatement(subject, { recipe: { kind: 'layers' } }, [...deps].reverse(), { id: 'https://graph.invalid/builder/graph@0.1.0', version: '0.1.0' }, { 'build:pwm-scanner': 'e'.repeat(64) }), text);
  assert.ok(text.endsWith('}\n'));
});

test('test results: PASSED, every gating test by id with its runtime and action key', () => {
  const text = testResultStatement(subject, [
    { id: 'test:pwm/REST@sif', runtime: 'sif', key: '2'.repeat(64) },
    { id: 'test:pwm/CTCF@oci', runtime: 'oci', key: '1'.repeat(64) },
  ]);
  assert.equal(JSON.parse(text).predicate, {
    result: 'PASSED',
    configuration: [
      { name: 'test:pwm/CTCF@oci', digest: { sha256: '1'.repeat(64) }, annotations: { runtime: 'oci', actionKey: '1'.repeat(64) } },
      { name: 'test:pwm/REST@sif', digest: { sha256: '2'.repeat(64) }, annotations: { runtime: 'sif', actionKey: '2'.repeat(64) } },
    ],
    passedTests: ['test:pwm/CTCF@oci', 'test:pwm/REST@sif'],
    warnedTests: [],
    failedTests: [],
  });
  assert.is(JSON.parse(text).predicateType, 'https://in-toto.io/attestation/test-result/v0.1');
});

test('digests from fingerprints: the executable bit dropped; links and missing files have none', () => {
  assert.equal(digestOf(`sha256:${'a'.repeat(64)}+x`), { sha256: 'a'.repeat(64) });
  assert.is(digestOf('symlink:target'), undefined);
  assert.is(digestOf('missing'), undefined);
});

test.run();
