/**
 * From Debian packages to an image root filesystem, for the build rule's `debian:` recipe: pins
 * (from `images.lock`, or resolved now), verified downloads, every package's files unpacked with
 * `dpkg-deb -x` (no maintainer scripts run, as apko and distroless do), and the files a package
 * manager would have written: a minimal `/etc/passwd` and `/etc/group`, and `/var/lib/dpkg/status`
 * listing the installed packages, and the alternatives links their `postinst` scripts would make
 * (rules/debian/alternatives.ts: read from the scripts, never run).
 *
 * Modes: the tree on disk has the packages' files, but its modes are not the image's (tar applies
 * the umask to what it creates without a header, and drops setuid bits when not root). The image's
 * modes are the packages' tar headers', recorded while unpacking (`debModes`), and explicit ones
 * for what is written here; every other directory is 0755 (`rootfsModes`).
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { ProcessRunner } from '../../engine/process.js';
import type { ModeOf } from '../oci/layer.js';
import { applyAlternatives, applyTemplates, debPostinst, parsePostinst, type Alternative, type UcfFile } from './alternatives.js';
import { debControl, debModes, dpkgStatusEntry, type PackageModes } from './extract.js';
import { fetchDebs } from './fetch.js';
import { debianArchitecture, loadIndex } from './package-index.js';
import { LOCK_FILE, readLock, withLockedImage, writeLock, type LockedImage } from './lock.js';
import { findMirror, type DebianMirror } from './mirror.js';
import { resolvePackages } from './resolve.js';

/** A `debian:` recipe: the suite and the requested package names. */
export interface DebianRequest {
  readonly suite: string;
  readonly packages: readonly string[];
  /** Configuration files made from templates the packages ship: destination → template, absolute paths in the image (rules/debian/alternatives.ts). */
  readonly templates?: Readonly<Record<string, string>>;
}

/**
 * Resolve a request against the suite's index into a lock entry (downloads the index).
 * @param architecture a Debian architecture (`arm64`): the mirror's `binary-ARCH` index is read;
 *   default this machine's. Assembling needs no emulation: packages are only unpacked.
 */
export async function resolveRequest(request: DebianRequest, cacheDir: string, signal?: AbortSignal, architecture: string = debianArchitecture()): Promise<{ locked: LockedImage; mirror: DebianMirror }> {
  const mirror = findMirror({ suite: request.suite });
  const index = await loadIndex({ mirror, suite: request.suite, architecture, cacheDir, signal });
  const packages = resolvePackages(index, [...request.packages]);
  return { mirror, locked: { suite: request.suite, architecture, requested: [...request.packages].sort(), packages } };
}

/** Whether a lock entry pins exactly this request on `architecture` (default: this machine's). */
export function lockMatches(entry: LockedImage | undefined, request: DebianRequest, architecture: string = debianArchitecture()): entry is LockedImage {
  if (!entry) return false;
  const requested = [...request.packages].sort();
  return (
    entry.suite === request.suite &&
    entry.architecture === architecture &&
    entry.requested.length === requested.length &&
    entry.requested.every((r, i) => r === requested[i])
  );
}

/**
 * The images.lock entry name of an image's packages for one platform: the image's name for a
 * single-platform image (`platform` undefined; the format before platforms), `NAME@OS/ARCH`
 * (`base@linux/arm64`) for each platform of a multi-platform image.
 */
export function lockEntryName(image: string, platform?: string): string {
  return platform ? `${image}@${platform}` : image;
}

/**
 * `graph lock`: resolve every given image's packages and write them into `ROOT/images.lock`
 * (entries of other images are kept): one entry per image, or per platform of an image given
 * `platforms` (`OS/ARCH`; entries `NAME@OS/ARCH`, see `lockEntryName`).
 * @returns per entry, the number of packages pinned.
 */
export async function lockImages(root: string, images: ReadonlyArray<{ name: string; request: DebianRequest; platforms?: readonly string[] }>, cacheDir: string, signal?: AbortSignal): Promise<Array<{ name: string; packages: number }>> {
  const file = path.join(root, LOCK_FILE);
  let lock = readLock(file);
  const done: Array<{ name: string; packages: number }> = [];
  for (const { name, request, platforms } of images) {
    for (const platform of platforms ?? [undefined]) {
      const entry = lockEntryName(name, platform);
      const { locked } = await resolveRequest(request, cacheDir, signal, platform ? platform.slice(platform.indexOf('/') + 1) : undefined);
      lock = withLockedImage(lock, entry, locked);
      done.push({ name: entry, packages: locked.packages.length });
    }
  }
  writeLock(file, lock);
  return done;
}

const PASSWD = 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n';
const GROUP = 'root:x:0:\nnogroup:x:65534:\n';

/**
 * Build the root filesystem of a `debian:` image in `rootfs` (an empty directory).
 * @param name the image's images.lock entry name (`lockEntryName`).
 * @param architecture the Debian architecture of the packages (default: this machine's).
 * @param lockFile the workspace's images.lock; its entry for `name` is used when it matches.
 * @param note receives progress lines for the node's log.
 * @returns whether the packages came from the lock, and how many; `modes`, the permission bits of
 *   every path the packages or this function made (give it to `rootfsModes`).
 * @throws the resolver's, downloader's or runner's errors, each naming the package.
 */
export async function debianRootfs(options: {
  name: string;
  request: DebianRequest;
  architecture?: string;
  lockFile: string;
  cacheDir: string;
  rootfs: string;
  runner: ProcessRunner;
  logFile: string;
  signal: AbortSignal;
  note: (line: string) => void;
}): Promise<{ locked: boolean; packages: number; modes: PackageModes }> {
  const { request, cacheDir, rootfs, signal } = options;
  const entry = readLock(options.lockFile).images[options.name];
  let pins: LockedImage;
  let mirror: DebianMirror;
  const architecture = options.architecture ?? debianArchitecture();
  const locked = lockMatches(entry, request, architecture);
  if (locked) {
    pins = entry;
    mirror = findMirror({ suite: request.suite });
    options.note(`${pins.packages.length} packages pinned by ${LOCK_FILE}\n`);
  } else {
    ({ locked: pins, mirror } = await resolveRequest(request, cacheDir, signal, architecture));
    options.note(`${pins.packages.length} ${architecture} packages resolved from ${mirror.uri} (${entry ? `${LOCK_FILE} is stale for this image` : `not in ${LOCK_FILE}`}: run 'graph lock' to pin them)\n`);
  }
  const debs = await fetchDebs(mirror, pins.packages, cacheDir, signal);
  mkdirSync(rootfs, { recursive: true });
  const status: string[] = [];
  const modes: PackageModes = new Map();
  const alternatives: Alternative[] = [];
  const ucf: UcfFile[] = [];
  for (const [i, deb] of debs.entries()) {
    // The headers are read while dpkg-deb unpacks (two cores), and recorded in package order.
    const [r, headers] = await Promise.all([options.runner.run(['dpkg-deb', '-x', deb, rootfs], { signal, logFile: options.logFile }), debModes(deb)]);
    if (r.exitCode !== 0) throw new Error(`dpkg-deb -x failed for ${pins.packages[i].name} ${pins.packages[i].version} (exit ${r.exitCode ?? r.signal})`);
    for (const [p, m] of headers) modes.set(p, m);
    status.push(dpkgStatusEntry(await debControl(deb)));
    const postinst = await debPostinst(deb);
    if (postinst) {
      const found = parsePostinst(postinst, pins.packages[i].name);
      alternatives.push(...found.alternatives);
      ucf.push(...found.ucf);
      for (const c of found.skipped) options.note(`alternatives: ${pins.packages[i].name}'s postinst command left out (not plain words): ${c}\n`);
    }
  }
  for (const a of applyAlternatives(rootfs, alternatives)) options.note(`alternatives: ${a.name} -> ${a.path} (${a.package}): ${a.links.join(', ')}\n`);
  const writeFile = (rel: string, bytes: Buffer, mode: number) => {
    const file = path.join(rootfs, rel);
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, bytes);
    modes.set(rel, { kind: 'file', mode });
  };
  const modeOf = (rel: string) => modes.get(rel)?.mode;
  // Declared templates first: they are the image author's answer to a script we cannot read.
  const declared = Object.entries(request.templates ?? {}).map(([dest, template]) => ({ dest, template }));
  for (const t of applyTemplates(rootfs, declared, true, writeFile, modeOf)) options.note(`template: ${t.dest} from ${t.template} (declared)\n`);
  for (const t of applyTemplates(rootfs, ucf, false, writeFile, modeOf)) options.note(`template: ${t.dest} from ${t.template} (ucf in a postinst)\n`);
  const write = (rel: string, text: string) => {
    const file = path.join(rootfs, rel);
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, text);
    modes.set(rel, { kind: 'file', mode: 0o644 });
  };
  if (!existsSync(path.join(rootfs, 'etc/passwd'))) write('etc/passwd', PASSWD);
  if (!existsSync(path.join(rootfs, 'etc/group'))) write('etc/group', GROUP);
  write('var/lib/dpkg/status', status.join('\n'));
  mkdirSync(path.join(rootfs, 'tmp'), { recursive: true });
  modes.set('tmp', { kind: 'directory', mode: 0o1777 });
  return { locked, packages: pins.packages.length, modes };
}

/**
 * The modes of a root filesystem made by `debianRootfs`, for `entriesForCopy(rootfs, '/',
 * undefined, rootfsModes(modes))`: a path's recorded mode when the entry on disk is of the kind
 * that recorded it, else (a directory only `mkdir -p` made) undefined, which `entriesForCopy`
 * makes 0755 (0644 or 0755 for a file).
 */
export function rootfsModes(modes: PackageModes): ModeOf {
  return (rel, stats) => {
    const m = modes.get(rel);
    return m && (m.kind === 'directory') === stats.isDirectory() ? m.mode : undefined;
  };
}
