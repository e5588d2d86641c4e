/**
 * update-alternatives for `debian:` images (rules/debian/alternatives.ts): registrations read from
 * postinst scripts (the real libblas3, liblapack3, tar and python3-future lines, continuations,
 * quotes, conditions, shell expansions), applied to a root filesystem on disk as automatic mode
 * would (priority, ties, missing paths, slaves, a shipped file left alone, dpkg's administrative
 * file), and a postinst read from a .deb built here with dpkg-deb.
 */
import { spawnSync } from 'node:child_process';
import { lstatSync, mkdirSync, readFileSync, readlinkSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { applyAlternatives, debMaintainerScript, parseAlternatives, type AlternativeInstall } from '../../rules/debian/alternatives.js';
import type { PackageModes } from '../../rules/debian/extract.js';
import { workspace, writeFiles } from '../helpers.js';

const test = suite('alternatives');

// libblas3 3.11.0-2's postinst, verbatim.
const LIBBLAS3 = `#!/bin/sh

set -e

update-alternatives --install /usr/lib/x86_64-linux-gnu/libblas.so.3 \\
                    libblas.so.3-x86_64-linux-gnu /usr/lib/x86_64-linux-gnu/blas/libblas.so.3 10



exit 0
`;

// tar 1.34's postinst (its case arm), python3-future's, and lines that must not count.
const TAR = `#!/bin/sh
set -e
case "$1" in
    configure)
	update-alternatives --install /usr/sbin/rmt rmt /usr/sbin/rmt-tar 50 \\
		--slave /usr/share/man/man8/rmt.8.gz rmt.8.gz \\
			/usr/share/man/man8/rmt-tar.8.gz 
    ;;
esac
`;
const OTHERS = `if [ "$1" = "configure" ]; then update-alternatives --quiet --install "/usr/bin/futurize" futurize '/usr/bin/python3-futurize' 300; fi
# update-alternatives --install /usr/bin/commented out /x 1
update-alternatives --remove rmt /usr/sbin/rmt-old
update-alternatives --install /usr/bin/\${TRIPLET}-cc cc /usr/bin/gcc 20
echo "run update-alternatives --install yourself"
update-alternatives --install /usr/bin/x x relative/path 5
`;

test('registrations are read from postinst scripts; expansions and malformed commands are reported, not guessed', () => {
  assert.equal(parseAlternatives(LIBBLAS3, 'libblas3'), {
    installs: [{ package: 'libblas3', link: '/usr/lib/x86_64-linux-gnu/libblas.so.3', name: 'libblas.so.3-x86_64-linux-gnu', path: '/usr/lib/x86_64-linux-gnu/blas/libblas.so.3', priority: 10, slaves: [] }],
    unresolved: [],
  });
  assert.equal(parseAlternatives(TAR, 'tar'), {
    installs: [{ package: 'tar', link: '/usr/sbin/rmt', name: 'rmt', path: '/usr/sbin/rmt-tar', priority: 50, slaves: [{ link: '/usr/share/man/man8/rmt.8.gz', name: 'rmt.8.gz', path: '/usr/share/man/man8/rmt-tar.8.gz' }] }],
    unresolved: [],
  });
  assert.equal(parseAlternatives(OTHERS, 'x'), {
    installs: [{ package: 'x', link: '/usr/bin/futurize', name: 'futurize', path: '/usr/bin/python3-futurize', priority: 300, slaves: [] }],
    unresolved: [
      'x: update-alternatives --install /usr/bin/${TRIPLET}-cc cc /usr/bin/gcc 20 (uses shell expansions)',
      'x: update-alternatives --install /usr/bin/x x relative/path 5 (not an --install LINK NAME PATH PRIORITY [--slave LINK NAME PATH]… command)',
    ],
  });
  assert.equal(parseAlternatives('#!/bin/sh\nldconfig\n', 'y'), { installs: [], unresolved: [] });
});

const choice = (pkg: string, name: string, link: string, target: string, priority: number, slaves: AlternativeInstall['slaves'] = []): AlternativeInstall => ({ package: pkg, name, link, path: target, priority, slaves });

test('applied as automatic mode does: highest priority among present paths, first on a tie, slaves, dpkg admin files', () => {
  const root = workspace({});
  writeFiles(root, {
    'usr/lib/blas/libblas.so.3': 'reference\n',
    'usr/lib/openblas/libblas.so.3': 'openblas\n',
    'usr/sbin/rmt-tar': 'rmt\n',
    'usr/bin/editor-a': 'a\n',
    'usr/bin/editor-b': 'b\n',
    'etc/shipped.conf': 'a real file\n',
    'etc/shipped.conf.fallback': 'fallback\n',
  });
  mkdirSync(path.join(root, 'usr/share/man/man8'), { recursive: true });
  symlinkSync('/old/target', path.join(root, 'usr/sbin/rmt')); // a stale link is replaced
  const modes: PackageModes = new Map([['usr/sbin/rmt', { kind: 'file', mode: 0o755 }]]);
  const { applied, notes } = applyAlternatives(
    root,
    [
      choice('libblas3', 'libblas.so.3', '/usr/lib/libblas.so.3', '/usr/lib/blas/libblas.so.3', 10),
      choice('libopenblas0', 'libblas.so.3', '/usr/lib/libblas.so.3', '/usr/lib/openblas/libblas.so.3', 100),
      choice('libmissing', 'libblas.so.3', '/usr/lib/libblas.so.3', '/usr/lib/missing/libblas.so.3', 1000),
      choice('tar', 'rmt', '/usr/sbin/rmt', '/usr/sbin/rmt-tar', 50, [{ link: '/usr/share/man/man8/rmt.8.gz', name: 'rmt.8.gz', path: '/usr/share/man/man8/rmt-tar.8.gz' }]),
      choice('a', 'editor', '/usr/bin/editor', '/usr/bin/editor-a', 5),
      choice('b', 'editor', '/usr/bin/editor', '/usr/bin/editor-b', 5),
      choice('conf', 'shipped.conf', '/etc/shipped.conf', '/etc/shipped.conf.fallback', 1),
    ],
    modes,
  );
  assert.equal(applied, [
    { name: 'editor', link: '/usr/bin/editor', path: '/usr/bin/editor-a', package: 'a', choices: 2 },
    { name: 'libblas.so.3', link: '/usr/lib/libblas.so.3', path: '/usr/lib/openblas/libblas.so.3', package: 'libopenblas0', choices: 2 },
    { name: 'rmt', link: '/usr/sbin/rmt', path: '/usr/sbin/rmt-tar', package: 'tar', choices: 1 },
    { name: 'shipped.conf', link: '/etc/shipped.conf', path: '/etc/shipped.conf.fallback', package: 'conf', choices: 1 },
  ]);
  assert.equal(notes, [
    'alternative libblas.so.3: /usr/lib/missing/libblas.so.3 (from libmissing) is not in the image, not registered',
    "alternative rmt: slave rmt.8.gz's /usr/share/man/man8/rmt-tar.8.gz is not in the image, link /usr/share/man/man8/rmt.8.gz not made",
    'alternative link /etc/shipped.conf: the image has a file there, not replaced',
  ]);
  const link = (p: string) => readlinkSync(path.join(root, p));
  assert.is(link('usr/lib/libblas.so.3'), '/etc/alternatives/libblas.so.3');
  assert.is(link('etc/alternatives/libblas.so.3'), '/usr/lib/openblas/libblas.so.3');
  assert.is(link('usr/sbin/rmt'), '/etc/alternatives/rmt');
  assert.is(link('etc/alternatives/rmt'), '/usr/sbin/rmt-tar');
  assert.is(link('usr/bin/editor'), '/etc/alternatives/editor');
  assert.is(link('etc/alternatives/editor'), '/usr/bin/editor-a');
  assert.not.ok(lstatSync(path.join(root, 'etc/shipped.conf')).isSymbolicLink());
  assert.is(readFileSync(path.join(root, 'etc/shipped.conf'), 'utf8'), 'a real file\n');
  assert.throws(() => lstatSync(path.join(root, 'usr/share/man/man8/rmt.8.gz')));
  // dpkg's administrative files: update-alternatives --display reads these.
  const admin = (name: string) => readFileSync(path.join(root, 'var/lib/dpkg/alternatives', name), 'utf8');
  assert.is(admin('libblas.so.3'), 'auto\n/usr/lib/libblas.so.3\n\n/usr/lib/blas/libblas.so.3\n10\n/usr/lib/openblas/libblas.so.3\n100\n\n');
  assert.is(admin('rmt'), 'auto\n/usr/sbin/rmt\nrmt.8.gz\n/usr/share/man/man8/rmt.8.gz\n\n/usr/sbin/rmt-tar\n50\n/usr/share/man/man8/rmt-tar.8.gz\n\n');
  assert.equal(modes.get('var/lib/dpkg/alternatives/rmt'), { kind: 'file', mode: 0o644 });
  assert.is(modes.get('usr/sbin/rmt'), undefined, 'a link has no mode of its own');
});

test("dpkg's own update-alternatives accepts the administrative files written", () => {
  const root = workspace({});
  writeFiles(root, { 'usr/sbin/rmt-tar': 'rmt\n', 'usr/share/man/man8/rmt-tar.8.gz': 'man\n' });
  applyAlternatives(root, parseAlternatives(TAR, 'tar').installs, new Map());
  const r = spawnSync('update-alternatives', ['--altdir', path.join(root, 'etc/alternatives'), '--admindir', path.join(root, 'var/lib/dpkg/alternatives'), '--query', 'rmt'], { encoding: 'utf8' });
  assert.is(r.status, 0, r.stderr);
  assert.match(r.stdout, 'Name: rmt\nLink: /usr/sbin/rmt\nSlaves:\n rmt.8.gz /usr/share/man/man8/rmt.8.gz\nStatus: auto\nBest: /usr/sbin/rmt-tar\nValue: /usr/sbin/rmt-tar\n');
  assert.match(r.stdout, 'Alternative: /usr/sbin/rmt-tar\nPriority: 50\nSlaves:\n rmt.8.gz /usr/share/man/man8/rmt-tar.8.gz\n');
});

test("a .deb's postinst is read from its control member; a package without one gives undefined", async () => {
  const dir = workspace({});
  const build = (name: string, postinst?: string) => {
    const pkg = path.join(dir, name);
    writeFiles(pkg, { 'DEBIAN/control': `Package: ${name}\nVersion: 1\nArchitecture: all\nMaintainer: t <t@example.org>\nDescription: t\n`, 'usr/share/doc/x': 'x\n' });
    if (postinst) writeFileSync(path.join(pkg, 'DEBIAN/postinst'), postinst, { mode: 0o755 });
    const r = spawnSync('dpkg-deb', ['--root-owner-group', '--build', pkg, `${pkg}.deb`], { encoding: 'utf8' });
    assert.is(r.status, 0, r.stderr);
    return `${pkg}.deb`;
  };
  assert.is(await debMaintainerScript(build('withscript', LIBBLAS3), 'postinst'), LIBBLAS3);
  assert.is(await debMaintainerScript(build('noscript'), 'postinst'), undefined);
  writeFileSync(path.join(dir, 'bad.deb'), 'not a deb');
  try {
    await debMaintainerScript(path.join(dir, 'bad.deb'), 'postinst');
    assert.unreachable('a non-.deb must be refused');
  } catch (e) {
    assert.match((e as Error).message, `dpkg-deb --ctrl-tarfile ${path.join(dir, 'bad.deb')} failed (exit 2): `);
  }
});

test.run();
