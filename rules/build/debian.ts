/**
 * The `debian:` recipe: a base image from Debian packages, as apko and distroless make them (no
 * maintainer scripts run; rules/debian/). A `debian:` image is a base itself: it takes no `from`.
 * Its key holds its own images.lock entry (versions and SHA-256 of every package), so re-locking
 * one image rebuilds that image only; `graph lock` (a command of this recipe) writes the entries.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { didYouMean } from '../../engine/diagnostics.js';
import { UsageError, type Json, type RuleCommand } from '../../engine/rule.js';
import { LOCK_FILE, readLock, type ImagesLock } from '../debian/lock.js';
import { composeImage } from '../oci/image.js';
import { entriesForCopy, writeLayer } from '../oci/layer.js';
import { buildOf, configChanges, type Recipe } from './recipe.js';
import { imagePlatforms, platformArchitecture, platformOs } from './platform.js';
import type { ImageDecl } from '../../engine/validate/declarations.js';

/** A `debian:` recipe's decl: the suite (default bookworm) and the requested packages. */
export type DebianRecipe = {
  readonly kind: 'debian';
  readonly suite: string;
  readonly packages: readonly string[];
  /** Destination → template, absolute paths in the image; only when declared (older keys stay as they were). */
  readonly templates?: Readonly<Record<string, string>>;
};

/** `graph lock [IMAGE...]`: pin the packages of `debian:` images in images.lock. */
const lockCommand: RuleCommand = {
  name: 'lock',
  summary: 'pin the Debian packages of debian: images in images.lock',
  usage: `graph lock [IMAGE...] [-C DIR]

Resolves the package closure of every debian: image (or the ones named) against the Debian mirror
(GRAPH_DEBIAN_MIRROR, else the host's apt sources) and writes each package's version and SHA-256
into images.lock (commit it). A build with a matching lock entry never resolves again.`,
  async run(open, { positionals }, output) {
    const ws = open();
    const images = [...ws.decls.images.values()].flatMap((i) => {
      const recipe = buildOf(i).recipe;
      return recipe.kind === 'debian' ? [{ name: i.name, recipe: recipe as DebianRecipe }] : [];
    });
    for (const name of positionals) {
      if (!images.some((i) => i.name === name)) {
        const guess = didYouMean(name, images.map((i) => i.name));
        throw new UsageError(`'${name}' is not a debian: image${guess ? ` (did you mean '${guess}'?)` : ''}`);
      }
    }
    const chosen = images.filter((i) => !positionals.length || positionals.includes(i.name));
    const byName = ws.decls.images;
    if (!chosen.length) {
      output.out('no debian: images to lock\n');
      return 0;
    }
    try {
      const { lockImages } = await import('../debian/image.js');
      for (const r of await lockImages(ws.root, chosen.map((i) => {
        const { platforms, multi } = imagePlatforms(byName.get(i.name) as ImageDecl, ws.decls);
        return { name: i.name, request: i.recipe, ...(multi ? { platforms } : {}) };
      }), path.join(ws.stateDir, 'cache', 'debian'))) {
        output.out(`locked ${r.name}: ${r.packages} packages\n`);
      }
    } catch (e) {
      output.err(`graph lock: ${(e as Error).message}\n`);
      return 1;
    }
    return 0;
  },
};

/** The `debian:` recipe. */
export const debianRecipe: Recipe<DebianRecipe> = {
  kind: 'debian',
  properties: {
    debian: {
      type: 'object',
      required: ['packages'],
      additionalProperties: false,
      properties: {
        suite: { type: 'string', minLength: 1, description: 'Debian suite (default: bookworm).' },
        packages: { type: 'array', minItems: 1, items: { type: 'string', pattern: '^[a-z0-9][a-z0-9+.-]+$' } },
        templates: {
          type: 'object',
          description:
            "Configuration files a package's maintainer script would install from a template it ships (ucf): destination → template, absolute paths in the image. No maintainer script runs; the build log names the ones it could not read.",
          propertyNames: { pattern: '^/' },
          additionalProperties: { type: 'string', pattern: '^/' },
        },
      },
    },
  },
  normalize(raw) {
    const debian = raw.debian as { suite?: string; packages: string[]; templates?: Record<string, string> };
    return { kind: 'debian', suite: debian.suite ?? 'bookworm', packages: [...debian.packages], ...(debian.templates ? { templates: { ...debian.templates } } : {}) };
  },
  check(_recipe, image) {
    if (!image.from) return [];
    return [{ code: 'schema', message: `image '${image.name}' is built from Debian packages and is a base itself: remove 'from'`, span: image.at(['from'], 'key') }];
  },
  inputs: () => [],
  // 3: alternatives links from postinst scripts (rules/debian/alternatives.ts).
  tool: () => 'graph-debian/3',
  // keyFields reads images.lock.
  expandFacts: (root) => readTextOrNull(path.join(root, LOCK_FILE)),
  keyFields(_recipe, image, expansion) {
    const lock = expansion.once('debian-lock', (): ImagesLock | undefined => {
      try {
        return readLock(path.join(expansion.root, LOCK_FILE));
      } catch {
        return undefined; // the build itself reports the lock's problem
      }
    });
    const { platforms, multi } = expansion.platforms(image);
    if (!multi) return { lock: lock ? ((lock.images[image.name] as unknown as Json) ?? null) : 'unreadable' };
    // A multi-platform image's packages, per platform (entries NAME@OS/ARCH).
    return { lock: lock ? Object.fromEntries(platforms.map((p) => [p, (lock.images[`${image.name}@${p}`] as unknown as Json) ?? null])) : 'unreadable' };
  },
  async build({ node, decl, recipe, ctx, epoch, platform }) {
    const name = node.image as string;
    const rootfs = path.join(ctx.scratchDir(), platform ? `rootfs-${platform.replace('/', '-')}` : 'rootfs');
    const { debianRootfs, rootfsModes, lockEntryName } = await import('../debian/image.js');
    const got = await debianRootfs({
      name: lockEntryName(name, platform),
      request: recipe,
      ...(platform ? { architecture: platformArchitecture(platform) } : {}),
      lockFile: path.join(ctx.workspace.root, LOCK_FILE),
      cacheDir: path.join(ctx.cacheDir, 'debian'),
      rootfs,
      runner: ctx.runner,
      logFile: ctx.log.path,
      signal: ctx.signal,
      note: (line) => ctx.log.write(line),
    });
    const blob = await writeLayer(entriesForCopy(rootfs, '/', undefined, rootfsModes(got.modes)), ctx.store, { mtime: epoch, signal: ctx.signal });
    ctx.log.write(`layer ${blob.digest} (${blob.size} bytes) from ${got.packages} packages\n`);
    const createdBy = `graph debian: ${recipe.suite} ${recipe.packages.join(' ')}`;
    return composeImage(ctx.store, undefined, [{ descriptor: blob, diffId: blob.diffId, createdBy }], configChanges(decl), epoch, platform ? { os: platformOs(platform), architecture: platformArchitecture(platform) } : undefined);
  },
  commands: [lockCommand],
};

/** A file's text, or null when it cannot be read. */
function readTextOrNull(file: string): string | null {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return null;
  }
}
