/**
 * Reading a `.deb` (deb(5): an ar archive of `debian-binary`, `control.tar.*`, `data.tar.*`) with
 * `dpkg-deb`, which every Debian machine has: the data member as one uncompressed tar stream (the
 * package's files, paths `./usr/…`), and the control fields, from which the `/var/lib/dpkg/status`
 * entry that makes the package visible to dpkg and to image scanners is written. No maintainer
 * script is run: unpacking is all an image gets, as with apko and distroless.
 */
import type { Readable } from 'node:stream';
import { captureOutput, readOutput } from '../../engine/process.js';
import { parseStanzas } from './index.js';

/** Control fields of a binary package, in the control file's order (policy §5.3); values of multi-line fields keep their `\n ` continuation lines. */
export type ControlFields = ReadonlyMap<string, string>;

/**
 * The package's filesystem as an uncompressed POSIX tar stream (`dpkg-deb --fsys-tarfile DEB`,
 * dpkg-deb(1)), whatever compression its data member uses. Destroying the stream ends dpkg-deb.
 * @returns a stream that errors with dpkg-deb's message when it cannot read the file (not a .deb,
 *   truncated, missing) or cannot be started (install dpkg).
 */
export function debDataTar(debPath: string): Readable {
  return readOutput(['dpkg-deb', '--fsys-tarfile', debPath], (f) =>
    f.error
      ? new Error(`cannot run dpkg-deb to read ${debPath} (${f.error.message}): install the dpkg package`)
      : new Error(`dpkg-deb --fsys-tarfile ${debPath} failed (${f.signal ?? `exit ${f.exitCode}`}): ${f.stderr.trim() || 'no message'}`),
  );
}

/**
 * The control fields of a `.deb` (`dpkg-deb --field DEB`, dpkg-deb(1)).
 * @throws Error with dpkg-deb's message when the file is not a readable .deb, or has no Package field.
 */
export async function debControl(debPath: string): Promise<ControlFields> {
  const text = await captureOutput(['dpkg-deb', '--field', debPath]);
  const [fields] = parseStanzas(text);
  if (!fields?.get('Package')) throw new Error(`${debPath} has no Package control field: it is not a binary package`);
  return fields;
}

/**
 * One stanza of `/var/lib/dpkg/status` for an unpacked package (dpkg(1) "INFORMATION ABOUT
 * PACKAGES"; policy §5.1 syntax): `Package`, then `Status: install ok installed`, then the other
 * control fields in their order (an existing `Status` is replaced). Ends with one `\n`; join
 * stanzas with a blank line (`entries.join('\n')`).
 * @throws Error when `fields` lacks Package, Version or Architecture (dpkg requires them).
 */
export function dpkgStatusEntry(fields: ControlFields | Readonly<Record<string, string>>): string {
  const map: ReadonlyMap<string, string> = fields instanceof Map ? fields : new Map(Object.entries(fields));
  for (const required of ['Package', 'Version', 'Architecture']) {
    if (!map.get(required)) throw new Error(`a dpkg status entry needs a ${required} field; the control fields given have none`);
  }
  const lines = [`Package: ${map.get('Package')}`, 'Status: install ok installed'];
  for (const [name, value] of map) {
    if (name === 'Package' || name === 'Status') continue;
    // A field whose value starts on the next line (Conffiles) gets no space after the colon.
    lines.push(`${name}:${value.startsWith('\n') ? '' : ' '}${value}`);
  }
  return `${lines.join('\n')}\n`;
}
