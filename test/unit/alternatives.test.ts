/**
 * The debian recipe's reading of postinst scripts (rules/debian/alternatives.ts): which
 * update-alternatives and ucf commands are found, which are left out, and the links and files
 * made in a root filesystem (the auto mode's choice by priority).
 */
import { lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { applyAlternatives, applyTemplates, parsePostinst } from '../../rules/debian/alternatives.js';

const test = suite('alternatives');

const made: string[] = [];
test.after(() => {
  for (const dir of made) rmSync(dir, { recursive: true, force: true });
});

/** libblas3 3.11.0-2's postinst, as shipped. */
const LIBBLAS3 = `#!/bin/sh

set -e

update-alternatives --install /usr/lib/x86_64-linux-gnu/libblas.so.3 \\
                    libblas.so.3-x86_64-linux-gnu /usr/lib/x86_64-linux-gnu/blas/libblas.so.3 10



exit 0
`;

test('parsePostinst: continuation lines, slaves, comments, commands after then/&&, and computed words left out', () => {
  assert.equal(parsePostinst(LIBBLAS3, 'libblas3'), {
    alternatives: [{ link: '/usr/lib/x86_64-linux-gnu/libblas.so.3', name: 'libblas.so.3-x86_64-linux-gnu', path: '/usr/lib/x86_64-linux-gnu/blas/libblas.so.3', priority: 10, slaves: [], package: 'libblas3' }],
    ucf: [],
    skipped: [],
  });
  const script = `#!/bin/sh
# update-alternatives --install /usr/bin/commented x /usr/bin/x 1
if [ "$1" = configure ]; then update-alternatives --install /usr/bin/open open /usr/bin/xdg-open 50 \\
    --slave /usr/share/man/man1/open.1.gz open.1.gz /usr/share/man/man1/xdg-open.1.gz; fi
[ -x /usr/bin/x ] && update-alternatives --install /usr/bin/editor editor "$EDITOR" 20
update-alternatives --remove open /usr/bin/old
ucf /usr/share/foo/foo.conf /etc/foo.conf
ucf "$tmp" /etc/R/Renviron
`;
  assert.equal(parsePostinst(script, 'p'), {
    alternatives: [
      {
        link: '/usr/bin/open',
        name: 'open',
        path: '/usr/bin/xdg-open',
        priority: 50,
        slaves: [{ link: '/usr/share/man/man1/open.1.gz', name: 'open.1.gz', path: '/usr/share/man/man1/xdg-open.1.gz' }],
        package: 'p',
      },
    ],
    ucf: [{ template: '/usr/share/foo/foo.conf', dest: '/etc/foo.conf', package: 'p' }],
    skipped: ['update-alternatives --install /usr/bin/editor editor "$EDITOR" 20', 'ucf "$tmp" /etc/R/Renviron'],
  });
});

test('applyAlternatives: the highest priority wins, links go through /etc/alternatives, missing paths and taken links are left alone', () => {
  const root = mkdtempSync(path.join(tmpdir(), 'graph-alt-'));
  made.push(root);
  for (const f of ['usr/lib/blas/libblas.so.3', 'usr/lib/openblas/libblas.so.3', 'usr/bin/mawk', 'usr/bin/taken', 'usr/bin/real-vi']) {
    mkdirSync(path.dirname(path.join(root, f)), { recursive: true });
    writeFileSync(path.join(root, f), 'x');
  }
  const alt = (link: string, name: string, p: string, priority: number, pkg: string, slaves: { link: string; name: string; path: string }[] = []) => ({ link, name, path: p, priority, slaves, package: pkg });
  const applied = applyAlternatives(root, [
    alt('/usr/lib/libblas.so.3', 'libblas.so.3', '/usr/lib/blas/libblas.so.3', 10, 'libblas3'),
    alt('/usr/lib/libblas.so.3', 'libblas.so.3', '/usr/lib/openblas/libblas.so.3', 100, 'libopenblas0'),
    alt('/usr/bin/awk', 'awk', '/usr/bin/mawk', 5, 'mawk', [{ link: '/usr/share/man/man1/awk.1.gz', name: 'awk.1.gz', path: '/usr/share/man/man1/mawk.1.gz' }]),
    alt('/usr/bin/taken', 'taken', '/usr/bin/mawk', 1, 'x'),
    alt('/usr/bin/vi', 'vi', '/usr/bin/not-installed', 1, 'y'),
  ]);
  assert.equal(applied, [
    { name: 'awk', path: '/usr/bin/mawk', package: 'mawk', links: ['etc/alternatives/awk', 'usr/bin/awk'] },
    { name: 'libblas.so.3', path: '/usr/lib/openblas/libblas.so.3', package: 'libopenblas0', links: ['etc/alternatives/libblas.so.3', 'usr/lib/libblas.so.3'] },
  ]);
  assert.is(readlinkSync(path.join(root, 'usr/lib/libblas.so.3')), '/etc/alternatives/libblas.so.3');
  assert.is(readlinkSync(path.join(root, 'etc/alternatives/libblas.so.3')), '/usr/lib/openblas/libblas.so.3');
  assert.is(lstatSync(path.join(root, 'usr/share/man/man1/awk.1.gz'), { throwIfNoEntry: false }), undefined, 'a slave whose file is missing is not linked');
  assert.ok(lstatSync(path.join(root, 'usr/bin/taken')).isFile(), 'an existing file is never replaced');
});

test('applyTemplates: copied with the template mode when the destination is free; a declared template that is missing is an error', () => {
  const root = mkdtempSync(path.join(tmpdir(), 'graph-tpl-'));
  made.push(root);
  mkdirSync(path.join(root, 'usr/lib/R/etc'), { recursive: true });
  mkdirSync(path.join(root, 'etc'), { recursive: true });
  writeFileSync(path.join(root, 'usr/lib/R/etc/Renviron.ucf'), 'R_LIBS_SITE=x\n');
  writeFileSync(path.join(root, 'etc/kept'), 'mine\n');
  const written: [string, string, number][] = [];
  const write = (rel: string, bytes: Buffer, mode: number) => {
    written.push([rel, bytes.toString(), mode]);
    writeFileSync(path.join(root, rel), bytes);
  };
  const modeOf = (rel: string) => (rel === 'usr/lib/R/etc/Renviron.ucf' ? 0o640 : undefined);
  assert.equal(applyTemplates(root, [{ dest: '/etc/R/Renviron', template: '/usr/lib/R/etc/Renviron.ucf' }, { dest: '/etc/kept', template: '/usr/lib/R/etc/Renviron.ucf' }], true, (rel, b, m) => {
    mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
    write(rel, b, m);
  }, modeOf), [{ dest: '/etc/R/Renviron', template: '/usr/lib/R/etc/Renviron.ucf' }]);
  assert.equal(written, [['etc/R/Renviron', 'R_LIBS_SITE=x\n', 0o640]]);
  assert.is(readFileSync(path.join(root, 'etc/kept'), 'utf8'), 'mine\n');
  assert.equal(applyTemplates(root, [{ dest: '/etc/x', template: '/usr/share/none' }], false, write, modeOf), []);
  assert.throws(
    () => applyTemplates(root, [{ dest: '/etc/x', template: '/usr/share/none' }], true, write, modeOf),
    (e: Error) => e.message === 'template /usr/share/none (for /etc/x) is not a file in the image: no package of the image installs it',
  );
});

test.run();
