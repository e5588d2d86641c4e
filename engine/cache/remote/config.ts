/**
 * Which remote cache a command uses, if any: `--remote-cache URL`, else `GRAPH_REMOTE_CACHE`, else
 * `settings.remote_cache` in images.yaml (an empty value turns it off); the mode from
 * `--remote-cache-mode`, else `GRAPH_REMOTE_CACHE_MODE`, else `readwrite`. Credentials and their
 * masking: credentials.ts.
 */
import { resolveEndpoint, RemoteCacheConfigError, type RemoteCacheSource } from './credentials.js';
import { HttpRemoteCache, type HttpCacheOptions, type RemoteCacheMode } from './http-cache.js';

export { RemoteCacheConfigError } from './credentials.js';

const MODES: readonly RemoteCacheMode[] = ['read', 'readwrite'];

/**
 * The configured remote cache, or undefined when none is.
 * @param warn where the cache's warnings go (one line each).
 * @throws RemoteCacheConfigError for a URL, mode or credential variable that cannot be used.
 */
export function openRemoteCache(
  given: { readonly flag?: string; readonly mode?: string; readonly settings?: string },
  env: NodeJS.ProcessEnv,
  warn: (message: string) => void,
  tuning: Partial<Omit<HttpCacheOptions, 'endpoint' | 'mode' | 'warn'>> = {},
): HttpRemoteCache | undefined {
  const [url, source]: [string | undefined, RemoteCacheSource] =
    given.flag !== undefined ? [given.flag, 'flag'] : env.GRAPH_REMOTE_CACHE !== undefined ? [env.GRAPH_REMOTE_CACHE, 'env'] : [given.settings, 'settings'];
  const mode = given.mode ?? env.GRAPH_REMOTE_CACHE_MODE ?? 'readwrite';
  if (!MODES.includes(mode as RemoteCacheMode)) throw new RemoteCacheConfigError(`unknown remote cache mode '${mode}' (one of: ${MODES.join(', ')})`);
  if (!url) return undefined;
  return new HttpRemoteCache({ endpoint: resolveEndpoint(url, source, env), mode: mode as RemoteCacheMode, warn, ...tuning });
}
