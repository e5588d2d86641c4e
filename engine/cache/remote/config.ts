/**
 * Which remote cache a command uses, if any: `--remote-cache URL`, else `GRAPH_REMOTE_CACHE`, else
 * `settings.remote_cache` in images.yaml (an empty value turns it off); the mode from
 * `--remote-cache-mode`, else `GRAPH_REMOTE_CACHE_MODE`, else `readwrite`. Credentials and their
 * masking: credentials.ts.
 */
import { resolveEndpoint, RemoteCacheConfigError, type RemoteCacheSource } from './credentials.js';
import type { HttpCacheOptions, HttpRemoteCache, RemoteCacheMode } from './http-cache.js';

export { RemoteCacheConfigError } from './credentials.js';

const MODES: readonly RemoteCacheMode[] = ['read', 'readwrite'];

/**
 * The configured remote cache, or undefined when none is. The HTTP cache client (and protobufjs)
 * load only when one is: a plan without a remote cache does not pay for them.
 * @param warn where the cache's warnings go (one line each).
 * @throws RemoteCacheConfigError for a URL, mode or credential variable that cannot be used.
 */
export async function openRemoteCache(
  given: { readonly flag?: string; readonly mode?: string; readonly settings?: string },
  env: NodeJS.ProcessEnv,
  warn: (message: string) => void,
  tuning: Partial<Omit<HttpCacheOptions, 'endpoint' | 'mode' | 'warn'>> = {},
): Promise<HttpRemoteCache | undefined> {
  const [url, source]: [string | undefined, RemoteCacheSource] =
    given.flag !== undefined ? [given.flag, 'flag'] : env.GRAPH_REMOTE_CACHE !== undefined ? [env.GRAPH_REMOTE_CACHE, 'env'] : [given.settings, 'settings'];
  const mode = given.mode ?? env.GRAPH_REMOTE_CACHE_MODE ?? 'readwrite';
  if (!MODES.includes(mode as RemoteCacheMode)) throw new RemoteCacheConfigError(`unknown remote cache mode '${mode}' (one of: ${MODES.join(', ')})`);
  if (!url) return undefined;
  const endpoint = resolveEndpoint(url, source, env);
  const { HttpRemoteCache } = await import('./http-cache.js');
  return new HttpRemoteCache({ endpoint, mode: mode as RemoteCacheMode, warn, ...tuning });
}
