/**
 * A client for OCI registries, written against the OCI distribution spec v1.1 (`spec.md`: pulling
 * manifests and blobs; pushing comes with the publish rule) and the Docker token authentication
 * flow (`WWW-Authenticate: Bearer realm=…,service=…,scope=…`).
 *
 * - Endpoints: HTTPS, except loopback hosts (127.0.0.0/8, localhost, [::1]) and hosts listed in
 *   `GRAPH_INSECURE_REGISTRIES` (comma-separated), which use plain HTTP.
 * - Credentials: `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`): `auths` entries
 *   (base64 `user:password`), `credHelpers` and `credsStore` (`docker-credential-NAME get`); or
 *   `GRAPH_REGISTRY_USERNAME` / `GRAPH_REGISTRY_PASSWORD`. Credentials never appear in messages.
 * - Auth: anonymous first; on 401, Basic or the Bearer token flow, as the challenge asks.
 * - Retries: 429, 5xx and connection errors, up to 4 attempts with exponential backoff, honouring
 *   Retry-After (seconds, capped at 30): engine/http.ts, the one HTTP client.
 * - Every blob and manifest is verified against its digest before it enters the store.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { ConnectionError, httpRequest, type HttpRequest } from '../../engine/http.js';
import { captureOutput } from '../../engine/process.js';
import { formatReference, type ImageReference } from '../../engine/validate/reference.js';
import type { ContentStore } from '../../engine/cache/store.js';
import {
  hostArchitecture,
  ImageError,
  loadImage,
  MEDIA_TYPE_DOCKER_LIST,
  MEDIA_TYPE_DOCKER_MANIFEST,
  MEDIA_TYPE_INDEX,
  MEDIA_TYPE_MANIFEST,
  type Descriptor,
  type StoredImage,
} from '../oci/image.js';

/** A registry request that failed: unreachable, denied, not found, or a bad answer. */
export class RegistryError extends Error {
  constructor(
    message: string,
    readonly status?: number,
  ) {
    super(message);
    this.name = 'RegistryError';
  }
}

const MANIFEST_ACCEPT = [MEDIA_TYPE_MANIFEST, MEDIA_TYPE_INDEX, MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_DOCKER_LIST].join(', ');

/** Whether `host` is spoken to over plain HTTP. */
export function isInsecure(host: string): boolean {
  const name = host.replace(/:\d+$/, '');
  if (/^127\.\d+\.\d+\.\d+$/.test(name) || name === 'localhost' || name === '[::1]') return true;
  return (process.env.GRAPH_INSECURE_REGISTRIES ?? '')
    .split(',')
    .map((s) => s.trim())
    .includes(host);
}

export interface Credentials {
  readonly username: string;
  readonly password: string;
}

/**
 * Credentials for `host` from the environment or the Docker config file, or undefined.
 * @throws RegistryError when a configured credential helper fails.
 */
export async function credentialsFor(host: string): Promise<Credentials | undefined> {
  if (process.env.GRAPH_REGISTRY_USERNAME && process.env.GRAPH_REGISTRY_PASSWORD) {
    return { username: process.env.GRAPH_REGISTRY_USERNAME, password: process.env.GRAPH_REGISTRY_PASSWORD };
  }
  const file = path.join(process.env.DOCKER_CONFIG ?? path.join(homedir(), '.docker'), 'config.json');
  let config: { auths?: Record<string, { auth?: string; username?: string; password?: string }>; credHelpers?: Record<string, string>; credsStore?: string };
  try {
    config = JSON.parse(readFileSync(file, 'utf8'));
  } catch {
    return undefined;
  }
  const helper = config.credHelpers?.[host] ?? config.credsStore;
  if (helper) {
    try {
      const out = await captureOutput([`docker-credential-${helper}`, 'get'], { input: host });
      const { Username, Secret } = JSON.parse(out) as { Username: string; Secret: string };
      return { username: Username, password: Secret };
    } catch {
      if (config.credHelpers?.[host]) throw new RegistryError(`credential helper docker-credential-${helper} failed for ${host}`);
    }
  }
  const entry = config.auths?.[host] ?? config.auths?.[`https://${host}`] ?? config.auths?.[`http://${host}`];
  if (!entry) return undefined;
  if (entry.auth) {
    const decoded = Buffer.from(entry.auth, 'base64').toString('utf8');
    const i = decoded.indexOf(':');
    if (i > 0) return { username: decoded.slice(0, i), password: decoded.slice(i + 1) };
  }
  if (entry.username && entry.password) return { username: entry.username, password: entry.password };
  return undefined;
}

/** Parse a `WWW-Authenticate` header: scheme and parameters. */
export function parseChallenge(header: string): { scheme: string; params: Record<string, string> } {
  const m = /^(\w+)\s*(.*)$/s.exec(header.trim());
  if (!m) return { scheme: '', params: {} };
  const params: Record<string, string> = {};
  const re = /(\w+)=(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?\s*/g;
  for (let p = re.exec(m[2]); p; p = re.exec(m[2])) params[p[1].toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, '$1') : p[3];
  return { scheme: m[1].toLowerCase(), params };
}

/** Extra options of `RegistryClient.request`: a body (bytes, or a function making a fresh stream per attempt) and other fetch options. */
export type RequestOptions = Omit<HttpRequest, 'method' | 'headers'>;

/** One registry host. */
export class RegistryClient {
  readonly base: string;
  private authorization = new Map<string, string>();
  private credentials?: Promise<Credentials | undefined>;

  constructor(readonly host: string, private readonly signal?: AbortSignal) {
    this.base = `${isInsecure(host) ? 'http' : 'https'}://${host}`;
  }

  private creds(): Promise<Credentials | undefined> {
    return (this.credentials ??= credentialsFor(this.host));
  }

  /**
   * A request to `/v2/…` (or an absolute URL the registry gave, such as an upload Location) with
   * auth and retries.
   * @param scope the token scope, e.g. `repository:zoo/base:pull`.
   * @param init a body and other fetch options; a body made by a function is made afresh for every
   *   attempt (a stream cannot be replayed on a retry or after a 401) and destroyed after it.
   * @throws RegistryError for connection failures after retries and for 401/403.
   */
  async request(method: string, urlPath: string, scope: string, headers: Record<string, string> = {}, init: RequestOptions = {}): Promise<Response> {
    const url = urlPath.startsWith('http') ? urlPath : `${this.base}${urlPath}`;
    for (let authTried = false; ; authTried = true) {
      const auth = this.authorization.get(scope);
      let res: Response;
      try {
        res = await httpRequest(url, { ...init, method, headers: { ...headers, ...(auth ? { authorization: auth } : {}) } }, { signal: this.signal });
      } catch (e) {
        if (e instanceof ConnectionError) throw new RegistryError(`cannot reach registry ${this.host}: ${e.code}`);
        throw e;
      }
      if (res.status === 401 && !authTried) {
        await res.body?.cancel();
        await this.authenticate(res.headers.get('www-authenticate') ?? '', scope);
        continue;
      }
      if (res.status === 401 || res.status === 403) {
        await res.body?.cancel();
        const creds = await this.creds();
        throw new RegistryError(
          `registry ${this.host} denied access to ${scope.split(':')[1] ?? 'the registry'} (${res.status}${creds ? ', with the configured credentials' : ', anonymously'}): ${creds ? 'check their permissions' : 'log in (docker login) or set GRAPH_REGISTRY_USERNAME and GRAPH_REGISTRY_PASSWORD'}`,
          res.status,
        );
      }
      return res;
    }
  }

  private async authenticate(header: string, scope: string): Promise<void> {
    const { scheme, params } = parseChallenge(header);
    const creds = await this.creds();
    const basic = creds ? `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}` : undefined;
    if (scheme === 'basic') {
      if (basic) this.authorization.set(scope, basic);
      return;
    }
    if (scheme !== 'bearer' || !params.realm) return;
    const tokenUrl = new URL(params.realm);
    if (params.service) tokenUrl.searchParams.set('service', params.service);
    tokenUrl.searchParams.set('scope', params.scope ?? scope);
    let res: Response;
    try {
      res = await httpRequest(tokenUrl.href, { headers: basic ? { authorization: basic } : {} }, { signal: this.signal });
    } catch (e) {
      if (e instanceof ConnectionError) throw new RegistryError(`cannot reach the token service of registry ${this.host}: ${e.code}`);
      throw e;
    }
    if (!res.ok) {
      await res.body?.cancel();
      throw new RegistryError(`the token service of registry ${this.host} refused a token for ${scope} (${res.status})`, res.status);
    }
    const body = (await res.json()) as { token?: string; access_token?: string };
    const token = body.token ?? body.access_token;
    if (!token) throw new RegistryError(`the token service of registry ${this.host} answered without a token`);
    this.authorization.set(scope, `Bearer ${token}`);
  }

  /**
   * GET a manifest by tag or digest, verified against its digest.
   * @returns its bytes, media type and digest.
   * @throws RegistryError for not found, a digest mismatch, or any other failure.
   */
  async getManifest(repository: string, reference: string): Promise<{ bytes: Buffer; mediaType: string; digest: string }> {
    const scope = `repository:${repository}:pull`;
    const res = await this.request('GET', `/v2/${repository}/manifests/${reference}`, scope, { accept: MANIFEST_ACCEPT });
    if (res.status === 404) throw new RegistryError(`registry ${this.host} has no manifest ${repository}:${reference}`, 404);
    if (!res.ok) throw new RegistryError(`registry ${this.host}: GET manifest ${repository}:${reference} answered ${res.status}`, res.status);
    const bytes = Buffer.from(await res.arrayBuffer());
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    const expected = reference.startsWith('sha256:') ? reference : (res.headers.get('docker-content-digest') ?? digest);
    if (expected !== digest) throw new RegistryError(`registry ${this.host}: manifest ${repository}:${reference} has digest ${digest}, expected ${expected}`);
    const mediaType = (res.headers.get('content-type') ?? '').split(';')[0].trim() || (JSON.parse(bytes.toString('utf8')) as { mediaType?: string }).mediaType || MEDIA_TYPE_MANIFEST;
    return { bytes, mediaType, digest };
  }

  /** Stream a blob into the store, verified; skipped when the store has it. @throws RegistryError */
  async fetchBlob(store: ContentStore, repository: string, descriptor: Descriptor): Promise<void> {
    if (store.has(descriptor.digest)) return;
    const res = await this.request('GET', `/v2/${repository}/blobs/${descriptor.digest}`, `repository:${repository}:pull`);
    if (!res.ok || !res.body) {
      await res.body?.cancel();
      throw new RegistryError(`registry ${this.host}: GET blob ${descriptor.digest} of ${repository} answered ${res.status}`, res.status);
    }
    try {
      await store.putStream(Readable.fromWeb(res.body as import('node:stream/web').ReadableStream), descriptor.digest, `blob ${descriptor.digest} from ${this.host}/${repository}`);
    } catch (e) {
      throw new RegistryError(`registry ${this.host}: ${(e as Error).message}`);
    }
  }
}

/**
 * Pull an image (manifest, config, layers) into the store. An image index is resolved to the
 * linux image of this machine's architecture.
 * @param ref a reference with a registry (a reference without one names no host: configure
 *   `GRAPH_DEFAULT_REGISTRY` or write it in full).
 * @throws RegistryError or ImageError naming the reference and what went wrong.
 */
export async function pullImage(store: ContentStore, ref: ImageReference, signal?: AbortSignal): Promise<StoredImage> {
  const host = ref.registry ?? process.env.GRAPH_DEFAULT_REGISTRY;
  if (!host) {
    throw new RegistryError(`'${formatReference(ref)}' names no registry: write REGISTRY/REPOSITORY:TAG, or set GRAPH_DEFAULT_REGISTRY`);
  }
  const client = new RegistryClient(host, signal);
  let { bytes, mediaType, digest } = await client.getManifest(ref.repository, ref.digest ?? ref.tag ?? 'latest');
  if (mediaType === MEDIA_TYPE_INDEX || mediaType === MEDIA_TYPE_DOCKER_LIST) {
    const index = JSON.parse(bytes.toString('utf8')) as { manifests: Descriptor[] };
    const arch = hostArchitecture();
    const match = index.manifests.find((m) => m.platform?.os === 'linux' && m.platform.architecture === arch);
    if (!match) throw new ImageError(`${formatReference(ref)} has no linux/${arch} image`);
    ({ bytes, mediaType, digest } = await client.getManifest(ref.repository, match.digest));
  }
  const manifest = JSON.parse(bytes.toString('utf8')) as { config: Descriptor; layers: Descriptor[] };
  if (!manifest.config || !Array.isArray(manifest.layers)) throw new ImageError(`${formatReference(ref)}: ${digest} is not an image manifest`);
  for (const d of [manifest.config, ...manifest.layers]) await client.fetchBlob(store, ref.repository, d);
  store.putBytes(bytes);
  return loadImage(store, digest);
}
