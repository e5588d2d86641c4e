#!/usr/bin/env node
/**
 * Generates the Kipoi example (images.yaml, models.yaml, dockerfiles/, envfiles/) from the Kipoi
 * model zoo's container layout data: images.json, model-to-docker.json, docker-to-model.json,
 * model-to-singularity.json and ci-test-matrix.json (see README.md, "How it is generated").
 *
 * Usage: node examples/kipoi/generate.mjs [--fixtures DIR] [--check]
 *   --fixtures DIR  where the JSON files are (default: $KIPOI_FIXTURES, else the copy in
 *                   the repository's test/fixtures/kipoi)
 *   --check         write nothing; exit 1 and list the files that differ from what would be
 *                   generated (also files in dockerfiles/ or envfiles/ that would not be)
 *
 * Plain Node ESM, no dependencies. The output is deterministic. Every inconsistency in the data
 * that the declarations cannot express (a model whose group serves it from another image, a SIF
 * that is not the group's -slim image, a Dockerfile whose RUN count differs from images.json)
 * stops the generator with a message instead of being written out.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPOSITORY = 'kipoi/kipoi-docker';
/** The generated directories, replaced as a whole on every run. */
const GENERATED_DIRS = ['dockerfiles', 'envfiles'];

const { values: options } = parseArgs({
  options: { fixtures: { type: 'string' }, check: { type: 'boolean', default: false } },
  strict: true,
});
const fixtures = path.resolve(options.fixtures ?? process.env.KIPOI_FIXTURES ?? path.join(HERE, '..', '..', 'test', 'fixtures', 'kipoi'));
const readJson = (name) => JSON.parse(readFileSync(path.join(fixtures, name), 'utf8'));

const imagesJson = readJson('images.json');
const modelToDocker = readJson('model-to-docker.json');
const dockerToModel = readJson('docker-to-model.json');
const modelToSingularity = readJson('model-to-singularity.json');
const ciMatrix = readJson('ci-test-matrix.json').ci_matrix.flatMap((job) => job.split(','));

function fail(message) {
  process.stderr.write(`generate.mjs: ${message}\n`);
  process.exit(1);
}

/** Code-unit order, the order graph sorts model names in (sample: N takes the first N). */
const byCodeUnits = (a, b) => (a < b ? -1 : a > b ? 1 : 0);

/** `kipoi/kipoi-docker:TAG` → `TAG`, the image's name here. */
function imageName(ref) {
  const prefix = `${REPOSITORY}:`;
  if (!ref.startsWith(prefix)) fail(`'${ref}' is not a ${REPOSITORY} reference`);
  const name = ref.slice(prefix.length);
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name)) fail(`'${name}' (from ${ref}) is not a valid image name`);
  return name;
}

// ---------------------------------------------------------------------------------------------
// Images.

/**
 * The conda environment files written for this example, by the file name images.json lists.
 * They approximate the originals (which are not part of the data): the environment name, the
 * Python and the frameworks the image's name says, and kipoi itself.
 */
const ENV_FILES = {
  'environment.kipoi.yml': {
    env: 'kipoi-env',
    about: 'the environment every non-slim image starts from: kipoi and its data loaders',
    dependencies: ['python=3.8', 'pip', 'numpy', 'pandas', 'h5py', 'pysam', 'cyvcf2', 'pybigwig'],
    pip: ['kipoi', 'kipoiseq'],
  },
  'sharedpy3keras12.yml': {
    env: 'kipoi-shared__envs__kipoi-py3-keras1.2',
    about: 'models on Python 3 with Keras 1.2 (Theano backend)',
    dependencies: ['python=3.7', 'pip', 'keras=1.2.2', 'theano', 'h5py', 'pysam', 'cyvcf2'],
    pip: ['kipoi', 'kipoiseq'],
  },
  'sharedpy3keras2tf1.yml': {
    env: 'kipoi-shared__envs__kipoi-py3-keras2-tf1',
    about: 'models on Python 3 with Keras 2 and TensorFlow 1',
    dependencies: ['python=3.7', 'pip', 'tensorflow=1.15', 'keras=2.3.1', 'h5py<3', 'pysam', 'cyvcf2', 'pybigwig'],
    pip: ['kipoi', 'kipoiseq'],
  },
  'sharedpy3keras2tf2.yml': {
    env: 'kipoi-shared__envs__kipoi-py3-keras2-tf2',
    about: 'models on Python 3 with Keras 2 and TensorFlow 2',
    dependencies: ['python=3.8', 'pip', 'tensorflow=2.6', 'keras=2.6', 'h5py', 'pysam', 'cyvcf2', 'pybigwig'],
    pip: ['kipoi', 'kipoiseq'],
  },
};

function envFileText(file) {
  const e = ENV_FILES[file];
  if (!e) fail(`images.json lists env file '${file}', for which generate.mjs has no contents (add it to ENV_FILES)`);
  return [
    `# ${file}: ${e.about}.`,
    '# Written for graph\'s Kipoi example by generate.mjs (an approximation of the original).',
    `name: ${e.env}`,
    'channels: [conda-forge, bioconda, defaults]',
    'dependencies:',
    ...e.dependencies.map((d) => `  - ${d.includes('<') ? JSON.stringify(d) : d}`),
    '  - pip:',
    ...e.pip.map((p) => `      - ${p}`),
    '',
  ].join('\n');
}

/** An env file's build-context directory: one per file, so an image's key holds only its own. */
const envDir = (file) => `envfiles/${file.replace(/\.ya?ml$/, '')}`;

const images = Object.entries(imagesJson).map(([ref, spec]) => {
  const name = imageName(ref);
  const base = spec.from.find((f) => f.startsWith(`${REPOSITORY}:`));
  if (spec.env_files.length > 1) fail(`${ref} copies ${spec.env_files.length} env files; one context directory holds one`);
  return {
    ref,
    name,
    spec,
    slim: spec.slim,
    from: base === undefined ? undefined : imageName(base),
    envFile: spec.env_files[0],
    dockerfile: `dockerfiles/${path.posix.basename(spec.dockerfile)}`,
  };
});
const imageByName = new Map(images.map((i) => [i.name, i]));
for (const image of images) {
  if (image.from && !imageByName.has(image.from)) fail(`${image.ref} is built FROM ${image.from}, which images.json does not list`);
}

// ---------------------------------------------------------------------------------------------
// Groups and models.

/** Where each model path goes: the group whose name is its longest prefix. */
function owningGroup(model, groups) {
  let best;
  for (const g of groups) if ((model === g || model.startsWith(`${g}/`)) && (best === undefined || g.length > best.length)) best = g;
  return best;
}

const declaredGroups = Object.keys(modelToDocker);
/** group → {image, models: [kipoi model path]} in model-to-docker.json order, then the groups it lacks. */
const groups = new Map(declaredGroups.map((g) => [g, { name: g, image: imageName(modelToDocker[g]), models: [], listed: true }]));
/** Models whose group model-to-docker.json does not list: the group is their first path segment. */
const unlisted = [];
for (const [ref, models] of Object.entries(dockerToModel)) {
  const image = imageName(ref);
  if (!imageByName.has(image)) fail(`docker-to-model.json names ${ref}, which images.json does not list`);
  for (const model of models) {
    let g = owningGroup(model, declaredGroups);
    if (g === undefined) {
      g = model.split('/')[0];
      unlisted.push(model);
      if (!groups.has(g)) groups.set(g, { name: g, image, models: [], listed: false });
    }
    const group = groups.get(g);
    if (group.image !== image) fail(`${model} is served by ${ref}, but its group ${g} by ${REPOSITORY}:${group.image}`);
    if (group.models.includes(model)) fail(`${model} is listed twice`);
    group.models.push(model);
  }
}
for (const group of groups.values()) {
  if (!group.models.length) fail(`group ${group.name} has no model in docker-to-model.json`);
  group.models.sort(byCodeUnits);
  const slim = `${group.image}-slim`;
  group.slim = imageByName.has(slim) ? slim : undefined;
  const sif = modelToSingularity[group.name];
  if (sif && (sif.name !== `kipoi-docker_${slim}` || !group.slim)) fail(`the SIF of ${group.name} is ${sif.name}, not the -slim variant of ${group.image}`);
  group.servedAsSif = sif !== undefined;
}
for (const g of Object.keys(modelToSingularity)) if (!groups.has(g)) fail(`model-to-singularity.json names group ${g}, which serves no model`);

/** The model's name in its group (node ids read test:GROUP/NAME@RUNTIME). */
const modelName = (group, model) => (model === group ? model : model.slice(group.length + 1));

// What the CI tested: per group, the models ci-test-matrix.json lists.
for (const group of groups.values()) group.ciModels = [];
for (const model of ciMatrix) {
  const g = owningGroup(model, [...groups.keys()]);
  if (g === undefined || !groups.get(g).models.includes(model)) fail(`ci-test-matrix.json tests ${model}, which docker-to-model.json does not list`);
  groups.get(g).ciModels.push(model);
}

// ---------------------------------------------------------------------------------------------
// Dockerfiles. Each follows its images.json entry: the same FROM lines and stages, the same env
// file copied, the same number of RUN steps (checked below); the commands approximate Kipoi's.

const groupsOf = (image) => [...groups.values()].filter((g) => g.image === image).map((g) => g.name);

function dockerfileText(image) {
  const { spec, name } = image;
  const env = image.envFile ? ENV_FILES[image.envFile]?.env ?? fail(`no contents for env file ${image.envFile}`) : `kipoi-${name.replace(/-slim$/, '')}`;
  const served = groupsOf(name.replace(/-slim$/, ''));
  const lines = [`# ${REPOSITORY}:${name} (images.json: ${spec.dockerfile}). Generated by generate.mjs; do not edit.`];
  const copyEnv = image.envFile ? [`COPY ${image.envFile} /tmp/${image.envFile}`] : [];
  const createEnv = image.envFile
    ? `RUN conda env create -f /tmp/${image.envFile} && conda clean --all --yes && rm /tmp/${image.envFile}`
    : `RUN kipoi env create ${served.join(' ')} --envname ${env} && conda clean --all --yes`;
  if (!image.slim && !image.from) {
    // The shared base: kipoi's own environment on miniconda.
    lines.push(
      `FROM ${spec.from[0]}`,
      'SHELL ["/bin/bash", "-c"]',
      ...copyEnv,
      'RUN apt-get update && apt-get install -y --no-install-recommends build-essential libz-dev libcurl4-openssl-dev && rm -rf /var/lib/apt/lists/*',
      'RUN conda update -n base conda --yes && conda clean --all --yes',
      createEnv,
      `RUN echo "source activate ${env}" >> ~/.bashrc`,
      `ENV PATH=/opt/conda/envs/${env}/bin:$PATH`,
    );
  } else if (!image.slim) {
    // A model image on the base; `FROM ${image.from}` resolves to the declared base by digest.
    lines.push(
      `# Kipoi: FROM ${REPOSITORY}:${image.from}; graph passes the image '${image.from}' declared in images.yaml.`,
      `FROM ${image.from}`,
      ...copyEnv,
      createEnv,
      `RUN echo "source activate ${env}" >> ~/.bashrc`,
      `ENV PATH=/opt/conda/envs/${env}/bin:$PATH`,
    );
  } else {
    // Two stages: the environment made and packed with conda-pack in `build`, unpacked into /venv
    // and copied alone into a small final stage.
    const [buildFrom, finalFrom] = spec.from;
    if (spec.stages.length !== 1 || spec.from.length !== 2) fail(`${image.ref}: expected two stages, got ${JSON.stringify(spec.from)}`);
    const stage = spec.stages[0];
    const build = [
      `FROM ${buildFrom} AS ${stage}`,
      ...copyEnv,
      `RUN conda install -n base -c conda-forge conda-pack --yes${image.envFile ? '' : ' && pip install kipoi'}`,
      createEnv,
      `RUN conda-pack -n ${env} -o /tmp/env.tar && mkdir /venv && tar -xf /tmp/env.tar -C /venv && rm /tmp/env.tar`,
      'RUN /venv/bin/conda-unpack',
    ];
    const runs = build.filter((l) => l.startsWith('RUN ')).length;
    // The shared environments took one or two steps more (Kipoi's run_steps say how many):
    // a check that the packed environment imports, and a shell that activates it.
    const extra = [
      ['RUN /venv/bin/python -c "import kipoi"'],
      ['RUN echo "source /venv/bin/activate" >> ~/.bashrc'],
    ];
    const wanted = spec.run_steps - runs;
    if (wanted < 0 || wanted > extra.length) fail(`${image.ref}: ${spec.run_steps} RUN steps cannot be approximated (the template has ${runs})`);
    lines.push(
      ...build,
      ...(wanted >= 1 ? extra[0] : []),
      '',
      `FROM ${finalFrom}`,
      `COPY --from=${stage} /venv /venv`,
      ...(wanted >= 2 ? extra[1] : []),
      'ENV PATH=/venv/bin:$PATH',
    );
  }
  const text = `${lines.join('\n')}\n`;
  const runSteps = text.split('\n').filter((l) => l.startsWith('RUN ')).length;
  if (runSteps !== spec.run_steps) fail(`${image.ref}: the Dockerfile has ${runSteps} RUN steps, images.json says ${spec.run_steps}`);
  const froms = text.split('\n').filter((l) => l.startsWith('FROM ')).map((l) => l.split(' ')[1]);
  const expectedFroms = spec.from.map((f) => (f.startsWith(`${REPOSITORY}:`) ? imageName(f) : f));
  if (JSON.stringify(froms) !== JSON.stringify(expectedFroms)) fail(`${image.ref}: FROM lines ${froms} differ from images.json's ${expectedFroms}`);
  return text;
}

// ---------------------------------------------------------------------------------------------
// YAML text (the declarations are simple enough to write by hand: maps, lists, scalars).

const YAML_WORDS = new Set(['true', 'false', 'null', 'yes', 'no', 'on', 'off', 'y', 'n', '~']);
/** A scalar plain when YAML reads it back as the same string, else double-quoted (JSON's escapes are YAML's). */
function scalar(s) {
  return /^[A-Za-z_][A-Za-z0-9._/-]*$/.test(s) && !YAML_WORDS.has(s.toLowerCase()) ? s : JSON.stringify(s);
}
const flow = (items) => `[${items.map(scalar).join(', ')}]`;
/** A line with a trailing comment, the comments of a block aligned. */
const commented = (line, comment) => `${line.padEnd(40)} # ${comment}`;

function imagesYaml() {
  const out = [
    '# yaml-language-server: $schema=../../schema/images.schema.json',
    "# The Kipoi model zoo's images (kipoi/kipoi-docker:TAG is image TAG here), from images.json.",
    '# Generated by generate.mjs; do not edit by hand. See README.md.',
    'version: 1',
    'settings:',
    commented('  concurrency: {build: 2, convert: 2}', 'conda images are several GB each'),
    '',
    'images:',
  ];
  const order = [...images].sort((a, b) => {
    const rank = (i) => (i.from || i.slim ? 1 : 0); // the base first, then each image and its -slim variant
    return rank(a) - rank(b) || byCodeUnits(a.name.replace(/-slim$/, ''), b.name.replace(/-slim$/, '')) || Number(a.slim) - Number(b.slim);
  });
  for (const image of order) {
    const served = groupsOf(image.name.replace(/-slim$/, ''));
    const sifGroups = image.slim ? served.filter((g) => groups.get(g).servedAsSif) : [];
    let about;
    if (!image.from && !image.slim) about = `the base of every non-slim image; its Dockerfile's FROM is ${image.spec.from[0]}`;
    else if (!image.slim) about = `serves ${served.join(', ')}`;
    else about = `slim variant, converted to SIF${sifGroups.length ? ` (model-to-singularity.json: ${sifGroups.join(', ')})` : ' (model-to-singularity.json lists no group for it)'}`;
    out.push(`  # ${about}`);
    out.push(`  ${scalar(image.name)}:`);
    if (image.from) out.push(`    from: ${scalar(image.from)}`);
    out.push(`    dockerfile: ${image.dockerfile}`);
    if (image.envFile) out.push(`    context: ${envDir(image.envFile)}`);
    if (image.slim) out.push('    convert: [sif]');
    out.push('');
  }
  return `${out.join('\n').trimEnd()}\n`;
}

function modelsYaml() {
  const out = [
    '# yaml-language-server: $schema=../../schema/models.schema.json',
    "# The Kipoi model zoo's model groups (model-to-docker.json) with every model each serves",
    '# (docker-to-model.json), tested as the zoo tested them: `kipoi test MODEL --source=kipoi` in',
    '# the image (oci) and in the -slim image\'s SIF (sif, for the groups model-to-singularity.json',
    '# lists), as many models per group as ci-test-matrix.json lists (sample: N, the first N in',
    '# sorted order). Generated by generate.mjs; do not edit by hand. See README.md.',
    'version: 1',
    '',
    'groups:',
  ];
  for (const group of groups.values()) {
    const names = group.models.map((m) => modelName(group.name, m));
    const selfOnly = group.models.every((m) => m === group.name);
    const mixed = !selfOnly && group.models.includes(group.name);
    if (!group.listed) out.push(`  # Not in model-to-docker.json; docker-to-model.json serves ${group.models.join(', ')} from ${REPOSITORY}:${group.image}.`);
    out.push(`  ${scalar(group.name)}:`);
    out.push(`    image: ${scalar(group.image)}`);
    if (group.slim) out.push(`    sif: ${scalar(group.slim)}`);
    const sample = group.ciModels.length;
    if (sample === 0) {
      out.push('    # ci-test-matrix.json lists none of its models: no test.');
    } else {
      // `{model}` is the name in the group; a model that is the group itself is named as the group.
      const target = selfOnly ? '{model}' : mixed ? '{path}' : `${group.name}/{model}`;
      out.push('    test:');
      out.push(`      command: ${flow(['kipoi', 'test', target, '--source=kipoi'])}`);
      const runtimes = group.servedAsSif ? ['oci', 'sif'] : ['oci'];
      out.push(group.servedAsSif ? `      runtimes: ${flow(runtimes)}` : commented(`      runtimes: ${flow(runtimes)}`, 'model-to-singularity.json lists no SIF for it'));
      const picked = group.models.slice(0, sample);
      const same = JSON.stringify(picked) === JSON.stringify([...group.ciModels].sort(byCodeUnits));
      out.push(commented(`      sample: ${sample}`, `ci-test-matrix.json: ${group.ciModels.join(', ')}${same ? '' : `; sampled: ${picked.join(', ')}`}`));
    }
    if (mixed) {
      out.push('    models:');
      for (const [i, m] of group.models.entries()) out.push(`      ${scalar(names[i])}: {path: ${scalar(m)}}`);
    } else if (names.length === 1) {
      out.push(`    models: ${flow(names)}`);
    } else {
      out.push(commented('    models:', `${names.length} models`));
      for (const n of names) out.push(`      - ${scalar(n)}`);
    }
    out.push('');
  }
  return `${out.join('\n').trimEnd()}\n`;
}

// ---------------------------------------------------------------------------------------------
// Output.

/** Every generated file, path (relative to this directory) → contents. */
const files = new Map();
files.set('images.yaml', imagesYaml());
files.set('models.yaml', modelsYaml());
files.set(
  'dockerfiles/.dockerignore',
  '# The Dockerfiles here copy nothing from their context: an image built with this directory as\n# its context depends on its own Dockerfile only, not on the other images\'.\n*\n',
);
for (const image of images) {
  files.set(image.dockerfile, dockerfileText(image));
  if (image.envFile) files.set(`${envDir(image.envFile)}/${image.envFile}`, envFileText(image.envFile));
}

function listGenerated(dir) {
  const out = [];
  const visit = (rel) => {
    const abs = path.join(HERE, rel);
    if (!existsSync(abs)) return;
    for (const e of readdirSync(abs, { withFileTypes: true })) {
      const child = path.posix.join(rel, e.name);
      if (e.isDirectory()) visit(child);
      else out.push(child);
    }
  };
  visit(dir);
  return out;
}

if (options.check) {
  const stale = [];
  for (const [rel, text] of files) {
    const abs = path.join(HERE, rel);
    if (!existsSync(abs)) stale.push(`missing: ${rel}`);
    else if (readFileSync(abs, 'utf8') !== text) stale.push(`differs: ${rel}`);
  }
  for (const dir of GENERATED_DIRS) for (const rel of listGenerated(dir)) if (!files.has(rel)) stale.push(`not generated: ${rel}`);
  if (stale.length) {
    process.stderr.write(`${stale.join('\n')}\nrun: node ${path.relative(process.cwd(), fileURLToPath(import.meta.url))}\n`);
    process.exit(1);
  }
  process.stdout.write(`up to date: ${files.size} files\n`);
} else {
  for (const dir of GENERATED_DIRS) rmSync(path.join(HERE, dir), { recursive: true, force: true });
  for (const [rel, text] of files) {
    mkdirSync(path.dirname(path.join(HERE, rel)), { recursive: true });
    writeFileSync(path.join(HERE, rel), text);
  }
  const models = [...groups.values()].reduce((n, g) => n + g.models.length, 0);
  process.stdout.write(`wrote ${files.size} files: ${images.length} images, ${groups.size} groups, ${models} models`);
  process.stdout.write(unlisted.length ? ` (${unlisted.length} in groups model-to-docker.json does not list: ${unlisted.join(', ')})\n` : '\n');
}
