/**
 * Reading what an image holds, for its SBOM, as syft's catalogers read a container: of the image's
 * root filesystem (read in memory by rules/oci/contents.ts, whiteouts applied) this keeps
 * - every regular file's path, SHA-256, SHA-1 and the index of the layer that wrote it;
 * - the Debian packages `/var/lib/dpkg/status` lists as installed (dpkg(1) "INFORMATION ABOUT
 *   PACKAGES"), each with the licences its `/usr/share/doc/NAME/copyright` names when that file is
 *   machine-readable (DEP-5 `License:` fields);
 * - the Python distributions of `*.dist-info/METADATA` (Core metadata 2.x: `Name`, `Version`,
 *   `License-Expression`, `License`, `Classifier: License ::`).
 */
import type { ContentStore } from '../../engine/cache/store.js';
import { readImageFiles, type ImageFile } from '../oci/contents.js';
import type { StoredImage } from '../oci/image.js';

export type { ImageFile };

/** A package installed according to `/var/lib/dpkg/status`. */
export interface DebianPackage {
  readonly name: string;
  readonly version: string;
  readonly architecture: string;
  /** `Source:` without its version, when it differs from the name. */
  readonly source?: string;
  /** Licences the package's copyright file names, sorted, as written there (`GPL-2+`). */
  readonly licenses: readonly string[];
}

/** A Python distribution found by its `*.dist-info/METADATA`. */
export interface PythonPackage {
  readonly name: string;
  readonly version: string;
  /** The METADATA file, relative to the root. */
  readonly path: string;
  readonly licenses: readonly string[];
}

/** What `scanImage` found. Lists are sorted (files and Python packages by path, Debian packages by name). */
export interface ImageContents {
  readonly files: readonly ImageFile[];
  readonly debian: readonly DebianPackage[];
  readonly python: readonly PythonPackage[];
}

const isMetadata = (p: string) => p === 'var/lib/dpkg/status' || /^usr\/share\/doc\/[^/]+\/copyright$/.test(p) || /\.dist-info\/METADATA$/.test(p);

/**
 * Read every layer of `image` (bottom up) and describe the resulting root filesystem.
 * @throws UnpackError naming the layer when one cannot be read (zstd, corrupt gzip, a bad entry).
 */
export async function scanImage(store: ContentStore, image: StoredImage, signal?: AbortSignal): Promise<ImageContents> {
  const { files, texts } = await readImageFiles(store, image, isMetadata, signal);
  return { files, debian: debianPackages(texts), python: pythonPackages(texts) };
}

/** The stanzas of a deb822 file (dpkg status, DEP-5): field name → value (continuation lines joined with `\n`). */
export function parseStanzas(text: string): Array<Map<string, string>> {
  const out: Array<Map<string, string>> = [];
  let current = new Map<string, string>();
  let last: string | undefined;
  for (const line of text.split('\n')) {
    if (line.trim() === '') {
      if (current.size) out.push(current);
      current = new Map();
      last = undefined;
    } else if (/^[ \t]/.test(line)) {
      if (last) current.set(last, `${current.get(last)}\n${line.trim()}`);
    } else {
      const colon = line.indexOf(':');
      if (colon <= 0) continue;
      last = line.slice(0, colon).trim();
      current.set(last, line.slice(colon + 1).trim());
    }
  }
  if (current.size) out.push(current);
  return out;
}

/**
 * The licences a Debian copyright file names, when it is machine-readable (DEP-5: its first
 * stanza has `Format:`): the first line of every `License:` field, `and`/`or` lists split.
 * Sorted, without duplicates; empty for a free-form file.
 */
export function copyrightLicenses(text: string): string[] {
  const stanzas = parseStanzas(text);
  if (!stanzas[0]?.has('Format')) return [];
  const out = new Set<string>();
  for (const s of stanzas) {
    const value = s.get('License')?.split('\n')[0].trim();
    if (!value) continue;
    for (const part of value.split(/\s+(?:and|or)\s+|\s*[|,]\s*/i)) if (part && part !== 'with') out.add(part.replace(/[()]/g, ''));
  }
  return [...out].filter(Boolean).sort();
}

function debianPackages(texts: ReadonlyMap<string, string>): DebianPackage[] {
  const status = texts.get('var/lib/dpkg/status');
  if (!status) return [];
  const out: DebianPackage[] = [];
  for (const s of parseStanzas(status)) {
    const name = s.get('Package');
    const version = s.get('Version');
    if (!name || !version || !/\binstalled$/.test(s.get('Status') ?? '')) continue;
    const source = s.get('Source')?.split(' ')[0];
    const copyright = texts.get(`usr/share/doc/${name}/copyright`);
    out.push({
      name,
      version,
      architecture: s.get('Architecture') ?? 'all',
      ...(source && source !== name ? { source } : {}),
      licenses: copyright ? copyrightLicenses(copyright) : [],
    });
  }
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : a.architecture < b.architecture ? -1 : 1));
}

function pythonPackages(texts: ReadonlyMap<string, string>): PythonPackage[] {
  const out: PythonPackage[] = [];
  for (const [p, text] of texts) {
    if (!p.endsWith('.dist-info/METADATA')) continue;
    // The header ends at the first blank line (RFC 822); the body is the description.
    const header = parseStanzas(text.split(/\r?\n\r?\n/)[0] ?? '')[0];
    const name = header?.get('Name');
    const version = header?.get('Version');
    if (!name || !version) continue;
    const licenses = new Set<string>();
    const expression = header.get('License-Expression');
    if (expression) licenses.add(expression);
    else {
      const license = header.get('License')?.split('\n')[0].trim();
      if (license && license.length <= 64 && license !== 'UNKNOWN') licenses.add(license);
    }
    for (const line of text.split(/\r?\n\r?\n/)[0].split(/\r?\n/)) {
      const m = /^Classifier:\s*License :: (?:OSI Approved :: )?(.+)$/.exec(line);
      if (m && !expression) licenses.add(m[1].trim());
    }
    out.push({ name, version, path: p, licenses: [...licenses].sort() });
  }
  return out.sort((a, b) => (a.path < b.path ? -1 : 1));
}
