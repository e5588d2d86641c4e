/**
 * The Debian mirror a `debian:` image downloads from. It is never written into this code: it comes
 * from, in order, an explicit option, the `GRAPH_DEBIAN_MIRROR` environment variable, or the host's
 * own apt configuration (sources.list(5): deb822 `*.sources` files and one-line `*.list` files),
 * so a build uses the mirror the machine is already set up to reach.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

/** Environment variable naming the mirror's archive root URI (e.g. `http://HOST/debian`). */
export const MIRROR_ENV = 'GRAPH_DEBIAN_MIRROR';

/** A Debian archive to download from. */
export interface DebianMirror {
  /** Archive root URI, always ending in `/`, so `uri + "dists/…"` and `uri + pin.filename` are URLs. */
  readonly uri: string;
  /** Archive areas to read (`main`, `contrib`, …), in the order configured. */
  readonly components: readonly string[];
  /** Where the choice came from, for explanations: `option`, `env GRAPH_DEBIAN_MIRROR` or `FILE:LINE`. */
  readonly source: string;
}

/**
 * One apt source: a deb822 stanza or a one-line entry, as in sources.list(5) ("ONE-LINE-STYLE
 * FORMAT" and "DEB822-STYLE FORMAT").
 */
export interface AptSource {
  /** `deb` and/or `deb-src`. */
  readonly types: readonly string[];
  readonly uris: readonly string[];
  readonly suites: readonly string[];
  readonly components: readonly string[];
  /** False for a stanza with `Enabled: no`. */
  readonly enabled: boolean;
  /** `FILE:LINE` of the stanza's or entry's first line. */
  readonly source: string;
}

/** What `findMirror` needs; everything but `suite` is for callers that configure it and for tests. */
export interface FindMirrorOptions {
  /** Suite the image is built from, e.g. `bookworm`: the apt source listing it is chosen. */
  readonly suite: string;
  /** Explicit mirror URI (from the build's configuration); wins over everything else. */
  readonly mirror?: string;
  /** Components for an explicit or environment mirror; default `['main']`. */
  readonly components?: readonly string[];
  /** Environment to read `GRAPH_DEBIAN_MIRROR` from; default `process.env`. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** apt's configuration directory; default `/etc/apt`. */
  readonly aptDir?: string;
}

/** Thrown when no mirror is configured anywhere, or a configured one is not an http(s) URI. */
export class MirrorError extends Error {
  override name = 'MirrorError';
}

/**
 * Find the Debian mirror for `options.suite`: the explicit option, else `$GRAPH_DEBIAN_MIRROR`, else
 * the host's apt sources (`readAptSources` gives the order; `chooseMirror` says which entry wins).
 * @throws MirrorError when none is found (the message says to set GRAPH_DEBIAN_MIRROR or configure
 *   apt), or when the chosen URI is not http(s).
 */
export function findMirror(options: FindMirrorOptions): DebianMirror {
  const components = options.components ?? ['main'];
  if (options.mirror) return { uri: normalizeUri(options.mirror, 'option'), components, source: 'option' };
  const fromEnv = (options.env ?? process.env)[MIRROR_ENV];
  if (fromEnv) return { uri: normalizeUri(fromEnv, `env ${MIRROR_ENV}`), components, source: `env ${MIRROR_ENV}` };
  const sources = readAptSources(options.aptDir ?? '/etc/apt');
  const chosen = chooseMirror(sources, options.suite);
  if (chosen) return chosen;
  const seen = sources.length ? ` (apt lists ${sources.map((s) => `${s.suites.join(' ')} at ${s.source}`).join('; ')})` : '';
  throw new MirrorError(
    `no Debian mirror found for suite '${options.suite}'${seen}: set ${MIRROR_ENV} to a mirror's archive root URI, ` +
      `or add a 'deb' source for that suite to apt's sources.list.d`,
  );
}

/**
 * Every apt source under `aptDir`: the deb822 files `sources.list.d/*.sources` by name (the format
 * Debian 12 installs), then the one-line files `sources.list.d/*.list` by name, then `sources.list`.
 * Other names (`*.disabled`, backups) are ignored, as apt ignores them; unreadable files are skipped.
 */
export function readAptSources(aptDir: string): AptSource[] {
  const out: AptSource[] = [];
  let names: string[] = [];
  try {
    names = readdirSync(path.join(aptDir, 'sources.list.d')).sort();
  } catch {
    // no sources.list.d
  }
  const inDir = (ext: string) => names.filter((n) => n.endsWith(ext)).map((n) => path.join(aptDir, 'sources.list.d', n));
  for (const file of inDir('.sources')) {
    const t = readOptional(file);
    if (t !== undefined) out.push(...parseDeb822Sources(t, file));
  }
  for (const file of [...inDir('.list'), path.join(aptDir, 'sources.list')]) {
    const t = readOptional(file);
    if (t !== undefined) out.push(...parseOneLineSources(t, file));
  }
  return out;
}

/**
 * Parse deb822-style sources (sources.list(5), "DEB822-STYLE FORMAT"): stanzas separated by blank
 * lines, fields `Types`, `URIs`, `Suites`, `Components`, `Enabled` (names case-insensitive, values
 * whitespace-separated, continuation lines start with a space, `#` lines are comments even inside a
 * stanza). Stanzas without Types, URIs or Suites are dropped.
 */
export function parseDeb822Sources(text: string, file: string): AptSource[] {
  const out: AptSource[] = [];
  let fields = new Map<string, string>();
  let startLine = 0;
  let last: string | undefined;
  const flush = () => {
    const types = words(fields.get('types'));
    const uris = words(fields.get('uris'));
    const suites = words(fields.get('suites'));
    if (types.length && uris.length && suites.length) {
      const enabled = (fields.get('enabled') ?? 'yes').trim().toLowerCase() !== 'no';
      out.push({ types, uris, suites, components: words(fields.get('components')), enabled, source: `${file}:${startLine}` });
    }
    fields = new Map();
    last = undefined;
  };
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].replace(/\r$/, '');
    if (line.startsWith('#')) continue;
    if (line.trim() === '') {
      if (fields.size) flush();
      continue;
    }
    if (/^[ \t]/.test(line)) {
      if (last !== undefined) fields.set(last, `${fields.get(last)} ${line.trim()}`);
      continue;
    }
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    if (fields.size === 0) startLine = i + 1;
    last = line.slice(0, colon).trim().toLowerCase();
    fields.set(last, line.slice(colon + 1).trim());
  }
  if (fields.size) flush();
  return out;
}

/**
 * Parse one-line-style sources (sources.list(5), "ONE-LINE-STYLE FORMAT"):
 * `deb [option=value …] URI SUITE [COMPONENT …]`, `#` starts a comment. Lines that are not
 * `deb`/`deb-src` entries are skipped.
 */
export function parseOneLineSources(text: string, file: string): AptSource[] {
  const out: AptSource[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    let line = lines[i];
    const hash = line.indexOf('#');
    if (hash >= 0) line = line.slice(0, hash);
    // Options in brackets may contain spaces around '='; drop them whole.
    line = line.replace(/\[[^\]]*\]/, ' ');
    const [type, uri, suite, ...components] = words(line);
    if ((type !== 'deb' && type !== 'deb-src') || !uri || !suite) continue;
    out.push({ types: [type], uris: [uri], suites: [suite], components, enabled: true, source: `${file}:${i + 1}` });
  }
  return out;
}

/**
 * Choose the main archive for `suite` among apt sources: the first enabled `deb` source with an
 * http(s) URI whose Suites contain `suite` exactly (the security archive lists `SUITE-security` and so
 * never matches; URIs of sources whose suites all end in `-security` are skipped outright). When no
 * source lists `suite` (a host on another release), the first source that lists any Debian suite
 * name is used: mirrors carry every suite. Components are the source's own, or `['main']`.
 * @returns undefined when nothing fits.
 */
export function chooseMirror(sources: readonly AptSource[], suite: string): DebianMirror | undefined {
  const usable = sources.filter(
    (s) =>
      s.enabled &&
      s.types.includes('deb') &&
      !s.suites.every((x) => x.endsWith('-security')) &&
      s.uris.some((u) => /^https?:\/\//.test(u)),
  );
  const pick = (s: AptSource): DebianMirror => ({
    uri: normalizeUri(s.uris.find((u) => /^https?:\/\//.test(u))!, s.source),
    components: s.components.length ? s.components : ['main'],
    source: s.source,
  });
  const exact = usable.find((s) => s.suites.includes(suite));
  if (exact) return pick(exact);
  const debianLike = usable.find((s) => s.suites.some((x) => DEBIAN_SUITES.has(x.replace(/-(updates|backports|proposed-updates)$/, ''))));
  return debianLike ? pick(debianLike) : undefined;
}

// Debian's suite and codename names (https://www.debian.org/releases/): how a third-party
// repository (suite `nodistro`, `cloud-sdk-bookworm`) is told apart from a Debian archive.
const DEBIAN_SUITES = new Set([
  'stable', 'oldstable', 'oldoldstable', 'testing', 'unstable', 'experimental',
  'buster', 'bullseye', 'bookworm', 'trixie', 'forky', 'duke', 'sid',
]);

function normalizeUri(uri: string, from: string): string {
  const u = uri.trim();
  if (!/^https?:\/\/[^/]/.test(u)) {
    throw new MirrorError(`mirror URI '${u}' from ${from} is not an http:// or https:// URI: give the archive root, e.g. http://HOST/debian`);
  }
  return u.endsWith('/') ? u : `${u}/`;
}

function words(s: string | undefined): string[] {
  return s ? s.split(/\s+/).filter(Boolean) : [];
}

function readOptional(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}
