/**
 * The dependency closure of a list of package names, the way apko and distroless take it: follow
 * `Pre-Depends` and `Depends` only (never Recommends or Suggests), take the first satisfiable
 * alternative of `a | b`, honour version constraints with dpkg's version ordering, treat `:any` and
 * `:native` qualifiers as the plain name (there is one architecture per image), and fall back to
 * `Provides` for virtual packages. Conflicts and Breaks are not checked and no maintainer script
 * runs, so the result is a file set, not an installed system. Relations follow Debian policy §7.1
 * ("Syntax of relationship fields") and §7.5 (virtual packages); versions §5.6.12.
 */
import type { DebianPackage, PackageIndex } from './package-index.js';
import type { PackagePin } from './pin.js';

export type { PackagePin } from './pin.js';

/** A version relation operator (policy §7.1); `<` and `>` are the obsolete spellings of `<=` and `>=`. */
export type VersionOp = '<<' | '<=' | '=' | '>=' | '>>';

/** One alternative of a relation: `name[:arch] [(op version)]`. */
export interface Relation {
  readonly name: string;
  /** Architecture qualifier (`any`, `native`, or an architecture), undefined when absent. */
  readonly arch?: string;
  readonly op?: VersionOp;
  readonly version?: string;
}

/** Why resolution failed; `chain` is the path from a requested name to the package that failed. */
export class ResolveError extends Error {
  override name = 'ResolveError';
  constructor(
    readonly code: 'unknown-package' | 'unsatisfiable' | 'bad-relation',
    message: string,
    readonly chain: readonly string[],
  ) {
    super(message);
  }
}

// ---------------------------------------------------------------------------------------------
// Versions (policy §5.6.12)

/** A version split into its parts; the revision is `''` when absent (which orders as `0`). */
export interface DebianVersion {
  readonly epoch: number;
  readonly upstream: string;
  readonly revision: string;
}

/**
 * Split `[epoch:]upstream_version[-debian_revision]` (policy §5.6.12): the epoch is the digits before
 * the first colon, the revision follows the last hyphen.
 */
export function parseVersion(version: string): DebianVersion {
  let rest = version.trim();
  let epoch = 0;
  const colon = rest.indexOf(':');
  if (colon >= 0 && /^\d+$/.test(rest.slice(0, colon))) {
    epoch = Number(rest.slice(0, colon));
    rest = rest.slice(colon + 1);
  }
  const hyphen = rest.lastIndexOf('-');
  return hyphen >= 0 ? { epoch, upstream: rest.slice(0, hyphen), revision: rest.slice(hyphen + 1) } : { epoch, upstream: rest, revision: '' };
}

/**
 * Compare two Debian versions per policy §5.6.12 (dpkg's `verrevcmp`): epochs numerically, then
 * upstream versions and revisions by alternating non-digit parts (letters before non-letters, `~`
 * before everything, even the end) and digit parts (numerically).
 * @returns a negative number when `a < b`, 0 when equal, positive when `a > b`.
 */
export function compareVersions(a: string, b: string): number {
  const va = parseVersion(a);
  const vb = parseVersion(b);
  if (va.epoch !== vb.epoch) return va.epoch - vb.epoch;
  return verrevcmp(va.upstream, vb.upstream) || verrevcmp(va.revision, vb.revision);
}

const isDigit = (c: number) => c >= 48 && c <= 57;
const isAlpha = (c: number) => (c >= 65 && c <= 90) || (c >= 97 && c <= 122);

// Sort weight of one character of a non-digit part; NaN (past the end) weighs 0.
function order(c: number): number {
  if (Number.isNaN(c) || isDigit(c)) return 0;
  if (isAlpha(c)) return c;
  if (c === 126 /* ~ */) return -1;
  return c + 256;
}

function verrevcmp(a: string, b: string): number {
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    let firstDiff = 0;
    while ((i < a.length && !isDigit(a.charCodeAt(i))) || (j < b.length && !isDigit(b.charCodeAt(j)))) {
      const ac = order(a.charCodeAt(i));
      const bc = order(b.charCodeAt(j));
      if (ac !== bc) return ac - bc;
      i++;
      j++;
    }
    while (a.charCodeAt(i) === 48) i++;
    while (b.charCodeAt(j) === 48) j++;
    while (isDigit(a.charCodeAt(i)) && isDigit(b.charCodeAt(j))) {
      if (!firstDiff) firstDiff = a.charCodeAt(i) - b.charCodeAt(j);
      i++;
      j++;
    }
    if (isDigit(a.charCodeAt(i))) return 1;
    if (isDigit(b.charCodeAt(j))) return -1;
    if (firstDiff) return firstDiff;
  }
  return 0;
}

/** Does `version` satisfy `op constraint` (policy §7.1)? No operator means any version. */
export function satisfiesVersion(version: string, op: VersionOp | undefined, constraint: string | undefined): boolean {
  if (!op || constraint === undefined) return true;
  const c = compareVersions(version, constraint);
  switch (op) {
    case '<<':
      return c < 0;
    case '<=':
      return c <= 0;
    case '=':
      return c === 0;
    case '>=':
      return c >= 0;
    case '>>':
      return c > 0;
  }
}

// ---------------------------------------------------------------------------------------------
// Relations (policy §7.1)

const RELATION = /^([a-z0-9][a-z0-9+.-]*)(?::([a-z0-9-]+))?\s*(?:\(\s*(<<|<=|=|>=|>>|<|>)\s*([^\s)]+)\s*\))?\s*(?:\[[^\]]*\]\s*)?(?:<[^>]*>\s*)*$/;

/**
 * Parse a relationship field (`Depends`, `Pre-Depends`, `Provides`) into groups of alternatives:
 * `a (>= 1), b | c:any` → `[[a ≥ 1], [b, c:any]]`. Architecture restrictions (`[amd64]`) and build
 * profiles (`<!nocheck>`), which only source packages carry, are accepted and dropped.
 * @throws ResolveError (code `bad-relation`) quoting the alternative that does not parse.
 */
export function parseRelations(field: string | undefined): Relation[][] {
  if (!field) return [];
  const groups: Relation[][] = [];
  for (const group of field.split(',')) {
    if (group.trim() === '') continue;
    groups.push(
      group.split('|').map((alt) => {
        const m = RELATION.exec(alt.trim());
        if (!m) throw new ResolveError('bad-relation', `malformed package relation '${alt.trim()}' in '${field.trim()}'`, []);
        const op = m[3] === '<' ? '<=' : m[3] === '>' ? '>=' : (m[3] as VersionOp | undefined);
        return { name: m[1], ...(m[2] ? { arch: m[2] } : {}), ...(op ? { op, version: m[4] } : {}) };
      }),
    );
  }
  return groups;
}

/** `name[:arch] (op version)`, as written in a control file. */
export function formatRelation(r: Relation): string {
  return `${r.name}${r.arch ? `:${r.arch}` : ''}${r.op ? ` (${r.op} ${r.version})` : ''}`;
}

// ---------------------------------------------------------------------------------------------
// Closure

/** The closure and, for each package, the chain of names that pulled it in (requested name first). */
export interface Resolution {
  /** Sorted by name (code-unit order). */
  readonly packages: readonly PackagePin[];
  readonly chains: ReadonlyMap<string, readonly string[]>;
}

/**
 * The dependency closure of `names` over `index`; `resolveClosure(...).packages`.
 * @throws ResolveError as `resolveClosure`.
 */
export function resolvePackages(index: PackageIndex, names: readonly string[]): PackagePin[] {
  return [...resolveClosure(index, names).packages];
}

/**
 * The dependency closure of `names` over `index`. Requested names are taken first (so a requested
 * provider of a virtual package satisfies later dependencies on it), then dependencies breadth-first
 * in field order. For each name the highest version that satisfies the constraint is taken; a name
 * chosen once is never switched to another version. A dependency group already satisfied by a chosen
 * package (or a chosen package's Provides) adds nothing; otherwise its first satisfiable alternative
 * is taken. A virtual package with several providers gets the one of highest Priority, then the
 * first by name.
 * @throws ResolveError `unknown-package` for a name no package has or provides (with "did you mean"),
 *   `unsatisfiable` for a dependency group no alternative satisfies (naming the chain and each
 *   alternative's reason), `bad-relation` for a relation that does not parse.
 */
export function resolveClosure(index: PackageIndex, names: readonly string[]): Resolution {
  let universe = universes.get(index);
  if (!universe) universes.set(index, (universe = new Universe(index)));
  const chosen = new Map<string, DebianPackage>();
  const chains = new Map<string, readonly string[]>();
  const chosenProviders = new Map<string, { pkg: DebianPackage; version?: string }[]>();
  const queue: DebianPackage[] = [];

  const choose = (pkg: DebianPackage, chain: readonly string[]) => {
    if (chosen.has(pkg.name)) return;
    chosen.set(pkg.name, pkg);
    chains.set(pkg.name, chain);
    for (const [p] of parseRelations(pkg.provides)) {
      const list = chosenProviders.get(p.name) ?? [];
      list.push({ pkg, version: p.version });
      chosenProviders.set(p.name, list);
    }
    queue.push(pkg);
  };

  const isSatisfied = (r: Relation): boolean => {
    if (!universe.archMatches(r)) return false;
    const pkg = chosen.get(r.name);
    if (pkg && satisfiesVersion(pkg.version, r.op, r.version)) return true;
    return (chosenProviders.get(r.name) ?? []).some((p) => providesSatisfies(p.version, r));
  };

  for (const name of [...new Set(names)]) {
    const r: Relation = { name };
    // A requested real package is taken even when another requested package Provides its name.
    if (chosen.has(name) || (!universe.hasPackage(name) && isSatisfied(r))) continue;
    const found = universe.candidate(r, chosen);
    if (!found.pkg) {
      throw new ResolveError('unknown-package', `unknown package '${name}' requested by the image${universe.didYouMean(name)}: ${universe.where()} has ${found.reason}; fix the name in the image's debian packages list`, [name]);
    }
    choose(found.pkg, found.pkg.name === name ? [name] : [name, found.pkg.name]);
  }

  for (let q = 0; q < queue.length; q++) {
    const pkg = queue[q];
    const chain = chains.get(pkg.name)!;
    for (const [field, text] of [['Pre-Depends', pkg.preDepends], ['Depends', pkg.depends]] as const) {
      let groups: Relation[][];
      try {
        groups = parseRelations(text);
      } catch (e) {
        throw new ResolveError('bad-relation', `${pkg.name} ${pkg.version} has a ${field} field that does not parse: ${(e as Error).message}`, chain);
      }
      for (const group of groups) {
        if (group.some(isSatisfied)) continue;
        const reasons: { relation: Relation; reason: string }[] = [];
        let picked: DebianPackage | undefined;
        for (const r of group) {
          const found = universe.candidate(r, chosen);
          if (found.pkg) {
            picked = found.pkg;
            break;
          }
          reasons.push({ relation: r, reason: found.reason });
        }
        if (picked) {
          choose(picked, [...chain, picked.name]);
          continue;
        }
        // The chain ends with this package; it says how a requested name led here.
        const via = chain.length > 1 ? ` via ${chain.join(' → ')}` : '';
        const groupText = group.map(formatRelation).join(' | ');
        if (group.length === 1 && !universe.known(group[0].name)) {
          throw new ResolveError(
            'unknown-package',
            `unknown package '${group[0].name}' required by ${pkg.name} ${pkg.version} (${field}: ${groupText})${via}${universe.didYouMean(group[0].name)}: ` +
              `${universe.where()} has ${reasons[0].reason}; it may be in a component the mirror is not read for (contrib, non-free)`,
            [...chain, group[0].name],
          );
        }
        throw new ResolveError(
          'unsatisfiable',
          `cannot satisfy ${pkg.name} ${pkg.version}'s ${field} '${groupText}'${via}: ${reasons.map((x) => `${formatRelation(x.relation)}: ${x.reason}`).join('; ')}`,
          chain,
        );
      }
    }
  }

  const packages = [...chosen.values()]
    .map(({ name, version, architecture, filename, size, sha256 }) => ({ name, version, architecture, filename, size, sha256 }))
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return { packages, chains };
}

// Lookup tables are built once per index (~0.1 s for a whole suite): an index is resolved once per image.
const universes = new WeakMap<PackageIndex, Universe>();

// Priority ranks (policy §2.5) for choosing among providers of a virtual package.
const PRIORITY_RANK: Record<string, number> = { required: 0, important: 1, standard: 2, optional: 3, extra: 4 };

// A Provides entry satisfies a relation when the relation is unversioned, or the Provides carries a
// version that satisfies it (policy §7.5: an unversioned Provides never satisfies a versioned relation).
function providesSatisfies(providedVersion: string | undefined, r: Relation): boolean {
  if (!r.op) return true;
  return providedVersion !== undefined && satisfiesVersion(providedVersion, r.op, r.version);
}

/** Lookup tables over one index. */
class Universe {
  private readonly byName = new Map<string, DebianPackage[]>();
  private readonly providers = new Map<string, { pkg: DebianPackage; version?: string }[]>();

  constructor(private readonly index: PackageIndex) {
    for (const pkg of index.packages) {
      if (pkg.architecture !== index.architecture && pkg.architecture !== 'all') continue;
      const list = this.byName.get(pkg.name);
      if (list) list.push(pkg);
      else this.byName.set(pkg.name, [pkg]);
      if (!pkg.provides) continue;
      for (const group of parseRelations(pkg.provides)) {
        const p = group[0];
        const providers = this.providers.get(p.name);
        const entry = { pkg, version: p.version };
        if (providers) providers.push(entry);
        else this.providers.set(p.name, [entry]);
      }
    }
    // Highest version first, so `find` takes the newest that fits.
    for (const list of this.byName.values()) if (list.length > 1) list.sort((a, b) => compareVersions(b.version, a.version));
  }

  /** `suite (components, arch)` for messages. */
  where(): string {
    return `${this.index.suite} (${this.index.components.join(', ')}, ${this.index.architecture})`;
  }

  /** Is there a real (not only virtual) package of this name? */
  hasPackage(name: string): boolean {
    return this.byName.has(name);
  }

  known(name: string): boolean {
    return this.byName.has(name) || this.providers.has(name);
  }

  /** `:any`/`:native`/none, or the image's own architecture. */
  archMatches(r: Relation): boolean {
    return r.arch === undefined || r.arch === 'any' || r.arch === 'native' || r.arch === this.index.architecture;
  }

  /** The package to take for `r`, or why there is none (a phrase that follows "has"/"alternative: "). */
  candidate(r: Relation, chosen: ReadonlyMap<string, DebianPackage>): { pkg?: DebianPackage; reason: string } {
    if (!this.archMatches(r)) return { reason: `architecture '${r.arch}' is not the image's (${this.index.architecture})` };
    const already = chosen.get(r.name);
    if (already) {
      // A name is taken in one version only; a second constraint it fails is a conflict to report.
      return satisfiesVersion(already.version, r.op, r.version)
        ? { pkg: already, reason: '' }
        : { reason: `version ${already.version} was already chosen and does not satisfy ${r.op} ${r.version}` };
    }
    const real = this.byName.get(r.name);
    const pkg = real?.find((p) => satisfiesVersion(p.version, r.op, r.version));
    if (pkg) return { pkg, reason: '' };
    const providers = (this.providers.get(r.name) ?? []).filter((p) => providesSatisfies(p.version, r));
    if (providers.length) {
      providers.sort(
        (a, b) =>
          (PRIORITY_RANK[a.pkg.priority ?? 'optional'] ?? 3) - (PRIORITY_RANK[b.pkg.priority ?? 'optional'] ?? 3) ||
          (a.pkg.name < b.pkg.name ? -1 : a.pkg.name > b.pkg.name ? 1 : 0),
      );
      return { pkg: providers[0].pkg, reason: '' };
    }
    if (real) return { reason: `only version ${real.map((p) => p.version).join(', ')}, which does not satisfy ${r.op} ${r.version}` };
    if (this.providers.has(r.name)) return { reason: `no provider of a version that satisfies ${r.op} ${r.version}` };
    return { reason: 'no package of that name and none provides it' };
  }

  /** `" (did you mean 'x'?)"` for the closest known name within a few edits, or `''`. */
  didYouMean(name: string): string {
    const limit = Math.max(1, Math.floor(name.length / 3));
    let best: string | undefined;
    let bestDistance = limit + 1;
    for (const candidates of [this.byName.keys(), this.providers.keys()]) {
      for (const c of candidates) {
        if (Math.abs(c.length - name.length) > bestDistance) continue;
        // Distances below the cap are exact, so a tie is a real tie.
        const d = editDistance(name, c, bestDistance + 1);
        if (d < bestDistance || (d === bestDistance && best !== undefined && c < best)) {
          best = c;
          bestDistance = d;
        }
      }
    }
    return best !== undefined && bestDistance <= limit ? ` (did you mean '${best}'?)` : '';
  }
}

// Levenshtein distance, giving up (returning `cap`) once every cell of a row reaches `cap`.
function editDistance(a: string, b: string, cap: number): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    let min = i;
    for (let j = 1; j <= b.length; j++) {
      const v = Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
      row.push(v);
      if (v < min) min = v;
    }
    if (min >= cap) return cap;
    prev = row;
  }
  return prev[b.length];
}
