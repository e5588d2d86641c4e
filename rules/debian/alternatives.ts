/**
 * The Debian alternatives system (update-alternatives(1)) for `debian:` images, whose packages are
 * unpacked without running their maintainer scripts. Some packages ship a file only under a
 * private path and make the generic name a link in their `postinst`: `libblas3` installs
 * `/usr/lib/x86_64-linux-gnu/blas/libblas.so.3` and registers `/usr/lib/x86_64-linux-gnu/libblas.so.3`
 * as an alternative pointing at it, so without the registration numpy (and everything linked
 * against `libblas.so.3` / `liblapack.so.3`) cannot load. This module applies what those scripts
 * would register, derived from the packages themselves:
 *
 * 1. `parseAlternatives` reads a package's `postinst` (shell) and finds every
 *    `update-alternatives --install LINK NAME PATH PRIORITY [--slave LINK NAME PATH]…` command in it,
 *    backslash continuations joined and simple quotes honoured. A command whose words hold shell
 *    expansions (`$x`, backquotes) cannot be known without running the script: it is reported as
 *    unresolved, never guessed. Conditions around a command are not evaluated (a `configure`-only
 *    branch is what a first install runs); a choice whose PATH the image does not contain is
 *    dropped when applying, as update-alternatives refuses one.
 * 2. `applyAlternatives` does what update-alternatives does in automatic mode once every package is
 *    configured: per alternative NAME, the choice with the highest priority among those whose PATH
 *    exists (on a tie, the first registered, in package order), `LINK → /etc/alternatives/NAME →
 *    PATH`, the same for each of the choice's slaves whose path exists, and the administrative file
 *    `/var/lib/dpkg/alternatives/NAME` (dpkg's format, so `update-alternatives --display NAME` works
 *    in the image and a later `dpkg` sees a consistent state). A LINK that a package ships as a
 *    real file or directory is left alone, as update-alternatives does without `--force`.
 *
 * Source: update-alternatives(1) (dpkg 1.21), "COMMANDS --install", "FILES", and its
 * `alternative_save` for the administrative file's layout.
 */
import { lstatSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type tar from 'tar-stream';
import { lazyRequire } from '../../engine/lazy.js';
import { readOutput } from '../../engine/process.js';
import type { PackageModes } from './extract.js';

const tarStream = lazyRequire<typeof tar>('tar-stream');

/** A slave link of an alternative: `LINK → /etc/alternatives/NAME → PATH`, absolute in-image paths. */
export interface AlternativeSlave {
  readonly link: string;
  readonly name: string;
  readonly path: string;
}

/** One `update-alternatives --install` registration: a choice `path` for alternative `name`. */
export interface AlternativeInstall {
  /** The package whose postinst registers it. */
  readonly package: string;
  /** The generic name's absolute path (`/usr/lib/x86_64-linux-gnu/libblas.so.3`). */
  readonly link: string;
  /** The alternative's name (`libblas.so.3-x86_64-linux-gnu`): the file under `/etc/alternatives`. */
  readonly name: string;
  /** The absolute path this choice points at. */
  readonly path: string;
  /** Higher wins in automatic mode. */
  readonly priority: number;
  readonly slaves: readonly AlternativeSlave[];
}

/** What a postinst registers: the commands read, and those that cannot be known statically (the command's text and why). */
export interface ParsedAlternatives {
  readonly installs: AlternativeInstall[];
  readonly unresolved: string[];
}

/** Shell words of one logical line, split into commands at unquoted `;`, `&&`, `||`, `|`, `&`, `(`, `)`, and cut at a comment. */
function commands(line: string): string[][] {
  const out: string[][] = [[]];
  let word: string | undefined;
  const end = () => {
    if (word !== undefined) out[out.length - 1].push(word);
    word = undefined;
  };
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (c === "'" || c === '"') {
      const close = line.indexOf(c, i + 1);
      if (close < 0) return out; // an unterminated quote: a multi-line string, not a command
      word = (word ?? '') + line.slice(i + 1, close);
      i = close;
    } else if (c === ' ' || c === '\t') end();
    else if (c === '#' && word === undefined) break;
    else if (c === ';' || c === '&' || c === '|' || c === '(' || c === ')') {
      end();
      out.push([]);
    } else word = (word ?? '') + c;
  }
  end();
  return out;
}

/** Shell keywords after which a command starts. */
const KEYWORDS = new Set(['then', 'do', 'else', 'elif', 'if', 'while', 'until', '!', '{']);

/**
 * Find the `update-alternatives --install` registrations in a maintainer script.
 * @param script the `postinst` text (POSIX shell).
 * @param pkg the package name recorded in each registration.
 * @returns the registrations in script order, and the commands that use shell expansions or are
 *   malformed (each as `PKG: text (why)`), which are not applied.
 */
export function parseAlternatives(script: string, pkg: string): ParsedAlternatives {
  const installs: AlternativeInstall[] = [];
  const unresolved: string[] = [];
  for (const line of script.replace(/\\\r?\n/g, ' ').split('\n')) {
    if (!line.includes('update-alternatives')) continue;
    for (let words of commands(line)) {
      while (words.length && KEYWORDS.has(words[0])) words = words.slice(1);
      if (words[0] !== 'update-alternatives' && !words[0]?.endsWith('/update-alternatives')) continue;
      const at = words.indexOf('--install');
      if (at < 0) continue; // --remove, --query, --set…: nothing a first install needs
      const text = words.join(' ');
      const args = words.slice(at + 1);
      if (args.some((a) => /[$`]/.test(a))) {
        unresolved.push(`${pkg}: ${text} (uses shell expansions)`);
        continue;
      }
      const [link, name, target, priority, ...rest] = args;
      const slaves: AlternativeSlave[] = [];
      let ok = link?.startsWith('/') && !!name && target?.startsWith('/') && /^-?[0-9]+$/.test(priority ?? '');
      for (let i = 0; ok && i < rest.length; ) {
        if (rest[i] === '--slave' && rest[i + 1]?.startsWith('/') && rest[i + 2] && rest[i + 3]?.startsWith('/')) {
          slaves.push({ link: rest[i + 1], name: rest[i + 2], path: rest[i + 3] });
          i += 4;
        } else if (/^--(quiet|verbose|debug|force)$/.test(rest[i])) i += 1;
        else ok = false;
      }
      if (!ok) unresolved.push(`${pkg}: ${text} (not an --install LINK NAME PATH PRIORITY [--slave LINK NAME PATH]… command)`);
      else installs.push({ package: pkg, link, name, path: target, priority: Number(priority), slaves });
    }
  }
  return { installs, unresolved };
}

/**
 * A maintainer script of a `.deb` (`postinst`, `preinst`…), read from its control member
 * (`dpkg-deb --ctrl-tarfile`, dpkg-deb(1)).
 * @returns its text, or undefined when the package has none.
 * @throws Error with dpkg-deb's message when the file is not a readable .deb.
 */
export async function debMaintainerScript(debPath: string, script: string): Promise<string | undefined> {
  const control: Readable = readOutput(['dpkg-deb', '--ctrl-tarfile', debPath], (f) =>
    f.error
      ? new Error(`cannot run dpkg-deb to read ${debPath} (${f.error.message}): install the dpkg package`)
      : new Error(`dpkg-deb --ctrl-tarfile ${debPath} failed (${f.signal ?? `exit ${f.exitCode}`}): ${f.stderr.trim() || 'no message'}`),
  );
  const extract = tarStream().extract();
  let text: string | undefined;
  const read = (async () => {
    for await (const entry of extract) {
      if (entry.header.name.replace(/^\.\//, '') === script && entry.header.type === 'file') {
        const chunks: Buffer[] = [];
        for await (const c of entry) chunks.push(c as Buffer);
        text = Buffer.concat(chunks).toString('utf8');
      } else entry.resume();
    }
  })();
  await Promise.all([pipeline(control, extract), read]);
  return text;
}

/** An alternative as applied: its name, link, the chosen path and how many choices it had. */
export interface AppliedAlternative {
  readonly name: string;
  readonly link: string;
  readonly path: string;
  readonly package: string;
  readonly choices: number;
}

/**
 * Apply registrations to an unpacked root filesystem as update-alternatives would in automatic mode
 * (see the module comment): links, `/etc/alternatives/NAME`, `/var/lib/dpkg/alternatives/NAME`.
 * @param rootfs the image's root directory on disk.
 * @param installs every package's registrations, in package (install) order.
 * @param modes the image's recorded modes: links made here are removed from it, the administrative
 *   files get 0644.
 * @returns the alternatives applied, sorted by name, and notes for the log (choices dropped because
 *   their path is missing, links not made because a package ships a file there).
 */
export function applyAlternatives(rootfs: string, installs: readonly AlternativeInstall[], modes: PackageModes): { applied: AppliedAlternative[]; notes: string[] } {
  const notes: string[] = [];
  const at = (p: string) => path.join(rootfs, p);
  const present = (p: string) => {
    try {
      lstatSync(at(p));
      return true;
    } catch {
      return false;
    }
  };
  const byName = new Map<string, AlternativeInstall[]>();
  for (const i of installs) {
    if (!present(i.path)) {
      notes.push(`alternative ${i.name}: ${i.path} (from ${i.package}) is not in the image, not registered`);
      continue;
    }
    const list = byName.get(i.name) ?? [];
    // A second registration of the same path replaces the first (update-alternatives --install again).
    const same = list.findIndex((c) => c.path === i.path);
    if (same >= 0) list[same] = i;
    else list.push(i);
    byName.set(i.name, list);
  }
  const link = (from: string, to: string): boolean => {
    const rel = from.replace(/^\/+/, '');
    const file = at(rel);
    try {
      if (!lstatSync(file).isSymbolicLink()) {
        notes.push(`alternative link ${from}: the image has a file there, not replaced`);
        return false;
      }
      rmSync(file);
    } catch {
      // not there yet
    }
    mkdirSync(path.dirname(file), { recursive: true });
    symlinkSync(to, file);
    modes.delete(rel);
    return true;
  };
  const applied: AppliedAlternative[] = [];
  for (const name of [...byName.keys()].sort()) {
    const choices = byName.get(name) as AlternativeInstall[];
    const best = choices.reduce((a, b) => (b.priority > a.priority ? b : a));
    const master = choices[0].link;
    const slaveNames: Array<{ name: string; link: string }> = [];
    for (const c of choices) for (const s of c.slaves) if (!slaveNames.some((n) => n.name === s.name)) slaveNames.push({ name: s.name, link: s.link });
    link(`/etc/alternatives/${name}`, best.path);
    link(best.link, `/etc/alternatives/${name}`);
    for (const s of best.slaves) {
      if (!present(s.path)) {
        notes.push(`alternative ${name}: slave ${s.name}'s ${s.path} is not in the image, link ${s.link} not made`);
        continue;
      }
      link(`/etc/alternatives/${s.name}`, s.path);
      link(s.link, `/etc/alternatives/${s.name}`);
    }
    // dpkg's administrative file: status, master link, slave (name, link) pairs, a blank line, then
    // per choice its path, priority and one line per slave (its path or empty), then a blank line.
    const lines = ['auto', master, ...slaveNames.flatMap((s) => [s.name, s.link]), ''];
    for (const c of choices) lines.push(c.path, String(c.priority), ...slaveNames.map((s) => c.slaves.find((x) => x.name === s.name)?.path ?? ''));
    lines.push('');
    const admin = `var/lib/dpkg/alternatives/${name}`;
    mkdirSync(path.dirname(at(admin)), { recursive: true });
    writeFileSync(at(admin), `${lines.join('\n')}\n`);
    modes.set(admin, { kind: 'file', mode: 0o644 });
    applied.push({ name, link: best.link, path: best.path, package: best.package, choices: choices.length });
  }
  return { applied, notes };
}
