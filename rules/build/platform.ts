/**
 * Platforms of an image (OCI image spec `image-index.md`, `platform` of a manifest descriptor):
 * `linux/amd64`, `linux/arm64`. An image entry may declare `platforms:` (`layers:` and `debian:`
 * images); a `layers:` image built FROM a declared image without its own list takes its base's;
 * otherwise an image has the host's platform only, and everything about it (node names, keys,
 * outputs, the image layout) is exactly as for an image that never heard of platforms.
 *
 * Node names: the host's platform keeps the plain name (`convert:NAME`, `test:G/M@oci`); every
 * other platform adds `@OS/ARCH` (`convert:NAME@linux/arm64`, `test:G/M@oci@linux/arm64`).
 */
import { existsSync, readFileSync } from 'node:fs';
import type { Declarations, ImageDecl } from '../../engine/validate/declarations.js';
import { hostArchitecture } from '../oci/image.js';
import { buildOf } from './recipe.js';

/** An OCI platform, `OS/ARCH` (`linux/amd64`, `linux/arm64`). */
export type Platform = string;

/** The platforms `platforms:` accepts. */
export const PLATFORMS: readonly Platform[] = ['linux/amd64', 'linux/arm64'];

/**
 * The recipes that build one image per platform (`platforms:`, or their base's): `layers:` (the
 * same layers on each platform's base), `debian:` (each architecture's packages) and `dockerfile:`
 * (buildah or podman `--platform`; RUN steps of a foreign platform need QEMU user emulation).
 * Others would build for the host only, from the host's image of a multi-platform base.
 */
export const PER_PLATFORM_RECIPES: ReadonlySet<string> = new Set(['layers', 'debian', 'dockerfile']);

/** This machine's platform, e.g. `linux/amd64`. */
export function hostPlatform(): Platform {
  return `linux/${hostArchitecture()}`;
}

/** The architecture part of a platform (`arm64` of `linux/arm64`): OCI/Go and Debian name alike. */
export function platformArchitecture(platform: Platform): string {
  return platform.slice(platform.indexOf('/') + 1);
}

/** The OS part of a platform (`linux`). */
export function platformOs(platform: Platform): string {
  return platform.slice(0, platform.indexOf('/'));
}

/**
 * The platforms an image is built for, in declared order: its `platforms:`, else its base's when
 * `from:` names a declared image, else `[host]`; always `[host]` for a recipe outside
 * `PER_PLATFORM_RECIPES` (validation refuses `platforms:` there).
 * @param images every image, by name (a `from` chain is followed; a cycle was reported by validation
 *   and ends the walk at the host platform).
 */
export function platformsOf(image: ImageDecl, images: ReadonlyMap<string, ImageDecl>, seen: ReadonlySet<string> = new Set()): readonly Platform[] {
  const part = buildOf(image);
  if (!PER_PLATFORM_RECIPES.has(part.recipe.kind)) return [hostPlatform()];
  if (part.platforms) return part.platforms;
  const from = image.from;
  if (from?.kind === 'image' && !seen.has(from.name)) {
    const base = images.get(from.name);
    if (base) return platformsOf(base, images, new Set([...seen, image.name]));
  }
  return [hostPlatform()];
}

/**
 * Whether the image is multi-platform: built for anything other than exactly the host's platform.
 * Only such images have an image index, platform fields in their keys, and `@OS/ARCH` nodes.
 */
export function isMultiPlatform(platforms: readonly Platform[]): boolean {
  return !(platforms.length === 1 && platforms[0] === hostPlatform());
}

/** `platformsOf` and `isMultiPlatform` for an image of `decls`. */
export function imagePlatforms(image: ImageDecl, decls: Pick<Declarations, 'images'>): { platforms: readonly Platform[]; multi: boolean } {
  const platforms = platformsOf(image, decls.images);
  return { platforms, multi: isMultiPlatform(platforms) };
}

/** The suffix of a per-platform node's id: '' for the host's platform, else `@OS/ARCH`. */
export function platformSuffix(platform: Platform | null | undefined): string {
  return !platform || platform === hostPlatform() ? '' : `@${platform}`;
}

/** The QEMU user-emulation binfmt_misc entry of a foreign architecture (Debian qemu-user-static's names). */
const QEMU_ARCH: Readonly<Record<string, string>> = { arm64: 'aarch64', amd64: 'x86_64', arm: 'arm', ppc64le: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' };

/**
 * What `emulationFor` reads of this host, for every architecture it knows: each binfmt_misc
 * entry's text, or null when absent (`Rule.expandFacts` of the rules whose expansion asks it).
 */
export function emulationFacts(binfmtDir = process.env.GRAPH_BINFMT_MISC || '/proc/sys/fs/binfmt_misc'): Record<string, string | null> {
  const out: Record<string, string | null> = {};
  for (const qemu of Object.values(QEMU_ARCH)) {
    try {
      out[qemu] = readFileSync(`${binfmtDir}/qemu-${qemu}`, 'utf8');
    } catch {
      out[qemu] = null;
    }
  }
  return out;
}

/**
 * How this host runs binaries of `platform`: `native` for its own platform; `qemu` when the kernel
 * has the binfmt_misc entry `qemu-ARCH` enabled with the `F` flag (the interpreter is opened at
 * registration, so it works inside bubblewrap's new root, where the interpreter's path is absent);
 * else `none` with the reason, the words a skipped test shows.
 * @param binfmtDir the binfmt_misc mount: `GRAPH_BINFMT_MISC` when set (tests point it at a fake
 *   tree, or an empty directory for a host without emulation), else `/proc/sys/fs/binfmt_misc`.
 */
export function emulationFor(platform: Platform, binfmtDir = process.env.GRAPH_BINFMT_MISC || '/proc/sys/fs/binfmt_misc'): { kind: 'native' } | { kind: 'qemu'; entry: string } | { kind: 'none'; reason: string } {
  if (platform === hostPlatform()) return { kind: 'native' };
  const none = { kind: 'none' as const, reason: `no QEMU user emulation for ${platform} on this host` };
  const qemu = QEMU_ARCH[platformArchitecture(platform)];
  if (!qemu || platformOs(platform) !== 'linux') return none;
  const entry = `${binfmtDir}/qemu-${qemu}`;
  if (!existsSync(entry)) return none;
  let text: string;
  try {
    text = readFileSync(entry, 'utf8');
  } catch {
    return none;
  }
  const enabled = /^enabled$/m.test(text);
  const flags = /^flags: *([A-Z]*)$/m.exec(text)?.[1] ?? '';
  if (!enabled) return { kind: 'none', reason: `${none.reason} (binfmt_misc entry qemu-${qemu} is disabled)` };
  if (!flags.includes('F')) return { kind: 'none', reason: `${none.reason} (binfmt_misc entry qemu-${qemu} lacks the F flag, so it cannot work inside the sandbox)` };
  return { kind: 'qemu', entry: `qemu-${qemu}` };
}
