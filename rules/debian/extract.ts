/**
 * Reading a `.deb` (deb(5): an ar archive of `debian-binary`, `control.tar.*`, `data.tar.*`) with
 * `dpkg-deb`, which every Debian machine has: the data member as one uncompressed tar stream (the
 * package's files, paths `./usr/…`), the permission bits its tar headers give each path, and the
 * control fields, from which the `/var/lib/dpkg/status` entry that makes the package visible to
 * dpkg and to image scanners is written. No maintainer script is run: unpacking is all an image
 * gets, as with apko and distroless.
 */
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type tar from 'tar-stream';
import { lazyRequire } from '../../engine/lazy.js';
import { captureOutput, readOutput } from '../../engine/process.js';
import { parseStanzas } from './package-index.js';

const tarStream = lazyRequire<typeof tar>('tar-stream');

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
 * Permission bits (`mode & 0o7777`: setuid, setgid and sticky included) of the paths a package's
 * tar headers name, by in-image path (`usr/bin/su`, no `./`, no trailing `/`), with the kind of
 * entry that gave them. Symbolic links have none (a layer gives every link 0777).
 */
export type PackageModes = Map<string, { readonly kind: 'directory' | 'file'; readonly mode: number }>;

/**
 * Record the modes of `debPath`'s filesystem entries, as its data tar's headers give them, into
 * `modes`: an entry replaces what an earlier package recorded for its path (as `dpkg-deb -x` of a
 * later package over the same root replaces it on disk), a symbolic link removes it, and a hard
 * link gets its target's mode (it is the same inode). The headers, never the extracted files,
 * are the truth: extraction is subject to the umask, and tar drops setuid bits when not run as
 * root.
 * @returns `modes`.
 * @throws Error with dpkg-deb's message when the file is not a readable .deb.
 */
export async function debModes(debPath: string, modes: PackageModes = new Map()): Promise<PackageModes> {
  const extract = tarStream().extract();
  const read = (async () => {
    for await (const entry of extract) {
      const h = entry.header;
      const name = h.name.split('/').filter((c) => c && c !== '.').join('/');
      if (name) {
        if (h.type === 'directory') modes.set(name, { kind: 'directory', mode: (h.mode ?? 0o755) & 0o7777 });
        else if (h.type === 'file' || h.type === 'contiguous-file') modes.set(name, { kind: 'file', mode: (h.mode ?? 0o644) & 0o7777 });
        else if (h.type === 'link') {
          const target = modes.get((h.linkname ?? '').split('/').filter((c) => c && c !== '.').join('/'));
          if (target) modes.set(name, target);
          else modes.delete(name);
        } else modes.delete(name);
      }
      entry.resume();
    }
  })();
  await Promise.all([pipeline(debDataTar(debPath), extract), read]);
  return modes;
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
