/**
 * The one thing maintainer scripts do that an image of unpacked packages needs: the alternatives
 * system's links (update-alternatives(1)). Packages such as libblas3 and liblapack3 ship their
 * library under a private path and register it in `postinst` with
 *
 *   update-alternatives --install LINK NAME PATH PRIORITY [--slave LINK NAME PATH]…
 *
 * and nothing else links `libblas.so.3`: without the link, R (libR.so needs libblas.so.3) cannot
 * start. Since no maintainer script runs here (rules/debian/image.ts), the recipe reads each
 * package's `postinst`, finds those commands, and makes what update-alternatives in auto mode
 * makes: for every NAME the registration with the highest PRIORITY (the first one among equals,
 * in package order) wins, `LINK -> /etc/alternatives/NAME -> PATH`, and each slave whose PATH
 * exists the same way. Nothing of the script is run; a command whose words are not plain (a shell
 * variable, a quote, a substitution) is left out and reported, never guessed.
 *
 * The same reading finds configuration files a postinst installs from a template the package
 * ships, with ucf(1) (`ucf TEMPLATE DEST`): with plain words the template is copied to DEST; a
 * computed template (`ucf "$tmp" /etc/R/Renviron`, edited by the script first) is reported, and
 * the image declares it (`debian.templates`, {@link applyTemplates}).
 */
import { lstatSync, mkdirSync, readFileSync, statSync, symlinkSync } from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type tar from 'tar-stream';
import { lazyRequire } from '../../engine/lazy.js';
import { readOutput } from '../../engine/process.js';
import { resolveInRoot } from '../oci/unpack.js';

const tarStream = lazyRequire<typeof tar>('tar-stream');

/** One `update-alternatives --install` registration (paths absolute in the image). */
export interface Alternative {
  readonly link: string;
  readonly name: string;
  readonly path: string;
  readonly priority: number;
  readonly slaves: readonly { readonly link: string; readonly name: string; readonly path: string }[];
  /** The package whose postinst registered it. */
  readonly package: string;
}

/** A `ucf TEMPLATE DEST` command: the package ships TEMPLATE, the script installs it as DEST. */
export interface UcfFile {
  readonly template: string;
  readonly dest: string;
  readonly package: string;
}

/** What a postinst registers, and the commands that could not be read as plain words. */
export interface PostinstAlternatives {
  readonly alternatives: Alternative[];
  /** `ucf` commands with plain words. */
  readonly ucf: UcfFile[];
  /** Each command left out, as written (joined continuation lines). */
  readonly skipped: string[];
}

/**
 * The `update-alternatives --install` commands of a postinst script's text: continuation lines
 * joined, comments dropped, words split on blanks. Commands with any other word than plain
 * characters (`$`, quotes, backquotes, globs) go to `skipped`.
 */
export function parsePostinst(script: string, pkg: string): PostinstAlternatives {
  const alternatives: Alternative[] = [];
  const ucf: UcfFile[] = [];
  const skipped: string[] = [];
  const plain = (w: string) => /^[A-Za-z0-9_@%+=:,./-]+$/.test(w);
  const lines = script.replace(/\\\n/g, ' ').split('\n');
  for (const raw of lines) {
    const line = raw.trim();
    if (line.startsWith('#')) continue;
    // One line may hold several commands (`a && b`, `a; b`): each is looked at alone.
    for (const command of line.split(/&&|\|\||;/)) {
      const words = command.trim().split(/\s+/);
      const u = words.findIndex((w) => w === 'ucf' || w.endsWith('/ucf'));
      if (u >= 0 && (u === 0 || ['then', 'do', 'else'].includes(words[u - 1]))) {
        const args = words.slice(u + 1).filter((w) => !w.startsWith('-'));
        if (args.length === 2 && args.every(plain) && args[0].startsWith('/') && args[1].startsWith('/')) ucf.push({ template: args[0], dest: args[1], package: pkg });
        else skipped.push(command.trim());
        continue;
      }
      const at = words.findIndex((w) => w === 'update-alternatives' || w.endsWith('/update-alternatives'));
      if (at < 0 || words[at + 1] !== '--install') continue;
      const args = words.slice(at + 2);
      if (!args.every(plain)) {
        skipped.push(command.trim());
        continue;
      }
      const [link, name, target, priority, ...rest] = args;
      const slaves: { link: string; name: string; path: string }[] = [];
      let ok = link?.startsWith('/') && name && target?.startsWith('/') && /^-?[0-9]+$/.test(priority ?? '');
      for (let i = 0; ok && i < rest.length; i += 4) {
        if (rest[i] !== '--slave' || !rest[i + 1]?.startsWith('/') || !rest[i + 2] || !rest[i + 3]?.startsWith('/')) ok = false;
        else slaves.push({ link: rest[i + 1], name: rest[i + 2], path: rest[i + 3] });
      }
      if (!ok) skipped.push(command.trim());
      else alternatives.push({ link, name, path: target, priority: Number(priority), slaves, package: pkg });
    }
  }
  return { alternatives, ucf, skipped };
}

/**
 * The `postinst` script of a `.deb` (its control member, read with `dpkg-deb --ctrl-tarfile`);
 * undefined when the package has none.
 * @throws Error with dpkg-deb's message when the file is not a readable .deb.
 */
export async function debPostinst(debPath: string): Promise<string | undefined> {
  const control: Readable = readOutput(['dpkg-deb', '--ctrl-tarfile', debPath], (f) =>
    f.error ? new Error(`cannot run dpkg-deb to read ${debPath} (${f.error.message}): install the dpkg package`) : new Error(`dpkg-deb --ctrl-tarfile ${debPath} failed (${f.signal ?? `exit ${f.exitCode}`}): ${f.stderr.trim() || 'no message'}`),
  );
  const extract = tarStream().extract();
  let script: string | undefined;
  const read = (async () => {
    for await (const entry of extract) {
      if (entry.header.name.replace(/^\.\//, '') === 'postinst' && entry.header.type === 'file') {
        const chunks: Buffer[] = [];
        for await (const c of entry) chunks.push(c as Buffer);
        script = Buffer.concat(chunks).toString('utf8');
      } else entry.resume();
    }
  })();
  await Promise.all([pipeline(control, extract), read]);
  return script;
}

/** The links made: each `link -> /etc/alternatives/NAME` and `/etc/alternatives/NAME -> path`, in-image paths. */
export interface AppliedAlternative {
  readonly name: string;
  readonly path: string;
  readonly package: string;
  /** Paths of the symbolic links made, relative to the root (`usr/lib/…`, `etc/alternatives/…`). */
  readonly links: readonly string[];
}

/**
 * Make the alternatives' links in `rootfs` as update-alternatives' auto mode would (module
 * comment): per name the highest priority wins (the first registered among equals); a master or
 * slave whose `path` is not in `rootfs`, or whose link already exists as something else, is left
 * out (update-alternatives, too, drops slaves whose file is missing).
 * @returns what was applied, sorted by name.
 */
export function applyAlternatives(rootfs: string, registered: readonly Alternative[]): AppliedAlternative[] {
  const best = new Map<string, Alternative>();
  for (const a of registered) {
    const current = best.get(a.name);
    if (!current || a.priority > current.priority) best.set(a.name, a);
  }
  const exists = (p: string) => lstatSync(path.join(rootfs, p), { throwIfNoEntry: false }) !== undefined;
  const applied: AppliedAlternative[] = [];
  for (const a of [...best.values()].sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0))) {
    if (!exists(a.path)) continue;
    const links: string[] = [];
    for (const one of [{ link: a.link, name: a.name, path: a.path }, ...a.slaves]) {
      if (!exists(one.path) || exists(one.link)) continue;
      const admin = path.posix.join('/etc/alternatives', one.name);
      if (exists(admin)) continue;
      for (const [from, to] of [[admin, one.path], [one.link, admin]] as const) {
        mkdirSync(path.dirname(path.join(rootfs, from)), { recursive: true });
        symlinkSync(to, path.join(rootfs, from));
        links.push(from.slice(1));
      }
    }
    if (links.length) applied.push({ name: a.name, path: a.path, package: a.package, links });
  }
  return applied;
}

/** A configuration file made from a template in the image: what {@link applyTemplates} copied. */
export interface AppliedTemplate {
  readonly dest: string;
  readonly template: string;
}

/**
 * Copy each template (an absolute path in the image, a regular file after following links inside
 * the root) to its destination when nothing is there yet, as ucf(1) installs a new configuration
 * file; the copy gets the template's permission bits from `modeOf` (the package's tar header),
 * else 0644.
 * @returns the files written, in the order given.
 * @throws Error when a declared template is not in the image (`declared`: else it is skipped).
 */
export function applyTemplates(rootfs: string, files: ReadonlyArray<{ readonly dest: string; readonly template: string }>, declared: boolean, write: (rel: string, bytes: Buffer, mode: number) => void, modeOf: (rel: string) => number | undefined): AppliedTemplate[] {
  const done: AppliedTemplate[] = [];
  for (const { dest, template } of files) {
    const source = resolveInRoot(rootfs, template, true);
    const st = statSync(source, { throwIfNoEntry: false });
    if (!st?.isFile()) {
      if (declared) throw new Error(`template ${template} (for ${dest}) is not a file in the image: no package of the image installs it`);
      continue;
    }
    if (lstatSync(path.join(rootfs, dest), { throwIfNoEntry: false })) continue;
    write(dest.slice(1), readFileSync(source), modeOf(path.relative(rootfs, source)) ?? 0o644);
    done.push({ dest, template });
  }
  return done;
}
