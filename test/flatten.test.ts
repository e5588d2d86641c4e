/**
 * Flattening layers top down (rules/oci/flatten.ts), judged against unpacking them in order
 * (rules/oci/unpack.ts, whose whiteout handling oci.test.ts checks): the SIF that imageToSif
 * streams through tar2sqfs, extracted with unsquashfs, must hold the same tree as unpackImage +
 * addRuntimeFiles, path by path (type, mode, bytes, link target, hard links). Layers that cannot
 * be flattened top down must fall back to unpacking, and say so in the log.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import tar from 'tar-stream';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { ExecaRunner, type ProcessRunner } from '../engine/process.js';
import { ContentStore } from '../engine/cache/store.js';
import { flattenImage, NotStreamable } from '../rules/oci/flatten.js';
import { composeImage, type StoredImage } from '../rules/oci/image.js';
import { MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_LAYER_TAR } from '../rules/oci/layer.js';
import { unpackImage, unpackLayer, UnpackError } from '../rules/oci/unpack.js';
import { addRuntimeFiles, imageToSif } from '../rules/sif/convert.js';
import { primaryPartition, readSif } from '../rules/sif/sif.js';
import { SIFCHECK } from './helpers.js';

const test = suite('flatten');
const ROOT = mkdtempSync(path.join(tmpdir(), 'graph-flatten-'));
const fresh = (name: string) => mkdtempSync(path.join(ROOT, `${name}-`));
const runner = new ExecaRunner();
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

type Entry = { name: string; type?: 'file' | 'directory' | 'symlink' | 'link'; linkname?: string; data?: string; mode?: number };

/** A gzip layer in `store` from tar entries, in the order given. */
async function layer(store: ContentStore, entries: Entry[]) {
  const pack = tar.pack();
  for (const e of entries) {
    const type = e.type ?? 'file';
    // Type bits in the mode: tar-stream would replace a mode of 0 with its default.
    const mode = (e.mode ?? (type === 'directory' ? 0o755 : 0o644)) | (type === 'directory' ? 0o040000 : 0o100000);
    pack.entry({ name: e.name, type, linkname: e.linkname, mode, mtime: new Date(1e9), uid: 1000, gid: 1000 }, e.data ?? '');
  }
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const c of pack) chunks.push(c as Buffer);
  const raw = Buffer.concat(chunks);
  const { digest, size } = store.putBytes(gzipSync(raw));
  return { descriptor: { mediaType: MEDIA_TYPE_LAYER_GZIP, digest, size }, diffId: `sha256:${sha(raw)}`, createdBy: 'test' };
}

async function image(store: ContentStore, layers: Entry[][]): Promise<StoredImage> {
  const ls = [];
  for (const entries of layers) ls.push(await layer(store, entries));
  return composeImage(store, undefined, ls, { env: { PATH: '/bin' }, cmd: ['/bin/sh'], labels: { model: 'm' } }, 0);
}

/** Every path under `dir`: type, permission bits, then the bytes' SHA-256, the link target, or the hard-link group. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const inodes = new Map<number, string>();
  const walk = (rel: string) => {
    for (const name of readdirSync(path.join(dir, rel)).sort()) {
      const p = rel ? `${rel}/${name}` : name;
      const st = lstatSync(path.join(dir, p));
      const mode = (st.mode & 0o7777).toString(8);
      if (st.isDirectory()) {
        out[p] = `dir ${mode}`;
        walk(p);
      } else if (st.isSymbolicLink()) {
        out[p] = `symlink -> ${readlinkSync(path.join(dir, p))}`;
      } else {
        const first = st.nlink > 1 ? inodes.get(st.ino) : undefined;
        if (st.nlink > 1 && !first) inodes.set(st.ino, p);
        out[p] = `file ${mode} ${sha(readFileSync(path.join(dir, p))).slice(0, 12)}${first ? ` linked to ${first}` : ''}`;
      }
    }
  };
  walk('');
  return out;
}

/** The tree in the SIF imageToSif writes (streamed), and the log it wrote. */
async function streamed(store: ContentStore, img: StoredImage, run: ProcessRunner = runner) {
  const dir = fresh('sif');
  const sif = path.join(dir, 'x.sif');
  const log = path.join(dir, 'node.log');
  const result = await imageToSif({ store, image: img, scratchDir: path.join(dir, 'scratch'), outFile: sif, epoch: 0, runner: run, logFile: log });
  // Every SIF the tests write passes the independent checks.
  const check = spawnSync('python3', [SIFCHECK, '--runnable', '--strict', sif], { encoding: 'utf8' });
  assert.is(check.status, 0, check.stderr);
  assert.match(execFileSync('siftool', ['list', sif], { encoding: 'utf8' }), /FS \(Squashfs\/\*System\/amd64\)/);
  const root = path.join(dir, 'root');
  execFileSync('unsquashfs', ['-q', '-n', '-d', root, '-o', String(primaryPartition(readSif(sif)).offset), sif]);
  return { tree: snapshot(root), log: existsSync(log) ? readFileSync(log, 'utf8') : '', result, sif };
}

/** The tree unpacking the layers in order gives. */
async function unpacked(store: ContentStore, img: StoredImage) {
  const root = path.join(fresh('unpack'), 'root');
  await unpackImage(store, img, root);
  addRuntimeFiles(root, img.config);
  return snapshot(root);
}

test.after(() => rmSync(ROOT, { recursive: true, force: true }));

test('streamed layers give the tree unpacking gives: whiteouts, opaque and replaced directories, links, runtime files', async () => {
  const store = new ContentStore(fresh('cas'));
  const img = await image(store, [
    [
      { name: 'a/', type: 'directory' },
      { name: 'a/keep.txt', data: 'keep' },
      { name: 'a/gone.txt', data: 'gone' },
      { name: 'd2/', type: 'directory' },
      { name: 'd2/old.txt', data: 'old' },
      { name: 'opq/', type: 'directory', mode: 0o750 },
      { name: 'opq/lower.txt', data: 'lower' },
      { name: 'f2d', data: 'a file, then a directory' },
      { name: 'd2f/', type: 'directory' },
      { name: 'd2f/inner.txt', data: 'inner' },
      { name: 'l2d', type: 'symlink', linkname: 'a' },
      { name: 'hl/', type: 'directory' },
      { name: 'hl/orig', data: 'linked', mode: 0o755 },
      { name: 'hl/same', type: 'link', linkname: 'hl/orig' },
      { name: 'etc/', type: 'directory' },
      { name: 'etc/hosts', data: '127.0.0.1 model\n', mode: 0o600 },
      { name: '.singularity.d/', type: 'directory', mode: 0o700 },
      { name: '.singularity.d/runscript', data: 'old runscript' },
      { name: 'singularity', data: 'a file of the image' },
      { name: 'environment', type: 'symlink', linkname: '/somewhere' },
      { name: 'home', type: 'symlink', linkname: '/tmp' },
      { name: 'sub/', type: 'directory' },
      { name: 'sub/impl/', type: 'directory', mode: 0o700 },
      { name: 'd4/', type: 'directory', mode: 0o700 },
      { name: 'd4/old', data: 'old' },
      { name: 'x3/', type: 'directory' },
      { name: 'x3/lower', data: 'lower' },
      { name: 'mode0', data: 'secret', mode: 0 },
      { name: 'var/', type: 'directory', mode: 0o700 },
      { name: 'var/lib/x', data: 'x' },
    ],
    [
      { name: 'a/.wh.gone.txt' },
      { name: '.wh.d2' },
      { name: 'opq/.wh..wh..opq' },
      { name: 'opq/upper.txt', data: 'upper' },
      { name: 'f2d/', type: 'directory', mode: 0o711 },
      { name: 'f2d/new.txt', data: 'new' },
      { name: 'd2f', data: 'a directory, then a file' },
      { name: 'l2d/', type: 'directory' },
      { name: 'l2d/y', data: 'y' },
      { name: 'sub/impl/deep/f', data: 'below an implicit directory' },
      { name: '.wh.d4' },
      { name: 'x3', data: 'x3 is a file for a while' },
      { name: 'a/keep.txt', data: 'kept, and changed' },
      { name: '.wh.var' },
    ],
    [
      { name: 'd4/new/f', data: 'd4 again, implicitly' },
      { name: 'x3/', type: 'directory' },
      { name: 'x3/top', data: 'top' },
      { name: 'hl/top', data: 'top layer' },
    ],
  ]);
  const s = await streamed(store, img);
  assert.not.match(s.log, /unpacking/, s.log);
  const u = await unpacked(store, img);
  assert.equal(s.tree, u);
  // And the cases themselves, so that a bug shared by both paths shows too:
  for (const gone of ['a/gone.txt', 'd2', 'opq/lower.txt', 'f2d/.wh', 'd2f/inner.txt', 'd4/old', 'x3/lower', 'a/.wh.gone.txt']) assert.not.ok(gone in s.tree, gone);
  assert.equal(
    [s.tree['opq'], s.tree['opq/upper.txt'], s.tree['f2d'], s.tree['d2f'].slice(0, 8), s.tree['l2d'], s.tree['sub/impl'], s.tree['d4'], s.tree['x3/top'].slice(0, 8)],
    ['dir 750', `file 644 ${sha(Buffer.from('upper')).slice(0, 12)}`, 'dir 711', 'file 644', 'dir 755', 'dir 700', 'dir 755', 'file 644'],
  );
  assert.is(s.tree['hl/same'], `file 755 ${sha(Buffer.from('linked')).slice(0, 12)} linked to hl/orig`);
  assert.is(s.tree['mode0'], `file 0 ${sha(Buffer.from('secret')).slice(0, 12)}`);
  assert.is(s.tree['etc/hosts'], `file 644 ${sha(Buffer.from('127.0.0.1 model\n')).slice(0, 12)}`);
  assert.is(s.tree['singularity'].slice(0, 8), 'file 644');
  assert.equal([s.tree['environment'], s.tree['home'], s.tree['.singularity.d']], ['symlink -> .singularity.d/env/90-environment.sh', 'symlink -> /tmp', 'dir 700']);
  assert.equal([s.tree['var'], s.tree['var/tmp'], s.tree['var/lib']], ['dir 755', 'dir 1777', undefined]);
  assert.match(readFileSync(path.join(path.dirname(s.sif), 'root/.singularity.d/runscript'), 'utf8'), /^#!\/bin\/sh\n/);
});

test('random layer stacks: flattened and unpacked in one go, the tree unpacking the layers in order gives (or NotStreamable)', async () => {
  let seed = 12345;
  const rand = (n: number) => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) % n;
  };
  const pick = <T>(xs: readonly T[]): T => xs[rand(xs.length)];
  // Directories near the top, files and links mostly at the leaves (so that fewer stacks put
  // entries under files, which no runtime can unpack), every kind anywhere now and then.
  const paths: string[] = [];
  const leaves: string[] = [];
  for (const a of ['a', 'b', 'c']) {
    paths.push(a);
    for (const b of ['a', 'b', 'c']) {
      paths.push(`${a}/${b}`);
      for (const c of ['a', 'b']) leaves.push(`${a}/${b}/${c}`);
    }
  }
  const anywhere = [...paths, ...leaves];
  const store = new ContentStore(fresh('cas'));
  const outcomes = { same: 0, notStreamable: 0, unpackFails: 0 };
  const reasons = new Map<string, number>();
  for (let n = 0; n < 300; n++) {
    const layers: Entry[][] = [];
    for (let l = 0, count = 1 + rand(4); l < count; l++) {
      const entries: Entry[] = [];
      const files: string[] = [];
      for (let e = 0, ops = 2 + rand(7); e < ops; e++) {
        const kind = rand(10);
        const p = rand(4) === 0 ? pick(anywhere) : kind < 2 || kind === 8 ? pick(paths) : pick(leaves);
        const dir = p.includes('/') ? p.slice(0, p.lastIndexOf('/') + 1) : '';
        switch (kind) {
          case 0:
          case 1:
            entries.push({ name: `${p}/`, type: 'directory', mode: pick([0o755, 0o700, 0o750]) });
            break;
          case 2:
          case 3:
          case 4:
            entries.push({ name: p, data: `${n}:${l}:${e}`, mode: pick([0o644, 0o600, 0o755]) });
            files.push(p);
            break;
          case 5:
            entries.push({ name: p, type: 'symlink', linkname: pick([`/${pick(anywhere)}`, pick(['a', 'b', 'c'])]) });
            break;
          case 6:
          case 7:
            entries.push({ name: `${dir}.wh.${p.slice(dir.length)}` });
            break;
          case 8:
            entries.push({ name: `${p}/.wh..wh..opq` });
            break;
          default:
            if (files.length) entries.push({ name: p, type: 'link', linkname: pick(files) });
        }
      }
      layers.push(entries);
    }
    const img = await image(store, layers);
    const expected = path.join(fresh('unpack'), 'root');
    try {
      await unpackImage(store, img, expected);
    } catch {
      outcomes.unpackFails++; // an image no runtime could unpack either
      continue;
    }
    const actual = path.join(fresh('flat'), 'root');
    mkdirSync(actual);
    const flat = flattenImage(store, img);
    let why: Error | undefined;
    flat.on('error', (e) => (why = e));
    try {
      await unpackLayer(flat, { mediaType: MEDIA_TYPE_LAYER_TAR, digest: 'flattened', size: 0 }, actual);
    } catch (e) {
      if (!(why instanceof NotStreamable)) throw e;
      outcomes.notStreamable++;
      const reason = why.message.replace(/layer \S+/, 'layer').replace(/'[^']*'/g, 'P');
      reasons.set(reason, (reasons.get(reason) ?? 0) + 1);
      continue;
    }
    assert.equal(snapshot(actual), snapshot(expected), `image ${n}: ${JSON.stringify(layers)}`);
    outcomes.same++;
  }
  // Most random stacks stream; the rest are cases the module comment lists.
  console.log(`  random stacks: ${JSON.stringify(outcomes)}; not streamable: ${JSON.stringify([...reasons])}`);
  assert.ok(outcomes.same >= 80, JSON.stringify(outcomes));
});

test('layers that cannot be read top down are unpacked instead, with the reason in the log, and give the same tree', async () => {
  const cases: Array<[string, Entry[][], RegExp]> = [
    ['a hard link to a lower layer', [[{ name: 'f', data: 'f' }], [{ name: 'g', type: 'link', linkname: 'f' }]], /hard link 'g' -> 'f' points to nothing earlier in the same layer/],
    [
      'a hard link to a file a higher layer replaces',
      [[{ name: 'f', data: 'old f' }, { name: 'g', type: 'link', linkname: 'f' }], [{ name: 'f', data: 'new f' }]],
      /hard link 'g' -> 'f' points to a file a higher layer replaces/,
    ],
    [
      'entries under a symbolic link of a lower layer (merged /usr)',
      [[{ name: 'usr/', type: 'directory' }, { name: 'usr/lib/', type: 'directory' }, { name: 'lib', type: 'symlink', linkname: 'usr/lib' }], [{ name: 'lib/x.so', data: 'so' }]],
      /makes 'lib' a symlink, and a higher layer has entries or whiteouts under it/,
    ],
    [
      'a mount point behind a link whose mode must change',
      [[{ name: 'data/', type: 'directory' }, { name: 'data/etc/', type: 'directory' }, { name: 'data/etc/hosts', data: 'h', mode: 0o600 }, { name: 'etc', type: 'symlink', linkname: '/data/etc' }]],
      /\/etc\/hosts leads to \/data\/etc\/hosts, whose mode must become 644/,
    ],
    ['a path listed twice in one layer', [[{ name: 'f', data: '1' }, { name: 'f', data: '2' }]], /lists 'f' twice/],
    ['a path written, then deleted, by one layer', [[{ name: 'f', data: 'old' }], [{ name: 'f', data: 'new' }, { name: '.wh.f' }]], /both deletes and writes 'f'/],
  ];
  for (const [what, layers, reason] of cases) {
    const store = new ContentStore(fresh('cas'));
    const img = await image(store, layers);
    const s = await streamed(store, img);
    assert.match(s.log, reason, what);
    assert.match(s.log, /unpacking the layers in order instead/, what);
    assert.equal(s.tree, await unpacked(store, img), what);
  }
});

test('where fallocate cannot insert a range, the squashfs is copied to its offset: the same SIF', async () => {
  const store = new ContentStore(fresh('cas'));
  const img = await image(store, [[{ name: 'opt/model.bin', data: 'w'.repeat(300_000) }]]);
  const calls: string[] = [];
  const noInsert: ProcessRunner = {
    run: (argv, options) => {
      calls.push(argv[0]);
      return argv[0] === 'fallocate' ? Promise.resolve({ exitCode: 1, aborted: false }) : runner.run(argv, options);
    },
  };
  const a = await streamed(store, img);
  const b = await streamed(store, img, noInsert);
  assert.equal(calls, ['tar2sqfs', 'fallocate']);
  assert.match(b.log, /copying the squashfs to offset \d+/);
  assert.equal(b.result, a.result);
  assert.ok(readFileSync(a.sif).equals(readFileSync(b.sif)));
});

test('a corrupt layer is an UnpackError naming it; tar2sqfs is stopped and nothing is left behind', async () => {
  const store = new ContentStore(fresh('cas'));
  const good = await layer(store, [{ name: 'f', data: 'f' }]);
  const bytes = gzipSync(Buffer.alloc(4096, 7)).subarray(0, 200); // truncated gzip of no tar
  const { digest, size } = store.putBytes(bytes);
  const img = composeImage(store, undefined, [good, { descriptor: { mediaType: MEDIA_TYPE_LAYER_GZIP, digest, size }, diffId: `sha256:${sha(bytes)}`, createdBy: 'corrupt' }], { env: {}, labels: {} }, 0);
  const dir = fresh('corrupt');
  mkdirSync(path.join(dir, 'scratch'));
  const out = path.join(dir, 'out', 'x.sif');
  try {
    await imageToSif({ store, image: img, scratchDir: path.join(dir, 'scratch'), outFile: out, runner });
    assert.unreachable();
  } catch (e) {
    assert.instance(e, UnpackError);
    assert.match((e as Error).message, new RegExp(`^layer ${digest}: `));
  }
  assert.equal(readdirSync(path.join(dir, 'out')), []);
  assert.equal(readdirSync(path.join(dir, 'scratch')), []);
});

test('flattenImage alone: one tar stream, owners root, times the epoch; destroying it stops the reading', async () => {
  const store = new ContentStore(fresh('cas'));
  const img = await image(store, [[{ name: 'a/', type: 'directory' }, { name: 'a/f', data: 'lower' }], [{ name: 'a/f', data: 'upper' }, { name: 'b', type: 'symlink', linkname: 'a/f' }]]);
  const extract = tar.extract();
  flattenImage(store, img, { epoch: 1234 }).pipe(extract);
  const seen: string[] = [];
  for await (const entry of extract) {
    const h = entry.header;
    const body: Buffer[] = [];
    for await (const c of entry) body.push(c as Buffer);
    seen.push(`${h.name} ${h.type} ${h.uid}:${h.gid} ${(h.mtime as Date).getTime() / 1000} ${Buffer.concat(body).toString() || (h.linkname ?? '')}`);
  }
  assert.equal(seen, ['a/f file 0:0 1234 upper', 'b symlink 0:0 1234 a/f', 'a directory 0:0 1234 ']);

  const big = await image(store, [[{ name: 'big', data: 'x'.repeat(4 << 20) }]]);
  const s = flattenImage(store, big);
  const closed = new Promise((resolve) => s.on('close', resolve));
  s.destroy();
  await closed; // no unhandled rejection, no hang
});

test.run();
