/**
 * test:GROUP/MODEL@RUNTIME — runs a model's test command (or the image's own Entrypoint + Cmd)
 * inside its image, in the `oci` runtime (the image's layers unpacked) or the `sif` runtime (the
 * SIF's squashfs partition unpacked), in a sandbox (settings.sandbox: bubblewrap by default;
 * rules/runtime/), under the test's run contract (rules/runtime/contract.ts: `kipoi` by default,
 * the test's inputs at /input read-only and an empty /output; `synapse`; `tre`), then compares
 * the contract's output directory with `expect` (exact bytes, or numbers within `tolerance` in
 * TSV/CSV). One node per sampled model and runtime. The output is kept in
 * `.graph/out/test/NODE/output` for inspection.
 *
 * One test per platform of a multi-platform image too (`test:GROUP/MODEL@RUNTIME@OS/ARCH` for a
 * platform other than the host's): a foreign platform's binaries run under QEMU user emulation
 * when the host has it registered (build/platform.ts `emulationFor`), else the node is skipped
 * with the reason.
 *
 * GPUs: a test claiming `resources: {gpu: N}` runs with the N distinct GPUs the scheduler handed it
 * (`ExecContext.devices.gpu`): their device nodes, the driver's files and `NVIDIA_VISIBLE_DEVICES`
 * / `CUDA_VISIBLE_DEVICES` go into its sandbox (rules/runtime/gpu.ts). The `gpu` token's capacity
 * is the number of GPUs found on this host, unless `settings.resources.gpu` declares it (then at
 * most that many are in use at once); on a host with fewer GPUs than a test claims, the test is
 * skipped ("no GPU on this host"), or fails under `--require-gpu`.
 */
import { mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { declarePart, DeclPart, type CheckContext, type Declarations, type GroupDecl, type HostResource, type ModelDecl, type Settings } from '../engine/validate/declarations.js';
import { didYouMean, type Diagnostic } from '../engine/diagnostics.js';
import type { InputSpec } from '../engine/key/files.js';
import { NodeFailure, type ExecContext, type NodeDef, type NodeId, type Rule } from '../engine/rule.js';
import { loadImage } from './oci/image.js';
import { sandboxProbe } from './runtime/probe.js';
import { discoverGpus, noGpuReason, type GpuGrant, type GpuHost } from './runtime/gpu.js';
import { buildId, platformManifest } from './build.js';
import { emulationFacts, emulationFor, hostPlatform, imagePlatforms, platformArchitecture, platformsOf, platformSuffix } from './build/platform.js';
import { convertId, convertsToSif, sifOutputs } from './convert.js';
import { buildOf } from './build/recipe.js';
import { CONTRACT_PRESETS, contractArgv, contractBinds, contractProblems, resolveContract, type ContractDecl, type ContractField, type ContractPreset, type RunContract } from './runtime/contract.js';

/**
 * Node id of one model's test in one runtime: `test:GROUP/MODEL@RUNTIME`, with `@OS/ARCH` added
 * for a platform other than the host's of a multi-platform image (`test:g/m@oci@linux/arm64`).
 */
export const testId = (group: string, model: string, runtime: Runtime, platform?: string | null) => `test:${group}/${model}@${runtime}${platformSuffix(platform)}` as NodeId;

/** Where a test runs: the image's layers (`oci`) or its SIF's partition (`sif`). */
export type Runtime = 'oci' | 'sif';

/**
 * A group's `test:`, normalized: its run contract as declared (`ContractDecl`'s fields but
 * `preset`, which is `contract` here; `command`, `inputs`, `mounts` keys and `env` values may
 * contain `{model}` and vars, see `substituteVars`), and the rest.
 */
export interface TestDecl extends Omit<ContractDecl, 'preset'> {
  /** The run contract's preset (`kipoi` by default); validation rejects other names. */
  readonly contract: ContractPreset;
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

/** The test rule's settings: where tests run; whether a GPU test may be skipped (`--require-gpu`). */
const sandboxSetting = new DeclPart<{ readonly sandbox: string; readonly requireGpu: boolean }>('test');

/** The resource token of GPUs. */
export const GPU_TOKEN = 'gpu';

/**
 * The host's GPUs as the `gpu` token (`Settings.hostResources`), found once per process. A CDI
 * spec that cannot be read counts as no GPU, and the reason says so.
 */
function gpuResource(requireGpu: boolean): HostResource {
  let ids: string[] = [];
  let problem: string | undefined;
  try {
    ids = (hostGpus ??= discoverGpus())?.devices.map((d) => d.id) ?? [];
  } catch (e) {
    problem = (e as Error).message;
  }
  const required = requireGpu ? ' (--require-gpu)' : '';
  return { ids, required: requireGpu, unavailable: (amount) => `${problem ? `no usable GPU on this host: ${problem}` : noGpuReason(amount, ids.length)}${required}` };
}
let hostGpus: GpuHost | undefined;

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
 * Substitute `{model}`, the model's vars and `{arch}` (the OCI architecture the test runs on:
 * `amd64`, `arm64`; when given) into a test command argument or a test path (`expect:
 * tests/expect/{model}`); unknown names stay as written, and a model var named `arch` wins.
 */
export function substituteVars(text: string, model: ModelDecl, arch?: string): string {
  if (!text.includes('{')) return text; // most arguments and paths name no variable
  return text.replace(/\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (all, name: string) => (name === 'model' ? model.name : (model.vars[name] ?? (name === 'arch' && arch !== undefined ? arch : all))));
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
  additionalProperties: false,
  properties: {
    command: { type: 'array', minItems: 1, items: { type: 'string' }, description: "argv; {model} and the model's vars are substituted. Absent: the image's Entrypoint + Cmd run." },
    contract: { type: 'string', minLength: 1, description: `Run contract preset: ${CONTRACT_PRESETS.join(', ')} (default kipoi). See README, "Run contracts".` },
    inputs: { type: 'string', minLength: 1, description: "Directory mounted read-only at the contract's input path (/input; tre: /safe_data)." },
    mounts: {
      type: 'object',
      description: 'More read-only mounts: a directory (relative to models.yaml; {model} substituted) → an absolute path in the container.',
      additionalProperties: { type: 'string', minLength: 1 },
    },
    output: { type: 'string', minLength: 1, description: "The writable path whose files are compared with expect (default the contract's: /output; tre: /safe_outputs)." },
    scratch: { type: 'array', uniqueItems: true, items: { type: 'string', minLength: 1 }, description: "Empty writable paths (default the contract's: none; tre: [/scratch])." },
    env: {
      type: 'object',
      description: "Environment variables set on top of the image's Env ({model} substituted in values).",
      propertyNames: { pattern: '^[A-Za-z_][A-Za-z0-9_]*$' },
      additionalProperties: { type: 'string' },
    },
    workdir: { type: 'string', minLength: 1, description: "Working directory in the container (default the image's WorkingDir)." },
    expect: { type: 'string', minLength: 1, description: "Directory of files the contract's output must match." },
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
  // Every directory the test reads: inputs, expect, and each mount's source (by its key as written).
  const dirs: { pattern: string; field: (string | number)[]; declared: string; what: string }[] = [];
  for (const key of ['inputs', 'expect'] as const) {
    if (test[key] !== undefined) dirs.push({ pattern: test[key], field: ['test', key], declared: rawTest[key] as string, what: `test ${key} directory` });
  }
  const rawMounts = Object.keys((rawTest.mounts as Record<string, string> | undefined) ?? {});
  Object.keys(test.mounts ?? {}).forEach((pattern, i) => dirs.push({ pattern, field: ['test', 'mounts', rawMounts[i]], declared: rawMounts[i], what: 'test mounts directory' }));
  for (const { pattern, field, declared: as, what } of dirs) {
    // With {model} in the path each sampled model has its own directory; report the first
    // outside the workspace, else the first missing.
    const declared = `'${as}'`;
    let outside: Diagnostic | undefined;
    // Each directory once (models without {model} share one), named by its first model.
    const firstModel = new Map<string, string>();
    const image = ctx.images.get(group.image);
    const archs = (image ? platformsOf(image, ctx.images) : [hostPlatform()]).map(platformArchitecture);
    for (const m of sampledModels(group)) {
      for (const arch of archs) {
        const dir = substituteVars(pattern, m, arch);
        if (!firstModel.has(dir)) firstModel.set(dir, m.name);
      }
    }
    for (const [dir, model] of firstModel) {
      outside ??= ctx.outside(dir, field, dir === pattern ? declared : `${declared} (model '${model}')`, field[1] === 'mounts' ? () => ctx.at(field, 'key') : undefined);
      if (outside) break;
    }
    if (outside) {
      diagnostics.push(outside);
      continue;
    }
    const missing = [...firstModel.keys()].filter((dir) => !ctx.exists({ kind: 'dir', path: dir }));
    if (missing.length) {
      const more = missing.length > 1 ? ` (and ${missing.length - 1} more)` : '';
      diagnostics.push({ code: 'missing-file', message: `${what} '${missing[0]}' does not exist${more}`, span: ctx.at(field, field[1] === 'mounts' ? 'key' : 'value') });
    }
  }
  diagnostics.push(...checkContract(test, group, rawTest, ctx));
  for (const [token, amount] of Object.entries(test.resources)) {
    const capacity = ctx.settings.resources[token];
    const host = ctx.settings.hostResources?.[token];
    // A host token (GPUs) the host has too few of: the plan skips the test. Too few declared is an error.
    if (host && capacity === host.ids.length && host.ids.length < amount) continue;
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

/** The span of a contract problem's field. */
function contractSpan(at: ContractField, ctx: CheckContext) {
  switch (at.field) {
    case 'mounts':
      return ctx.at(['test', 'mounts', at.source]);
    case 'scratch':
      return ctx.at(['test', 'scratch', at.index]);
    case 'output':
    case 'workdir':
    case 'inputs':
      return ctx.at(['test', at.field]);
  }
}

/**
 * The run contract's checks: a known preset (else "did you mean"), its paths (contractProblems:
 * absolute, not reserved, none inside another), and, without `command`, an image that has an
 * Entrypoint or Cmd, where images.yaml tells (else the run says so).
 */
function checkContract(test: TestDecl, group: GroupDecl, rawTest: Readonly<Record<string, unknown>>, ctx: CheckContext): Diagnostic[] {
  const diagnostics: Diagnostic[] = [];
  if (!(CONTRACT_PRESETS as readonly string[]).includes(test.contract)) {
    const guess = didYouMean(test.contract, CONTRACT_PRESETS);
    diagnostics.push({
      code: 'unknown-contract',
      message: `unknown run contract '${test.contract}'${guess ? ` (did you mean '${guess}'?)` : ''}`,
      span: ctx.at(['test', 'contract']),
      hint: `the presets are ${CONTRACT_PRESETS.join(', ')} (README, "Run contracts")`,
    });
    return diagnostics;
  }
  // As written (mount keys unresolved), so each problem names the key the author typed.
  const declared: ContractDecl = { ...contractDeclOf(test), mounts: rawTest.mounts as Record<string, string> | undefined };
  for (const p of contractProblems(declared)) diagnostics.push({ code: 'bad-contract', message: p.message, span: contractSpan(p.at, ctx) });
  if (test.command === undefined) {
    for (const runtime of test.runtimes) {
      const name = runtime === 'oci' ? group.image : group.sif;
      if (imageHasCommand(name, ctx.images) === false) {
        diagnostics.push({
          code: 'no-command',
          message: `the test has no 'command' and image '${name}' has neither entrypoint nor cmd: nothing would run`,
          span: ctx.at(['test'], 'key'),
          hint: `add 'command:' to the test, or 'entrypoint:'/'cmd:' to image '${name}' in images.yaml`,
        });
        break;
      }
    }
  }
  return diagnostics;
}

/**
 * Whether image `name` will have an Entrypoint or Cmd, as far as images.yaml tells: true when it
 * or a base declared here sets one; false when none does and the chain ends in a base with no
 * config (`scratch`, a `debian:` image); undefined when a Dockerfile or an outside base decides.
 */
function imageHasCommand(name: string, images: CheckContext['images']): boolean | undefined {
  const seen = new Set<string>();
  for (let image = images.get(name); image && !seen.has(image.name); ) {
    seen.add(image.name);
    const build = buildOf(image);
    if ((build.entrypoint?.length ?? 0) > 0 || (build.cmd?.length ?? 0) > 0) return true;
    if (build.recipe.kind === 'debian') return false;
    if (build.recipe.kind !== 'layers') return undefined;
    if (!image.from || image.from.kind === 'scratch') return false;
    if (image.from.kind !== 'image') return undefined;
    image = images.get(image.from.name);
  }
  return undefined;
}

/** The contract fields of a group's test (paths as normalized: workspace-relative). */
function contractDeclOf(test: TestDecl): ContractDecl {
  return {
    preset: test.contract,
    ...(test.inputs !== undefined ? { inputs: test.inputs } : {}),
    ...(test.mounts ? { mounts: test.mounts } : {}),
    ...(test.output !== undefined ? { output: test.output } : {}),
    ...(test.scratch ? { scratch: test.scratch } : {}),
    ...(test.env ? { env: test.env } : {}),
    ...(test.workdir !== undefined ? { workdir: test.workdir } : {}),
    ...(test.command ? { command: test.command } : {}),
  };
}

/**
 * One model's contract: the group's, with `{model}` and vars substituted in the command, the
 * directories and env values. Same value as `resolveContract({...contractDeclOf(test), …substituted})`,
 * built field by field: this runs for every test node of every plan, and the spread copies were
 * the test rule's largest cost in a 4.5k-node plan's expansion.
 */
export function modelContract(test: TestDecl, model: ModelDecl, arch?: string): RunContract {
  const sub = (t: string) => substituteVars(t, model, arch);
  const decl: { -readonly [K in keyof ContractDecl]: ContractDecl[K] } = { preset: test.contract };
  if (test.inputs !== undefined) decl.inputs = sub(test.inputs);
  if (test.mounts) {
    const mounts: Record<string, string> = {};
    for (const [dir, to] of Object.entries(test.mounts)) mounts[sub(dir)] = to;
    decl.mounts = mounts;
  }
  if (test.output !== undefined) decl.output = test.output;
  if (test.scratch) decl.scratch = test.scratch;
  if (test.env) {
    const env: Record<string, string> = {};
    for (const [name, value] of Object.entries(test.env)) env[name] = sub(value);
    decl.env = env;
  }
  if (test.workdir !== undefined) decl.workdir = test.workdir;
  if (test.command) decl.command = test.command.map(sub);
  return resolveContract(decl);
}

/** `T` with its top-level fields writable: for objects built field by field. */
type Mutable<T> = { -readonly [K in keyof T]: T[K] };

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
        const mounts = rawTest.mounts as Record<string, string> | undefined;
        return {
          test: {
            ...(rawTest.command === undefined ? {} : { command: rawTest.command as string[] }),
            contract: ((rawTest.contract as string | undefined) ?? 'kipoi') as ContractPreset,
            ...(mounts === undefined ? {} : { mounts: Object.fromEntries(Object.entries(mounts).map(([dir, to]) => [ctx.rel(dir), to])) }),
            ...(rawTest.output === undefined ? {} : { output: rawTest.output as string }),
            ...(rawTest.scratch === undefined ? {} : { scratch: rawTest.scratch as string[] }),
            ...(rawTest.env === undefined ? {} : { env: rawTest.env as Record<string, string> }),
            ...(rawTest.workdir === undefined ? {} : { workdir: rawTest.workdir as string }),
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
      normalize: (raw, ctx) => ({ sandbox: ctx.overrides.sandbox ?? (raw.sandbox as string | undefined) ?? 'bubblewrap', requireGpu: ctx.overrides['require-gpu'] === 'true' }),
      options: [
        { name: 'sandbox', values: SANDBOXES, help: 'where tests run: bubblewrap (default), podman, docker, apptainer' },
        { name: 'require-gpu', flag: true, help: 'tests claiming GPUs fail, rather than being skipped, on a host without enough' },
      ],
      hostResources: (part) => ({ [GPU_TOKEN]: gpuResource(part.requireGpu) }),
    }),
  ],
  // A foreign platform's tests run under QEMU user emulation, or are skipped without it.
  expandFacts: () => emulationFacts(),
  toolProbes: (settings) => [sandboxProbe(sandboxOf(settings))],
  expand(decls: Declarations): NodeDef<TestNodeDecl>[] {
    const nodes: NodeDef<TestNodeDecl>[] = [];
    const sandboxName = sandboxOf(decls.settings);
    const sandbox = [sandboxProbe(sandboxName)];
    for (const group of decls.groups.values()) {
      const test = testOf(group);
      if (!test) continue;
      for (const model of sampledModels(group)) {
        for (const runtime of test.runtimes) {
          const runsIn = runtime === 'oci' ? group.image : group.sif;
          const image = decls.images.get(runsIn);
          const { platforms, multi } = image ? imagePlatforms(image, decls) : { platforms: [hostPlatform()], multi: false };
          // One test per platform of the image; a single-platform image's is what it always was.
          for (const [i, platform] of (multi ? platforms : [undefined]).entries()) {
            const arch = platformArchitecture(platform ?? platforms[i]);
            const contract = modelContract(test, model, arch);
            const expectDir = test.expect === undefined ? undefined : substituteVars(test.expect, model, arch);
            const inputs: InputSpec[] = [];
            for (const dir of new Set(contract.mounts.map((m) => m.source))) inputs.push({ kind: 'dir', path: dir });
            if (expectDir) inputs.push({ kind: 'dir', path: expectDir });
            const emulation = platform ? emulationFor(platform) : undefined;
            // Built field by field (same fields, same order as a literal with conditional spreads,
            // which V8 copies property by property): this runs for every test node of every plan.
            const decl: Mutable<TestNodeDecl> = { image: runsIn, runtime, contract, expect: expectDir ?? null, timeout_ms: test.timeoutMs, tolerance: test.tolerance ?? null };
            if (platform) decl.platform = platform;
            // How many GPUs it runs with changes what runs; which ones (ids differ run to run)
            // and the driver's version do not go into the key: like the kernel, the driver is
            // the host's, and a result keyed by it could never be shared between a planning
            // machine without GPUs and the GPU host that runs the test. The log names both.
            if (test.resources[GPU_TOKEN]) decl.gpus = test.resources[GPU_TOKEN];
            const node: Partial<Mutable<NodeDef<TestNodeDecl>>> = {
              id: testId(group.name, model.name, runtime, platform),
              kind: 'test',
              deps: [{ id: runtime === 'oci' ? buildId(runsIn) : convertId(runsIn, platform), at: () => group.at([runtime === 'oci' ? 'image' : 'sif']) }],
            };
            if (emulation?.kind === 'none') node.skip = emulation.reason;
            if (emulation?.kind === 'qemu') node.note = `runs under QEMU user emulation (binfmt_misc ${emulation.entry})`;
            node.decl = decl;
            node.inputs = inputs;
            node.env = [];
            node.tool = `graph-test-${runtime}/1 sandbox:${sandboxName}`;
            node.tools = sandbox;
            node.timeoutMs = test.timeoutMs;
            node.resources = test.resources;
            if (test.cpus !== undefined || test.memoryMb !== undefined) {
              const request: { cpus?: number; memoryMb?: number } = {};
              if (test.cpus !== undefined) request.cpus = test.cpus;
              if (test.memoryMb !== undefined) request.memoryMb = test.memoryMb;
              node.request = request;
            }
            node.image = group.image;
            node.group = group.name;
            node.at = () => group.at(['models'], 'key');
            nodes.push(node as NodeDef<TestNodeDecl>);
          }
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
    const manifest = sif ? sif.manifest : platformManifest(depId, ctx.deps.get(depId), decl.platform ?? null);
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
    const contract = decl.contract;
    const problems = contractProblems({ preset: contract.preset, mounts: Object.fromEntries(contract.mounts.map((m) => [m.source, m.target])), output: contract.output, scratch: contract.scratch, ...(contract.workdir !== null ? { workdir: contract.workdir } : {}) }, contract);
    if (problems.length) throw new NodeFailure(`invalid run contract: ${problems.map((p) => p.message).join('; ')}`);
    const config = image.config.config ?? {};
    let command: string[];
    try {
      command = contractArgv(contract, config, decl.image);
    } catch (e) {
      throw new NodeFailure((e as Error).message);
    }
    const outputDir = testOutputDir(ctx.outDir, node.id);
    rmSync(outputDir, { recursive: true, force: true });
    mkdirSync(outputDir, { recursive: true });
    // Scratch directories live in the node's private scratch (removed after the node), empty.
    // Mount sources are checked again (validation did first); the sandbox mounts the real directories.
    const binds = contractBinds(contract, (rel) => boundary.realInside(path.join(root, rel), rel), outputDir, contract.scratch.length ? ctx.scratchDir() : '');
    let backend;
    try {
      backend = await detectBackend(sandboxOf(ctx.workspace.settings), { runner: ctx.runner, scratchDir: ctx.scratchDir() });
    } catch (e) {
      throw new NodeFailure((e as Error).message, { type: 'sandbox' });
    }
    ctx.log.write(`sandbox: ${await backend.version()}; image ${manifest}; runtime ${decl.runtime}${decl.platform ? `; platform ${decl.platform}` : ''}\n`);
    const gpus = decl.gpus ? await grantGpus(decl.gpus, ctx) : undefined;
    const env = { ...Object.fromEntries((config.Env ?? []).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)])), ...contract.env };
    ctx.log.write(`contract: ${contract.preset}; ${[...contract.mounts.map((m) => `${m.source} → ${m.target} (ro)`), `output ${contract.output}`, ...contract.scratch.map((s) => `scratch ${s}`)].join(', ')}; ${contract.command ? 'command' : 'the image\'s entrypoint + cmd'}: ${command.join(' ')}\n`);
    const outcome = await backend.run({
      rootfs,
      command,
      env,
      workdir: contract.workdir ?? (config.WorkingDir || undefined),
      ...binds,
      ...(gpus ? { gpus } : {}),
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
  /** Where data goes and what runs (rules/runtime/contract.ts); its fields name what changed in a plan. */
  readonly contract: RunContract;
  readonly expect: string | null;
  readonly timeout_ms: number;
  readonly tolerance: { readonly absolute?: number; readonly relative?: number } | null;
  /** GPUs it claims (`resources.gpu`); absent for none. */
  readonly gpus?: number;
  /** Only for a multi-platform image: the platform (`OS/ARCH`) whose image the test runs. */
  readonly platform?: string;
};

/**
 * What the sandbox gets for the GPUs the scheduler handed this run (`ctx.devices.gpu`).
 * @throws NodeFailure when it holds fewer than it claims (an executor that allocates no devices)
 *   or the host's GPUs cannot be read.
 */
async function grantGpus(claimed: number, ctx: ExecContext): Promise<GpuGrant> {
  const ids = ctx.devices?.[GPU_TOKEN] ?? [];
  if (ids.length !== claimed) throw new NodeFailure(`claims ${claimed} GPU${claimed === 1 ? '' : 's'} but holds ${ids.length}: this executor hands out no GPUs`);
  const { gpuGrant, ldconfigOutput } = await import('./runtime/gpu.js');
  let host: GpuHost | undefined;
  try {
    host = hostGpus ?? discoverGpus();
  } catch (e) {
    throw new NodeFailure((e as Error).message);
  }
  if (!host) throw new NodeFailure('no GPU on this host');
  const grant = gpuGrant(host, ids, host.source === 'dev' ? { ldconfig: await ldconfigOutput() } : {});
  const from = host.source === 'cdi' ? `CDI spec ${host.specs.join(', ')}` : '/dev, driver files from ldconfig -p';
  ctx.log.write(`gpu: holding ${ids.join(', ')} (from ${from}); driver ${grant.driverVersion ?? 'version unknown'}; ${grant.deviceNodes.length} device nodes, ${grant.files.length} driver files bound\n`);
  if (grant.notBound.length) ctx.log.write(`gpu: not bound (only libraries and binaries are): ${grant.notBound.join(', ')}\n`);
  return grant;
}

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
