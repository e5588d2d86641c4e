/**
 * The root filesystem cache: the trees tests run in, unpacked once per image
 * (`.graph/cache/rootfs/<manifest hex>/`) or per SIF (`.graph/cache/sif-rootfs/<sha256>/`) and
 * shared by every test of it. The sandbox mounts a tree read-only, but anyone with the workspace
 * can edit it, and an edited tree would run in every later test; so each entry holds the tree,
 * `rootfs/`, and its `manifest`, made together and renamed into place as one, and the tree is
 * checked against the manifest before every use and unpacked again on a mismatch.
 *
 * The manifest lists every entry of the tree, sorted by path, one line each:
 *
 *     <mode, octal, with the type bits> <size> <inode> <mtimeMs> <ctimeMs> <path>\n
 *
 * (the tree's own directory is `.`), and ends with `sha256 <hex of the lines before>\n`. Checking it costs
 * one `lstat` per entry (≈40 ms for 3,000 entries here) and reads no file, once per tree per
 * process (the sandbox mounts it read-only, so a process's own tests cannot change it): a file written in place changes its mtime and ctime
 * (and a process cannot set ctime back), a replaced, added or removed entry changes its
 * directory's listing. A torn or edited manifest fails its digest and counts as a mismatch.
 */
import { hash } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/** The manifest of the tree at `dir` (module comment), without its digest line. @throws the fs error. */
export function treeListing(dir: string): string {
  const lines: string[] = [];
  const visit = (rel: string) => {
    const abs = rel === '.' ? dir : path.join(dir, rel);
    const st = lstatSync(abs);
    lines.push(`${st.mode.toString(8)} ${st.size} ${st.ino} ${st.mtimeMs} ${st.ctimeMs} ${rel}\n`);
    if (!st.isDirectory()) return;
    for (const name of readdirSync(abs).sort()) visit(rel === '.' ? name : `${rel}/${name}`);
  };
  visit('.');
  return lines.join('');
}

/** The tree of a cache entry. */
const treeOf = (entry: string) => path.join(entry, 'rootfs');
/** The manifest of a cache entry. */
const manifestOf = (entry: string) => path.join(entry, 'manifest');

/** Write the manifest of the tree in `entry`. @throws the fs error. */
function writeManifest(entry: string): void {
  const listing = treeListing(treeOf(entry));
  writeFileSync(manifestOf(entry), `${listing}sha256 ${hash('sha256', listing, 'hex')}\n`);
}

/**
 * Does the tree of the cache entry `entry` still match its manifest? Undefined when it does; else
 * why not, in words: `no manifest`, `manifest corrupt`, or the first entry that differs
 * (`usr/bin/run changed`, `etc/extra added`, `lib/x removed`).
 */
export function checkTree(entry: string): string | undefined {
  let text: string;
  try {
    text = readFileSync(manifestOf(entry), 'utf8');
  } catch {
    return 'no manifest';
  }
  const cut = text.lastIndexOf('sha256 ', text.length - 1);
  const listing = cut === -1 ? '' : text.slice(0, cut);
  if (cut === -1 || text !== `${listing}sha256 ${hash('sha256', listing, 'hex')}\n`) return 'manifest corrupt';
  let actual: string;
  try {
    actual = treeListing(treeOf(entry));
  } catch (e) {
    return `unreadable: ${(e as Error).message}`;
  }
  if (actual === listing) return undefined;
  const entries = (t: string) => new Map(t.split('\n').filter(Boolean).map((l) => [l.split(' ').slice(5).join(' '), l]));
  const want = entries(listing);
  const have = entries(actual);
  for (const [p, l] of have) {
    if (!want.has(p)) return `${p} added`;
    if (want.get(p) !== l) return `${p} changed`;
  }
  for (const p of want.keys()) if (!have.has(p)) return `${p} removed`;
  return 'changed';
}

/** Cache entries this process made or found intact. */
const checkedHere = new Set<string>();

/**
 * A root filesystem shared by every test of one image (or SIF), made once and checked before
 * its first use in each process (module comment): `make` fills a private temp directory, renamed
 * into place with its manifest, so a reader never sees half of one and two processes making the
 * same one both end up with a whole one. An entry whose tree no longer matches its manifest is
 * moved aside and made again.
 * @param dir the cache entry (`.graph/cache/rootfs/<hex>`).
 * @param note told, in words, why a cached tree was made again.
 * @returns the tree, `dir/rootfs`. @throws `make`'s errors, and the fs error when the manifest
 *   cannot be written.
 */
export async function cachedRootfs(dir: string, make: (tree: string) => Promise<void>, note: (why: string) => void = () => {}): Promise<string> {
  if (checkedHere.has(dir) && existsSync(dir)) return treeOf(dir);
  if (existsSync(dir)) {
    const why = checkTree(dir);
    if (why === undefined) {
      checkedHere.add(dir);
      return treeOf(dir);
    }
    note(`root filesystem ${treeOf(dir)} does not match its manifest (${why}): unpacking it again\n`);
    // Renamed away first: its name must go at once (another process may be removing it too).
    const old = `${dir}.old-${process.pid}-${Math.random().toString(16).slice(2)}`;
    try {
      renameSync(dir, old);
      rmSync(old, { recursive: true, force: true });
    } catch {
      // moved by another process meanwhile
    }
  }
  const tmp = `${dir}.tmp-${process.pid}-${Math.random().toString(16).slice(2)}`;
  mkdirSync(tmp, { recursive: true });
  try {
    await make(treeOf(tmp));
    // Renaming the entry does not touch the tree's own directory, so the listing stays true.
    writeManifest(tmp);
    try {
      renameSync(tmp, dir);
      checkedHere.add(dir);
    } catch (e) {
      if (!existsSync(dir)) throw e; // else another test made it first
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return treeOf(dir);
}
