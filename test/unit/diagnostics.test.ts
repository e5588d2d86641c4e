/** Bad declarations: the exact text users see, every problem at once, exit 2, .graph untouched. */
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { didYouMean, formatDiagnostic, lineColumn } from '../../engine/diagnostics.js';
import { graph, workspace } from '../helpers.js';

const test = suite('diagnostics');

function validate(files: Record<string, string>): { code: number; stderr: string; dir: string } {
  const dir = workspace(files);
  const r = graph(dir, 'validate');
  return { code: r.code, stderr: r.stderr, dir };
}

test('schema errors: unknown key with a suggestion, relative path, recipes, durations', () => {
  const r = validate({
    'm/a': 'x',
    'images.yaml': `version: 1
images:
  base:
    debian: {packages: [python3]}
    form: scratch
  app:
    from: base
    layers: [{copy: m/a, to: opt/a}]
  two:
    dockerfile: Dockerfile
    layers: [{copy: m/a, to: /a}]
`,
    'models.yaml': `version: 1
groups:
  g:
    image: app
    models: [m]
    test: {command: [x], timeout: 10 minutes}
`,
  });
  assert.is(r.code, 2);
  assert.fixture(
    r.stderr,
    `images.yaml:5:5: error[unknown-key]: unknown key 'form' in images.base (did you mean 'from'?)
    5 |     form: scratch
      |     ^^^^

images.yaml:8:30: error[schema]: images.app.layers[0].to must be an absolute path (starting with /)
    8 |     layers: [{copy: m/a, to: opt/a}]
      |                              ^^^^^

images.yaml:9:3: error[schema]: image 'two' has 2 recipes (dockerfile, layers): give exactly one
    9 |   two:
      |   ^^^

models.yaml:6:35: error[schema]: groups.g.test.timeout must be a number of seconds or a duration such as 90s, 10m or 1h
    6 |     test: {command: [x], timeout: 10 minutes}
      |                                   ^^^^^^^^^^

4 errors
`,
  );
  assert.not.ok(existsSync(path.join(r.dir, '.graph')), 'nothing written to .graph');
});

test('references, files, duplicates and resources are checked together', () => {
  const r = validate({
    'm/a': 'x',
    'images.yaml': `version: 1
settings:
  resources: {gpu: 1}
images:
  base:
    debian: {packages: [python3]}
  app:
    from: bsae
    layers: [{copy: m/missing, to: /opt/a}]
`,
    'models.yaml': `version: 1
groups:
  g1:
    image: ap
    models: [m1, m1]
    test: {command: [x], resources: {gpus: 1}}
  g2:
    image: base
    models: [x]
    test: {command: [x], runtimes: [oci, sif]}
`,
  });
  assert.is(r.code, 2);
  assert.fixture(
    r.stderr,
    `images.yaml:8:11: error[unknown-image]: image 'bsae' is not declared in images.yaml
    8 |     from: bsae
      |           ^^^^
  hint: did you mean 'base'?

images.yaml:9:21: error[missing-file]: 'm/missing' matches no file
    9 |     layers: [{copy: m/missing, to: /opt/a}]
      |                     ^^^^^^^^^

models.yaml:4:12: error[unknown-image]: group 'g1' names image 'ap', which images.yaml does not declare (did you mean 'app'?)
    4 |     image: ap
      |            ^^

models.yaml:5:18: error[duplicate]: model 'm1' is listed twice in group 'g1'
    5 |     models: [m1, m1]
      |                  ^^
  models.yaml:5:14: note: first listed here
    5 |     models: [m1, m1]
      |              ^^

models.yaml:6:38: error[unknown-resource]: resource 'gpus' is not declared in images.yaml settings.resources (did you mean 'gpu'?)
    6 |     test: {command: [x], resources: {gpus: 1}}
      |                                      ^^^^

models.yaml:10:42: error[no-sif]: group 'g2' tests the sif runtime, but image 'base' has no 'convert: [sif]'
    10 |     test: {command: [x], runtimes: [oci, sif]}
       |                                          ^^^
  hint: add 'convert: [sif]' to image 'base' in images.yaml, or name another image with 'sif:'

6 errors
`,
  );
});

test('every rule checks its own part, all reported together: recipes, publish references, tests', () => {
  const r = validate({
    'zoo/a': 'x',
    'images.yaml': `version: 1
settings:
  resources: {gpu: 1}
images:
  base:
    from: scratch
    debian: {packages: [python3]}
  app:
    from: base
    layers: [{copy: zoo/a, to: /a}, {copy: zoo/missing, to: /b}, {copy: /etc/passwd, to: /c}]
    publish: ["registry.example/Bad Name:1"]
  df:
    from: bse
    dockerfile: nope/Dockerfile
  df2:
    dockerfile: /etc/Dockerfile
  lay:
    from: oci-layout:nowhere
    layers: [{copy: "zoo/*", to: /z/}]
`,
    'models.yaml': `version: 1
groups:
  g:
    image: app
    sif: nope
    models: [m, m]
    test: {command: [x], inputs: "zoo/{model}", expect: /etc, runtimes: [oci, sif], resources: {gpu: 2, cpu: 1}}
  h:
    image: app
    models: [m]
    test: {command: [x], runtimes: [sif]}
`,
  });
  assert.is(r.code, 2);
  assert.fixture(
    r.stderr,
    `images.yaml:6:5: error[schema]: image 'base' is built from Debian packages and is a base itself: remove 'from'
    6 |     from: scratch
      |     ^^^^

images.yaml:10:44: error[missing-file]: 'zoo/missing' matches no file
    10 |     layers: [{copy: zoo/a, to: /a}, {copy: zoo/missing, to: /b}, {copy: /etc/passwd, to: /c}]
       |                                            ^^^^^^^^^^^

images.yaml:10:73: error[outside-workspace]: images.app.layers[2].copy '/etc/passwd' resolves to /etc/passwd, outside the workspace
    10 |     layers: [{copy: zoo/a, to: /a}, {copy: zoo/missing, to: /b}, {copy: /etc/passwd, to: /c}]
       |                                                                         ^^^^^^^^^^^
  hint: declarations read only inside the workspace (the directory of images.yaml): move the files in, or list their directory under settings.allow_outside in images.yaml

images.yaml:11:15: error[bad-reference]: 'registry.example/Bad Name:1' is not a valid image reference (expected [REGISTRY/]REPOSITORY[:TAG][@sha256:DIGEST], lowercase repository)
    11 |     publish: ["registry.example/Bad Name:1"]
       |               ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^

images.yaml:13:11: error[unknown-image]: image 'bse' is not declared in images.yaml
    13 |     from: bse
       |           ^^^
  hint: did you mean 'base'?

images.yaml:14:17: error[missing-file]: Dockerfile 'nope/Dockerfile' does not exist
    14 |     dockerfile: nope/Dockerfile
       |                 ^^^^^^^^^^^^^^^

images.yaml:14:17: error[missing-file]: build context directory 'nope' does not exist
    14 |     dockerfile: nope/Dockerfile
       |                 ^^^^^^^^^^^^^^^

images.yaml:16:17: error[outside-workspace]: images.df2.dockerfile '/etc/Dockerfile' resolves to /etc/Dockerfile, outside the workspace
    16 |     dockerfile: /etc/Dockerfile
       |                 ^^^^^^^^^^^^^^^
  hint: declarations read only inside the workspace (the directory of images.yaml): move the files in, or list their directory under settings.allow_outside in images.yaml

images.yaml:18:11: error[missing-file]: OCI image layout directory 'nowhere' does not exist
    18 |     from: oci-layout:nowhere
       |           ^^^^^^^^^^^^^^^^^^

models.yaml:5:10: error[unknown-image]: group 'g' names image 'nope', which images.yaml does not declare
    5 |     sif: nope
      |          ^^^^

models.yaml:6:17: error[duplicate]: model 'm' is listed twice in group 'g'
    6 |     models: [m, m]
      |                 ^
  models.yaml:6:14: note: first listed here
    6 |     models: [m, m]
      |              ^

models.yaml:7:34: error[missing-file]: test inputs directory 'zoo/m' does not exist
    7 |     test: {command: [x], inputs: "zoo/{model}", expect: /etc, runtimes: [oci, sif], resources: {gpu: 2, cpu: 1}}
      |                                  ^^^^^^^^^^^^^

models.yaml:7:57: error[outside-workspace]: groups.g.test.expect '/etc' resolves to /etc, outside the workspace
    7 |     test: {command: [x], inputs: "zoo/{model}", expect: /etc, runtimes: [oci, sif], resources: {gpu: 2, cpu: 1}}
      |                                                         ^^^^
  hint: declarations read only inside the workspace (the directory of images.yaml): move the files in, or list their directory under settings.allow_outside in images.yaml

models.yaml:7:102: error[unknown-resource]: test claims 2 'gpu' but only 1 exist: it could never run
    7 |     test: {command: [x], inputs: "zoo/{model}", expect: /etc, runtimes: [oci, sif], resources: {gpu: 2, cpu: 1}}
      |                                                                                                      ^

models.yaml:7:105: error[unknown-resource]: resource 'cpu' is not declared in images.yaml settings.resources (did you mean 'gpu'?)
    7 |     test: {command: [x], inputs: "zoo/{model}", expect: /etc, runtimes: [oci, sif], resources: {gpu: 2, cpu: 1}}
      |                                                                                                         ^^^

models.yaml:11:37: error[no-sif]: group 'h' tests the sif runtime, but image 'app' has no 'convert: [sif]'
    11 |     test: {command: [x], runtimes: [sif]}
       |                                     ^^^
  hint: add 'convert: [sif]' to image 'app' in images.yaml, or name another image with 'sif:'

16 errors
`,
  );
});

test('an unknown settings key lists the keys the engine and the rules declare', () => {
  const r = validate({ 'images.yaml': 'version: 1\nsettings:\n  zzz: 1\nimages:\n  a:\n    layers: [{copy: images.yaml, to: /a}]\n' });
  assert.is(r.code, 2);
  assert.match(r.stderr, "unknown key 'zzz' in settings\n");
  assert.match(r.stderr, 'hint: allowed keys: concurrency, builder, sandbox, resources, allow_outside, remote_cache, executor, slurm\n');
});

test('a cycle is printed as its whole path, one location per hop', () => {
  const r = validate({
    'm/a': 'x',
    'images.yaml': `version: 1
images:
  a:
    from: b
    layers: [{copy: m/a, to: /x}]
  b:
    from: c
    layers: [{copy: m/a, to: /x}]
  c:
    from: a
    layers: [{copy: m/a, to: /x}]
`,
  });
  assert.is(r.code, 2);
  assert.fixture(
    r.stderr,
    `images.yaml:4:11: error[cycle]: dependency cycle: build:a -> build:b -> build:c -> build:a
    4 |     from: b
      |           ^
  images.yaml:7:11: note: build:b depends on build:c
    7 |     from: c
      |           ^
  images.yaml:10:11: note: build:c depends on build:a
    10 |     from: a
       |           ^

1 error
`,
  );
});

test('YAML syntax errors and duplicate keys point at the spot', () => {
  const r = validate({ 'images.yaml': 'version: 1\nimages:\n  a:\n    debian: {packages: [x1]}\n  a:\n    debian: {packages: [x2]}\n' });
  assert.is(r.code, 2);
  assert.fixture(
    r.stderr,
    `images.yaml:5:3: error[yaml-syntax]: Map keys must be unique
    5 |   a:
      |   ^

1 error
`,
  );
  const tab = validate({ 'images.yaml': 'version: 1\nimages:\n  a: [unclosed\n' });
  assert.is(tab.code, 2);
  assert.match(tab.stderr, /^images\.yaml:\d+:\d+: error\[yaml-syntax\]: /);
});

test('YAML aliases: an alias bomb, an alias with no anchor and one inside its own anchor are exit 2 before any work', () => {
  const laughs = ['a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]'];
  for (const c of 'bcdefghi') laughs.push(`${c}: &${c} [${Array(9).fill(`*${String.fromCharCode(c.charCodeAt(0) - 1)}`).join(', ')}]`);
  const bomb = validate({ 'images.yaml': `version: 1\nimages: {}\n${laughs.join('\n')}\n` });
  assert.is(bomb.code, 2);
  assert.fixture(
    bomb.stderr,
    `images.yaml:9:8: error[yaml-alias]: aliases would add more than 1,000,000 nodes to the data (an alias bomb?); this *f passes the limit
    9 | g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
      |        ^^
  hint: each alias copies the whole node of its anchor, aliases in it included; write the data out, or nest fewer aliases

1 error
`,
  );
  assert.not.ok(existsSync(path.join(bomb.dir, '.graph')), 'nothing written to .graph');
  const dangling = validate({ 'images.yaml': 'version: 1\nimages:\n  a:\n    layers: *nope\n  b: &b [*b]\n' });
  assert.is(dangling.code, 2);
  assert.fixture(
    dangling.stderr,
    `images.yaml:4:13: error[yaml-alias]: alias *nope has no anchor: &nope must be set on a node before it
    4 |     layers: *nope
      |             ^^^^^

images.yaml:5:10: error[yaml-alias]: alias *b is inside the node it names (&b): the data would contain itself
    5 |   b: &b [*b]
      |          ^^

2 errors
`,
  );
  // Aliases within the limit are plain data.
  const fine = validate({ 'm/a': 'x', 'images.yaml': 'version: 1\nimages:\n  a:\n    layers: &l [{copy: m/a, to: /a}]\n  b:\n    layers: *l\n' });
  assert.is(fine.code, 0, fine.stderr);
});

test('bytes that are not UTF-8 are an error where they are, not replaced', () => {
  const dir = workspace({ 'models.yaml': 'version: 1\ngroups: {}\n' });
  writeFileSync(path.join(dir, 'images.yaml'), Buffer.concat([Buffer.from('version: 1\nimages:\n  a:\n    layers: [{copy: caf'), Buffer.from([0xe9]), Buffer.from('.txt, to: /x}]\n')]));
  const r = graph(dir, 'validate');
  assert.is(r.code, 2);
  assert.fixture(
    r.stderr,
    `images.yaml:4:24: error[encoding]: byte 0xe9 is not UTF-8: images.yaml must be UTF-8 text
    4 |     layers: [{copy: caf\ufffd.txt, to: /x}]
      |                        ^
  hint: save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)

1 error
`,
  );
  // A surrogate encoded in UTF-8 (ED A0 80) is not UTF-8 either; the UTF-8 before it is kept.
  writeFileSync(path.join(dir, 'images.yaml'), Buffer.concat([Buffer.from('version: 1\n# é '), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('\nimages: {}\n')]));
  assert.match(graph(dir, 'validate').stderr, /^images\.yaml:2:5: error\[encoding\]: byte 0xed is not UTF-8/);
});

test('no images.yaml: a clear error naming the directory', () => {
  const dir = workspace({});
  const r = graph(dir, 'plan');
  assert.is(r.code, 2);
  assert.is(r.stderr, `error[no-workspace]: no images.yaml in ${dir}\n  hint: run graph in the directory that holds images.yaml, or pass -C DIR\n\n1 error\n`);
});

test('lineColumn and the caret use 1-based lines and columns', () => {
  const source = { path: 'f.yaml', text: 'a: 1\nbb: 22\n' };
  assert.equal(lineColumn(source, 0), { line: 1, column: 1 });
  assert.equal(lineColumn(source, 9), { line: 2, column: 5 });
  assert.is(
    formatDiagnostic({ code: 'x', message: 'bad value', span: { source, start: 9, end: 11 } }),
    'f.yaml:2:5: error[x]: bad value\n    2 | bb: 22\n      |     ^^',
  );
});

test('didYouMean picks the closest name within reach, or nothing', () => {
  assert.is(didYouMean('sharedpy3keras2tf', ['sharedpy3keras2tf1', 'sharedpy3keras2tf2', 'mmsplice']), 'sharedpy3keras2tf1');
  assert.is(didYouMean('zzz', ['build', 'test']), undefined);
});

test.run();
