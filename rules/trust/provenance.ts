/**
 * Attestations about a published image, as in-toto Statements v1
 * (github.com/in-toto/attestation `spec/v1/statement.md`) whose subject is the image manifest:
 * - SLSA Provenance v1 (slsa.dev/spec/v1.0/provenance): `buildDefinition.externalParameters` is the
 *   image's declaration (its build node's `decl`, images.lock entry included), and
 *   `resolvedDependencies` every input with its digest: workspace files (as the action key
 *   records them), pinned .debs, base images by manifest digest;
 * - the in-toto test-result predicate v0.1 (`spec/predicates/test-result.md`): every test that
 *   gated the publish, each with its node id, runtime and action key.
 * Both are deterministic (no times: graph's action keys already say what was built from what), so
 * the same publication gives the same bytes.
 */
import type { Json } from '../../engine/rule.js';

/** The in-toto Statement v1 `_type`. */
export const STATEMENT_TYPE = 'https://in-toto.io/Statement/v1';
/** SLSA Provenance v1's predicate type. */
export const SLSA_PROVENANCE_V1 = 'https://slsa.dev/provenance/v1';
/** The in-toto test-result predicate type. */
export const TEST_RESULT_V01 = 'https://in-toto.io/attestation/test-result/v0.1';
/** The media type of an in-toto Statement as JSON (the artifact type of its OCI artifact). */
export const MEDIA_TYPE_IN_TOTO = 'application/vnd.in-toto+json';
/** The build type graph's provenance names (what `externalParameters` means). */
export const BUILD_TYPE = 'https://graph.invalid/build-types/image/v1';
/** The OCI annotation that names a statement's predicate type on its artifact. */
export const ANNOTATION_PREDICATE_TYPE = 'in-toto.io/predicate-type';

/** An in-toto ResourceDescriptor (`spec/v1/resource_descriptor.md`). */
export interface ResourceDescriptor {
  readonly uri?: string;
  readonly name?: string;
  readonly digest: Readonly<Record<string, string>>;
  readonly annotations?: Readonly<Record<string, Json>>;
}

/** The subject: an image by its manifest digest. */
export interface StatementSubject {
  /** The image's name (or the reference it was published at). */
  readonly name: string;
  /** `sha256:<hex>`. */
  readonly manifest: string;
}

/** A test that gated a publish. */
export interface GatingTest {
  /** Node id, `test:GROUP/MODEL@RUNTIME`. */
  readonly id: string;
  readonly runtime: string;
  /** Its action key (64 hex). */
  readonly key: string;
}

const subjectOf = (s: StatementSubject) => [{ name: s.name, digest: { sha256: s.manifest.replace(/^sha256:/, '') } }];

/** `{"sha256": hex}` from a `sha256:<hex>[+x]` fingerprint or digest; undefined for anything else. */
export function digestOf(fingerprint: string): Record<string, string> | undefined {
  const m = /^sha256:([0-9a-f]{64})(\+x)?$/.exec(fingerprint);
  return m ? { sha256: m[1] } : undefined;
}

/**
 * The SLSA Provenance v1 statement (two-space indented JSON, ending in a newline).
 * @param declaration the image's declaration (`externalParameters.image`).
 * @param dependencies every resolved input, in a stable order (sorted here by uri).
 * @param builder graph's id and version.
 * @param internal the action keys of the nodes that made the image (`internalParameters.keys`).
 */
export function provenanceStatement(
  subject: StatementSubject,
  declaration: Json,
  dependencies: readonly ResourceDescriptor[],
  builder: { readonly id: string; readonly version: string },
  internal: Readonly<Record<string, string>>,
): string {
  const statement = {
    _type: STATEMENT_TYPE,
    subject: subjectOf(subject),
    predicateType: SLSA_PROVENANCE_V1,
    predicate: {
      buildDefinition: {
        buildType: BUILD_TYPE,
        externalParameters: { image: declaration },
        internalParameters: { keys: internal },
        resolvedDependencies: [...dependencies].sort((a, b) => ((a.uri ?? a.name ?? '') < (b.uri ?? b.name ?? '') ? -1 : 1)),
      },
      runDetails: { builder: { id: builder.id, version: { graph: builder.version } } },
    },
  };
  return `${JSON.stringify(statement, null, 2)}\n`;
}

/**
 * The test-result statement (two-space indented JSON, ending in a newline): result `PASSED`
 * (a publish runs only after every test passed), `passedTests` the node ids, `configuration` one
 * ResourceDescriptor per test naming its runtime and action key.
 */
export function testResultStatement(subject: StatementSubject, tests: readonly GatingTest[]): string {
  const sorted = [...tests].sort((a, b) => (a.id < b.id ? -1 : 1));
  const statement = {
    _type: STATEMENT_TYPE,
    subject: subjectOf(subject),
    predicateType: TEST_RESULT_V01,
    predicate: {
      result: 'PASSED',
      configuration: sorted.map((t) => ({ name: t.id, digest: { sha256: t.key }, annotations: { runtime: t.runtime, actionKey: t.key } })),
      passedTests: sorted.map((t) => t.id),
      warnedTests: [],
      failedTests: [],
    },
  };
  return `${JSON.stringify(statement, null, 2)}\n`;
}
