/**
 * Run contracts: where a test's data goes inside the sandbox, in one place. A test declares a
 * preset (`contract: kipoi | synapse | tre`) and may override any of its fields; this module
 * turns that into a normalized {@link RunContract} (read-only mounts, the writable output path,
 * empty writable scratch paths, environment, working directory, argv) that every sandbox backend
 * (bubblewrap, podman, apptainer) honours the same way, in both runtimes (oci, sif). Network is
 * always off: no contract can turn it on.
 *
 * The presets, each the contract of a place these images run:
 * - `kipoi` (the default): the test's `inputs` read-only at `/input`, `/output` writable: graph's
 *   layout for Kipoi-style zoos (images are environments, models test inputs), and its behaviour
 *   before contracts existed.
 * - `synapse`: `/input` read-only, `/output` writable, network off: Synapse "model-to-data"
 *   challenges, whose workflow (Sage Bionetworks' nf-synapse-challenge) runs a submitted image's
 *   own command as `docker run -v DATA:/input:ro -v OUT:/output:rw IMAGE` and scores /output.
 * - `tre`: `/safe_data` read-only, `/safe_outputs` writable, `/scratch` writable and empty, no
 *   network, and the image's own start-up command (its `Entrypoint` + `Cmd`): trusted research
 *   environments, where a job is an image, never a command line; the paths are named after the
 *   Five Safes framework's "safe data" and "safe outputs" (as in the UK TRE community's SATRE).
 *
 * Paths in a contract are absolute container paths, normalized (no `.`/`..`, no trailing `/`);
 * none may be `/`, under `/proc`, `/dev` or `/tmp` (the sandbox's own), or inside another
 * (a mount inside the output would be compared as output; an output inside a read-only mount
 * cannot be written). {@link contractProblems} states these checks; validation reports them at
 * the field, and the test rule refuses a contract that fails them.
 */
import path from 'node:path';

/** The named presets, in documentation order. */
export const CONTRACT_PRESETS = ['kipoi', 'synapse', 'tre'] as const;
/** One of {@link CONTRACT_PRESETS}. */
export type ContractPreset = (typeof CONTRACT_PRESETS)[number];

/** What a preset fixes: where `inputs` is mounted, the output path, scratch paths, and whether the image's own command is the default. */
export interface PresetDefaults {
  /** Container path of the test's `inputs` directory (read-only). */
  readonly input: string;
  /** Writable path whose files are compared with `expect`. */
  readonly output: string;
  /** Empty writable paths. */
  readonly scratch: readonly string[];
  /** Where the preset comes from (README cites it). */
  readonly source: string;
}

/** Each preset's defaults (module comment). */
export const PRESETS: Readonly<Record<ContractPreset, PresetDefaults>> = {
  kipoi: { input: '/input', output: '/output', scratch: [], source: 'graph’s layout for Kipoi-style zoos; the default' },
  synapse: { input: '/input', output: '/output', scratch: [], source: 'Synapse model-to-data challenges (Sage Bionetworks)' },
  tre: { input: '/safe_data', output: '/safe_outputs', scratch: ['/scratch'], source: 'trusted research environments (Five Safes; SATRE)' },
};

/** Container paths that belong to the sandbox itself; no contract path may be one of them or under them. */
export const RESERVED_PATHS = ['/proc', '/dev', '/tmp'] as const;

/**
 * A test's contract as declared (models.yaml `test:`), after `{model}` substitution; workspace-
 * relative host directories. Every field but `preset` is optional: absent means the preset's.
 */
export interface ContractDecl {
  readonly preset: ContractPreset;
  /** Workspace-relative directory mounted read-only at the preset's input path. */
  readonly inputs?: string;
  /** Extra read-only mounts: workspace-relative directory → container path. */
  readonly mounts?: Readonly<Record<string, string>>;
  readonly output?: string;
  readonly scratch?: readonly string[];
  /** Set on top of the image's `Env`. */
  readonly env?: Readonly<Record<string, string>>;
  /** Replaces the image's `WorkingDir`. */
  readonly workdir?: string;
  /** argv; absent: the image's `Entrypoint` + `Cmd`. */
  readonly command?: readonly string[];
}

/** A read-only bind: a directory (`source`, workspace-relative in a contract, absolute on the host in a run request) at container path `target`. */
export type ContractMount = {
  readonly source: string;
  readonly target: string;
};

/**
 * The normalized contract (the test node's key holds it, field by field): mounts sorted by
 * target, scratch sorted, env keys sorted, `command` null when the image's own command runs.
 */
export type RunContract = {
  readonly preset: ContractPreset;
  readonly mounts: readonly ContractMount[];
  readonly output: string;
  readonly scratch: readonly string[];
  readonly env: Readonly<Record<string, string>>;
  /** null: the image's `WorkingDir`. */
  readonly workdir: string | null;
  /** null: the image's `Entrypoint` + `Cmd` (resolved at run time by {@link contractArgv}). */
  readonly command: readonly string[] | null;
};

const byKey = <T>(entries: [string, T][]) => entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));

/**
 * Resolve a declared contract against its preset: `inputs` at the preset's input path, then the
 * extra `mounts`; the output and scratch paths of the declaration or else of the preset.
 * Pure; does not check the result (see {@link contractProblems}).
 */
export function resolveContract(decl: ContractDecl): RunContract {
  const preset = PRESETS[decl.preset];
  const mounts: ContractMount[] = [];
  if (decl.inputs !== undefined) mounts.push({ source: decl.inputs, target: preset.input });
  for (const [source, target] of Object.entries(decl.mounts ?? {})) mounts.push({ source, target: normalizeContainerPath(target) });
  mounts.sort((a, b) => (a.target < b.target ? -1 : a.target > b.target ? 1 : 0));
  return {
    preset: decl.preset,
    mounts,
    output: normalizeContainerPath(decl.output ?? preset.output),
    scratch: [...(decl.scratch ?? preset.scratch)].map(normalizeContainerPath).sort(),
    env: Object.fromEntries(byKey(Object.entries(decl.env ?? {}))),
    workdir: decl.workdir ?? null,
    command: decl.command ? [...decl.command] : null,
  };
}

/** `p` with `.`, `..`, repeated and trailing slashes resolved (posix); relative paths are kept relative (contractProblems reports them). */
export function normalizeContainerPath(p: string): string {
  if (!p.startsWith('/')) return p;
  return path.posix.normalize(p).replace(/(.)\/+$/, '$1');
}

/** Which field a contract problem is about, for the diagnostic's span. */
export type ContractField = { readonly field: 'mounts'; readonly source: string } | { readonly field: 'inputs' | 'output' | 'workdir' } | { readonly field: 'scratch'; readonly index: number };

/** One problem of a contract, with the field it is at. */
export interface ContractProblem {
  readonly at: ContractField;
  readonly message: string;
}

/**
 * Every problem of `contract` (module comment: absolute container paths, none reserved, none
 * inside another, distinct), in field order. `decl` names the fields as written (the scratch
 * index, a mount's source) so each problem can point at its line.
 */
export function contractProblems(decl: ContractDecl, contract: RunContract = resolveContract(decl)): ContractProblem[] {
  const problems: ContractProblem[] = [];
  // Every path with the field that set it; `inputs` lands on the preset's input path.
  const places: { path: string; what: string; at: ContractField }[] = [];
  if (decl.inputs !== undefined) places.push({ path: PRESETS[decl.preset].input, what: `the inputs mount ${PRESETS[decl.preset].input}`, at: { field: 'inputs' } });
  for (const [source, target] of Object.entries(decl.mounts ?? {})) places.push({ path: normalizeContainerPath(target), what: `mount '${target}'`, at: { field: 'mounts', source } });
  places.push({ path: contract.output, what: `the output path '${contract.output}'`, at: { field: 'output' } });
  (decl.scratch ?? PRESETS[decl.preset].scratch).forEach((s, index) => places.push({ path: normalizeContainerPath(s), what: `scratch path '${s}'`, at: { field: 'scratch', index } }));
  const valid: typeof places = [];
  for (const p of places) {
    if (!p.path.startsWith('/')) problems.push({ at: p.at, message: `${p.what} is not an absolute path in the container` });
    else if (p.path === '/') problems.push({ at: p.at, message: `${p.what} is the container's root` });
    else {
      const reserved = RESERVED_PATHS.find((r) => p.path === r || p.path.startsWith(`${r}/`));
      if (reserved) problems.push({ at: p.at, message: `${p.what} is under ${reserved}, which the sandbox mounts itself` });
      else valid.push(p);
    }
  }
  for (const [i, a] of valid.entries()) {
    for (const b of valid.slice(0, i)) {
      if (a.path === b.path) problems.push({ at: a.at, message: `${a.what} is the same path as ${b.what}` });
      else if (a.path.startsWith(`${b.path}/`)) problems.push({ at: a.at, message: `${a.what} is inside ${b.what}` });
      else if (b.path.startsWith(`${a.path}/`)) problems.push({ at: a.at, message: `${b.what} is inside ${a.what}` });
    }
  }
  if (contract.workdir !== null && !contract.workdir.startsWith('/')) problems.push({ at: { field: 'workdir' }, message: `workdir '${contract.workdir}' is not an absolute path in the container` });
  return problems;
}

/** The image config fields a contract falls back on (OCI image spec, config.md: `config.Entrypoint`, `config.Cmd`). */
export interface ImageCommand {
  readonly Entrypoint?: readonly string[] | null;
  readonly Cmd?: readonly string[] | null;
}

/**
 * The argv a contract runs: its `command`, else the image's `Entrypoint` followed by `Cmd`, as a
 * container runtime (and `apptainer run`'s runscript) starts an image.
 * @throws Error when there is no command and the image has neither Entrypoint nor Cmd.
 */
export function contractArgv(contract: RunContract, image: ImageCommand, imageName: string): string[] {
  if (contract.command) return [...contract.command];
  const argv = [...(image.Entrypoint ?? []), ...(image.Cmd ?? [])];
  if (argv.length === 0) {
    throw new Error(`the test has no 'command' and image '${imageName}' has neither Entrypoint nor Cmd: add 'command:' to the test, or 'entrypoint:'/'cmd:' to the image`);
  }
  return argv;
}

/** The part of a sandbox run request (rules/runtime/runtime.ts `RunInImage`) a contract decides. */
export interface ContractBinds {
  readonly mounts: readonly { readonly source: string; readonly target: string }[];
  readonly outputDir: string;
  readonly outputPath: string;
  readonly scratch: readonly { readonly source: string; readonly target: string }[];
}

/**
 * The host side of a contract: each mount's workspace-relative source made a host path by
 * `hostDir` (which checks it: the test rule passes the workspace boundary's `realInside`), the
 * output directory `outputDir` at the contract's output path, and one empty host directory per
 * scratch path, `scratchRoot/scratch-I` (I its index in sorted order).
 */
export function contractBinds(contract: RunContract, hostDir: (workspacePath: string) => string, outputDir: string, scratchRoot: string): ContractBinds {
  return {
    mounts: contract.mounts.map((m) => ({ source: hostDir(m.source), target: m.target })),
    outputDir,
    outputPath: contract.output,
    scratch: contract.scratch.map((target, i) => ({ source: path.join(scratchRoot, `scratch-${i}`), target })),
  };
}
