/**
 * The workspace boundary: what the declarations may read. A declaration in a pull request must not
 * read the CI machine's files, so every path a declaration names (`copy`, `dockerfile`, `context`,
 * `from: oci-layout:DIR`, a test's `inputs` and `expect`) must resolve, symbolic links followed,
 * inside the workspace (the directory of images.yaml) or inside a directory that images.yaml lists
 * in `settings.allow_outside`.
 *
 * Validation checks every declared path (`resolve`, `contains`) and reports the ones outside with
 * their source spans. Execution checks again what it reads (defence in depth: a file replaced by a
 * symbolic link after validation must not leak): `openFile` opens first and then asks the kernel
 * which file it opened (`/proc/self/fd/N`), so nothing can change between the check and the read.
 *
 * Symbolic links *inside* a copied directory or matched by a glob are copied as links (as Docker's
 * COPY does) and never followed, so a link to `/etc/shadow` lands in the image as a link, to the
 * image's own `/etc/shadow`; the target's bytes are never read.
 */
import { closeSync, constants, lstatSync, openSync, readdirSync, readlinkSync, realpathSync } from 'node:fs';
import path from 'node:path';

/** Thrown when a path resolves outside the boundary; `real` is where it leads. */
export class OutsideWorkspaceError extends Error {
  constructor(
    readonly display: string,
    readonly real: string,
  ) {
    super(`${display} resolves to ${real}, outside the workspace`);
    this.name = 'OutsideWorkspaceError';
  }
}

/** Most symbolic links followed while resolving one path (Linux's MAXSYMLINKS). */
const MAX_LINKS = 40;

/**
 * The directories declarations may read (module comment), with the checks validation and
 * execution make against them. Cheap to make (one realpath per directory).
 */
export class Boundary {
  /** Real paths (every symbolic link resolved) of the workspace, then of each allowed directory. */
  readonly roots: readonly string[];
  /** With `memo`: real paths of the directories resolved so far (`resolve`'s fast path). */
  private readonly realParents?: Map<string, string>;

  /**
   * @param root absolute workspace directory.
   * @param allowed absolute directories outside it that may be read (settings.allow_outside);
   *   ones that do not exist are left out (validation reports them).
   * @param options.memo remember the real path of every directory resolved, for one pass over a
   *   tree that does not change meanwhile (validation); never for checks at execution, which must
   *   see a directory swapped for a link since.
   */
  constructor(
    readonly root: string,
    allowed: readonly string[] = [],
    options: { readonly memo?: boolean } = {},
  ) {
    if (options.memo) this.realParents = new Map();
    const roots = [realOrSelf(root)];
    for (const dir of allowed) {
      try {
        roots.push(realpathSync.native(dir));
      } catch {
        // not a directory one can read from: allows nothing
      }
    }
    this.roots = roots;
  }

  /**
   * Where an absolute path leads, every symbolic link followed, also when it (or its target) does
   * not exist: the longest existing prefix is resolved by realpath and the rest appended, a
   * dangling link's target is followed in turn. A loop of links resolves to where it was given up.
   */
  resolve(abs: string, links = 0): string {
    // Fast path: a path that is not a link is its parent's real path plus its name, and parents
    // repeat (every model's directory in a group's): one lstat instead of a realpath each.
    const parent = path.dirname(abs);
    if (this.realParents && links === 0 && parent !== abs) {
      const st = lstatSync(abs, { throwIfNoEntry: false });
      if (st && !st.isSymbolicLink()) {
        let real = this.realParents.get(parent);
        if (real === undefined) this.realParents.set(parent, (real = this.resolve(parent)));
        return path.join(real, path.basename(abs));
      }
    }
    try {
      return realpathSync.native(abs);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'ENOTDIR' && code !== 'ELOOP') throw e;
    }
    if (parent === abs || links > MAX_LINKS) return abs;
    const here = path.join(this.resolve(parent, links), path.basename(abs));
    let target: string;
    try {
      target = readlinkSync(here);
    } catch {
      return here; // absent, or not a link: nothing more to follow
    }
    return this.resolve(path.resolve(path.dirname(here), target), links + 1);
  }

  /** Whether a real path (see `resolve`) is one of the roots or under one. */
  contains(real: string): boolean {
    return this.roots.some((r) => real === r || real.startsWith(r.endsWith('/') ? r : `${r}/`));
  }

  /**
   * Where `abs` leads when that is outside the boundary, else undefined.
   * @throws fs errors other than a missing path (EACCES on a directory on the way, EIO).
   */
  outside(abs: string): string | undefined {
    const real = this.resolve(abs);
    return this.contains(real) ? undefined : real;
  }

  /**
   * The first symbolic link on the way from the workspace root to `abs` (workspace-relative, with
   * its target as written), for messages; undefined when `abs` is not under the root as written or
   * no component is a link.
   */
  linkOnTheWay(abs: string): { link: string; target: string } | undefined {
    const rel = path.relative(this.root, abs);
    if (!rel || rel.startsWith('..') || path.isAbsolute(rel)) return undefined;
    let at = this.root;
    for (const part of rel.split(path.sep)) {
      at = path.join(at, part);
      try {
        if (lstatSync(at).isSymbolicLink()) return { link: path.relative(this.root, at).split(path.sep).join('/'), target: readlinkSync(at) };
      } catch {
        return undefined;
      }
    }
    return undefined;
  }

  /**
   * The real path of a directory that must be inside the boundary, to hand to a tool that reads it
   * (a sandbox mount, a builder's context). There is a window between this check and the tool's
   * use; the real path narrows it to a swap of a directory that has no links on its way.
   * @param display the path as the user knows it, for the error.
   * @throws OutsideWorkspaceError when it leads outside.
   */
  realInside(abs: string, display: string): string {
    const real = this.resolve(abs);
    if (!this.contains(real)) throw new OutsideWorkspaceError(display, real);
    return real;
  }

  /**
   * Check every symbolic link under a directory, before a tool that follows links reads the tree
   * (an OCI image layout handed to the layout importer or a Dockerfile builder): each must resolve
   * inside the boundary. Links to directories are not descended into; their targets are checked.
   * @param display the directory as the user knows it; errors name `display/relative/path`.
   * @throws OutsideWorkspaceError for the first link (in sorted order) that leads outside.
   */
  checkTree(absDir: string, display: string): void {
    const visit = (abs: string, shown: string) => {
      for (const name of readdirSync(abs).sort()) {
        const child = path.join(abs, name);
        const childShown = `${shown}/${name}`;
        const st = lstatSync(child);
        if (st.isSymbolicLink()) {
          const real = this.resolve(child);
          if (!this.contains(real)) throw new OutsideWorkspaceError(childShown, real);
        } else if (st.isDirectory()) {
          visit(child, childShown);
        }
      }
    };
    visit(absDir, display);
  }

  /**
   * Open a file for reading and check, on the open descriptor, that it is inside the boundary.
   * @param noFollow refuse a symbolic link as the last component (ELOOP): for a file that was seen
   *   as a regular file, so a link swapped in since is not followed at all.
   * @param display the path as the user knows it, for the error.
   * @returns the descriptor; the caller closes it.
   * @throws OutsideWorkspaceError (the descriptor closed) when the file is outside; fs errors.
   */
  openFile(abs: string, display: string, noFollow = false): number {
    const fd = openSync(abs, constants.O_RDONLY | (noFollow ? constants.O_NOFOLLOW : 0));
    let real: string;
    try {
      real = readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      real = this.resolve(abs); // no /proc: the path's resolution, a moment later
    }
    if (!this.contains(real)) {
      closeSync(fd);
      throw new OutsideWorkspaceError(display, real);
    }
    return fd;
  }
}

function realOrSelf(p: string): string {
  try {
    return realpathSync.native(p);
  } catch {
    return path.resolve(p);
  }
}
