/**
 * The build context a `dockerfile:` builder is given: not the workspace directory itself but a
 * staged copy of exactly the files the build's key covers (the context's files less those its
 * `.dockerignore` excludes), with the modes git checks out (directories 0755, files 0755 when any
 * execute bit is set, else 0644). Builders keep a context file's mode in the image (`COPY`), so
 * without this a checkout made under `umask 077` (files 0600 and 0700, directories 0700) builds
 * other layers than one made under `umask 022`.
 *
 * Files whose mode is already right are hard links (no bytes copied); the others are copied
 * (reflinked where the filesystem can) and given their mode. Symbolic links are recreated.
 */
import { chmodSync, constants, copyFileSync, linkSync, lstatSync, mkdirSync, readlinkSync, symlinkSync } from 'node:fs';
import path from 'node:path';
import { expandInputs } from '../../engine/key/files.js';

/** A context file's mode in the staged context: 0755 when any execute bit is set, else 0644. */
export function contextMode(mode: number): number {
  return mode & 0o111 ? 0o755 : 0o644;
}

/**
 * Stage the context `context` (workspace-relative, in `root`) into `into` (created; must not exist).
 * @returns `into`, to pass to the builder as its context.
 * @throws the fs error when a file cannot be read or `into` cannot be written.
 */
export function stageContext(root: string, context: string, into: string): string {
  mkdirSync(into, { recursive: true });
  chmodSync(into, 0o755);
  const made = new Set<string>();
  const dirFor = (rel: string) => {
    const parts = path.posix.dirname(rel).split('/').filter((p) => p && p !== '.');
    for (let i = 1; i <= parts.length; i++) {
      const dir = parts.slice(0, i).join('/');
      if (made.has(dir)) continue;
      mkdirSync(path.join(into, dir), { recursive: true });
      chmodSync(path.join(into, dir), 0o755);
      made.add(dir);
    }
  };
  const base = path.posix.normalize(context);
  for (const file of expandInputs(root, [{ kind: 'dir', path: context, ignoreFile: '.dockerignore' }])) {
    const rel = base === '.' ? file : path.posix.relative(base, file);
    const source = path.join(root, file);
    const target = path.join(into, rel);
    dirFor(rel);
    const st = lstatSync(source);
    if (st.isSymbolicLink()) {
      symlinkSync(readlinkSync(source), target);
      continue;
    }
    if (!st.isFile()) continue; // sockets and fifos are not sent to builders
    const mode = contextMode(st.mode);
    if ((st.mode & 0o7777) === mode) {
      try {
        linkSync(source, target);
        continue;
      } catch {
        // another filesystem, or links not allowed: copy instead
      }
    }
    copyFileSync(source, target, constants.COPYFILE_FICLONE);
    chmodSync(target, mode);
  }
  return into;
}
