/** Sweeping the temp files of graph processes that are gone (engine/tmp.ts). */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { processIdentity, recordProcess, removeOwnTemps, sweepTemps } from '../engine/tmp.js';
import { defaultRules } from '../rules/index.js';
import { workspace } from './helpers.js';

const test = suite('tmp');

/** A pid whose process has ended. */
const deadPid = () => spawnSync('true').pid as number;
const DIGEST = 'a'.repeat(64);

/** Temps as every part of graph names them, each with `pid`. */
const tempsOf = (pid: number): string[] => [
  `.tmp-published.lock.json-${pid}-0a1b2c3d`,
  `.graph.trash-${pid}`,
  `.graph/tmp/${pid}-0123456789ab/rootfs/usr/bin/python3`,
  `.graph/cas/sha256/.tmp-layer-${pid}-c144ed7f`,
  `.graph/cache/rootfs/${DIGEST}.tmp-${pid}-828c2ede91fd8`,
  `.graph/cache/debian/debs/.tmp-x.deb-${pid}-00ff00ff`,
  `.graph/out/oci/app.tmp-${pid}-1764480000000/index.json`,
  `.graph/out/oci/app.old-${pid}-1764480000000/index.json`,
  `.graph/out/oci/app/blobs/sha256/.tmp-${DIGEST}-${pid}-12345678`,
  `.graph/tmp/result.partial-${pid}-k3j4h5g6/index.json`,
  `dist/sif/.tmp-app.sif-${pid}-9abcdef0`,
  `dist/oci/blobs/sha256/.tmp-${DIGEST}-${pid}-12345678`,
];
/** The top-level path of each temp (what is removed). */
const topOf = (temp: string, pid: number) => temp.slice(0, temp.indexOf(String(pid))) + temp.slice(temp.indexOf(String(pid))).split('/')[0];

test("a build's sweep removes every temp of a process that is gone, and nothing else", () => {
  const pid = deadPid();
  const keep = [
    'images.yaml',
    'dist/sif/app.sif',
    '.graph/out/oci/app/index.json',
    `.graph/cas/sha256/${DIGEST}`,
    // Inside an unpacked root filesystem and a test's output (the test rule's holdsUserFiles): the image's and the test's files.
    `.graph/cache/rootfs/${DIGEST}/etc/.tmp-passwd-${pid}-12345678`,
    `.graph/out/test/test:g%2Fm@oci/output/.tmp-x-${pid}-12345678`,
  ];
  const temps = tempsOf(pid);
  const dir = workspace(Object.fromEntries([...keep, ...temps].map((f) => [f, 'x'])));
  const { removed, kept } = sweepTemps(dir, path.join(dir, '.graph'), defaultRules);
  assert.equal(removed.map((p) => path.relative(dir, p)).sort(), temps.map((t) => topOf(t, pid)).sort());
  assert.equal(kept, []);
  for (const t of temps) assert.not.ok(existsSync(path.join(dir, topOf(t, pid))), t);
  for (const k of keep) assert.ok(existsSync(path.join(dir, k)), k);
});

test("a test's output is left alone because the test rule says it holds user files (engine/tmp.ts does not know where tests write)", () => {
  const pid = deadPid();
  const inOutput = `.graph/out/test/test:g%2Fm@oci/output/.tmp-x-${pid}-12345678`;
  const beside = `.graph/out/test/test:g%2Fm@oci/.tmp-x-${pid}-12345678`;
  const dir = workspace({ [inOutput]: 'x', [beside]: 'x' });
  assert.equal(sweepTemps(dir, path.join(dir, '.graph'), defaultRules).removed, [path.join(dir, beside)]);
  assert.ok(existsSync(path.join(dir, inOutput)));
  // Without the rule's word, it is a temp like any other.
  assert.equal(sweepTemps(dir, path.join(dir, '.graph'), []).removed, [path.join(dir, inOutput)]);
});

test('a live process keeps its temps, unless its record names another process (a reused pid); our own pid is an earlier process', async () => {
  const sleeper = spawn('sleep', ['30'], { stdio: 'ignore' });
  try {
    const live = sleeper.pid as number;
    await new Promise((r) => setTimeout(r, 50));
    const identity = processIdentity(live) as string;
    assert.match(identity, /^[0-9a-f-]{36} \d+$/);
    const dir = workspace({ [`.graph/cas/sha256/.tmp-layer-${live}-00000001`]: 'x', [`.graph/tmp/${live}-0123456789ab/f`]: 'x', [`.graph/cas/sha256/.tmp-layer-${process.pid}-00000001`]: 'x' });
    const sweep = () => sweepTemps(dir, path.join(dir, '.graph'), defaultRules).removed.map((p) => path.relative(dir, p)).sort();
    // No record: a live process that is not a build (a plan writing its memo) keeps its temps.
    assert.equal(sweep(), [`.graph/cas/sha256/.tmp-layer-${process.pid}-00000001`]);
    // Its record names it: kept.
    writeFileSync(path.join(dir, `.graph/tmp/${live}.proc`), `${identity}\n`);
    assert.equal(sweep(), []);
    // The record was another process's with the same pid, which is gone: removed, record too.
    writeFileSync(path.join(dir, `.graph/tmp/${live}.proc`), `${identity.split(' ')[0]} 1\n`);
    assert.equal(sweep(), [`.graph/cas/sha256/.tmp-layer-${live}-00000001`, `.graph/tmp/${live}-0123456789ab`, `.graph/tmp/${live}.proc`]);
  } finally {
    sleeper.kill('SIGKILL');
  }
});

test("removeOwnTemps removes this process's temps only (a build quitting at once)", () => {
  const other = deadPid();
  const dir = workspace(Object.fromEntries([...tempsOf(process.pid), ...tempsOf(other)].map((f) => [f, 'x'])));
  const { removed } = removeOwnTemps(dir, path.join(dir, '.graph'), defaultRules);
  assert.equal(removed.map((p) => path.relative(dir, p)).sort(), tempsOf(process.pid).map((t) => topOf(t, process.pid)).sort());
  for (const t of tempsOf(other)) assert.ok(existsSync(path.join(dir, t)), t);
});

test('recordProcess writes this process’s identity, and the record goes when asked (or at exit)', () => {
  const dir = workspace({});
  const remove = recordProcess(path.join(dir, '.graph'));
  const file = path.join(dir, '.graph', 'tmp', `${process.pid}.proc`);
  assert.is(readFileSync(file, 'utf8'), `${processIdentity(process.pid)}\n`);
  remove();
  assert.not.ok(existsSync(file));
});

test('a temp directory with something mounted inside is kept and named', () => {
  const pid = deadPid();
  const dir = workspace({});
  const scratch = path.join(dir, '.graph', 'tmp', `${pid}-0123456789ab`);
  mkdirSync(path.join(scratch, 'rootfs', 'proc'), { recursive: true });
  if (spawnSync('mount', ['-t', 'tmpfs', 'none', path.join(scratch, 'rootfs', 'proc')]).status !== 0) return; // not allowed here
  try {
    writeFileSync(path.join(scratch, 'rootfs', 'proc', 'host-file'), 'x');
    assert.equal(sweepTemps(dir, path.join(dir, '.graph'), defaultRules), { removed: [], kept: [{ path: scratch, why: 'something is mounted inside it' }] });
    assert.ok(existsSync(path.join(scratch, 'rootfs', 'proc', 'host-file')));
  } finally {
    spawnSync('umount', [path.join(scratch, 'rootfs', 'proc')]);
  }
});

test.run();
