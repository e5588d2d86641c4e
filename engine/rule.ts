/**
 * The rule interface: how a node kind plugs into the engine. A rule says what it declares (its
 * part of images.yaml / models.yaml: schema fragment, normalization, semantic checks; see
 * `DeclaredPart`), which nodes it expands the declarations into (with their dependencies, key
 * inputs and limits), how one of its nodes executes, what its outputs are (`outputsReader`), and
 * which command-line commands it adds. The engine never switches on a rule's kind.
 */
import type { Boundary } from './validate/boundary.js';
import type { DeclaredPart, Declarations, Settings } from './validate/declarations.js';
import type { Span } from './diagnostics.js';
import type { InputSpec } from './key/files.js';
import type { ProcessRunner } from './process.js';
import type { ContentStore } from './cache/store.js';
import type { ToolProbe } from './key/tools.js';
import type { Workspace } from './workspace.js';
import type { ResultSource } from './cache/registry-source.js';

/** A node id such as `build:base`, `test:CpGenie/A549_ENCSR000DDI@oci`. */
export type NodeId = string & { readonly __brand: 'NodeId' };

/** JSON-compatible data, the only kind that goes into an action key. */
export type Json = null | boolean | number | string | readonly Json[] | { readonly [k: string]: Json };

/**
 * One node of the build graph, as a rule expands it. Immutable once the graph is sealed.
 * `D` is the shape of the rule's `decl` (JSON, since it goes into the key).
 */
export interface NodeDef<D extends Json = Json> {
  readonly id: NodeId;
  /** The kind of the rule that made it: `build`, `convert`, `test`, `publish`. */
  readonly kind: string;
  /**
   * Nodes that must succeed first; `at` finds the declaration that creates the edge. Spans are
   * looked up lazily (only a diagnostic needs one, and finding one may mean parsing the YAML).
   */
  readonly deps: ReadonlyArray<{ readonly id: NodeId; readonly at?: () => Span }>;
  /**
   * The normalized declaration this node depends on; goes into the key verbatim. Everything the
   * node's execution reads of the declarations is here (never the whole declarations).
   */
  readonly decl: D;
  /** Workspace files whose contents go into the key. */
  readonly inputs: readonly InputSpec[];
  /** Environment variables whose values go into the key (an allow-list; others never do). */
  readonly env: readonly string[];
  /** Identity and version of graph's own code that produces the output, e.g. `graph-layers/1`. */
  readonly tool: string;
  /**
   * External tools that make the output (a Dockerfile builder, tar2sqfs, the test sandbox): each
   * is probed before planning and its identity (`buildah version 1.28.2 …`) joins `tool` in the
   * key (engine/key/tools.ts).
   */
  readonly tools?: readonly ToolProbe[];
  /** Wall-clock limit in milliseconds; undefined for none. */
  readonly timeoutMs?: number;
  /** Named resource tokens held while running, e.g. `{gpu: 1}`. */
  readonly resources: Readonly<Record<string, number>>;
  /**
   * What the node asks of the machine that runs it: CPU cores and memory in MiB. A cluster
   * executor passes them on (`sbatch -c`, `--mem`); not in the key (the output does not depend on it).
   */
  readonly request?: { readonly cpus?: number; readonly memoryMb?: number };
  /**
   * Set when this host cannot run the node (a test of a foreign platform without QEMU user
   * emulation): the reason. The plan treats it as unavailable here (engine/plan.ts), like a test
   * claiming GPUs the host lacks: the build ends it `skipped` with the reason, without running it,
   * and its dependents too. Not in the key: nothing is recorded.
   */
  readonly skip?: string;
  /**
   * A line the plan shows under the node when it will run, about how it runs on this host (e.g.
   * `runs under QEMU user emulation (binfmt_misc qemu-aarch64)`). Not in the key.
   */
  readonly note?: string;
  /** The image this node belongs to (`image:NAME` targets), if any. */
  readonly image?: string;
  /** The model group this node belongs to (`group:NAME` targets), if any. */
  readonly group?: string;
  /** Where the node is declared (looked up lazily). */
  readonly at: () => Span;
}

/** What a node produced; recorded in the action cache. */
export interface NodeOutputs {
  /** Rule-specific JSON outputs (digests, paths, sizes) shown in the `--report` JSON. */
  readonly outputs: { readonly [k: string]: Json };
  /**
   * Digests (`sha256:<hex>`) of blobs in the content-addressed store that the result needs; a
   * cached result whose artifact is gone is a miss ("output missing").
   */
  readonly artifacts: readonly string[];
  /**
   * Workspace-relative paths of the user-visible files the node wrote and later nodes or people
   * read (an image layout's index.json, a SIF under .graph/out, a dist/ copy): a cached result
   * whose file is gone is a miss ("output missing: PATH"), so the node writes it again.
   */
  readonly files?: readonly string[];
}

/** Sink for a node's log: everything its tools print, and the rule's own notes. */
export interface LogSink {
  /** Append text to the node's log file. */
  write(text: string): void;
  /** Absolute path of the log file (child processes may append to it directly). */
  readonly path: string;
}

/**
 * What a rule may know of the workspace when its nodes run, besides each node's `decl`: never the
 * whole declarations (what execution reads goes into `NodeDef.decl`, and so into the key).
 */
export interface RuleWorkspace {
  /** Absolute workspace directory (where images.yaml lives); `decl` paths are relative to it. */
  readonly root: string;
  /** What declarations may read, checked again at execution (boundary.ts). */
  readonly boundary: Boundary;
  /**
   * The settings, command-line overrides applied. Only settings that are already in the node's
   * key (through `NodeDef.tool`, e.g. the Dockerfile builder, the sandbox) may change what runs.
   */
  readonly settings: Settings;
}

/** Everything a rule's `execute` may use; rules touch nothing else. */
export interface ExecContext {
  readonly workspace: RuleWorkspace;
  /** Aborted on SIGINT/SIGTERM, on `--fail-fast` stop, and when the node's timeout passes. */
  readonly signal: AbortSignal;
  readonly log: LogSink;
  readonly runner: ProcessRunner;
  readonly store: ContentStore;
  /**
   * The allow-listed environment variables (`NodeDef.env`) exactly as the node's key recorded
   * them: name → value, null when unset. Rules read these, never `process.env`, so what runs is
   * what the key describes.
   */
  readonly env: Readonly<Record<string, string | null>>;
  /** This node's action key, and its dependencies' (for records such as a lineage lock). */
  readonly keys: { readonly node: string; readonly deps: Readonly<Record<string, string>> };
  /** Outputs of this node's dependencies (all succeeded), by node id. */
  readonly deps: ReadonlyMap<NodeId, NodeOutputs>;
  /**
   * The host devices this run of the node holds, by resource token (`{gpu: ['0']}`): distinct
   * from those of every other node running at once (engine/execute/devices.ts). Not in the key.
   */
  readonly devices?: Readonly<Record<string, readonly string[]>>;
  /** Absolute directory where rules keep user-visible outputs (`.graph/out`): image layouts, SIFs. */
  readonly outDir: string;
  /** Absolute directory for rules' download caches (`.graph/cache`), shared across nodes and runs. */
  readonly cacheDir: string;
  /** Absolute path of a scratch directory private to this run of this node: created on the first
   * call, removed when the node ends. */
  scratchDir(): string;
}

/**
 * A node kind. `Decl` is the shape of its nodes' `decl`; `Out` the typed form of their outputs,
 * which `outputs` reads (other rules import the same reader from the rule's module).
 */
export interface Rule<Decl extends Json = Json, Out = unknown> {
  readonly kind: string;
  /** Bump when the rule's output for the same inputs changes: every key of this kind changes. */
  readonly version: number;
  /**
   * The parts of the declaration files this rule owns (fields of image entries, group entries or
   * settings): their schema fragments, normalization and checks. validate.ts runs them.
   */
  readonly declares?: readonly DeclaredPart[];
  /** Commands the rule adds to the command line (`graph lock` for `debian:` images). */
  readonly commands?: readonly RuleCommand[];
  /**
   * Reads a node's recorded outputs typed (an `outputsReader`).
   * @throws NodeFailure when they are missing or malformed.
   */
  readonly outputs?: (id: NodeId, result: Pick<NodeOutputs, 'outputs'> | undefined) => Out;
  /**
   * Nodes for the validated declarations; edges may point at other rules' nodes. Expansion reads
   * the declarations, `GRAPH_*` environment variables and what `expandFacts` returns, nothing
   * else: its nodes are cached on those (engine/compile/snapshot.ts).
   */
  expand(decls: Declarations): NodeDef<Decl>[];
  /**
   * Optional, for a rule whose `expand` reads more than the declarations: what it reads of the
   * host and the workspace at `root` (the binfmt_misc entries that decide whether a foreign
   * platform's tests can run here, images.lock's text), as JSON. Part of the compiled graph's
   * cache key: a rule that reads something it does not return here gets stale nodes.
   */
  expandFacts?(root: string): Json;
  /**
   * Optional, for a rule whose nodes name external tools (`NodeDef.tools`): every probe its nodes
   * may name under `settings`, so that a cached graph's nodes get their probes back by name.
   */
  toolProbes?(settings: Settings): readonly ToolProbe[];
  /**
   * Produce the node's outputs.
   * @throws NodeFailure (or any Error) when the node fails; the message is shown as its reason.
   */
  execute(node: NodeDef<Decl>, ctx: ExecContext): Promise<NodeOutputs>;
  /**
   * Optional, for nodes whose effect lives outside the workspace (a push): is it already done?
   * Asked by the planner for nodes that would run, unless `--offline`.
   * @returns the outputs and a reason (e.g. "already in registry") when it is; undefined when it
   *   is not or cannot be told. Never throws for an unreachable service: that is "cannot tell".
   */
  upToDate?(node: NodeDef<Decl>, ctx: UpToDateContext): Promise<{ outputs: NodeOutputs['outputs']; reason: string } | undefined>;
  /**
   * Optional: write a cached result's visible files (`NodeOutputs.files`) again from the store,
   * without running the node (an image layout, a SIF's name under .graph/out). The planner uses it
   * when those files are gone from the workspace but every artifact is intact in the store (a new
   * checkout sharing a cache, a deleted .graph/out); without it, such a node runs again.
   * @throws Error when it cannot; the node then fails with that reason.
   */
  restore?(node: NodeDef<Decl>, result: NodeOutputs, ctx: RestoreContext): Promise<void>;
  /**
   * Optional: whether `dir` (absolute, under `outDir`, `.graph/out`) is a directory the rule's
   * nodes fill with files that are not graph's own (a test's output, written by the model under
   * test). Sweeps of graph's temp files (engine/tmp.ts) do not search such a directory.
   */
  holdsUserFiles?(dir: string, outDir: string): boolean;
  /**
   * Optional: what `graph plan` should add about records the rule keeps outside the cache that
   * the planned keys make stale (published.lock.json).
   * @param plannedKey the planned key of a node id; undefined when the node is not in the plan.
   * @returns undefined when there is nothing to say.
   */
  planNote?(root: string, plannedKey: (id: NodeId) => string | undefined): PlanNote | undefined;
  /**
   * Optional: where results of nodes were published and can be found again by their action keys
   * (the publish rule: images and SIFs in registries, as published.lock.json records them). The
   * planner asks it after the local cache and the remote cache (engine/cache/registry-source.ts).
   * Not asked with `--offline`.
   * @returns undefined when there is nothing to ask (no lock, nothing in a registry).
   */
  resultSource?(workspace: RuleWorkspace): Promise<ResultSource | undefined>;
}

/** A rule's note at the end of `graph plan` (`Rule.planNote`). */
export interface PlanNote {
  /** The text heading, e.g. `published.lock.json is out of date for`. */
  readonly heading: string;
  /** Its key in `graph plan --format json`, e.g. `stale_published`. */
  readonly jsonKey: string;
  /** One line each (at least one). */
  readonly lines: readonly string[];
}

/** What `Rule.restore` may use. */
export interface RestoreContext {
  readonly workspace: RuleWorkspace;
  readonly store: ContentStore;
  /** As `ExecContext.outDir`. */
  readonly outDir: string;
}

/** What `Rule.upToDate` may use. */
export interface UpToDateContext {
  readonly workspace: RuleWorkspace;
  /** Each dependency's planned key, and its outputs when it is cached. */
  readonly deps: ReadonlyMap<NodeId, { readonly key: string; readonly outputs?: NodeOutputs['outputs'] }>;
  readonly signal?: AbortSignal;
}

/** A failure a rule expects (a failing command, a missing tool): shown without a stack trace. */
export class NodeFailure extends Error {
  /**
   * @param detail what kind of failure it is: a command that exited non-zero (`code`) or died of a
   *   signal, a sandbox that could not start, or (the default) any other expected failure.
   */
  constructor(
    message: string,
    readonly detail: { readonly type: 'exit'; readonly code?: number; readonly signal?: string } | { readonly type: 'sandbox' } | { readonly type: 'error' } = { type: 'error' },
  ) {
    super(message);
    this.name = 'NodeFailure';
  }
}

/** A bad command line (an unknown option value, a target that is not an image): exit status 2. */
export class UsageError extends Error {}

/** An option of a rule's command, as `node:util` `parseArgs` takes it. */
export interface CommandOption {
  readonly type: 'string' | 'boolean';
  readonly short?: string;
  readonly multiple?: boolean;
}

/** Where a rule's command writes what it has to say (the CLI passes stdout and stderr). */
export interface CommandOutput {
  out(text: string): void;
  err(text: string): void;
}

/** A command a rule adds to `graph` (e.g. `graph lock`). The CLI parses its arguments. */
export interface RuleCommand {
  readonly name: string;
  /** One line for `graph --help`. */
  readonly summary: string;
  /** `graph NAME --help`: usage line, blank line, description and options. */
  readonly usage: string;
  /** Options besides `-C DIR` and `--help`, which every command takes. */
  readonly options?: Readonly<Record<string, CommandOption>>;
  /**
   * Run it.
   * @param open loads, validates and compiles the workspace (throws DiagnosticError).
   * @returns the exit status: 0 success, 1 failed.
   * @throws UsageError for a bad command line (exit 2).
   */
  run(open: () => Workspace, args: { readonly values: Readonly<Record<string, unknown>>; readonly positionals: readonly string[] }, output: CommandOutput): Promise<number>;
}

/** The kinds of output fields `outputsReader` checks. */
type OutputField = 'string' | 'number' | 'string[]';
type OutputFieldType<F extends OutputField> = F extends 'string' ? string : F extends 'number' ? number : readonly string[];

/** The typed outputs a reader made with `outputsReader` returns. */
export type OutputsOf<S extends Readonly<Record<string, OutputField>>> = { readonly [K in keyof S]: OutputFieldType<S[K]> };

function hasShape(v: Json | undefined, field: OutputField): boolean {
  if (field === 'string[]') return Array.isArray(v) && v.every((x) => typeof x === 'string');
  return typeof v === field;
}

/**
 * A parser for the outputs of one rule's nodes, exported by the producing rule so that consumers
 * read them typed (`imageOutputs(id, ctx.deps.get(id))`), never as `String(outputs.x)`.
 * @param shape each field and its type.
 * @returns a function that returns the typed outputs of node `id`.
 * @throws NodeFailure naming the node and the field when the outputs are missing or malformed
 *   (a record from another version of the rule, an edited cache entry).
 */
export function outputsReader<S extends Readonly<Record<string, OutputField>>>(shape: S): (id: NodeId, result: Pick<NodeOutputs, 'outputs'> | undefined) => OutputsOf<S> {
  return (id, result) => {
    if (!result) throw new NodeFailure(`no outputs of ${id} (it has not run)`);
    for (const [field, type] of Object.entries(shape)) {
      const value = result.outputs[field];
      if (!hasShape(value, type)) {
        const got = value === undefined ? 'missing' : `${JSON.stringify(value)}`;
        throw new NodeFailure(`${id} has malformed outputs: '${field}' should be ${type === 'string[]' ? 'a list of strings' : `a ${type}`}, got ${got}`);
      }
    }
    return result.outputs as unknown as OutputsOf<S>;
  };
}
