/**
 * The registry as a source of truth (the publish rule's `ResultSource`, engine/cache/registry-source.ts):
 * a build or convert whose action key is the one `published.lock.json` records for its image is
 * found again in the registry it was pushed to, so a fresh checkout need not build it.
 *
 * - `build:NAME` with key K: the lock's entry for NAME records K for `build:NAME`; a registry
 *   reference of the entry (the first that answers) holds the manifest by its digest (a GET by
 *   digest, verified: the manifest is small and its layers and annotation are needed); when the
 *   manifest has the annotation `dev.graph.action-key` it must be K (a second check: the registry
 *   itself says which key built it). The result is what the build would have recorded: outputs
 *   `manifest`, `config`, `layers`, `layout` (`.graph/out/oci/NAME`), `tag`; artifacts the
 *   manifest, config and layers; the layout's index.json as its visible file.
 * - `convert:NAME` with key K: the lock records K for `convert:NAME` and an unsigned SIF (a signed
 *   one is another file than the conversion's); its `oras://REF` artifact's manifest names the
 *   SIF as its layer with the lock's sha256 and size. Outputs `sif` (`.graph/out/sif/NAME.sif`),
 *   `sha256`, `md5`, `size`, `manifest` (the image's); artifact the SIF.
 *
 * Anything else is not a claim (undefined): no lock, no entry, another key, a reference not in a
 * registry (`dist/`), a manifest the registry does not have (404). A registry that cannot be
 * reached, refuses the credentials or answers garbage throws (one warning, engine side). Blobs are
 * fetched only when asked (`SourceClaim.fetch`), verified against their digests (OCI distribution
 * spec v1.1, "Pulling blobs"). Credentials are the publish rule's (rules/registry/client.ts), never
 * printed.
 */
import path from 'node:path';
import { Readable } from 'node:stream';
import { readJsonFile } from '../../engine/atomic.js';
import { DigestError, type ContentStore } from '../../engine/cache/store.js';
import { SourceDigestError, type ResultSource, type SourceClaim } from '../../engine/cache/registry-source.js';
import type { NodeId } from '../../engine/rule.js';
import { parseReference, type ImageReference } from '../../engine/validate/reference.js';
import type { RegistryClient } from './client.js';
import { ACTION_KEY_ANNOTATION, type ImageManifest } from '../oci/image.js';
import { PUBLISHED_LOCK as LOCK, type PublishedImage } from '../publish.js';

/** The SIF layer's media type of an ORAS artifact (as rules/registry/push.ts `MEDIA_TYPE_SIF_LAYER`, not loaded at plan time). */
const SIF_LAYER = 'application/vnd.sylabs.sif.layer.v1.sif';

/** What the source asks of registries: a narrow interface, so its decisions are tested with a fake. */
export interface RegistryAccess {
  /**
   * GET a manifest by digest or tag, verified against its digest.
   * @returns its bytes and digest; undefined when the registry has no such manifest (404).
   * @throws Error when the registry cannot be reached, refuses access or answers otherwise.
   */
  manifest(host: string, repository: string, reference: string, signal?: AbortSignal): Promise<{ bytes: Buffer; digest: string } | undefined>;
  /**
   * A blob's bytes as a stream (not yet verified: the store verifies them).
   * @throws Error when the registry cannot deliver it.
   */
  blob(host: string, repository: string, digest: string, signal?: AbortSignal): Promise<Readable>;
}

/** `RegistryAccess` over the registry client (auth, retries, credentials as for publishing). */
export function registryAccess(): RegistryAccess {
  // The client (and the HTTP stack) loads when a lock's key matches and a registry is asked.
  const code = () => import('./client.js');
  const clients = new Map<string, RegistryClient>();
  const client = async (host: string) => clients.get(host) ?? clients.set(host, new (await code()).RegistryClient(host)).get(host)!;
  return {
    async manifest(host, repository, reference) {
      try {
        const { bytes, digest } = await (await client(host)).getManifest(repository, reference);
        return { bytes, digest };
      } catch (e) {
        if (e instanceof (await code()).RegistryError && (e as { status?: number }).status === 404) return undefined;
        throw e;
      }
    },
    async blob(host, repository, digest) {
      const res = await (await client(host)).request('GET', `/v2/${repository}/blobs/${digest}`, `repository:${repository}:pull`);
      if (!res.ok || !res.body) {
        await res.body?.cancel();
        throw new (await code()).RegistryError(`registry ${host}: GET blob ${digest} of ${repository} answered ${res.status}`, res.status);
      }
      return Readable.fromWeb(res.body as import('node:stream/web').ReadableStream);
    },
  };
}

/**
 * The source for the workspace at `root`: undefined when it has no published.lock.json or the lock
 * names no registry (then there is nothing to ask).
 * @param access how registries are reached (a fake in unit tests).
 * @param env for `GRAPH_DEFAULT_REGISTRY` (a reference without a host).
 */
export function publishedSource(root: string, access: RegistryAccess = registryAccess(), env: NodeJS.ProcessEnv = process.env): ResultSource | undefined {
  const images = (readJsonFile(path.join(root, LOCK)) as { images?: Record<string, PublishedImage> } | undefined)?.images;
  if (!images || typeof images !== 'object') return undefined;
  const inRegistry = (ref: string) => registryRef(ref.replace(/^oras:\/\//, ''), env) !== undefined;
  if (!Object.values(images).some((e) => e?.references?.some(inRegistry))) return undefined;
  return {
    name: 'registry',
    lookup: (id, key, signal) => lookup(images, id, key, access, env, signal),
  };
}

/** A registry reference with its host, or undefined (a dist/ layout, a reference without a host). */
function registryRef(text: string, env: NodeJS.ProcessEnv): (ImageReference & { host: string }) | undefined {
  if (text.startsWith('oci-layout:') || text.startsWith('dist/')) return undefined;
  const ref = parseReference(text);
  if (typeof ref === 'string') return undefined;
  const host = ref.registry ?? env.GRAPH_DEFAULT_REGISTRY;
  return host ? { ...ref, host } : undefined;
}

const DIGEST = /^sha256:[0-9a-f]{64}$/;

async function lookup(
  images: Record<string, PublishedImage>,
  id: NodeId,
  key: string,
  access: RegistryAccess,
  env: NodeJS.ProcessEnv,
  signal?: AbortSignal,
): Promise<SourceClaim | undefined> {
  const m = /^(build|convert):(.+)$/.exec(id);
  if (!m) return undefined;
  const [, kind, name] = m;
  const entry = images[name];
  if (!entry || entry.keys?.[id] !== key || typeof entry.manifest !== 'string' || !DIGEST.test(entry.manifest)) return undefined;
  if (kind === 'build') {
    for (const text of entry.references ?? []) {
      const ref = registryRef(text, env);
      if (!ref) continue;
      const got = await access.manifest(ref.host, ref.repository, entry.manifest, signal);
      if (!got) continue;
      if (got.digest !== entry.manifest) throw new Error(`${ref.host}/${ref.repository}: manifest ${entry.manifest} came back as ${got.digest}`);
      const manifest = parseManifest(got.bytes, `${ref.host}/${ref.repository}@${entry.manifest}`);
      const recorded = manifest.annotations?.[ACTION_KEY_ANNOTATION];
      if (recorded !== undefined && recorded !== key) return undefined;
      const layout = path.join('.graph', 'out', 'oci', name);
      const blobs = [entry.manifest, manifest.config.digest, ...manifest.layers.map((l) => l.digest)];
      return {
        result: {
          outputs: { manifest: entry.manifest, config: manifest.config.digest, layers: manifest.layers.map((l) => l.digest), layout, tag: 'latest' },
          artifacts: [...new Set(blobs)],
          files: [path.join(layout, 'index.json')],
          duration_ms: 0,
        },
        reason: `from registry ${text} (${entry.manifest.slice(0, 19)}, as ${LOCK} records)`,
        fetch: (digest, store, s) => (digest === entry.manifest ? putManifest(store, got.bytes, digest) : fetchBlob(access, ref, digest, store, s)),
      };
    }
    return undefined;
  }
  const sif = entry.sif;
  if (!sif || entry.signed_by || !/^[0-9a-f]{64}$/.test(sif.sha256)) return undefined;
  const digest = `sha256:${sif.sha256}`;
  for (const text of sif.references ?? []) {
    if (!text.startsWith('oras://')) continue;
    const ref = registryRef(text.slice('oras://'.length), env);
    if (!ref) continue;
    const got = await access.manifest(ref.host, ref.repository, ref.digest ?? ref.tag ?? 'latest', signal);
    if (!got) continue;
    const manifest = parseManifest(got.bytes, `${ref.host}/${ref.repository}:${ref.tag}`);
    // The tag may have moved on to another SIF since: then it is not this conversion's.
    if (!manifest.layers.some((l) => l.mediaType === SIF_LAYER && l.digest === digest && l.size === sif.size)) continue;
    const file = path.join('.graph', 'out', 'sif', `${name}.sif`);
    return {
      result: { outputs: { sif: file, sha256: sif.sha256, md5: sif.md5, size: sif.size, manifest: entry.manifest }, artifacts: [digest], files: [file], duration_ms: 0 },
      reason: `from registry ${text} (${digest.slice(0, 19)}, as ${LOCK} records)`,
      fetch: (d, store, s) => fetchBlob(access, ref, d, store, s),
    };
  }
  return undefined;
}

/** An image manifest's parts the source reads. @throws Error for anything else (garbage). */
function parseManifest(bytes: Buffer, what: string): ImageManifest {
  let m: ImageManifest;
  try {
    m = JSON.parse(bytes.toString('utf8')) as ImageManifest;
  } catch {
    throw new Error(`${what} is not JSON`);
  }
  const ok = (d: unknown) => typeof d === 'object' && d !== null && DIGEST.test((d as { digest?: string }).digest ?? '');
  if (!m || !ok(m.config) || !Array.isArray(m.layers) || !m.layers.every(ok)) throw new Error(`${what} is not an image manifest`);
  return m;
}

async function putManifest(store: ContentStore, bytes: Buffer, digest: string): Promise<void> {
  // Verified when it was read (RegistryAccess.manifest); verified again on the way in.
  if (store.putBytes(bytes).digest !== digest) throw new SourceDigestError(`manifest ${digest} did not match its digest`);
}

async function fetchBlob(access: RegistryAccess, ref: ImageReference & { host: string }, digest: string, store: ContentStore, signal?: AbortSignal): Promise<void> {
  if (store.has(digest)) return;
  const stream = await access.blob(ref.host, ref.repository, digest, signal);
  try {
    await store.putStream(stream, digest, `blob ${digest} from ${ref.host}/${ref.repository}`);
  } catch (e) {
    if (e instanceof DigestError) throw new SourceDigestError(e.message);
    throw e;
  }
}
