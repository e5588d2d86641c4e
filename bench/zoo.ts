/**
 * Synthetic zoos of Kipoi's shape for benchmarks: one base image, shared model images built
 * from it (Dockerfile recipe, half of them converted to SIF), groups spread over the images, each
 * group with test inputs and expectations, every model tested in oci (and sif where the image has
 * one). `writeZoo(dir, {models})` writes images.yaml, models.yaml and the files they name.
 *
 * Node count ≈ images × (build + publish) + converted images + models × runtimes; with the
 * defaults for 2,200 models that is ≈ 4,500 nodes, like the real zoo's 2,169 models on 19 images.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export interface ZooShape {
  /** Models in all (≈ half the nodes). */
  readonly models: number;
  /** Model images besides the base (default 39, as Kipoi's 19 images + 19 slim + base ≈ 40). */
  readonly images?: number;
  /** Groups (default 40). */
  readonly groups?: number;
  /** Base images the model images are built FROM, round-robin (default 1, as Kipoi's one base). */
  readonly bases?: number;
}

/** Write a zoo into `dir`; returns the number of nodes it compiles to. */
export function writeZoo(dir: string, shape: ZooShape): number {
  const imageCount = shape.images ?? 39;
  const groupCount = shape.groups ?? 40;
  const write = (rel: string, text: string) => {
    mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
    writeFileSync(path.join(dir, rel), text);
  };
  const bases = shape.bases ?? 1;
  const baseName = (b: number) => (b === 0 ? 'kipoi-base-env' : `kipoi-base-env-${b}`);
  let images = 'version: 1\nsettings:\n  concurrency: {build: 2, convert: 2, test: 4, publish: 2}\nimages:\n';
  for (let b = 0; b < bases; b++) images += `  ${baseName(b)}:\n    debian: {packages: [python3, python3-numpy${b ? `, python3-pkg${b}` : ''}]}\n`;
  let nodes = 2 * bases;
  const sif = (i: number) => i % 2 === 0;
  for (let i = 0; i < imageCount; i++) {
    const name = `shared-env-${i}`;
    images += `  ${name}:\n    from: ${baseName(i % bases)}\n    dockerfile: dockerfiles/${name}/Dockerfile\n    args: {ENV_FILE: envs/${name}.yaml}\n`;
    if (sif(i)) images += '    convert: [sif]\n';
    images += `    publish: [registry.invalid/zoo/${name}]\n`;
    write(`dockerfiles/${name}/Dockerfile`, `FROM base\nARG ENV_FILE\nCOPY envs /envs\nRUN install \${ENV_FILE}\n`);
    write(`dockerfiles/${name}/envs/${name}.yaml`, `name: ${name}\ndependencies: [python=3.10, numpy, tensorflow==2.${i}]\n`);
    write(`dockerfiles/${name}/.dockerignore`, '*.tmp\n');
    nodes += 2 + (sif(i) ? 1 : 0);
  }
  let models = 'version: 1\ngroups:\n';
  for (let g = 0; g < groupCount; g++) {
    const image = g % imageCount;
    const count = Math.floor(shape.models / groupCount) + (g < shape.models % groupCount ? 1 : 0);
    const names = Array.from({ length: count }, (_, m) => `model_${String(m).padStart(4, '0')}`);
    const runtimes = sif(image) ? '[oci, sif]' : '[oci]';
    models += `  Group${g}/sub:\n    image: shared-env-${image}\n    models: [${names.join(', ')}]\n`;
    models += `    test:\n      command: [kipoi, test, "Group${g}/sub/{model}", --source=kipoi]\n      inputs: tests/g${g}/input\n      expect: tests/g${g}/expect\n      runtimes: ${runtimes}\n      timeout: 30m\n`;
    write(`tests/g${g}/input/example.fa`, `>seq${g}\n${'ACGT'.repeat(64)}\n`);
    write(`tests/g${g}/expect/predictions.tsv`, `seq${g}\t0.${g}\n`);
    nodes += count * (sif(image) ? 2 : 1);
  }
  write('images.yaml', images);
  write('models.yaml', models);
  return nodes;
}

/** Models needed for about `nodes` nodes with the default shape. */
export function modelsForNodes(nodes: number): number {
  // Half the images have a SIF, so a model averages 1.5 test nodes; images add ≈ 100 nodes.
  return Math.max(40, Math.round((nodes - 100) / 1.5));
}
