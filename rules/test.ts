/**
 * test:GROUP/MODEL@RUNTIME — runs a model's test command inside its image, in the `oci` runtime
 * (the image's layers unpacked) or the `sif` runtime (the SIF's squashfs partition unpacked), in
 * a sandbox (settings.sandbox: bubblewrap by default; rules/runtime/), with the test's inputs at
 * /input (read-only) and an empty /output, then compares /output with `expect` (exact bytes, or
 * numbers within `tolerance` in TSV/CSV). One node per sampled model and runtime. The output is
 * kept in `.graph/out/test/NODE/output` for inspection.
 */
import { mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { declarePart, DeclPart, type CheckContext, type Declarations, type GroupDecl, type ModelDecl, type Settings } from '../engine/validate/declarations.js';
import { didYouMean, type Diagnostic } from '../engine/diagnostics.js';
import type { InputSpec } from '../engine/key/files.js';
import { NodeFailure, type ExecContext, type NodeDef, type NodeId, type Rule } from '../engine/rule.js';
import { loadImage } from './oci/image.js';
import { sandboxProbe } from './runtime/probe.js';
import { buildId, imageOutputs } from './build.js';
import { convertId, convertsToSif, sifOutputs } from './convert.js';

/** Node id of one model's test in one runtime. */
export const testId = (group: string, model: string, runtime: Runtime) => `test:${group}/${model}@${runtime}` as NodeId;

/** Where a test runs: the image's layers (`oci`) or its SIF's partition (`sif`). */
export type Runtime = 'oci' | 'sif';

/** A group's `test:`, normalized. */
export interface TestDecl {
  readonly command: readonly string[];
  /** Directory mounted at /input; may contain `{model}` and vars (see `substituteVars`). */
  readonly inputs?: string;
  /** Directory of expected outputs; may contain `{model}` and vars. */
  readonly expect?: string;
  readonly runtimes: readonly Runtime[];
  /** Milliseconds. */
  readonly timeoutMs: number;
  readonly resources: Readonly<Record<string, number>>;
  /** CPU cores a cluster job of the test asks for (`sbatch -c`). */
  readonly cpus?: number;
  /** Memory in MiB a cluster job of the test asks for (`sbatch --mem`). */
  readonly memoryMb?: number;
  /** Tolerance for numbers in expected TSV/CSV files; undefined for exact bytes. */
  readonly tolerance?: { readonly absolute?: number; readonly relative?: number };
  /** Models tested, the first N in sorted order, or all. */
  readonly sample: 'all' | number;
}

/** `memory:` in MiB: a number is MiB; `K`, `M`, `G`, `T` suffixes are powers of 1024 (rounded up). */
export function memoryMiB(v: string | number): number {
  if (typeof v === 'number') return v;
  const m = /^([0-9]+)([KMGT]?)$/.exec(v) as RegExpExecArray;
  const factor = { K: 1 / 1024, '': 1, M: 1, G: 1024, T: 1024 * 1024 }[m[2] as 'K' | '' | 'M' | 'G' | 'T'];
  return Math.ceil(Number(m[1]) * factor);
}

/** Default per-test time limit when `test.timeout` is absent: 30 minutes. */
export const DEFAULT_TEST_TIMEOUT_MS = 30 * 60 * 1000;

/** The sandboxes `settings.sandbox` and `--sandbox` take. */
const SANDBOXES = ['bubblewrap', 'podman', 'docker', 'apptainer'];

/** The test rule's part of a group entry: its `test:`, if any. */
const testPart = new DeclPart<{ readonly test?: TestDecl }>('test');

/** The test rule's settings: where tests run. */
const sandboxSetting = new DeclPart<{ readonly sandbox: string }>('test');

/** A group's `test:`; undefined when the group has none (its models are not tested). */
export function testOf(group: GroupDecl): TestDecl | undefined {
  return testPart.of(group).test;
}

/** The sandbox the settings choose (`bubblewrap` by default). */
export function sandboxOf(settings: Settings): string {
  return sandboxSetting.of(settings).sandbox;
}

/** The models of a group that are tested: all, or the first N by name. */
export function sampledModels(group: GroupDecl): readonly ModelDecl[] {
  const sample = testOf(group)?.sample ?? 'all';
  return sample === 'all' ? group.models : group.models.slice(0, sample);
}

/**
 * Substitute `{model}` and the model's vars into a test command argument or a test path
 * (`expect: tests/expect/{model}`); unknown names stay as written.
 */
export function substituteVars(text: string, model: ModelDecl): string {
  if (!text.includes('{')) return text; // most arguments and paths name no variable
  return text.replace(/\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (all, name: string) => (name === 'model' ? model.name : (model.vars[name] ?? all)));
}

/**
 * Parse a duration (`90s`, `10m`, `1.5h`, `250ms`, or a number of seconds) into milliseconds.
 * @throws Error for anything else (the schema admits only these).
 */
export function parseDuration(value: string | number): number {
  if (typeof value === 'number') return Math.round(value * 1000);
  const m = /^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)$/.exec(value);
  if (!m) throw new Error(`invalid duration '${value}'`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as 'ms' | 's' | 'm' | 'h'];
  return Math.round(Number(m[1]) * unit);
}

const testSchema = {
  type: 'object',
  required: ['command'],
  additionalProperties: false,
  properties: {
    command: { type: 'array', minItems: 1, items: { type: 'string' }, description: "argv; {model} and the model's vars are substituted." },
    inputs: { type: 'string', minLength: 1, description: 'Directory mounted read-only at /input.' },
    expect: { type: 'string', minLength: 1, description: 'Directory of files /output must match.' },
    runtimes: { type: 'array', minItems: 1, uniqueItems: true, items: { enum: ['oci', 'sif'] } },
    timeout: {
      description: 'Per-test time limit: a number of seconds or a duration like 90s, 10m, 1h.',
      oneOf: [
        { type: 'number', exclusiveMinimum: 0 },
        { type: 'string', pattern: '^[0-9]+(\\.[0-9]+)?(ms|s|m|h)$' },
      ],
    },
    resources: {
      type: 'object',
      additionalProperties: { type: 'integer', minimum: 1 },
    },
    cpus: { type: 'integer', minimum: 1, description: 'CPU cores a cluster job of the test asks for (sbatch -c).' },
    memory: {
      description: 'Memory a cluster job of the test asks for (sbatch --mem): MiB, or a size such as 512M, 4G.',
      oneOf: [
        { type: 'integer', minimum: 1 },
        { type: 'string', pattern: '^[0-9]+[KMGT]?$' },
      ],
    },
    tolerance: {
      description:
        'Numeric tolerance for numbers in expected TSV/CSV files: |actual - expected| <= absolute + relative * |expected|. A number means an absolute tolerance.',
      oneOf: [
        { type: 'number', minimum: 0 },
        {
          type: 'object',
          additionalProperties: false,
          minProperties: 1,
          properties: { absolute: { type: 'number', minimum: 0 }, relative: { type: 'number', minimum: 0 } },
        },
      ],
    },
    sample: {
      description: 'all, or N: test the first N models of the group in sorted order.',
      oneOf: [{ const: 'all' }, { type: 'integer', minimum: 1 }],
    },
  },
} as const;

/** Semantic checks of a group's `test:`: its directories, resources, and the sif runtime's image. */
function checkTest(test: TestDecl, group: GroupDecl, raw: Readonly<Record<string, unknown>>, ctx: CheckContext): Diagnostic[] {
  const diagnostics: Diagnostic[] = [];
  const rawTest = raw.test as Record<string, unknown>;
  for (const key of ['inputs', 'expect'] as const) {
    const pattern = test[key];
    if (pattern === undefined) continue;
    // With {model} in the path each sampled model has its own directory; report the first
    // outside the workspace, else the first missing.
    const declared = `'${rawTest[key] as string}'`;
    let outside: Diagnostic | undefined;
    // Each directory once (models without {model} share one), named by its first model.
    const firstModel = new Map<string, string>();
    for (const m of sampledModels(group)) {
      const dir = substituteVars(pattern, m);
      if (!firstModel.has(dir)) firstModel.set(dir, m.name);
    }
    for (const [dir, model] of firstModel) {
      outside ??= ctx.outside(dir, ['test', key], dir === pattern ? declared : `${declared} (model '${model}')`);
      if (outside) break;
    }
    if (outside) {
      diagnostics.push(outside);
      continue;
    }
    const missing = [...firstModel.keys()].filter((dir) => !ctx.exists({ kind: 'dir', path: dir }));
    if (missing.length) {
      const more = missing.length > 1 ? ` (and ${missing.length - 1} more)` : '';
      diagnostics.push({ code: 'missing-file', message: `test ${key} directory '${missing[0]}' does not exist${more}`, span: ctx.at(['test', key]) });
    }
  }
  for (const [token, amount] of Object.entries(test.resources)) {
    const capacity = ctx.settings.resources[token];
    if (capacity === undefined) {
      const guess = didYouMean(token, Object.keys(ctx.settings.resources));
      diagnostics.push({
        code: 'unknown-resource',
        message: `resource '${token}' is not declared in images.yaml settings.resources${guess ? ` (did you mean '${guess}'?)` : ''}`,
        span: ctx.at(['test', 'resources', token], 'key'),
      });
    } else if (amount > capacity) {
      diagnostics.push({
        code: 'unknown-resource',
        message: `test claims ${amount} '${token}' but only ${capacity} exist: it could never run`,
        span: ctx.at(['test', 'resources', token]),
      });
    }
  }
  const sifImage = ctx.images.get(group.sif);
  if (test.runtimes.includes('sif') && sifImage && !convertsToSif(sifImage)) {
    diagnostics.push({
      code: 'no-sif',
      message: `group '${group.name}' tests the sif runtime, but image '${group.sif}' has no 'convert: [sif]'`,
      span: ctx.at(['test', 'runtimes', test.runtimes.indexOf('sif')]),
      hint: `add 'convert: [sif]' to image '${group.sif}' in images.yaml, or name another image with 'sif:'`,
    });
  }
  return diagnostics;
}

/** The test rule: its part of group entries (`test:`) and the `sandbox` setting (`--sandbox`). */
export const testRule: Rule<TestNodeDecl> = {
  kind: 'test',
  version: 1,
  // The model writes the test's output directory: its names are the model's, never graph's temps.
  holdsUserFiles: (dir, outDir) => path.basename(dir) === 'output' && path.dirname(path.dirname(dir)) === path.join(outDir, 'test'),
  declares: [
    declarePart({
      entry: 'group',
      part: testPart,
      schema: { properties: { test: testSchema } },
      messages: {
        tolerance: ({ field }) => `${field} must be a number (absolute) or {absolute: N, relative: N}`,
        timeout: ({ field }) => `${field} must be a number of seconds or a duration such as 90s, 10m or 1h`,
        memory: ({ field }) => `${field} must be a number of MiB or a size such as 512M or 4G`,
        sample: ({ field }) => `${field} must be 'all' or a positive integer`,
      },
      normalize(raw, ctx) {
        const rawTest = raw.test as Record<string, unknown> | undefined;
        if (!rawTest) return {};
        return {
          test: {
            command: rawTest.command as string[],
            inputs: rawTest.inputs === undefined ? undefined : ctx.rel(rawTest.inputs as string),
            expect: rawTest.expect === undefined ? undefined : ctx.rel(rawTest.expect as string),
            runtimes: (rawTest.runtimes as Runtime[] | undefined) ?? ['oci'],
            timeoutMs: rawTest.timeout === undefined ? DEFAULT_TEST_TIMEOUT_MS : parseDuration(rawTest.timeout as string | number),
            resources: { ...(rawTest.resources as Record<string, number> | undefined) },
            ...(rawTest.cpus === undefined ? {} : { cpus: rawTest.cpus as number }),
            ...(rawTest.memory === undefined ? {} : { memoryMb: memoryMiB(rawTest.memory as string | number) }),
            tolerance: typeof rawTest.tolerance === 'number' ? { absolute: rawTest.tolerance } : (rawTest.tolerance as TestDecl['tolerance']),
            sample: (rawTest.sample as 'all' | number | undefined) ?? 'all',
          },
        };
      },
      check: (part, group, raw, ctx) => (part.test ? checkTest(part.test, group, raw, ctx) : []),
    }),
    declarePart({
      entry: 'settings',
      part: sandboxSetting,
      schema: {
        properties: {
          sandbox: {
            description: 'Where test commands run: bubblewrap (default), podman, docker, or apptainer when installed.',
            enum: SANDBOXES,
          },
        },
      },
      normalize: (raw, ctx) => ({ sandbox: ctx.overrides.sandbox ?? (raw.sandbox as string | undefined) ?? 'bubblewrap' }),
      options: [{ name: 'sandbox', values: SANDBOXES, help: 'where tests run: bubblewrap (default), podman, docker, apptainer' }],
    }),
  ],
  expand(decls: Declarations): NodeDef<TestNodeDecl>[] {
    const nodes: NodeDef<TestNodeDecl>[] = [];
    const sandboxName = sandboxOf(decls.settings);
    const sandbox = [sandboxProbe(sandboxName)];
    for (const group of decls.groups.values()) {
      const test = testOf(group);
      if (!test) continue;
      for (const model of sampledModels(group)) {
        const inputsDir = test.inputs === undefined ? undefined : substituteVars(test.inputs, model);
        const expectDir = test.expect === undefined ? undefined : substituteVars(test.expect, model);
        const inputs: InputSpec[] = [];
        if (inputsDir) inputs.push({ kind: 'dir', path: inputsDir });
        if (expectDir) inputs.push({ kind: 'dir', path: expectDir });
        for (const runtime of test.runtimes) {
          const runsIn = runtime === 'oci' ? group.image : group.sif;
          nodes.push({
            id: testId(group.name, model.name, runtime),
            kind: 'test',
            deps: [{ id: runtime === 'oci' ? buildId(runsIn) : convertId(runsIn), at: () => group.at([runtime === 'oci' ? 'image' : 'sif']) }],
            decl: {
              image: runsIn,
              runtime,
              command: test.command.map((arg) => substituteVars(arg, model)),
              inputs: inputsDir ?? null,
              expect: expectDir ?? null,
              timeout_ms: test.timeoutMs,
              tolerance: test.tolerance ?? null,
            },
            inputs,
            env: [],
            tool: `graph-test-${runtime}/1 sandbox:${sandboxName}`,
            tools: sandbox,
            timeoutMs: test.timeoutMs,
            resources: test.resources,
            ...(test.cpus !== undefined || test.memoryMb !== undefined ? { request: { ...(test.cpus !== undefined ? { cpus: test.cpus } : {}), ...(test.memoryMb !== undefined ? { memoryMb: test.memoryMb } : {}) } } : {}),
            image: group.image,
            group: group.name,
            at: () => group.at(['models'], 'key'),
          });
        }
      }
    }
    return nodes;
  },
  async execute(node, ctx) {
    const decl = node.decl;
    const { root, boundary } = ctx.workspace;
    const depId = node.deps[0].id;
    const sif = decl.runtime === 'sif' ? sifOutputs(depId, ctx.deps.get(depId)) : undefined;
    const manifest = sif ? sif.manifest : imageOutputs(depId, ctx.deps.get(depId)).manifest;
    const image = loadImage(ctx.store, manifest);
    // Loaded when a test runs: a plan never needs the unpacker, the sandboxes or the SIF reader.
    const [{ unpackImage }, { compareOutputs }, { cachedRootfs }, { detectBackend }] = await Promise.all([
      import('./oci/unpack.js'),
      import('./runtime/expect.js'),
      import('./runtime/rootfs-cache.js'),
      import('./runtime/runtime.js'),
    ]);
    let rootfs: string;
    if (!sif) {
      rootfs = await cachedRootfs(path.join(ctx.cacheDir, 'rootfs', manifest.slice('sha256:'.length)), (dir) => unpackImage(ctx.store, image, dir, { signal: ctx.signal }), (why) => ctx.log.write(why));
    } else {
      const sifFile = path.join(root, sif.sif);
      rootfs = await cachedRootfs(path.join(ctx.cacheDir, 'sif-rootfs', sif.sha256), (dir) => extractSifPartition(sifFile, dir, ctx), (why) => ctx.log.write(why));
    }
    const outputDir = testOutputDir(ctx.outDir, node.id);
    rmSync(outputDir, { recursive: true, force: true });
    mkdirSync(outputDir, { recursive: true });
    let backend;
    try {
      backend = await detectBackend(sandboxOf(ctx.workspace.settings), { runner: ctx.runner, scratchDir: ctx.scratchDir() });
    } catch (e) {
      throw new NodeFailure((e as Error).message, { type: 'sandbox' });
    }
    ctx.log.write(`sandbox: ${await backend.version()}; image ${manifest}; runtime ${decl.runtime}\n`);
    const config = image.config.config ?? {};
    const env = Object.fromEntries((config.Env ?? []).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
    const outcome = await backend.run({
      rootfs,
      command: [...decl.command],
      env,
      workdir: config.WorkingDir || undefined,
      // Checked again (validation did first); the sandbox mounts the real directory.
      inputDir: decl.inputs ? boundary.realInside(path.join(root, decl.inputs), decl.inputs) : undefined,
      outputDir,
      signal: ctx.signal,
      logFile: ctx.log.path,
    });
    const kept = `output kept in ${path.relative(root, outputDir)}`;
    if (outcome.exitCode !== 0) throw new NodeFailure(`${outcome.reason ?? 'the command failed'} (${kept})`, { type: 'exit', code: outcome.exitCode });
    if (decl.expect) {
      const verdict = compareOutputs(outputDir, boundary.realInside(path.join(root, decl.expect), decl.expect), decl.tolerance ?? undefined, boundary);
      if (!verdict.ok) {
        ctx.log.write(`differences:\n${verdict.differences.map((d) => `  ${d}`).join('\n')}\n`);
        throw new NodeFailure(`output differs from ${decl.expect}: ${verdict.differences.slice(0, 3).join('; ')}${verdict.differences.length > 3 ? '; …' : ''} (${kept})`);
      }
    }
    return { outputs: { output: path.relative(root, outputDir), image: manifest, runtime: decl.runtime }, artifacts: [] };
  },
};

/** A test node's `decl` (in its key): what its execution reads, with the command's vars substituted. */
export type TestNodeDecl = {
  /** The image it runs in (for the `oci` runtime; whose SIF, for `sif`). */
  readonly image: string;
  readonly runtime: Runtime;
  readonly command: readonly string[];
  readonly inputs: string | null;
  readonly expect: string | null;
  readonly timeout_ms: number;
  readonly tolerance: { readonly absolute?: number; readonly relative?: number } | null;
};

/** Where test node `id` leaves the model's output: `.graph/out/test/ID/output` (kept for people). */
function testOutputDir(outDir: string, id: NodeId): string {
  return path.join(outDir, 'test', testDirName(id), 'output');
}

/** A node id as one directory name. */
function testDirName(id: NodeId): string {
  return id.replace(/%/g, '%25').replace(/\//g, '%2F');
}

/** Unpack a SIF's primary system partition (squashfs) into `dir` with unsquashfs. */
async function extractSifPartition(sifFile: string, dir: string, ctx: ExecContext): Promise<void> {
  const { primaryPartition, readSif } = await import('./sif/sif.js');
  const partition = primaryPartition(readSif(sifFile));
  const r = await ctx.runner.run(['unsquashfs', '-no-progress', '-quiet', '-o', String(partition.offset), '-d', dir, sifFile], { signal: ctx.signal, logFile: ctx.log.path });
  if (r.exitCode !== 0) throw new NodeFailure(`unsquashfs could not unpack the SIF's partition (exit ${r.exitCode ?? r.signal}); see the log`);
}
