/**
 * A suite's package index: `dists/SUITE/InRelease` (or `Release`) gives the SHA-256 and size of
 * every `COMPONENT/binary-ARCH/Packages*` file; the index is downloaded (by hash when the archive
 * offers `Acquire-By-Hash`), checked against those digests, cached as `CACHE/index/<sha256>.<ext>`
 * (with its parsed records beside it as `<sha256>.json`) and parsed into one record per package stanza (Debian policy §5.3, "Binary package control
 * files"; the repository format at https://wiki.debian.org/DebianRepository/Format).
 *
 * Trust: the Release file's OpenPGP signature is NOT verified here. Integrity of every index and
 * `.deb` follows from the Release file's SHA-256 list, so this is only as trustworthy as the
 * connection to the mirror; verifying InRelease against debian-archive-keyring (gpgv) is the missing
 * step for untrusted networks.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { readJsonFile, writeFileAtomic } from '../../engine/atomic.js';
import { readOutput } from '../../engine/process.js';
import { downloadVerified, fetchText, type DownloadOptions, type ExpectedContent } from './fetch.js';
import type { DebianMirror } from './mirror.js';

/** One binary package stanza of a Packages file; relation fields are kept as text (see `parseRelations`). */
export interface DebianPackage {
  readonly name: string;
  readonly version: string;
  /** A Debian architecture (`amd64`, `arm64`, …) or `all`. */
  readonly architecture: string;
  /** Raw `Depends` field, undefined when absent. */
  readonly depends?: string;
  readonly preDepends?: string;
  /** Raw `Provides` field: virtual package names, optionally versioned (`foo (= 1.2)`). */
  readonly provides?: string;
  /** `Multi-Arch` (`same`, `foreign`, `allowed`, `no`), undefined when absent. */
  readonly multiArch?: string;
  /** Path of the .deb relative to the archive root (`pool/main/…`). */
  readonly filename: string;
  /** Size of the .deb in bytes. */
  readonly size: number;
  /** Lowercase hex SHA-256 of the .deb. */
  readonly sha256: string;
  /** `required`, `important`, `standard`, `optional` or `extra`; undefined when absent. */
  readonly priority?: string;
  /** `Essential: yes`. */
  readonly essential: boolean;
}

/** The packages of one suite and architecture, over the components read. */
export interface PackageIndex {
  readonly suite: string;
  readonly architecture: string;
  readonly components: readonly string[];
  /** Every stanza, in file order (components in the order given). */
  readonly packages: readonly DebianPackage[];
}

/** A parsed Release or InRelease file (repository format, "Release files"). */
export interface ReleaseFile {
  /** Single-line fields (`Suite`, `Codename`, `Date`, `Architectures`, `Components`, `Acquire-By-Hash`, …). */
  readonly fields: ReadonlyMap<string, string>;
  /** The `SHA256` list: path relative to `dists/SUITE/` → size in bytes and hex digest. */
  readonly sha256: ReadonlyMap<string, ExpectedContent>;
}

/** Thrown for a Release or Packages file that cannot be used (missing, malformed, suite lacks the architecture). */
export class IndexError extends Error {
  override name = 'IndexError';
}

/** What `loadIndex` needs. */
export interface LoadIndexOptions {
  readonly mirror: DebianMirror;
  /** e.g. `bookworm`. */
  readonly suite: string;
  /** A Debian architecture, e.g. `amd64` (see `debianArchitecture`). */
  readonly architecture: string;
  /** Directory for downloaded indexes (e.g. `.graph/debian`); `index/` is created inside. */
  readonly cacheDir: string;
  /** Default: the mirror's components. */
  readonly components?: readonly string[];
  readonly signal?: AbortSignal;
  readonly download?: DownloadOptions;
}

/**
 * Download (or re-use from the cache), verify and parse the package index of `suite` for
 * `architecture` (`Architecture: all` packages are in the same file; a Release with
 * `No-Support-for-Architecture-all: Packages` says so) over each component.
 * @throws IndexError when the suite has no Release file, or lacks the architecture or a component;
 *   DigestMismatchError / HttpError from `downloadVerified`; Error when `xz` is needed and missing.
 */
export async function loadIndex(options: LoadIndexOptions): Promise<PackageIndex> {
  const { mirror, suite, architecture, signal } = options;
  const components = options.components ?? mirror.components;
  const release = await fetchRelease(mirror, suite, signal, options.download);
  const archs = release.fields.get('Architectures')?.split(/\s+/);
  if (archs && !archs.includes(architecture)) {
    throw new IndexError(`suite '${suite}' at ${mirror.uri} has no architecture '${architecture}' (it has: ${archs.join(' ')})`);
  }
  const byHash = release.fields.get('Acquire-By-Hash') === 'yes';
  const packages: DebianPackage[] = [];
  for (const component of components) {
    const dir = `${component}/binary-${architecture}`;
    // gzip is decoded in-process (node:zlib); xz needs the xz program; plain is the largest download.
    const choice = (['Packages.gz', 'Packages.xz', 'Packages'] as const)
      .map((name) => ({ name, rel: `${dir}/${name}`, expected: release.sha256.get(`${dir}/${name}`) }))
      .find((c) => c.expected);
    if (!choice?.expected) {
      throw new IndexError(`the Release file of suite '${suite}' at ${mirror.uri} lists no ${dir}/Packages: check the component name '${component}'`);
    }
    const ext = choice.name === 'Packages' ? 'txt' : choice.name.slice('Packages.'.length);
    const file = path.resolve(options.cacheDir, 'index', `${choice.expected.sha256}.${ext}`);
    const base = `${mirror.uri}dists/${suite}/`;
    const what = `package index ${suite}/${choice.rel}`;
    const urls = byHash ? [`${base}${dir}/by-hash/SHA256/${choice.expected.sha256}`, base + choice.rel] : [base + choice.rel];
    for (let i = 0; ; i++) {
      try {
        await downloadVerified(urls[i], file, choice.expected, what, signal, options.download);
        break;
      } catch (e) {
        // A mirror mid-sync may lack the by-hash file; the canonical path is the fallback.
        if (i + 1 >= urls.length || (e as { status?: number }).status !== 404) throw e;
      }
    }
    // A loop, not push(...list): a suite has ~65k stanzas, near the engine's argument-count limit.
    for (const pkg of await readParsed(file, choice.name)) packages.push(pkg);
  }
  return { suite, architecture, components, packages };
}

/**
 * Fetch and parse `dists/SUITE/InRelease`, falling back to `dists/SUITE/Release` (always fresh: it is
 * what says which index is current).
 * @throws IndexError when neither exists; HttpError / connection errors from the download.
 */
export async function fetchRelease(mirror: DebianMirror, suite: string, signal?: AbortSignal, download?: DownloadOptions): Promise<ReleaseFile> {
  for (const name of ['InRelease', 'Release']) {
    const text = await fetchText(`${mirror.uri}dists/${suite}/${name}`, signal, download);
    if (text !== undefined) return parseRelease(text);
  }
  throw new IndexError(`suite '${suite}' is not on the mirror ${mirror.uri} (no dists/${suite}/InRelease or Release): check the suite name and the mirror URI`);
}

/**
 * Parse a Release file, or an InRelease file (the same text wrapped in an OpenPGP cleartext
 * signature, RFC 4880 §7; the armour is stripped, the signature is not checked).
 * @throws IndexError when a `SHA256` line is malformed.
 */
export function parseRelease(text: string): ReleaseFile {
  let body = text;
  if (body.startsWith('-----BEGIN PGP SIGNED MESSAGE-----')) {
    const start = body.indexOf('\n\n');
    const end = body.indexOf('\n-----BEGIN PGP SIGNATURE-----');
    body = body
      .slice(start + 2, end < 0 ? undefined : end)
      .split('\n')
      .map((l) => (l.startsWith('- ') ? l.slice(2) : l))
      .join('\n');
  }
  const fields = new Map<string, string>();
  const sha256 = new Map<string, ExpectedContent>();
  let current: string | undefined;
  for (const line of body.split('\n')) {
    if (line === '') continue;
    if (line[0] === ' ' || line[0] === '\t') {
      if (current !== 'SHA256') continue;
      const m = /^\s*([0-9a-f]{64})\s+(\d+)\s+(\S+)\s*$/.exec(line);
      if (!m) throw new IndexError(`malformed SHA256 line in Release file: '${line.trim()}'`);
      sha256.set(m[3], { sha256: m[1], size: Number(m[2]) });
      continue;
    }
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    current = line.slice(0, colon);
    fields.set(current, line.slice(colon + 1).trim());
  }
  return { fields, sha256 };
}

/**
 * Parse control-file stanzas (policy §5.1 "Syntax of control files"): `Field: value` lines,
 * continuation lines starting with a space or tab (kept verbatim after a `\n`, so multi-line fields
 * round-trip), stanzas separated by blank or whitespace-only lines, `#` lines ignored. Field order is kept.
 * @param keep when given, only these field names are stored (a Packages file has ~25 per stanza).
 */
export function parseStanzas(text: string, keep?: ReadonlySet<string>): Map<string, string>[] {
  const out: Map<string, string>[] = [];
  let fields = new Map<string, string>();
  let last: string | undefined;
  const n = text.length;
  // Indexes, not line strings: a Packages file is ~50 MB and most of its lines are dropped unread.
  for (let pos = 0; pos <= n; ) {
    let end = text.indexOf('\n', pos);
    if (end < 0) end = n;
    const lineEnd = end > pos && text.charCodeAt(end - 1) === 13 ? end - 1 : end;
    const start = pos;
    pos = end + 1;
    const c = text.charCodeAt(start);
    let blank = lineEnd === start;
    if (!blank && (c === 32 || c === 9)) {
      // Whitespace-only lines separate stanzas too (deb822(5)); an empty line in a value is written ' .'.
      let i = start;
      while (i < lineEnd && (text.charCodeAt(i) === 32 || text.charCodeAt(i) === 9)) i++;
      blank = i === lineEnd;
      if (!blank) {
        if (last !== undefined) fields.set(last, `${fields.get(last)}\n${text.slice(start, lineEnd)}`);
        continue;
      }
    }
    if (blank) {
      if (fields.size) out.push(fields);
      fields = new Map();
      last = undefined;
      continue;
    }
    if (c === 35 /* '#' comment */) continue;
    const colon = text.indexOf(':', start);
    if (colon <= start || colon >= lineEnd) continue;
    const name = text.slice(start, colon);
    if (keep && !keep.has(name)) {
      last = undefined;
      continue;
    }
    last = name;
    fields.set(name, text.slice(colon + 1, lineEnd).trim());
  }
  if (fields.size) out.push(fields);
  return out;
}

const PACKAGE_FIELDS = new Set([
  'Package', 'Version', 'Architecture', 'Depends', 'Pre-Depends', 'Provides', 'Multi-Arch',
  'Filename', 'Size', 'SHA256', 'Priority', 'Essential',
]);

/**
 * Parse a Packages file into records. Stanzas lacking Package, Version, Architecture, Filename,
 * Size or SHA256 are skipped (they cannot be pinned or downloaded).
 */
export function parsePackages(text: string): DebianPackage[] {
  const out: DebianPackage[] = [];
  for (const f of parseStanzas(text, PACKAGE_FIELDS)) {
    const name = f.get('Package');
    const version = f.get('Version');
    const architecture = f.get('Architecture');
    const filename = f.get('Filename');
    const size = f.get('Size');
    const sha256 = f.get('SHA256');
    if (!name || !version || !architecture || !filename || !size || !sha256) continue;
    // Absent fields are left out (not set to undefined), so a record survives a JSON round trip unchanged.
    const optional = (key: keyof DebianPackage, field: string) => (f.has(field) ? { [key]: f.get(field) } : {});
    out.push({
      name,
      version,
      architecture,
      ...optional('depends', 'Depends'),
      ...optional('preDepends', 'Pre-Depends'),
      ...optional('provides', 'Provides'),
      ...optional('multiArch', 'Multi-Arch'),
      filename,
      size: Number(size),
      sha256: sha256.toLowerCase(),
      ...optional('priority', 'Priority'),
      essential: f.get('Essential') === 'yes',
    });
  }
  return out;
}

/**
 * The Debian architecture name of a Node `process.arch` (dpkg-architecture(1) names).
 * @throws Error for an arch Debian has no name for here; pass the architecture explicitly then.
 */
export function debianArchitecture(nodeArch: string = process.arch): string {
  const map: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'armhf', ia32: 'i386', ppc64: 'ppc64el', s390x: 's390x', riscv64: 'riscv64' };
  const arch = map[nodeArch];
  if (!arch) throw new Error(`no Debian architecture is known for Node's '${nodeArch}': give the image's architecture explicitly`);
  return arch;
}

// Parsing a suite's index costs ~1 s (gunzip, then 1.2 M lines); the parsed records are kept beside
// the verified file as `<sha256>.json` (~25 MB, ~0.2 s to read). The file is derived from the
// verified index named by the same digest and carries that digest, so a stale or torn one is
// recognised and rebuilt.
const PARSED_FORMAT = 1;

async function readParsed(file: string, name: 'Packages.gz' | 'Packages.xz' | 'Packages'): Promise<DebianPackage[]> {
  const digest = path.basename(file).replace(/\..*$/, '');
  const parsedFile = path.join(path.dirname(file), `${digest}.json`);
  const cached = readJsonFile(parsedFile) as { format?: number; sha256?: string; packages?: DebianPackage[] } | undefined;
  if (cached?.format === PARSED_FORMAT && cached.sha256 === digest && Array.isArray(cached.packages)) return cached.packages;
  const packages = parsePackages(await decompress(file, name));
  try {
    writeFileAtomic(parsedFile, JSON.stringify({ format: PARSED_FORMAT, sha256: digest, packages }));
  } catch {
    // Only a speed-up: a read-only cache still resolves.
  }
  return packages;
}

async function decompress(file: string, name: 'Packages.gz' | 'Packages.xz' | 'Packages'): Promise<string> {
  if (name === 'Packages') return readFileSync(file, 'utf8');
  // Large output chunks: the default 16 KiB makes gunzip of a 50 MB index several times slower.
  if (name === 'Packages.gz') return gunzipSync(readFileSync(file), { chunkSize: 1 << 22 }).toString('utf8');
  // Node has no xz decoder: stream the file through the xz program and collect its output.
  const chunks: Buffer[] = [];
  const xz = readOutput(['xz', '--decompress', '--stdout', file], (f) =>
    f.error
      ? new Error(`cannot run xz to unpack ${file} (${f.error.message}): install the xz-utils package`)
      : new Error(`xz failed to unpack ${file} (exit ${f.exitCode ?? f.signal}): ${f.stderr.trim()}`),
  );
  for await (const c of xz) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}
