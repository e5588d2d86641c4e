/**
 * The workspace boundary: declarations read nothing outside the workspace (or the directories of
 * settings.allow_outside), symbolic links followed; checked at validation with exact diagnostics,
 * and again when keys are computed, layers written and tests compared.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, realpathSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Boundary, OutsideWorkspaceError } from '../../engine/validate/boundary.js';
import { FileDigester } from '../../engine/key/files.js';
import { ContentStore } from '../../engine/cache/store.js';
import { openWorkspace } from '../../engine/workspace.js';
import { buildOf } from '../../rules/build.js';
import { layerEntries, type LayersRecipe } from '../../rules/build/layers.js';
import { defaultRules } from '../../rules/index.js';
import { writeLayer } from '../../rules/oci/layer.js';
import { compareOutputs } from '../../rules/runtime/expect.js';
import { graph, workspace } from '../helpers.js';

const test = suite('boundary');

const HINT = '  hint: declarations read only inside the workspace (the directory of images.yaml): move the files in, or list their directory under settings.allow_outside in images.yaml';

/** How a thrown error reads, for exact assertions. */
function thrown(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    return `${(e as Error).name}: ${(e as Error).message}`;
  }
  return 'nothing thrown';
}

test('every declared path must resolve inside the workspace, symbolic links followed: exit 2, one diagnostic each', () => {
  const dir = workspace({
    'zoo/a.txt': 'a\n',
    'Dockerfile': 'FROM scratch\n',
    'expect/m1/out.txt': 'x\n',
    'images.yaml': `version: 1
images:
  a:
    layers:
      - {copy: /etc/passwd, to: /x}
      - {copy: ../../../../../../../../etc/passwd, to: /y}
      - {copy: zoo/etc/passwd, to: /z}
      - {copy: "zoo/etc/pass*", to: /e/}
      - {copy: zoo/etc, to: /l}
      - {copy: "zoo/*", to: /fine/}
  b:
    dockerfile: Dockerfile
    context: zoo/etc
  c:
    from: oci-layout:/etc
    layers: [{copy: zoo/a.txt, to: /a}]
`,
    'models.yaml': `version: 1
groups:
  g:
    image: a
    models: [m1, m2]
    test: {command: [x], inputs: /etc, expect: "expect/{model}"}
`,
  });
  symlinkSync('/etc', path.join(dir, 'zoo/etc'));
  symlinkSync('../zoo/etc', path.join(dir, 'expect/m2'));
  const r = graph(dir, 'validate');
  assert.is(r.code, 2);
  assert.fixture(
    r.stderr,
    `images.yaml:5:16: error[outside-workspace]: images.a.layers[0].copy '/etc/passwd' resolves to /etc/passwd, outside the workspace
    5 |       - {copy: /etc/passwd, to: /x}
      |                ^^^^^^^^^^^
${HINT}

images.yaml:6:16: error[outside-workspace]: images.a.layers[1].copy '../../../../../../../../etc/passwd' resolves to /etc/passwd, outside the workspace
    6 |       - {copy: ../../../../../../../../etc/passwd, to: /y}
      |                ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
${HINT}

images.yaml:7:16: error[outside-workspace]: images.a.layers[2].copy 'zoo/etc/passwd' resolves to /etc/passwd, outside the workspace (zoo/etc is a symbolic link to /etc)
    7 |       - {copy: zoo/etc/passwd, to: /z}
      |                ^^^^^^^^^^^^^^
${HINT}

images.yaml:8:16: error[outside-workspace]: images.a.layers[3].copy 'zoo/etc/pass*' resolves to /etc, outside the workspace (zoo/etc is a symbolic link to /etc)
    8 |       - {copy: "zoo/etc/pass*", to: /e/}
      |                ^^^^^^^^^^^^^^^
${HINT}

images.yaml:9:16: error[outside-workspace]: images.a.layers[4].copy 'zoo/etc' resolves to /etc, outside the workspace (zoo/etc is a symbolic link to /etc)
    9 |       - {copy: zoo/etc, to: /l}
      |                ^^^^^^^
${HINT}

images.yaml:13:14: error[outside-workspace]: images.b.context 'zoo/etc' resolves to /etc, outside the workspace (zoo/etc is a symbolic link to /etc)
    13 |     context: zoo/etc
       |              ^^^^^^^
${HINT}

images.yaml:15:11: error[outside-workspace]: images.c.from 'oci-layout:/etc' resolves to /etc, outside the workspace
    15 |     from: oci-layout:/etc
       |           ^^^^^^^^^^^^^^^
${HINT}

models.yaml:6:34: error[outside-workspace]: groups.g.test.inputs '/etc' resolves to /etc, outside the workspace
    6 |     test: {command: [x], inputs: /etc, expect: "expect/{model}"}
      |                                  ^^^^
${HINT}

models.yaml:6:48: error[outside-workspace]: groups.g.test.expect 'expect/{model}' (model 'm2') resolves to /etc, outside the workspace (expect/m2 is a symbolic link to ../zoo/etc)
    6 |     test: {command: [x], inputs: /etc, expect: "expect/{model}"}
      |                                                ^^^^^^^^^^^^^^^^
${HINT}

9 errors
`,
  );
});

test('copy: ../../../root is a diagnostic, not a walk of the whole directory', () => {
  const dir = workspace({ 'images.yaml': 'version: 1\nimages:\n  a:\n    layers: [{copy: ../../../../../../../../root, to: /r}]\n' });
  const r = graph(dir, 'plan');
  assert.is(r.code, 2);
  assert.ok(r.stderr.startsWith("images.yaml:4:21: error[outside-workspace]: images.a.layers[0].copy '../../../../../../../../root' resolves to /root, outside the workspace\n"), r.stderr);
});

test('Boundary.resolve follows links also where nothing exists (a dangling link), and gives up on a loop', () => {
  const dir = realpathSync(workspace({ 'zoo/a.txt': 'a\n' }));
  symlinkSync('/nonexistent/graph-test', path.join(dir, 'zoo/dangling'));
  symlinkSync('loop-b', path.join(dir, 'zoo/loop-a'));
  symlinkSync('loop-a', path.join(dir, 'zoo/loop-b'));
  const b = new Boundary(dir);
  assert.is(b.resolve(path.join(dir, 'zoo/dangling/x')), '/nonexistent/graph-test/x');
  assert.is(b.outside(path.join(dir, 'zoo/dangling')), '/nonexistent/graph-test');
  assert.is(b.outside(path.join(dir, 'zoo/not-yet/b.txt')), undefined);
  assert.is(b.outside(path.join(dir, 'zoo/loop-a')), undefined, 'a loop inside stays inside (reading it fails with ELOOP)');
  assert.equal(b.linkOnTheWay(path.join(dir, 'zoo/dangling/x')), { link: 'zoo/dangling', target: '/nonexistent/graph-test' });
  assert.ok(b.contains(dir) && b.contains(`${dir}/x`) && !b.contains(`${dir}x`), 'a sibling with the same prefix is outside');
});

test('settings.allow_outside: a listed directory may be read (relative to images.yaml); one that does not exist is an error', () => {
  const outside = workspace({ 'w.bin': 'weights\n' });
  const dir = workspace({ 'zoo/a.txt': 'a\n' });
  const rel = path.relative(dir, outside);
  writeFileSync(path.join(dir, 'images.yaml'), `version: 1\nsettings:\n  allow_outside: [${rel}]\nimages:\n  a:\n    layers: [{copy: ${rel}/w.bin, to: /w.bin}, {copy: zoo/a.txt, to: /a.txt}]\n`);
  const r = graph(dir, 'build', 'build:a', '--report', 'r.json');
  assert.is(r.code, 0, r.stderr);
  const layer = JSON.parse(readFileSync(path.join(dir, 'r.json'), 'utf8')).nodes[0].outputs.layers[0] as string;
  const listing = spawnSync('tar', ['-tzf', path.join(dir, '.graph/cas/sha256', layer.slice('sha256:'.length))], { encoding: 'utf8' }).stdout;
  assert.is(listing, 'a.txt\nw.bin\n');

  writeFileSync(path.join(dir, 'images.yaml'), `version: 1\nsettings:\n  allow_outside: [${rel}, ../no-such-dir]\nimages:\n  a:\n    layers: [{copy: zoo/a.txt, to: /a.txt}]\n`);
  const missing = graph(dir, 'validate');
  assert.is(missing.code, 2);
  assert.is(
    missing.stderr,
    `images.yaml:3:${21 + rel.length}: error[missing-file]: settings.allow_outside[1]: directory '${path.join(path.dirname(dir), 'no-such-dir')}' does not exist
    3 |   allow_outside: [${rel}, ../no-such-dir]
      | ${' '.repeat(20 + rel.length)}^^^^^^^^^^^^^^

1 error
`,
  );
});

test('a symbolic link matched by a glob is copied as a link (as Docker COPY does); its target outside is never read', () => {
  const outside = workspace({ secret: 'TOP SECRET\n' });
  const dir = workspace({ 'zoo/a.txt': 'a\n', 'images.yaml': 'version: 1\nimages:\n  a:\n    layers: [{copy: "zoo/*", to: /z/}]\n' });
  symlinkSync(path.join(outside, 'secret'), path.join(dir, 'zoo/link'));
  const r = graph(dir, 'build', 'build:a', '--report', 'r.json');
  assert.is(r.code, 0, r.stderr);
  const layer = JSON.parse(readFileSync(path.join(dir, 'r.json'), 'utf8')).nodes[0].outputs.layers[0] as string;
  const blob = path.join(dir, '.graph/cas/sha256', layer.slice('sha256:'.length));
  const listing = spawnSync('tar', ['-tvzf', blob], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean).map((l) => l.replace(/^(\S+) .* 1970-01-01 00:00 /, '$1 '));
  assert.equal(listing, ['drwxr-xr-x z/', '-rw-r--r-- z/a.txt', `lrwxrwxrwx z/link -> ${path.join(outside, 'secret')}`]);
  assert.not.ok(gunzipSync(readFileSync(blob)).includes('TOP SECRET'), 'the target was not read');
});

test('checked again at execution: a directory replaced by a link after validation is refused by keys, layer entries and the layer writer', async () => {
  const outside = workspace({ 'f.txt': 'TOP SECRET\n' });
  const dir = workspace({ 'zoo/d/f.txt': 'inside\n', 'images.yaml': 'version: 1\nimages:\n  a:\n    layers: [{copy: zoo/d, to: /d}, {copy: "zoo/*", to: /z/}]\n' });
  const ws = openWorkspace(dir, defaultRules);
  const recipe = buildOf(ws.decls.images.get('a')!).recipe as LayersRecipe;
  if (recipe.kind !== 'layers') throw new Error('a layers: image');
  const listed = layerEntries(dir, recipe.layers, ws.decls.boundary);
  // After validation (and after the entries were listed), zoo/d becomes a link to a directory outside.
  renameSync(path.join(dir, 'zoo/d'), path.join(dir, 'zoo/was-d'));
  symlinkSync(outside, path.join(dir, 'zoo/d'));
  const real = realpathSync(outside);

  const digester = new FileDigester(dir, undefined, ws.decls.boundary);
  assert.is(digester.fingerprint('zoo/d/f.txt'), `outside-workspace:${real}/f.txt`);
  assert.is(digester.stats.bytesRead, 0, 'not a byte read');

  assert.is(thrown(() => layerEntries(dir, recipe.layers, ws.decls.boundary)), `OutsideWorkspaceError: zoo/d resolves to ${real}, outside the workspace`);

  const store = new ContentStore(path.join(dir, '.graph/cas'));
  try {
    await writeLayer(listed, store, { within: ws.decls.boundary });
    assert.unreachable('the layer was written');
  } catch (e) {
    assert.instance(e, OutsideWorkspaceError);
    assert.is((e as Error).message, `zoo/d/f.txt resolves to ${real}/f.txt, outside the workspace`);
  }
  assert.equal(readdirSync(path.join(dir, '.graph/cas/sha256')), [], 'no blob, no temp file left');

  // A file replaced by a link is not followed at all (O_NOFOLLOW), wherever the link points.
  renameSync(path.join(dir, 'zoo/d'), path.join(dir, 'zoo/link-to-outside'));
  renameSync(path.join(dir, 'zoo/was-d'), path.join(dir, 'zoo/d'));
  renameSync(path.join(dir, 'zoo/d/f.txt'), path.join(dir, 'zoo/d/g.txt'));
  symlinkSync('g.txt', path.join(dir, 'zoo/d/f.txt'));
  try {
    await writeLayer(listed, store, { within: ws.decls.boundary });
    assert.unreachable('the layer was written');
  } catch (e) {
    assert.is((e as NodeJS.ErrnoException).code, 'ELOOP');
  }
});

test('an oci-layout: base whose files link outside the workspace is refused before anything reads them', () => {
  const outside = workspace({ secret: 'TOP SECRET\n' });
  const dir = workspace({ 'f.txt': 'x\n', 'layout/index.json': '{}', 'images.yaml': 'version: 1\nimages:\n  a:\n    from: oci-layout:layout\n    layers: [{copy: f.txt, to: /f}]\n' });
  symlinkSync(path.join(outside, 'secret'), path.join(dir, 'layout/oci-layout'));
  const r = graph(dir, 'build', 'build:a', '--report', 'r.json');
  assert.is(r.code, 1, r.stderr);
  const why = `layout/oci-layout resolves to ${realpathSync(outside)}/secret, outside the workspace`;
  assert.equal(JSON.parse(readFileSync(path.join(dir, 'r.json'), 'utf8')).nodes[0].reasons, [why]);
  assert.not.ok(r.stderr.includes('TOP SECRET') || readFileSync(path.join(dir, '.graph/logs/build:a.log'), 'utf8').includes('TOP SECRET'));
});

test('test outputs: a link the command left in /output is not followed on the host; expectations stay inside the boundary', () => {
  const outside = workspace({ 'scores.tsv': 's1\t0.9\n' });
  const real = realpathSync(outside);
  const output = workspace({ 'log.txt': 'ran\n' });
  symlinkSync(path.join(outside, 'scores.tsv'), path.join(output, 'scores.tsv'));
  const dir = workspace({ 'expect/scores.tsv': 's1\t0.5\n' });
  const boundary = new Boundary(dir);
  assert.equal(compareOutputs(output, path.join(dir, 'expect'), { absolute: 0.001 }, boundary), {
    ok: false,
    differences: [`scores.tsv: leads out of /output (to ${real}/scores.tsv); not read`],
  });
  mkdirSync(path.join(dir, 'expect2'));
  symlinkSync(path.join(outside, 'scores.tsv'), path.join(dir, 'expect2/real.tsv'));
  writeFileSync(path.join(output, 'real.tsv'), 's1\t0.5\n');
  assert.is(
    thrown(() => compareOutputs(output, path.join(dir, 'expect2'), { absolute: 0.001 }, boundary)),
    `OutsideWorkspaceError: ${path.join(dir, 'expect2/real.tsv')} resolves to ${real}/scores.tsv, outside the workspace`,
  );
  // A link that stays inside its directory is followed as before.
  symlinkSync('real.tsv', path.join(output, 'same.tsv'));
  writeFileSync(path.join(dir, 'expect/same.tsv'), 's1\t0.5\n');
  rmSync(path.join(output, 'scores.tsv'));
  writeFileSync(path.join(output, 'scores.tsv'), 's1\t0.5\n');
  assert.equal(compareOutputs(output, path.join(dir, 'expect'), { absolute: 0.001 }, boundary), { ok: true, differences: [] });
});

test('a directory with more entries than a call takes arguments is copied (no "Maximum call stack size exceeded")', () => {
  const dir = workspace({});
  mkdirSync(path.join(dir, 'many'));
  for (let i = 0; i < 20_000; i++) writeFileSync(path.join(dir, 'many', `f${i}`), '');
  // A smaller stack makes the old push(...entries) overflow at ~15,000 entries instead of ~130,000.
  const build = fileURLToPath(new URL('../../rules/build/layers.js', import.meta.url));
  const boundary = fileURLToPath(new URL('../../engine/validate/boundary.js', import.meta.url));
  const script = `const { layerEntries } = await import(${JSON.stringify(build)}); const { Boundary } = await import(${JSON.stringify(boundary)});
const root = ${JSON.stringify(dir)};
process.stdout.write(String(layerEntries(root, [{ copy: 'many', to: '/m' }], new Boundary(root)).length));`;
  const r = spawnSync(process.execPath, ['--stack-size=100', '--input-type=module', '-e', script], { encoding: 'utf8' });
  assert.is(r.stderr, '');
  assert.is(r.stdout, '20001', '20,000 files and their directory');
});

test.run();
