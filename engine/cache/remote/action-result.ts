/**
 * graph's results as REAPI `ActionResult` protobufs, the value an HTTP cache keeps under
 * `/ac/<key>` (Bazel remote execution API v2, `build/bazel/remote/execution/v2/remote_execution.proto`,
 * vendored in `proto/` with the field numbers unchanged), so servers that validate their action
 * cache (bazel-remote) accept graph's entries.
 *
 * One entry, by output file path:
 *
 * - `graph/key-record.json`: the key record as canonical JSON. Its digest is the action key
 *   itself (a key is the SHA-256 of its record), which is what makes an entry checkable: a reader
 *   uses an entry only when this file's digest equals the key it asked for.
 * - `graph/result.json`: graph's result record, `{"format": 1, "id", "outputs", "artifacts",
 *   "files"?, "duration_ms"}` (as in the local action cache, engine/cache/action-cache.ts).
 * - `graph/artifacts/sha256/<hex>`: one per artifact (a blob of the local content-addressed
 *   store: an image's manifest, config and layers, a SIF), with its size.
 * - `stdout_digest`: the node's log.
 *
 * The two records are small: they are uploaded to the CAS like every output (so the entry is
 * complete for servers that check) and also inlined in `contents`, so a lookup is one request.
 * A reader checks inlined contents against their digest, as it checks every CAS download.
 */
import { readFileSync } from 'node:fs';
import protobuf from 'protobufjs';

/** Output file paths of an entry (module comment). */
export const RECORD_PATH = 'graph/key-record.json';
export const RESULT_PATH = 'graph/result.json';
export const ARTIFACT_PREFIX = 'graph/artifacts/sha256/';

/** A REAPI `Digest`: lowercase hex SHA-256 and size in bytes. */
export interface Digest {
  readonly hash: string;
  readonly size: number;
}

/** One `OutputFile`: its path, digest and, when inlined, its bytes. */
export interface OutputFile {
  readonly path: string;
  readonly digest: Digest;
  readonly contents?: Uint8Array;
}

/** The parts of an `ActionResult` graph reads and writes. */
export interface ActionResultData {
  readonly outputFiles: readonly OutputFile[];
  readonly stdout?: Digest;
}

let types: { actionResult: protobuf.Type } | undefined;

/** The vendored .proto, parsed once (field names as written: `size_bytes`, not `sizeBytes`). */
function load(): { actionResult: protobuf.Type } {
  if (types) return types;
  const text = readFileSync(new URL('../../../../engine/cache/remote/proto/remote_execution.proto', import.meta.url), 'utf8');
  const root = protobuf.parse(text, { keepCase: true }).root;
  types = { actionResult: root.lookupType('build.bazel.remote.execution.v2.ActionResult') };
  return types;
}

const digestMessage = (d: Digest) => ({ hash: d.hash, size_bytes: d.size });

/** Encode an `ActionResult` (exit code 0, worker `graph`). */
export function encodeActionResult(data: ActionResultData): Uint8Array {
  const { actionResult } = load();
  const message = actionResult.fromObject({
    output_files: data.outputFiles.map((f) => ({ path: f.path, digest: digestMessage(f.digest), ...(f.contents ? { contents: f.contents } : {}) })),
    exit_code: 0,
    ...(data.stdout ? { stdout_digest: digestMessage(data.stdout) } : {}),
    execution_metadata: { worker: 'graph' },
  });
  return actionResult.encode(message).finish();
}

const HEX64 = /^[a-f0-9]{64}$/;

/**
 * Decode an `ActionResult`.
 * @throws Error when the bytes are not one, or a digest is malformed (not 64 lowercase hex
 *   digits with a non-negative size).
 */
export function decodeActionResult(bytes: Uint8Array): ActionResultData {
  const { actionResult } = load();
  const raw = actionResult.toObject(actionResult.decode(bytes), { longs: Number, defaults: false }) as {
    output_files?: Array<{ path?: string; digest?: { hash?: string; size_bytes?: number }; contents?: Uint8Array }>;
    exit_code?: number;
    stdout_digest?: { hash?: string; size_bytes?: number };
  };
  const digest = (d: { hash?: string; size_bytes?: number } | undefined, what: string): Digest => {
    const hash = d?.hash ?? '';
    const size = d?.size_bytes ?? 0;
    if (!HEX64.test(hash) || !Number.isSafeInteger(size) || size < 0) throw new Error(`malformed digest of ${what}`);
    return { hash, size };
  };
  if ((raw.exit_code ?? 0) !== 0) throw new Error(`exit code ${raw.exit_code}`);
  const outputFiles = (raw.output_files ?? []).map((f) => {
    const p = f.path ?? '';
    return { path: p, digest: digest(f.digest, p), ...(f.contents && f.contents.length ? { contents: f.contents } : {}) };
  });
  return { outputFiles, ...(raw.stdout_digest ? { stdout: digest(raw.stdout_digest, 'stdout') } : {}) };
}
