/**
 * Dependencies loaded on first use. A `graph plan` on an unchanged workspace never parses YAML,
 * matches a glob, finds a cycle or touches a tar stream, and loading those libraries up front
 * costs more than the plan itself on a small zoo (measured: yaml 45 ms, fast-glob 43 ms,
 * tar-stream 21 ms, @balena/dockerignore 15 ms, graphlib 9 ms on these machines).
 */
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

/**
 * A function returning the CommonJS module `specifier`, required on its first call.
 * @throws the module's load error (e.g. MODULE_NOT_FOUND) on the first call, not at import.
 */
export function lazyRequire<T>(specifier: string): () => T {
  let loaded: T | undefined;
  return () => (loaded ??= require(specifier) as T);
}
