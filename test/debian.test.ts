/**
 * Debian packages for `debian:` images: stanza and Release parsing, version ordering, relations and
 * the closure, apt sources, the lock file, verified downloads (against a loopback HTTP server), .deb
 * reading (against a .deb built here with dpkg-deb), and one end-to-end run against the host's
 * configured mirror.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, linkSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import tar from 'tar-stream';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import {
  chooseMirror,
  compareVersions,
  debControl,
  debDataTar,
  debianArchitecture,
  debModes,
  DigestMismatchError,
  dpkgStatusEntry,
  emptyLock,
  fetchDeb,
  fetchDebs,
  findMirror,
  formatLock,
  HttpError,
  loadIndex,
  parseDeb822Sources,
  parseLock,
  parseOneLineSources,
  parsePackages,
  parseRelations,
  parseRelease,
  parseStanzas,
  readLock,
  resolveClosure,
  resolvePackages,
  ResolveError,
  withLockedImage,
  writeLock,
  type DebianMirror,
  type PackageIndex,
  type PackagePin,
} from '../rules/debian/debian.js';
import { rootfsModes } from '../rules/debian/image.js';
import { entriesForCopy } from '../rules/oci/layer.js';

const tmp = () => mkdtempSync(path.join(tmpdir(), 'graph-debian-'));
const sha256 = (data: string | Uint8Array) => createHash('sha256').update(data).digest('hex');
const errorOf = (f: () => unknown): Error => {
  try {
    f();
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected an error');
};
const rejectionOf = async (p: Promise<unknown>): Promise<Error> => {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a rejection');
};

// ---------------------------------------------------------------------------------------------
const stanzas = suite('debian stanzas');

const PACKAGES = `Package: app
Version: 1.0-1
Installed-Size: 12
Architecture: amd64
Pre-Depends: libc6 (>= 2.36)
Depends: mawk | awk, libssl3 (>= 3.0.0), python3:any
Recommends: docs
Suggests: extras
Description: an application
 with a long description
 .
 over several lines
Filename: pool/main/a/app/app_1.0-1_amd64.deb
Size: 1000
SHA256: ${'A'.repeat(64)}
Priority: optional

Package: libc6
Version: 2.36-9+deb12u10
Architecture: amd64
Multi-Arch: same
Filename: pool/main/g/glibc/libc6_2.36-9+deb12u10_amd64.deb
Size: 2000
SHA256: ${'b'.repeat(64)}
Priority: required
Essential: yes

Package: no-filename
Version: 1
Architecture: all
`;

stanzas('a Packages file: kept fields, continuation lines, and stanzas that cannot be pinned are dropped', () => {
  assert.equal(parsePackages(PACKAGES), [
    {
      name: 'app',
      version: '1.0-1',
      architecture: 'amd64',
      depends: 'mawk | awk, libssl3 (>= 3.0.0), python3:any',
      preDepends: 'libc6 (>= 2.36)',
      filename: 'pool/main/a/app/app_1.0-1_amd64.deb',
      size: 1000,
      sha256: 'a'.repeat(64),
      priority: 'optional',
      essential: false,
    },
    {
      name: 'libc6',
      version: '2.36-9+deb12u10',
      architecture: 'amd64',
      multiArch: 'same',
      filename: 'pool/main/g/glibc/libc6_2.36-9+deb12u10_amd64.deb',
      size: 2000,
      sha256: 'b'.repeat(64),
      priority: 'required',
      essential: true,
    },
  ]);
});

stanzas('generic stanzas keep field order and multi-line values verbatim; CRLF and whitespace-only separators', () => {
  const [first, second] = parseStanzas('Package: app\r\nDescription: short\r\n more\r\n .\r\n end\r\n \t\r\nPackage: b\r\n');
  assert.equal([...first], [
    ['Package', 'app'],
    ['Description', 'short\n more\n .\n end'],
  ]);
  assert.equal([...second], [['Package', 'b']]);
});

stanzas('Release and InRelease: fields and the SHA256 list; the signature armour is stripped', () => {
  const release = `Origin: Debian
Suite: stable
Codename: bookworm
Architectures: amd64 arm64
Acquire-By-Hash: yes
MD5Sum:
 0123456789abcdef0123456789abcdef 50 main/binary-amd64/Packages
SHA256:
 ${'1'.repeat(64)}     50 main/binary-amd64/Packages
 ${'2'.repeat(64)}     20 main/binary-amd64/Packages.gz
`;
  const signed = `-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n${release}-----BEGIN PGP SIGNATURE-----\n\nxyz\n-----END PGP SIGNATURE-----\n`;
  for (const text of [release, signed]) {
    const r = parseRelease(text);
    assert.is(r.fields.get('Codename'), 'bookworm');
    assert.is(r.fields.get('Acquire-By-Hash'), 'yes');
    assert.equal([...r.sha256], [
      ['main/binary-amd64/Packages', { sha256: '1'.repeat(64), size: 50 }],
      ['main/binary-amd64/Packages.gz', { sha256: '2'.repeat(64), size: 20 }],
    ]);
  }
});

stanzas('the Debian architecture of Node arches', () => {
  assert.is(debianArchitecture('x64'), 'amd64');
  assert.is(debianArchitecture('arm64'), 'arm64');
  assert.is(errorOf(() => debianArchitecture('mips')).message, "no Debian architecture is known for Node's 'mips': give the image's architecture explicitly");
});

stanzas.run();

// ---------------------------------------------------------------------------------------------
const versions = suite('debian versions');

versions('compareVersions follows policy §5.6.12', () => {
  const less: [string, string][] = [
    ['1.0~rc1', '1.0'],
    ['1.0~~', '1.0~'],
    ['1.0~', '1.0'],
    ['2.0', '1:0.9'],
    ['1.0-1', '1.0-1+deb12u1'],
    ['2.36-9+deb12u9', '2.36-9+deb12u10'],
    ['1.2', '1.10'],
    ['1.0', '1.0.0'],
    ['1.0', '1.0a'],
    ['1.0a', '1.0+'],
    ['1.0', '1.0+b1'],
    ['1.0-1', '1.0-1.1'],
    ['1.0-9', '1.0-10'],
    ['0.9-1', '1.0'],
    ['1:1.35.0-4+deb12u1', '1:1.35.0-4+deb12u1+b1'],
    ['3.0.11-1~deb12u2', '3.0.11-1'],
    ['9', '10'],
  ];
  for (const [a, b] of less) {
    assert.ok(compareVersions(a, b) < 0, `${a} < ${b}`);
    assert.ok(compareVersions(b, a) > 0, `${b} > ${a}`);
  }
  for (const [a, b] of [
    ['1.0', '1.0'],
    ['0:1.0', '1.0'],
    ['1.0', '1.0-0'],
    ['1.001', '1.1'],
    ['1.0-1', '1.0-01'],
  ]) {
    assert.is(compareVersions(a, b), 0, `${a} = ${b}`);
  }
});

versions('relations: alternatives, qualifiers, versions, obsolete operators, source-only decorations', () => {
  assert.equal(parseRelations('a (>= 1.0), b | c:any (<< 2~), d:native, e (< 3), f (>4), g [amd64] <!nocheck>'), [
    [{ name: 'a', op: '>=', version: '1.0' }],
    [{ name: 'b' }, { name: 'c', arch: 'any', op: '<<', version: '2~' }],
    [{ name: 'd', arch: 'native' }],
    [{ name: 'e', op: '<=', version: '3' }],
    [{ name: 'f', op: '>=', version: '4' }],
    [{ name: 'g' }],
  ]);
  assert.equal(parseRelations(undefined), []);
  const e = errorOf(() => parseRelations('a (>= 1'));
  assert.is(e.message, "malformed package relation 'a (>= 1' in 'a (>= 1'");
});

versions.run();

// ---------------------------------------------------------------------------------------------
const resolve = suite('debian resolve');

/** A fixture index from `name version [arch] ; Field: value ; …` specs. */
function index(...specs: string[]): PackageIndex {
  const text = specs
    .map((spec) => {
      const [head, ...fields] = spec.split(' ; ');
      const [name, version, arch = 'amd64'] = head.split(' ');
      const file = `pool/main/${name[0]}/${name}/${name}_${version}_${arch}.deb`;
      return [`Package: ${name}`, `Version: ${version}`, `Architecture: ${arch}`, ...fields, `Filename: ${file}`, `Size: ${name.length}`, `SHA256: ${sha256(name + version)}`].join('\n');
    })
    .join('\n\n');
  return { suite: 'bookworm', architecture: 'amd64', components: ['main'], packages: parsePackages(text) };
}

const names = (pins: readonly PackagePin[]) => pins.map((p) => `${p.name}=${p.version}`);

const WORLD = index(
  'app 1.0-1 ; Pre-Depends: libc6 (>= 2.36) ; Depends: mawk | awk, libssl3 (>= 3.0.0), python3:any ; Recommends: docs ; Suggests: extras',
  'libc6 2.36-9 ; Depends: libgcc-s1',
  'libgcc-s1 12.2.0-14',
  'mawk 1.3.4 ; Provides: awk',
  'gawk 1:5.2.1 ; Provides: awk',
  'libssl3 3.0.11-1~deb12u2 ; Depends: libc6',
  'python3 3.11.2-1+b1 all',
  'docs 1 all',
  'extras 1 all',
  'old 1.0 ; Depends: libc6 (<< 2.0)',
  'needs-mta 1 ; Depends: mail-transport-agent',
  'exim4 4.96 ; Provides: mail-transport-agent ; Priority: standard',
  'alpha-mta 1 ; Provides: mail-transport-agent ; Priority: optional',
  'versioned-user 1 ; Depends: libfoo-abi (>= 2)',
  'libfoo2 2 ; Provides: libfoo-abi (= 2)',
  'libfoo-unversioned 1 ; Provides: libfoo-abi',
  'wrong-arch 1 ; Depends: libc6:i386 | nothing-here',
  'pkg-multi 1.0',
  'pkg-multi 2.0',
  'wants-old-multi 1 ; Depends: pkg-multi (<< 2)',
);

resolve('the closure over Pre-Depends and Depends: first alternative, :any, sorted, no Recommends or Suggests', () => {
  assert.equal(names(resolvePackages(WORLD, ['app'])), ['app=1.0-1', 'libc6=2.36-9', 'libgcc-s1=12.2.0-14', 'libssl3=3.0.11-1~deb12u2', 'mawk=1.3.4', 'python3=3.11.2-1+b1']);
  const [pin] = resolvePackages(WORLD, ['libgcc-s1']);
  assert.equal(pin, { name: 'libgcc-s1', version: '12.2.0-14', architecture: 'amd64', filename: 'pool/main/l/libgcc-s1/libgcc-s1_12.2.0-14_amd64.deb', size: 9, sha256: sha256('libgcc-s112.2.0-14') });
});

resolve('a requested package satisfies a later alternative or virtual dependency', () => {
  assert.equal(names(resolvePackages(WORLD, ['gawk', 'app'])), ['app=1.0-1', 'gawk=1:5.2.1', 'libc6=2.36-9', 'libgcc-s1=12.2.0-14', 'libssl3=3.0.11-1~deb12u2', 'python3=3.11.2-1+b1']);
  assert.equal(names(resolvePackages(WORLD, ['alpha-mta', 'needs-mta'])), ['alpha-mta=1', 'needs-mta=1']);
  // Requested by name, a real package is taken even though another requested package provides that name.
  assert.equal(names(resolvePackages(index('static 1 ; Provides: dynamic', 'dynamic 1'), ['static', 'dynamic'])), ['dynamic=1', 'static=1']);
  assert.equal(names(resolvePackages(index('static 1 ; Provides: virt', 'other 1 ; Provides: virt'), ['static', 'virt'])), ['static=1']);
});

resolve('virtual packages: the provider of highest Priority; a versioned dependency needs a versioned Provides', () => {
  assert.equal(names(resolvePackages(WORLD, ['needs-mta'])), ['exim4=4.96', 'needs-mta=1']);
  assert.equal(names(resolvePackages(WORLD, ['versioned-user'])), ['libfoo2=2', 'versioned-user=1']);
  const r = resolveClosure(WORLD, ['awk']);
  assert.equal(names(r.packages), ['gawk=1:5.2.1']);
  assert.equal([...r.chains], [['gawk', ['awk', 'gawk']]]);
});

resolve('the chains say why each package is there', () => {
  const r = resolveClosure(WORLD, ['app']);
  assert.equal(r.chains.get('libgcc-s1'), ['app', 'libc6', 'libgcc-s1']);
  assert.equal(r.chains.get('app'), ['app']);
});

resolve('versions: the highest that satisfies the constraint', () => {
  assert.equal(names(resolvePackages(WORLD, ['pkg-multi'])), ['pkg-multi=2.0']);
  assert.equal(names(resolvePackages(WORLD, ['wants-old-multi'])), ['pkg-multi=1.0', 'wants-old-multi=1']);
});

resolve('an unknown requested package: exact message with did-you-mean', () => {
  const e = errorOf(() => resolvePackages(WORLD, ['app', 'libssl']));
  assert.instance(e, ResolveError);
  assert.is((e as ResolveError).code, 'unknown-package');
  assert.is(e.message, "unknown package 'libssl' requested by the image (did you mean 'libssl3'?): bookworm (main, amd64) has no package of that name and none provides it; fix the name in the image's debian packages list");
  assert.is(errorOf(() => resolvePackages(WORLD, ['zzzzzz'])).message, "unknown package 'zzzzzz' requested by the image: bookworm (main, amd64) has no package of that name and none provides it; fix the name in the image's debian packages list");
});

resolve('an unknown dependency names the package that required it and the chain', () => {
  const world = index('top 1 ; Depends: middle', 'middle 2 ; Depends: libsssl3 (>= 3)', 'libssl3 3');
  const e = errorOf(() => resolvePackages(world, ['top'])) as ResolveError;
  assert.is(e.code, 'unknown-package');
  assert.is(
    e.message,
    "unknown package 'libsssl3' required by middle 2 (Depends: libsssl3 (>= 3)) via top → middle (did you mean 'libssl3'?): bookworm (main, amd64) has no package of that name and none provides it; it may be in a component the mirror is not read for (contrib, non-free)",
  );
  assert.equal(e.chain, ['top', 'middle', 'libsssl3']);
});

resolve('an unsatisfiable dependency names the chain and every alternative', () => {
  let e = errorOf(() => resolvePackages(WORLD, ['app', 'old'])) as ResolveError;
  assert.is(e.code, 'unsatisfiable');
  assert.is(e.message, "cannot satisfy old 1.0's Depends 'libc6 (<< 2.0)': libc6 (<< 2.0): version 2.36-9 was already chosen and does not satisfy << 2.0");
  e = errorOf(() => resolvePackages(WORLD, ['old'])) as ResolveError;
  assert.is(e.message, "cannot satisfy old 1.0's Depends 'libc6 (<< 2.0)': libc6 (<< 2.0): only version 2.36-9, which does not satisfy << 2.0");
  e = errorOf(() => resolvePackages(index('top 1 ; Depends: broken', 'broken 1 ; Depends: libssl3 (>= 4) | libfoo-abi (>= 9)', 'libssl3 3', 'libfoo 1 ; Provides: libfoo-abi (= 1)'), ['top'])) as ResolveError;
  assert.is(
    e.message,
    "cannot satisfy broken 1's Depends 'libssl3 (>= 4) | libfoo-abi (>= 9)' via top → broken: libssl3 (>= 4): only version 3, which does not satisfy >= 4; libfoo-abi (>= 9): no provider of a version that satisfies >= 9",
  );
  assert.equal(e.chain, ['top', 'broken']);
  e = errorOf(() => resolvePackages(WORLD, ['wrong-arch'])) as ResolveError;
  assert.is(e.message, "cannot satisfy wrong-arch 1's Depends 'libc6:i386 | nothing-here': libc6:i386: architecture 'i386' is not the image's (amd64); nothing-here: no package of that name and none provides it");
});

resolve.run();

// ---------------------------------------------------------------------------------------------
const mirrors = suite('debian mirror');

const DEB822 = `Types: deb
# a comment inside a stanza
URIs: http://mirror.example.invalid/debian
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example.invalid/debian-security
Suites: bookworm-security
Components: main

Types: deb
URIs: http://disabled.example.invalid/debian
Suites: trixie
Components: main
Enabled: no
`;

mirrors('deb822 sources: stanzas, comments inside them, Enabled', () => {
  assert.equal(parseDeb822Sources(DEB822, 'debian.sources'), [
    { types: ['deb'], uris: ['http://mirror.example.invalid/debian'], suites: ['bookworm', 'bookworm-updates'], components: ['main', 'contrib'], enabled: true, source: 'debian.sources:1' },
    { types: ['deb'], uris: ['http://mirror.example.invalid/debian-security'], suites: ['bookworm-security'], components: ['main'], enabled: true, source: 'debian.sources:8' },
    { types: ['deb'], uris: ['http://disabled.example.invalid/debian'], suites: ['trixie'], components: ['main'], enabled: false, source: 'debian.sources:13' },
  ]);
});

mirrors('one-line sources: options in brackets, comments, deb-src', () => {
  const text = `# comment
deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] http://one.example.invalid/debian bookworm main non-free # trailing
deb-src http://one.example.invalid/debian bookworm main
deb https://security.example.invalid/debian-security bookworm-security main
`;
  assert.equal(parseOneLineSources(text, 'sources.list'), [
    { types: ['deb'], uris: ['http://one.example.invalid/debian'], suites: ['bookworm'], components: ['main', 'non-free'], enabled: true, source: 'sources.list:2' },
    { types: ['deb-src'], uris: ['http://one.example.invalid/debian'], suites: ['bookworm'], components: ['main'], enabled: true, source: 'sources.list:3' },
    { types: ['deb'], uris: ['https://security.example.invalid/debian-security'], suites: ['bookworm-security'], components: ['main'], enabled: true, source: 'sources.list:4' },
  ]);
});

mirrors('choosing: the stanza listing the suite, never the security archive, a Debian suite as fallback', () => {
  const sources = [
    ...parseOneLineSources('deb http://thirdparty.example.invalid/apt nodistro main\ndeb http://sec.example.invalid/debian-security bookworm-security main\n', 'a.list'),
    ...parseDeb822Sources(DEB822, 'debian.sources'),
  ];
  assert.equal(chooseMirror(sources, 'bookworm'), { uri: 'http://mirror.example.invalid/debian/', components: ['main', 'contrib'], source: 'debian.sources:1' });
  // A disabled stanza is never chosen; another release's archive serves every suite.
  assert.equal(chooseMirror(sources, 'trixie'), { uri: 'http://mirror.example.invalid/debian/', components: ['main', 'contrib'], source: 'debian.sources:1' });
  assert.equal(chooseMirror(parseOneLineSources('deb http://thirdparty.example.invalid/apt nodistro main\n', 'a.list'), 'bookworm'), undefined);
});

mirrors('findMirror: option, then GRAPH_DEBIAN_MIRROR, then apt; a clear error when none', () => {
  const apt = tmp();
  mkdirSync(path.join(apt, 'sources.list.d'));
  writeFileSync(path.join(apt, 'sources.list.d', 'debian.sources'), DEB822);
  writeFileSync(path.join(apt, 'sources.list.d', 'old.list.disabled'), 'deb http://ignored.example.invalid/debian bookworm main\n');
  writeFileSync(path.join(apt, 'sources.list'), 'deb http://legacy.example.invalid/debian bookworm main\n');
  const env = { GRAPH_DEBIAN_MIRROR: 'http://env.example.invalid/debian' };
  assert.equal(findMirror({ suite: 'bookworm', mirror: 'https://opt.example.invalid/debian/', env, aptDir: apt }), { uri: 'https://opt.example.invalid/debian/', components: ['main'], source: 'option' });
  assert.equal(findMirror({ suite: 'bookworm', env, aptDir: apt }), { uri: 'http://env.example.invalid/debian/', components: ['main'], source: 'env GRAPH_DEBIAN_MIRROR' });
  assert.equal(findMirror({ suite: 'bookworm', env: {}, aptDir: apt }), { uri: 'http://mirror.example.invalid/debian/', components: ['main', 'contrib'], source: `${apt}/sources.list.d/debian.sources:1` });
  assert.is(
    errorOf(() => findMirror({ suite: 'bookworm', env: {}, aptDir: tmp() })).message,
    "no Debian mirror found for suite 'bookworm': set GRAPH_DEBIAN_MIRROR to a mirror's archive root URI, or add a 'deb' source for that suite to apt's sources.list.d",
  );
  assert.is(
    errorOf(() => findMirror({ suite: 'bookworm', env: { GRAPH_DEBIAN_MIRROR: 'mirror.example.invalid/debian' } })).message,
    "mirror URI 'mirror.example.invalid/debian' from env GRAPH_DEBIAN_MIRROR is not an http:// or https:// URI: give the archive root, e.g. http://HOST/debian",
  );
});

mirrors.run();

// ---------------------------------------------------------------------------------------------
const locks = suite('debian lock');

const PIN: PackagePin = { name: 'zlib1g', version: '1:1.2.13.dfsg-1', architecture: 'amd64', filename: 'pool/main/z/zlib/zlib1g_1.2.13.dfsg-1_amd64.deb', size: 87, sha256: 'c'.repeat(64) };

locks('canonical text: sorted keys, packages by name; round-trips', () => {
  const lock = withLockedImage(emptyLock(), 'base', { suite: 'bookworm', architecture: 'amd64', requested: ['zlib1g'], packages: [PIN, { ...PIN, name: 'libc6', sha256: 'd'.repeat(64) }] });
  const text = formatLock(lock);
  assert.is(
    text,
    `{
  "images": {
    "base": {
      "architecture": "amd64",
      "packages": [
        {
          "architecture": "amd64",
          "filename": "pool/main/z/zlib/zlib1g_1.2.13.dfsg-1_amd64.deb",
          "name": "libc6",
          "sha256": "${'d'.repeat(64)}",
          "size": 87,
          "version": "1:1.2.13.dfsg-1"
        },
        {
          "architecture": "amd64",
          "filename": "pool/main/z/zlib/zlib1g_1.2.13.dfsg-1_amd64.deb",
          "name": "zlib1g",
          "sha256": "${'c'.repeat(64)}",
          "size": 87,
          "version": "1:1.2.13.dfsg-1"
        }
      ],
      "requested": [
        "zlib1g"
      ],
      "suite": "bookworm"
    }
  },
  "version": 1
}
`,
  );
  assert.is(formatLock(parseLock(text)), text);
  const dir = tmp();
  const file = path.join(dir, 'images.lock');
  assert.equal(readLock(file), emptyLock());
  writeLock(file, lock);
  assert.is(readFileSync(file, 'utf8'), text);
  assert.equal(readdirSync(dir), ['images.lock']);
  assert.equal(readLock(file), parseLock(text));
  assert.equal(withLockedImage(lock, 'base', undefined), emptyLock());
});

locks('a malformed lock names the file and the field', () => {
  const bad = JSON.stringify({ version: 1, images: { base: { suite: 'bookworm', architecture: 'amd64', requested: ['zlib1g'], packages: [{ ...PIN, sha256: 'XYZ' }] } } });
  assert.is(errorOf(() => parseLock(bad, 'images.lock')).message, 'images.lock: images.base.packages[0].sha256 must be 64 lowercase hex digits: fix it, or delete it and resolve the images again');
  assert.is(errorOf(() => parseLock('{"version":2,"images":{}}')).message, 'images.lock: version is 2, this graph reads version 1: fix it, or delete it and resolve the images again');
  assert.match(errorOf(() => parseLock('{', 'x/images.lock')).message, /^x\/images\.lock is not valid JSON \(.*\): fix it, or delete it and resolve the images again$/);
});

locks.run();

// ---------------------------------------------------------------------------------------------
const downloads = suite('debian downloads (loopback server)');

type Route = { status?: number; body?: string | Uint8Array } | ((req: IncomingMessage, res: ServerResponse) => void);

/** A loopback HTTP server answering from `routes` (404 otherwise) and recording `METHOD path` of each request. */
async function serve(
  routes: Record<string, Route | Route[]>,
): Promise<{ mirror: DebianMirror; requests: string[]; close: () => Promise<void>; closeAll: () => void }> {
  const requests: string[] = [];
  const served = new Map<string, number>();
  const server = createServer((req, res) => {
    requests.push(`${req.method} ${req.url}`);
    let route = routes[req.url ?? ''];
    if (Array.isArray(route)) {
      const n = served.get(req.url!) ?? 0;
      served.set(req.url!, n + 1);
      route = route[Math.min(n, route.length - 1)];
    }
    if (!route) {
      res.writeHead(404).end('not found');
    } else if (typeof route === 'function') {
      route(req, res);
    } else {
      res.writeHead(route.status ?? 200).end(route.body ?? '');
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    mirror: { uri: `http://127.0.0.1:${port}/debian/`, components: ['main'], source: 'test' },
    requests,
    close: () => new Promise((resolve) => server.close(() => resolve())),
    closeAll: () => server.closeAllConnections(),
  };
}

const FAST = { backoffMs: [1, 1] };
const DEB_BYTES = Buffer.from('!<arch>\nnot really a deb, but bytes with a digest\n');
const DEB_PIN: PackagePin = { name: 'hello', version: '2.10-3', architecture: 'amd64', filename: 'pool/main/h/hello/hello_2.10-3_amd64.deb', size: DEB_BYTES.length, sha256: sha256(DEB_BYTES) };

downloads('fetchDeb: downloads into the content-addressed cache, then re-uses it without a request', async () => {
  const server = await serve({ '/debian/pool/main/h/hello/hello_2.10-3_amd64.deb': { body: DEB_BYTES } });
  try {
    const cache = tmp();
    const file = await fetchDeb(server.mirror, DEB_PIN, cache, undefined, FAST);
    assert.is(file, path.join(cache, 'debs', `${DEB_PIN.sha256}.deb`));
    assert.equal(readFileSync(file), DEB_BYTES);
    assert.is(await fetchDeb(server.mirror, DEB_PIN, cache, undefined, FAST), file);
    assert.equal(server.requests, ['GET /debian/pool/main/h/hello/hello_2.10-3_amd64.deb']);
    assert.equal(readdirSync(path.join(cache, 'debs')), [`${DEB_PIN.sha256}.deb`]);
    // A corrupted cache entry is noticed and replaced.
    writeFileSync(file, Buffer.alloc(DEB_BYTES.length));
    await fetchDeb(server.mirror, DEB_PIN, cache, undefined, FAST);
    assert.equal(readFileSync(file), DEB_BYTES);
    assert.is(server.requests.length, 2);
  } finally {
    await server.close();
  }
});

downloads('fetchDeb: a digest mismatch names the package and both digests, and leaves nothing behind', async () => {
  const other = Buffer.from(DEB_BYTES.toString().toUpperCase());
  const server = await serve({ '/debian/pool/main/h/hello/hello_2.10-3_amd64.deb': { body: other } });
  try {
    const cache = tmp();
    const e = await rejectionOf(fetchDeb(server.mirror, DEB_PIN, cache, undefined, FAST));
    assert.instance(e, DigestMismatchError);
    assert.is(
      e.message,
      `hello 2.10-3 (amd64): ${server.mirror.uri}pool/main/h/hello/hello_2.10-3_amd64.deb has SHA-256 ${sha256(other)} (${other.length} bytes), expected ${DEB_PIN.sha256} (${DEB_PIN.size} bytes); ` +
        'the mirror or a proxy served other bytes: retry, or resolve again if the mirror changed since images.lock was written',
    );
    assert.equal(readdirSync(path.join(cache, 'debs')), []);
    assert.is(server.requests.length, 1);
  } finally {
    await server.close();
  }
});

downloads('fetchDeb: 5xx is retried, 404 is not', async () => {
  const server = await serve({
    '/debian/pool/main/h/hello/hello_2.10-3_amd64.deb': [{ status: 503 }, { status: 502 }, { body: DEB_BYTES }],
  });
  try {
    await fetchDeb(server.mirror, DEB_PIN, tmp(), undefined, FAST);
    assert.is(server.requests.length, 3);
    const e = await rejectionOf(fetchDeb(server.mirror, { ...DEB_PIN, filename: 'pool/gone.deb' }, tmp(), undefined, FAST));
    assert.instance(e, HttpError);
    assert.is(e.message, `${server.mirror.uri}pool/gone.deb answered HTTP 404 Not Found`);
    assert.is(server.requests.length, 4);
  } finally {
    await server.close();
  }
  const down = await serve({ '/debian/x.deb': { status: 500 } });
  try {
    const e = await rejectionOf(fetchDeb(down.mirror, { ...DEB_PIN, filename: 'x.deb' }, tmp(), undefined, FAST));
    assert.is(e.message, `${down.mirror.uri}x.deb answered HTTP 500 Internal Server Error (gave up after 3 attempts; check the network and the mirror ${new URL(down.mirror.uri).origin})`);
    assert.is(down.requests.length, 3);
  } finally {
    await down.close();
  }
});

downloads('fetchDebs: several at once, paths in order; aborting a stalled download leaves no temp file', async () => {
  const other = Buffer.from('another package');
  const otherPin: PackagePin = { ...DEB_PIN, name: 'other', filename: 'pool/other.deb', size: other.length, sha256: sha256(other) };
  const server = await serve({
    '/debian/pool/main/h/hello/hello_2.10-3_amd64.deb': { body: DEB_BYTES },
    '/debian/pool/other.deb': { body: other },
    // Sends half the body, then stalls.
    '/debian/pool/stall.deb': (_req, res) => {
      res.writeHead(200, { 'content-length': String(DEB_BYTES.length) });
      res.write(DEB_BYTES.subarray(0, 10));
    },
  });
  try {
    const cache = tmp();
    const files = await fetchDebs(server.mirror, [DEB_PIN, otherPin], cache, undefined, { ...FAST, concurrency: 2 });
    assert.equal(files, [path.join(cache, 'debs', `${DEB_PIN.sha256}.deb`), path.join(cache, 'debs', `${otherPin.sha256}.deb`)]);
    const stalled = tmp();
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 100);
    const e = await rejectionOf(fetchDeb(server.mirror, { ...DEB_PIN, filename: 'pool/stall.deb' }, stalled, controller.signal, FAST));
    assert.is(e.name, 'AbortError');
    assert.equal(readdirSync(path.join(stalled, 'debs')), []);
  } finally {
    server.closeAll();
    await server.close();
  }
});

downloads('loadIndex: verified against InRelease, by hash with a fallback, cached by digest', async () => {
  const packagesGz = gzipSync(PACKAGES);
  const digest = sha256(packagesGz);
  const inRelease = `-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nCodename: bookworm\nArchitectures: amd64\nAcquire-By-Hash: yes\nSHA256:\n ${digest} ${packagesGz.length} main/binary-amd64/Packages.gz\n ${sha256(PACKAGES)} ${PACKAGES.length} main/binary-amd64/Packages\n-----BEGIN PGP SIGNATURE-----\n\nxyz\n-----END PGP SIGNATURE-----\n`;
  const server = await serve({
    '/debian/dists/bookworm/InRelease': { body: inRelease },
    '/debian/dists/bookworm/main/binary-amd64/Packages.gz': { body: packagesGz },
  });
  try {
    const cache = tmp();
    const load = () => loadIndex({ mirror: server.mirror, suite: 'bookworm', architecture: 'amd64', cacheDir: cache, download: FAST });
    const first = await load();
    assert.equal(first.packages.map((p) => p.name), ['app', 'libc6']);
    assert.equal(server.requests, [
      'GET /debian/dists/bookworm/InRelease',
      `GET /debian/dists/bookworm/main/binary-amd64/by-hash/SHA256/${digest}`,
      'GET /debian/dists/bookworm/main/binary-amd64/Packages.gz',
    ]);
    assert.equal(readdirSync(path.join(cache, 'index')).sort(), [`${digest}.gz`, `${digest}.json`]);
    const second = await load();
    assert.equal(second.packages, first.packages);
    assert.is(server.requests.length, 4);
    assert.is(server.requests[3], 'GET /debian/dists/bookworm/InRelease');
    const e = await rejectionOf(loadIndex({ mirror: server.mirror, suite: 'bookworm', architecture: 'arm64', cacheDir: cache, download: FAST }));
    assert.is(e.message, `suite 'bookworm' at ${server.mirror.uri} has no architecture 'arm64' (it has: amd64)`);
    const missing = await rejectionOf(loadIndex({ mirror: server.mirror, suite: 'trixie', architecture: 'amd64', cacheDir: cache, download: FAST }));
    assert.is(missing.message, `suite 'trixie' is not on the mirror ${server.mirror.uri} (no dists/trixie/InRelease or Release): check the suite name and the mirror URI`);
  } finally {
    await server.close();
  }
});

downloads('loadIndex: xz when gzip is not offered, via the Release file when there is no InRelease', async () => {
  const dir = tmp();
  writeFileSync(path.join(dir, 'Packages'), PACKAGES);
  execFileSync('xz', ['-k', path.join(dir, 'Packages')]);
  const packagesXz = readFileSync(path.join(dir, 'Packages.xz'));
  const release = `Codename: bookworm\nSHA256:\n ${sha256(packagesXz)} ${packagesXz.length} main/binary-amd64/Packages.xz\n`;
  const server = await serve({
    '/debian/dists/bookworm/Release': { body: release },
    '/debian/dists/bookworm/main/binary-amd64/Packages.xz': { body: packagesXz },
  });
  try {
    const idx = await loadIndex({ mirror: server.mirror, suite: 'bookworm', architecture: 'amd64', cacheDir: tmp(), download: FAST });
    assert.equal(idx.packages.map((p) => p.name), ['app', 'libc6']);
    assert.equal(server.requests, ['GET /debian/dists/bookworm/InRelease', 'GET /debian/dists/bookworm/Release', 'GET /debian/dists/bookworm/main/binary-amd64/Packages.xz']);
  } finally {
    await server.close();
  }
});

downloads.run();

// ---------------------------------------------------------------------------------------------
const extract = suite('debian extract');

/** Names of the entries of a tar stream. */
async function tarNames(stream: NodeJS.ReadableStream): Promise<string[]> {
  const names: string[] = [];
  const ex = tar.extract();
  const done = new Promise<void>((resolve, reject) => {
    ex.on('entry', (header, body, next) => {
      names.push(header.name);
      body.on('end', next);
      body.resume();
    });
    ex.on('finish', resolve);
    ex.on('error', reject);
    stream.on('error', reject);
  });
  stream.pipe(ex);
  await done;
  return names;
}

extract('a .deb built here: control fields, the dpkg status entry, the data tar', async () => {
  const dir = tmp();
  const root = path.join(dir, 'pkg');
  mkdirSync(path.join(root, 'DEBIAN'), { recursive: true });
  mkdirSync(path.join(root, 'usr/share/hello'), { recursive: true });
  writeFileSync(path.join(root, 'usr/share/hello/greeting'), 'hello\n');
  writeFileSync(
    path.join(root, 'DEBIAN/control'),
    'Package: hello-test\nVersion: 1.0-1\nArchitecture: all\nMaintainer: Test <test@example.invalid>\nDepends: libc6\nDescription: a test package\n longer text\n .\n end\n',
  );
  const deb = path.join(dir, 'hello.deb');
  execFileSync('dpkg-deb', ['--root-owner-group', '-Zgzip', '--build', root, deb], { stdio: 'ignore' });
  const control = await debControl(deb);
  assert.equal([...control.keys()], ['Package', 'Version', 'Architecture', 'Maintainer', 'Depends', 'Description']);
  assert.is(
    dpkgStatusEntry(control),
    'Package: hello-test\nStatus: install ok installed\nVersion: 1.0-1\nArchitecture: all\nMaintainer: Test <test@example.invalid>\nDepends: libc6\nDescription: a test package\n longer text\n .\n end\n',
  );
  assert.equal(await tarNames(debDataTar(deb)), ['./', './usr/', './usr/share/', './usr/share/hello/', './usr/share/hello/greeting']);
});

/** Build a .deb of `files` (path → [mode, content], or [mode] for a directory; `-> target` content makes a symlink, `=> path` a hard link). */
function buildDeb(dir: string, name: string, files: Record<string, [number, string?]>): string {
  const root = path.join(dir, name);
  mkdirSync(path.join(root, 'DEBIAN'), { recursive: true });
  writeFileSync(path.join(root, 'DEBIAN/control'), `Package: ${name}\nVersion: 1\nArchitecture: all\nMaintainer: T <t@example.invalid>\nDescription: modes\n`);
  for (const [rel, [mode, content]] of Object.entries(files)) {
    const abs = path.join(root, rel);
    if (content === undefined) mkdirSync(abs, { recursive: true });
    else if (content.startsWith('-> ')) symlinkSync(content.slice(3), abs);
    else if (content.startsWith('=> ')) linkSync(path.join(root, content.slice(3)), abs);
    else writeFileSync(abs, content);
    if (!content?.startsWith('-> ')) chmodSync(abs, mode);
  }
  const deb = path.join(dir, `${name}.deb`);
  execFileSync('dpkg-deb', ['--root-owner-group', '-Zgzip', '--build', root, deb], { stdio: 'ignore' });
  return deb;
}

extract('debModes: the tar headers’ modes (setuid, sticky, 0700), a later package’s entry wins, links', async () => {
  const dir = tmp();
  const first = buildDeb(dir, 'first', {
    usr: [0o755], 'usr/bin': [0o755], 'usr/bin/su-tool': [0o4755, 'su'], 'usr/bin/again': [0o4755, '=> usr/bin/su-tool'],
    'usr/bin/link': [0o777, '-> su-tool'], 'usr/bin/was-file': [0o644, 'f'], srv: [0o2775], 'srv/secret': [0o700], tmp: [0o1777],
  });
  const second = buildDeb(dir, 'second', { usr: [0o755], 'usr/bin': [0o755], 'usr/bin/was-file': [0o777, '-> su-tool'], srv: [0o755] });
  const modes = await debModes(second, await debModes(first));
  const shown = [...modes].map(([p, m]) => `${p} ${m.kind} ${m.mode.toString(8)}`).sort();
  assert.equal(shown, [
    'srv directory 755',
    'srv/secret directory 700',
    'tmp directory 1777',
    'usr directory 755',
    'usr/bin directory 755',
    'usr/bin/again file 4755',
    'usr/bin/su-tool file 4755',
  ]);

  // A root unpacked under umask 077 as dpkg-deb -x does: its layer entries take the headers'
  // modes, directories nothing recorded 0755, files the umask made 0600 0644.
  const rootfs = path.join(dir, 'rootfs');
  for (const deb of [first, second]) {
    const r = spawnSync('sh', ['-c', 'umask 077 && mkdir -p "$2/var/lib/x" && echo s > "$2/var/lib/x/status" && dpkg-deb -x "$1" "$2"', 'sh', deb, rootfs], { encoding: 'utf8' });
    assert.is(r.status, 0, r.stderr);
  }
  const entries = entriesForCopy(rootfs, '/', undefined, rootfsModes(modes));
  assert.equal(
    entries.map((e) => `${e.path} ${e.type === 'symlink' ? `-> ${e.target}` : e.mode.toString(8)}`),
    [
      'srv 755', 'srv/secret 700', 'tmp 1777', 'usr 755', 'usr/bin 755', 'usr/bin/again 4755', 'usr/bin/link -> su-tool',
      'usr/bin/su-tool 4755', 'usr/bin/was-file -> su-tool', 'var 755', 'var/lib 755', 'var/lib/x 755', 'var/lib/x/status 644',
    ],
  );
});

extract('dpkg status entries: Status replaced, value-on-next-line fields, required fields', () => {
  assert.is(
    dpkgStatusEntry({ Package: 'a', Status: 'deinstall ok config-files', Version: '1', Architecture: 'amd64', Conffiles: '\n /etc/a 0123' }),
    'Package: a\nStatus: install ok installed\nVersion: 1\nArchitecture: amd64\nConffiles:\n /etc/a 0123\n',
  );
  assert.is(errorOf(() => dpkgStatusEntry({ Package: 'a', Version: '1' })).message, 'a dpkg status entry needs a Architecture field; the control fields given have none');
});

extract('a file that is not a .deb: the stream errors with dpkg-deb’s message', async () => {
  const file = path.join(tmp(), 'bad.deb');
  writeFileSync(file, 'not a deb');
  const e = await rejectionOf(tarNames(debDataTar(file)));
  assert.match(e.message, new RegExp(`^dpkg-deb --fsys-tarfile ${file} failed \\(exit 2\\): dpkg-deb: error: .+`));
  assert.match((await rejectionOf(debControl(file))).message, /^dpkg-deb --field .* failed: dpkg-deb: error: /);
});

extract.run();

// ---------------------------------------------------------------------------------------------
const e2e = suite('debian end-to-end (host mirror)');

e2e('resolve busybox-static on the host’s mirror, download, verify, and read its data tar', async () => {
  const t0 = performance.now();
  // ~40 MB (the suite's index and its parsed form): removed afterwards.
  const cache = tmp();
  try {
    const mirror = findMirror({ suite: 'bookworm' });
    const architecture = debianArchitecture();
    const idx = await loadIndex({ mirror, suite: 'bookworm', architecture, cacheDir: cache });
    const t1 = performance.now();
    const pins = resolvePackages(idx, ['busybox-static']);
    assert.equal(pins.map((p) => p.name), ['busybox-static']);
    const [pin] = pins;
    assert.match(pin.filename, /^pool\/main\/b\/busybox\/busybox-static_.+\.deb$/);
    const deb = await fetchDeb(mirror, pin, cache);
    const t2 = performance.now();
    const bytes = readFileSync(deb);
    assert.is(bytes.length, pin.size);
    assert.is(sha256(bytes), pin.sha256);
    const names = await tarNames(debDataTar(deb));
    assert.ok(names.includes('./bin/busybox'), `./bin/busybox in ${names.join(' ')}`);
    assert.is((await debControl(deb)).get('Version'), pin.version);
    // Again: the cached index and .deb are re-used (only InRelease is fetched), the .deb untouched.
    const t3 = performance.now();
    const mtime = statSync(deb).mtimeMs;
    const again = await loadIndex({ mirror, suite: 'bookworm', architecture, cacheDir: cache });
    assert.equal(resolvePackages(again, ['busybox-static']), pins);
    assert.is(await fetchDeb(mirror, pin, cache), deb);
    assert.is(statSync(deb).mtimeMs, mtime);
    const t4 = performance.now();
    if (process.env.GRAPH_TEST_TIMINGS) {
      const ms = (a: number, b: number) => `${Math.round(b - a)} ms`;
      console.log(`  e2e: index ${ms(t0, t1)}, resolve+download ${ms(t1, t2)}, read ${ms(t2, t3)}, cached again ${ms(t3, t4)}`);
    }
  } finally {
    rmSync(cache, { recursive: true, force: true });
  }
});

e2e.run();
