/**
 * SIF: the container format (rules/sif/sif.ts) and the OCI → SIF conversion (rules/sif/convert.ts),
 * judged by independent tools: shared/tools/sifcheck.py (format, --runnable, --deep), siftool
 * (sylabs' own reader) and unsquashfs; the runtime files are run for real (chroot into the
 * unpacked partition, busybox-static from Debian's mirror as the image's userland).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, existsSync, lstatSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, readlinkSync, readSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { ExecaRunner, type ProcessRunner } from '../engine/process.js';
import { ContentStore } from '../engine/cache/store.js';
import { composeImage, type StoredImage } from '../rules/oci/image.js';
import { entriesForCopy, onDiskModes, writeLayer, type LayerEntry } from '../rules/oci/layer.js';
import { addRuntimeFiles, ConvertError, envScript, imageToSif, labelsJson, mksquashfsArgs, type SifResult } from '../rules/sif/convert.js';
import { completeSif, DataType, FsType, ID_NAMESPACE, PartType, primaryPartition, readSif, sifPartitionOffset, SifError, writeSif } from '../rules/sif/sif.js';
import { busyboxRoot, SIFCHECK } from './helpers.js';

const test = suite('sif');

const ROOT = mkdtempSync(path.join(tmpdir(), 'graph-sif-'));
const EPOCH_B = 1_700_000_000;
const runner = new ExecaRunner();

function sh(argv: string[], cwd?: string): string {
  return execFileSync(argv[0], argv.slice(1), { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}
const fresh = (name: string) => mkdtempSync(path.join(ROOT, `${name}-`));
const sha256 = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');
const md5 = (file: string) => createHash('md5').update(readFileSync(file)).digest('hex');

/** sifcheck's JSON report and exit status. */
function sifcheck(file: string, ...args: string[]): { status: number; report: any; stderr: string } {
  const r = spawnSync('python3', [SIFCHECK, ...args, file], { encoding: 'utf8' });
  return { status: r.status ?? -1, report: r.stdout ? JSON.parse(r.stdout) : undefined, stderr: r.stderr };
}

/** busybox-static from the host's Debian mirror, unpacked, with /bin/sh. */
const busyboxRootfs = () => busyboxRoot(path.join(fresh('busybox'), 'rootfs'));

const data = (p: string, text: string, mode = 0o644): LayerEntry => ({ type: 'data', path: p, mode, data: Buffer.from(text) });

/** base (busybox) + app files + a layer whose whiteout deletes /opt/app/old.txt; ENV, CMD, labels set. */
async function makeImage(store: ContentStore): Promise<StoredImage> {
  const layers = [];
  for (const [entries, createdBy] of [
    [entriesForCopy(busyboxRootfs(), '/', undefined, onDiskModes), 'busybox-static'],
    [[data('opt/app/hello.txt', 'hello from the image\n'), data('opt/app/old.txt', 'deleted later\n'), data('opt/app/bin/greet', '#!/bin/sh\necho "greet: $GREETING $*"\n', 0o755)], 'app'],
    [[data('opt/app/.wh.old.txt', '')], 'rm /opt/app/old.txt'],
  ] as const) {
    const l = await writeLayer(entries, store);
    layers.push({ descriptor: { mediaType: l.mediaType, digest: l.digest, size: l.size }, diffId: l.diffId, createdBy });
  }
  return composeImage(
    store,
    undefined,
    layers,
    {
      env: { PATH: '/opt/app/bin:/bin', GREETING: 'hi "there" $USER' },
      entrypoint: ['/opt/app/bin/greet'],
      cmd: ['default', 'args'],
      labels: { 'org.example.model': 'pwm', 'a.first': '1' },
    },
    0,
  );
}

let store: ContentStore;
let image: StoredImage;
const sifA = path.join(ROOT, 'a.sif');
const sifB = path.join(ROOT, 'b.sif');
const sifA4 = path.join(ROOT, 'a4.sif');
const sifC = path.join(ROOT, 'c.sif');
let a: SifResult;
let a4: SifResult;
let b: SifResult;
let c: SifResult;

test.before(async () => {
  store = new ContentStore(fresh('cas'));
  image = await makeImage(store);
  a = await imageToSif({ store, image, scratchDir: fresh('scratch'), outFile: sifA, epoch: 0, runner });
  // b on one compressor thread, a4 on four, a on every processor (the default).
  b = await imageToSif({ store, image, scratchDir: fresh('scratch'), outFile: sifB, epoch: 0, runner, jobs: 1 });
  a4 = await imageToSif({ store, image, scratchDir: fresh('scratch'), outFile: sifA4, epoch: 0, runner, jobs: 4 });
  c = await imageToSif({ store, image, scratchDir: fresh('scratch'), outFile: sifC, epoch: EPOCH_B, runner });
});

test.after(() => {
  rmSync(ROOT, { recursive: true, force: true });
});

test('writeSif: the layout pkg/sif writes, and readSif reads back what was written', async () => {
  const dir = fresh('write');
  mkdirSync(path.join(dir, 'tree'));
  writeFileSync(path.join(dir, 'tree', 'x'), 'x\n');
  const partition = path.join(dir, 'p.squashfs');
  sh(['mksquashfs', path.join(dir, 'tree'), partition, ...mksquashfsArgs(0)]);
  const out = path.join(dir, 'x.sif');
  const json = '{"Cmd":["x"]}';
  const w = await writeSif({ partitionFile: partition, outFile: out, arch: 'arm64', epoch: 42, definition: 'Bootstrap: scratch\n', json: { 'oci-config.json': json, 'a.json': '[]' } });

  const dataOffset = 4096 + 48 * 585;
  const partOffset = Math.ceil((dataOffset + 19 + 2 + json.length) / 4096) * 4096;
  const psize = readFileSync(partition).length;
  const read = readSif(out);
  assert.equal(read, { header: w.header, descriptors: w.descriptors });
  const { id, ...header } = read.header;
  assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.equal(header, {
    launchScript: '#!/usr/bin/env run-singularity\n',
    magic: 'SIF_MAGIC',
    version: '01',
    arch: 'arm64',
    archCode: '04',
    createdAt: 42,
    modifiedAt: 42,
    descriptorsFree: 44,
    descriptorsTotal: 48,
    descriptorsOffset: 4096,
    descriptorsSize: 48 * 585,
    dataOffset,
    dataSize: partOffset + psize - dataOffset,
  });
  const common = { groupId: 1, linkedId: 0, linkedIsGroup: false, createdAt: 42, modifiedAt: 42 };
  assert.equal(read.descriptors, [
    { index: 0, dataType: DataType.Deffile, id: 1, ...common, offset: dataOffset, size: 19, sizeWithPadding: 19, name: '' },
    { index: 1, dataType: DataType.GenericJSON, id: 2, ...common, offset: dataOffset + 19, size: 2, sizeWithPadding: 2, name: 'a.json' },
    { index: 2, dataType: DataType.GenericJSON, id: 3, ...common, offset: dataOffset + 21, size: json.length, sizeWithPadding: json.length, name: 'oci-config.json' },
    {
      index: 3,
      dataType: DataType.Partition,
      id: 4,
      ...common,
      offset: partOffset,
      size: psize,
      sizeWithPadding: partOffset - (dataOffset + 21 + json.length) + psize,
      name: '',
      fsType: FsType.Squashfs,
      partType: PartType.PrimSys,
      arch: 'arm64',
    },
  ]);
  const bytes = readFileSync(out);
  assert.is(bytes.length, w.size);
  assert.is(w.sha256, sha256(out));
  assert.is(w.md5, md5(out));
  assert.ok(bytes.subarray(partOffset).equals(readFileSync(partition)), 'the partition holds the squashfs bytes');
  assert.is(bytes.subarray(dataOffset + 21, dataOffset + 21 + json.length).toString(), json);
  assert.is(primaryPartition(read).offset, partOffset);
  // The id is recomputable from the file: UUIDv5(ID_NAMESPACE, 'sha256:' + SHA-256 of bytes after the header).
  const pyId = sh(['python3', '-c', `import hashlib,sys,uuid; d=open(sys.argv[1],'rb').read()[128:]; print(uuid.uuid5(uuid.UUID('${ID_NAMESPACE}'), 'sha256:'+hashlib.sha256(d).hexdigest()))`, out]);
  assert.is(pyId.trim(), id);

  // Independent readers agree.
  const check = sifcheck(out, '--arch', 'arm64', '--expect', '/x');
  assert.is(check.status, 0, check.stderr);
  assert.equal(check.report.warnings, []);
  assert.match(sh(['siftool', 'list', out]), /4\s+\|1\s+\|NONE\s+\|\d+-\d+\s+\|FS \(Squashfs\/\*System\/arm64\)/);
  assert.match(sh(['siftool', 'header', out]), new RegExp(`Primary Architecture:\\s+arm64[\\s\\S]*ID:\\s+${id}`));

  // Same input, same bytes; another epoch, another id.
  const again = await writeSif({ partitionFile: partition, outFile: path.join(dir, 'y.sif'), arch: 'arm64', epoch: 42, definition: 'Bootstrap: scratch\n', json: { 'oci-config.json': json, 'a.json': '[]' } });
  assert.is(again.sha256, w.sha256);
  const later = await writeSif({ partitionFile: partition, outFile: path.join(dir, 'z.sif'), arch: 'arm64', epoch: 43 });
  assert.is.not(later.header.id, w.header.id);
  assert.is(later.descriptors.length, 1);
  assert.is(later.descriptors[0].offset, 32768); // 32176 rounded up to 4096
});

test('completeSif around mksquashfs -offset gives the bytes writeSif gives; moveFile stores it without a copy', async () => {
  const dir = fresh('complete');
  mkdirSync(path.join(dir, 'tree'));
  writeFileSync(path.join(dir, 'tree', 'x'), 'x\n');
  const contents = { arch: 'amd64', epoch: 7, definition: 'd\n', json: { 'oci-config.json': '{}' } };
  const offset = sifPartitionOffset(contents);
  assert.is(offset, 32768);
  const inPlace = path.join(dir, 'in-place.sif');
  sh(['mksquashfs', path.join(dir, 'tree'), inPlace, ...mksquashfsArgs(0), '-offset', String(offset)]);
  const completed = await completeSif(inPlace, contents);
  sh(['mksquashfs', path.join(dir, 'tree'), path.join(dir, 'p.squashfs'), ...mksquashfsArgs(0)]);
  const written = await writeSif({ ...contents, partitionFile: path.join(dir, 'p.squashfs'), outFile: path.join(dir, 'copied.sif') });
  assert.ok(readFileSync(inPlace).equals(readFileSync(path.join(dir, 'copied.sif'))), 'byte-identical');
  assert.equal(completed, written);
  assert.is(completed.sha256, sha256(inPlace));

  const store = new ContentStore(path.join(dir, 'cas'));
  const inode = lstatSync(inPlace).ino;
  const { digest, size } = await store.moveFile(inPlace, `sha256:${completed.sha256}`);
  assert.is(size, completed.size);
  assert.is(lstatSync(store.pathOf(digest)).ino, inode, 'renamed, not copied');
  assert.not.ok(existsSync(inPlace));
  assert.ok(await store.verify(digest));

  // No squashfs at the offset: a clear error, nothing written to the file.
  const wrong = path.join(dir, 'wrong.sif');
  writeFileSync(wrong, Buffer.alloc(offset + 4096));
  try {
    await completeSif(wrong, contents);
    assert.unreachable();
  } catch (e) {
    assert.instance(e, SifError);
    assert.is((e as Error).message, `${wrong} has no squashfs image at offset ${offset} (no 'hsqs' superblock), so it cannot become a SIF`);
  }
  assert.ok(readFileSync(wrong).equals(Buffer.alloc(offset + 4096)));
});

test('writeSif refuses what is not a squashfs partition or a SIF architecture, and leaves nothing behind', async () => {
  const dir = fresh('refuse');
  writeFileSync(path.join(dir, 'not.squashfs'), Buffer.alloc(8192));
  const out = path.join(dir, 'x.sif');
  for (const [arch, message] of [
    ['amd64', `${path.join(dir, 'not.squashfs')} is not a squashfs image (no 'hsqs' superblock), so it cannot be a SIF squashfs partition`],
    ['sparc64', "architecture 'sparc64' has no SIF code; SIF knows 386, amd64, arm, arm64, ppc64, ppc64le, mips, mipsle, mips64, mips64le, s390x, riscv64, loong64"],
  ]) {
    try {
      await writeSif({ partitionFile: path.join(dir, 'not.squashfs'), outFile: out, arch });
      assert.unreachable();
    } catch (e) {
      assert.instance(e, SifError);
      assert.is((e as Error).message, message);
    }
  }
  assert.equal(readdirSync(dir), ['not.squashfs']);
  try {
    readSif(path.join(dir, 'not.squashfs'));
    assert.unreachable();
  } catch (e) {
    assert.is((e as Error).message, `${path.join(dir, 'not.squashfs')} is not a SIF file: the magic at offset 32 is '', not 'SIF_MAGIC'`);
  }
});

test('imageToSif: a valid, runnable SIF (sifcheck --runnable --deep, siftool), whiteouts applied', () => {
  assert.is(a.size, readFileSync(sifA).length);
  assert.is(a.sha256, sha256(sifA));
  assert.is(a.md5, md5(sifA));
  const check = sifcheck(sifA, '--runnable', '--deep', '--list', '--strict', '--expect', '/bin/busybox', '--expect-exec', '/opt/app/bin/greet', '--expect', '/opt/app/hello.txt');
  assert.is(check.status, 0, check.stderr);
  assert.equal(check.report.warnings, []);
  assert.equal(check.report.runnable, { runscript: true, bin_sh: true });
  assert.is(check.report.squashfs.compression_name, 'gzip');
  assert.is(check.report.squashfs.mkfs_time, 0);
  const listing: string[] = check.report.listing;
  assert.ok(!listing.some((l) => l.includes('/opt/app/old.txt')), 'the whiteout removed /opt/app/old.txt');
  for (const line of [
    '-rwxr-xr-x /.singularity.d/runscript',
    '-rwxr-xr-x /.singularity.d/env/10-docker2singularity.sh',
    '-rw-r--r-- /.singularity.d/labels.json',
    'drwxr-xr-x /.singularity.d/libs',
    'drwxrwxrwt /tmp',
    '-rw-r--r-- /etc/resolv.conf',
    'lrwxrwxrwx /singularity -> .singularity.d/runscript',
  ]) {
    assert.ok(listing.includes(line), `listing has ${line}`);
  }

  const sif = readSif(sifA);
  assert.equal(
    sif.descriptors.map((d) => [d.id, d.dataType, d.name]),
    [
      [1, DataType.Deffile, ''],
      [2, DataType.GenericJSON, 'oci-config.json'],
      [3, DataType.Partition, ''],
    ],
  );
  const part = primaryPartition(sif);
  assert.equal([part.fsType, part.partType, part.arch, sif.header.arch, part.offset % 4096], [FsType.Squashfs, PartType.PrimSys, 'amd64', 'amd64', 0]);
  const config = JSON.parse(readSlice(sifA, sif.descriptors[1].offset, sif.descriptors[1].size));
  assert.equal(config, image.config.config);

  // siftool (sylabs' reader) sees one squashfs primary system partition of the image's arch.
  const list = sh(['siftool', 'list', sifA]);
  assert.match(list, /1\s+\|1\s+\|NONE\s+\|32176-\d+\s+\|Def\.FILE/);
  assert.match(list, /2\s+\|1\s+\|NONE\s+\|\d+-\d+\s+\|JSON\.Generic/);
  assert.match(list, /3\s+\|1\s+\|NONE\s+\|\d+-\d+\s+\|FS \(Squashfs\/\*System\/amd64\)/);
  assert.match(sh(['siftool', 'header', sifA]), /Primary Architecture:\s+amd64/);

  // unsquashfs reads the partition in place.
  const ls = sh(['unsquashfs', '-l', '-o', String(part.offset), sifA]);
  assert.ok(ls.includes('squashfs-root/opt/app/hello.txt'));
  assert.not.ok(ls.includes('old.txt'));
});

test('imageToSif is reproducible: identical bytes from a clean scratch, on 1, 4 or every processor; another epoch, another digest', () => {
  assert.equal(b, a);
  assert.equal(a4, a);
  assert.ok(readFileSync(sifA).equals(readFileSync(sifB)));
  assert.ok(readFileSync(sifA).equals(readFileSync(sifA4)));
  assert.is.not(c.sha256, a.sha256);
  assert.is.not(c.md5, a.md5);
  const hc = readSif(sifC).header;
  assert.equal([hc.createdAt, hc.modifiedAt], [EPOCH_B, EPOCH_B]);
  assert.is.not(hc.id, readSif(sifA).header.id);
  const check = sifcheck(sifC, '--runnable', '--strict');
  assert.is(check.status, 0, check.stderr);
  assert.is(check.report.squashfs.mkfs_time, EPOCH_B);
});

test('the runtime files work: run, exec and the environment, in a chroot of the partition', () => {
  const part = primaryPartition(readSif(sifA));
  const root = path.join(fresh('chroot'), 'root');
  sh(['unsquashfs', '-q', '-n', '-d', root, '-o', String(part.offset), sifA]);
  const inside = (argv: string[], env: Record<string, string> = {}) => {
    const r = spawnSync('/usr/sbin/chroot', [root, ...argv], { encoding: 'utf8', env });
    return `${r.status}: ${r.stdout}${r.stderr}`;
  };
  // run: ENTRYPOINT + CMD; arguments replace CMD; ENV applied (PATH from the image).
  assert.is(inside(['/.singularity.d/actions/run']), '0: greet: hi "there" $USER default args\n');
  assert.is(inside(['/.singularity.d/actions/run', 'a b', 'c']), '0: greet: hi "there" $USER a b c\n');
  // A variable set when the container starts wins over the image's ENV, except PATH.
  assert.is(inside(['/.singularity.d/actions/run'], { GREETING: 'hello', PATH: '/nowhere' }), '0: greet: hello default args\n');
  // By default the arguments pass through the shell once (apptainer's behaviour); --no-eval keeps them.
  assert.is(inside(['/.singularity.d/actions/run', '$GREETING']), '0: greet: hi "there" $USER hi "there" $USER\n');
  assert.is(inside(['/.singularity.d/actions/run', '$GREETING'], { APPTAINER_NO_EVAL: '1' }), '0: greet: hi "there" $USER $GREETING\n');
  assert.is(inside(['/.singularity.d/actions/exec', 'sh', '-c', 'echo "$PATH|$LD_LIBRARY_PATH|$(busybox cat /opt/app/hello.txt)"']), '0: /opt/app/bin:/bin|/.singularity.d/libs|hello from the image\n');
  assert.is(readFileSync(path.join(root, '.singularity.d/labels.json'), 'utf8'), '{\n\t"a.first": "1",\n\t"org.example.model": "pwm"\n}');
});

test('addRuntimeFiles stays inside the root, keeps what the image has, replaces its own files', () => {
  const root = path.join(fresh('runtime'), 'root');
  mkdirSync(path.join(root, 'data', 'etc'), { recursive: true });
  symlinkSync('/data/etc', path.join(root, 'etc')); // absolute: the image's /data/etc, not the host's
  writeFileSync(path.join(root, 'data', 'etc', 'hosts'), '127.0.0.1 model\n', { mode: 0o600 });
  mkdirSync(path.join(root, '.singularity.d'));
  writeFileSync(path.join(root, '.singularity.d', 'runscript'), 'old\n');
  writeFileSync(path.join(root, 'singularity'), 'a file of the image\n');
  symlinkSync('/somewhere', path.join(root, 'environment'));
  symlinkSync('/tmp', path.join(root, 'home')); // a link is left as it is, dangling or not
  addRuntimeFiles(root, { architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, config: { Cmd: ['true'] } });
  const mode = (p: string) => (lstatSync(path.join(root, p)).mode & 0o7777).toString(8);
  assert.is(readFileSync(path.join(root, 'data/etc/hosts'), 'utf8'), '127.0.0.1 model\n');
  assert.is(mode('data/etc/hosts'), '644');
  assert.is(readFileSync(path.join(root, 'data/etc/resolv.conf'), 'utf8'), '');
  assert.not.ok(existsSync('/data/etc/resolv.conf'), 'nothing was written outside the root');
  assert.match(readFileSync(path.join(root, '.singularity.d/runscript'), 'utf8'), /^#!\/bin\/sh\n/);
  assert.is(readFileSync(path.join(root, 'singularity'), 'utf8'), 'a file of the image\n');
  assert.is(readlinkSync(path.join(root, 'environment')), '.singularity.d/env/90-environment.sh');
  assert.is(readlinkSync(path.join(root, 'home')), '/tmp');
  assert.equal([mode('tmp'), mode('var/tmp'), mode('root'), mode('.singularity.d/libs'), mode('.singularity.d/actions/run')], ['1777', '1777', '700', '755', '755']);
});

test('envScript and labelsJson: apptainer shapes, odd names skipped, quoting exact', () => {
  assert.is(
    envScript(['PATH=/a:$HOME/b', 'X=1 "2" `3` \\4', 'EMPTY', 'BAD-NAME=x', '_ok=']),
    [
      '#!/bin/sh',
      '# ENV of the OCI image.',
      'export PATH="/a:\\$HOME/b"',
      'export X="${X:-"1 \\"2\\" \\`3\\` \\\\4"}"',
      'export EMPTY="${EMPTY:-}"',
      'export _ok="${_ok:-""}"',
      '',
    ].join('\n'),
  );
  assert.is(labelsJson({}), '{}');
});

test('a failing tar2sqfs is a clear error; no SIF appears and the scratch is cleaned', async () => {
  const failing: ProcessRunner = { run: async () => ({ exitCode: 1, aborted: false }) };
  const scratch = fresh('fail');
  const out = path.join(scratch, 'out', 'x.sif');
  mkdirSync(path.dirname(out));
  try {
    await imageToSif({ store, image, scratchDir: scratch, outFile: out, runner: failing, logFile: '/tmp/node.log' });
    assert.unreachable();
  } catch (e) {
    assert.instance(e, ConvertError);
    assert.is((e as Error).message, "tar2sqfs exited with 1 while building the SIF's root filesystem; its output is in /tmp/node.log");
  }
  assert.equal(readdirSync(scratch), ['out']);
  assert.equal(readdirSync(path.dirname(out)), []);
  assert.not.ok(existsSync(out));
});

function readSlice(file: string, offset: number, size: number): string {
  const fd = openSync(file, 'r');
  try {
    const buf = Buffer.alloc(size);
    readSync(fd, buf, 0, size, offset);
    return buf.toString('utf8');
  } finally {
    closeSync(fd);
  }
}

test.run();
