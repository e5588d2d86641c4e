/**
 * The registry as a source of truth: the third tier of the action cache, after the local cache
 * and the remote cache. A published image is a result someone already built: when a `build:`
 * node's action key is the one `published.lock.json` records for its image, and the registry
 * holds that manifest digest (whose `dev.graph.action-key` annotation, when present, names the
 * same key), the build is cached "from registry" and does not run; its layers are fetched from
 * the registry only when a node that runs needs them, exactly as a remote cache hit's are
 * (engine/cache/remote/materialize.ts). The same holds for a SIF pushed as an ORAS artifact.
 *
 * The engine knows no registry and no lock file: a rule supplies a `ResultSource` (the publish
 * rule does, rules/registry/source.ts) and this module makes a `RemoteCache` of it
 * (`SourceTier`), which `tieredRemote` puts after the remote cache. Lookup order: local first
 * (the plan), then the remote cache, then the registry.
 *
 * A source never fails a build and never serves a wrong result: a registry that cannot be reached,
 * refuses the credentials or answers garbage is one warning for the whole run, after which it is
 * not asked again (its nodes run here); every blob fetched is hashed before it enters the store,
 * and one that does not match its digest is one warning and its node runs.
 */
import type { CachedResult, RemoteCache } from './action-cache.js';
import type { ContentStore } from './store.js';
import type { NodeId } from '../rule.js';

/** A source's claim that a node's result exists there (`ResultSource.lookup`). */
export interface SourceClaim {
  /** The result as the node would have recorded it (outputs, artifacts, visible files). */
  readonly result: CachedResult;
  /** Why the node is cached, for the plan and the report, e.g. `from registry REF (sha256:…)`. */
  readonly reason: string;
  /**
   * Bring one of `result.artifacts` into `store`, verified against its digest (the store's
   * `putStream`/`putBytes` with the expected digest).
   * @throws SourceDigestError when the bytes do not match the digest; any other Error when the
   *   source cannot deliver them (unreachable, refused, not there).
   */
  fetch(digest: string, store: ContentStore, signal?: AbortSignal): Promise<void>;
}

/** What a rule supplies: where results that were published can be found again. */
export interface ResultSource {
  /** For messages, e.g. `registry`. Never with credentials. */
  readonly name: string;
  /**
   * A claim for node `id` under action key `key`, or undefined when the source has none (not
   * published, published under another key, not in the registry, annotated with another key).
   * @throws Error when the source cannot answer (unreachable, refused, a malformed answer).
   */
  lookup(id: NodeId, key: string, signal?: AbortSignal): Promise<SourceClaim | undefined>;
}

/** Thrown by `SourceClaim.fetch` for bytes that do not match their digest. */
export class SourceDigestError extends Error {}

/**
 * A `ResultSource` as a tier of the action cache: read-only (uploads are the publish rule's
 * business), one warning for the first failure, after which it answers nothing.
 */
export class SourceTier implements RemoteCache {
  readonly name: string;
  private readonly claims = new Map<string, SourceClaim>();
  private readonly byDigest = new Map<string, SourceClaim>();
  private down = false;

  /** @param warn where the one warning goes (a line without `warning: `). */
  constructor(
    private readonly source: ResultSource,
    private readonly warn: (message: string) => void,
  ) {
    this.name = source.name;
  }

  /** Whether a claim `lookup` made names blob `digest` (which this tier then downloads). */
  knows(digest: string): boolean {
    return this.byDigest.has(digest);
  }

  /** The hit's reason (`from registry …`), for the key `lookup` answered; undefined otherwise. */
  hitReason(key: string): string | undefined {
    return this.claims.get(key)?.reason;
  }

  async lookup(id: NodeId, key: string, signal?: AbortSignal): Promise<CachedResult | undefined> {
    if (this.down || signal?.aborted) return undefined;
    let claim: SourceClaim | undefined;
    try {
      claim = await this.source.lookup(id, key, signal);
    } catch (e) {
      this.fail(e);
      return undefined;
    }
    if (!claim) return undefined;
    this.claims.set(key, claim);
    for (const d of claim.result.artifacts) this.byDigest.set(d, claim);
    return claim.result;
  }

  async download(digests: readonly string[], store: ContentStore, signal?: AbortSignal): Promise<boolean> {
    for (const d of digests) {
      if (store.has(d)) continue;
      const claim = this.byDigest.get(d);
      if (this.down || !claim || signal?.aborted) return false;
      try {
        await claim.fetch(d, store, signal);
      } catch (e) {
        if (e instanceof SourceDigestError) this.warn(`${this.name}: blob ${d} not used: it did not match its digest (tampered with or damaged in the ${this.name})`);
        else this.fail(e);
        return false;
      }
      if (!store.has(d)) return false;
    }
    return true;
  }

  async upload(): Promise<void> {}

  private fail(e: unknown): void {
    if (this.down) return;
    this.down = true;
    this.warn(`${this.name} unavailable (${(e as Error).message}): continuing without it`);
  }
}

/**
 * Tiers asked in order (the remote cache, then the registry) as one `RemoteCache`: a lookup is
 * answered by the first tier that has the key; a download asks, for each blob, the tier whose
 * hit named it (looked up through this object, or a `SourceTier` asked directly, which knows its
 * claims); an upload goes to every tier (a `SourceTier` ignores it). Undefined for no tiers.
 */
export function tieredRemote(tiers: ReadonlyArray<RemoteCache | undefined>): TieredRemote | undefined {
  const present = tiers.filter((t): t is RemoteCache => t !== undefined);
  return present.length ? new TieredRemote(present) : undefined;
}

/** See `tieredRemote`. */
export class TieredRemote implements RemoteCache {
  readonly name: string;
  private readonly tierOfKey = new Map<string, RemoteCache>();
  private readonly tierOfDigest = new Map<string, RemoteCache>();

  constructor(private readonly tiers: readonly RemoteCache[]) {
    this.name = tiers.map((t) => t.name).join(', then ');
  }

  /** Why a hit is cached: the answering tier's own words, else `from remote cache NAME`. */
  hitReason(key: string): string | undefined {
    const tier = this.tierOfKey.get(key) ?? this.tiers.find((t) => t.hitReason?.(key) !== undefined);
    return tier && hitReasonOf(tier, key);
  }

  async lookup(id: NodeId, key: string, signal?: AbortSignal): Promise<CachedResult | undefined> {
    for (const tier of this.tiers) {
      const result = await tier.lookup(id, key, signal).catch(() => undefined);
      if (!result) continue;
      this.tierOfKey.set(key, tier);
      for (const d of result.artifacts) if (!this.tierOfDigest.has(d)) this.tierOfDigest.set(d, tier);
      return result;
    }
    return undefined;
  }

  async download(digests: readonly string[], store: ContentStore, signal?: AbortSignal): Promise<boolean> {
    const groups = new Map<RemoteCache, string[]>();
    for (const d of digests) {
      // A tier asked directly (the plan asks the registry's on its own) still knows its claims.
      const tier = this.tierOfDigest.get(d) ?? this.tiers.find((t) => t instanceof SourceTier && t.knows(d)) ?? this.tiers[0];
      groups.set(tier, [...(groups.get(tier) ?? []), d]);
    }
    for (const [tier, ds] of groups) if (!(await tier.download(ds, store, signal).catch(() => false))) return false;
    return true;
  }

  async upload(id: NodeId, key: string, recordLine: string, result: CachedResult, store: ContentStore): Promise<void> {
    await Promise.all(this.tiers.map((t) => t.upload(id, key, recordLine, result, store).catch(() => {})));
  }
}

/** The reason a hit of `remote` is cached (see `TieredRemote.hitReason`). */
export function hitReasonOf(remote: RemoteCache, key: string): string {
  return remote.hitReason?.(key) ?? `from remote cache ${remote.name}`;
}
