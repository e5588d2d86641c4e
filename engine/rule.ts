/**
 * The rule interface: how a node kind plugs into the engine. A rule says which nodes it expands
 * the declarations into (with their dependencies, key inputs and limits) and how one of its nodes
 * executes. The engine never switches on a rule's kind.
 */
import type { Declarations } from './declarations.js';
import type { Span } from './diagnostics.js';
import type { InputSpec } from './files.js';
import type { ProcessRunner } from './process.js';
import type { ContentStore } from './store.js';
import type { ToolProbe } from './tools.js';

/** A node id such as `build:base`, `test:CpGenie/A549_ENCSR000DDI@oci`. */
export type NodeId = string & { readonly __brand: 'NodeId' };

/** JSON-compatible data, the only kind that goes into an action key. */
export type Json = null | boolean | number | string | readonly Json[] | { readonly [k: string]: Json };

/** One node of the build graph, as a rule expands it. Immutable once the graph is sealed. */
export interface NodeDef {
  readonly id: NodeId;
  /** The kind of the rule that made it: `build`, `convert`, `test`, `publish`. */
  readonly kind: string;
  /**
   * Nodes that must succeed first; `at` finds the declaration that creates the edge. Spans are
   * looked up lazily (only a diagnostic needs one, and finding one may mean parsing the YAML).
   */
  readonly deps: ReadonlyArray<{ readonly id: NodeId; readonly at?: () => Span }>;
  /** The normalized declaration this node depends on; goes into the key verbatim. */
  readonly decl: Json;
  /** Workspace files whose contents go into the key. */
  readonly inputs: readonly InputSpec[];
  /** Environment variables whose values go into the key (an allow-list; others never do). */
  readonly env: readonly string[];
  /** Identity and version of graph's own code that produces the output, e.g. `graph-layers/1`. */
  readonly tool: string;
  /**
   * External tools that make the output (a Dockerfile builder, tar2sqfs, the test sandbox): each
   * is probed before planning and its identity (`buildah version 1.28.2 …`) joins `tool` in the
   * key (engine/tools.ts).
   */
  readonly tools?: readonly ToolProbe[];
  /** Wall-clock limit in milliseconds; undefined for none. */
  readonly timeoutMs?: number;
  /** Named resource tokens held while running, e.g. `{gpu: 1}`. */
  readonly resources: Readonly<Record<string, number>>;
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

/** Everything a rule's `execute` may use; rules touch nothing else. */
export interface ExecContext {
  readonly decls: Declarations;
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
  /** Absolute directory where rules keep user-visible outputs (`.graph/out`): image layouts, SIFs. */
  readonly outDir: string;
  /** Absolute directory for rules' download caches (`.graph/cache`), shared across nodes and runs. */
  readonly cacheDir: string;
  /** Absolute path of a scratch directory private to this run of this node: created on the first
   * call, removed when the node ends. */
  scratchDir(): string;
}

/** A node kind. */
export interface Rule {
  readonly kind: string;
  /** Bump when the rule's output for the same inputs changes: every key of this kind changes. */
  readonly version: number;
  /** Nodes for the validated declarations; edges may point at other rules' nodes. */
  expand(decls: Declarations): NodeDef[];
  /**
   * Produce the node's outputs.
   * @throws NodeFailure (or any Error) when the node fails; the message is shown as its reason.
   */
  execute(node: NodeDef, ctx: ExecContext): Promise<NodeOutputs>;
  /**
   * Optional, for nodes whose effect lives outside the workspace (a push): is it already done?
   * Asked by the planner for nodes that would run, unless `--offline`.
   * @returns the outputs and a reason (e.g. "already in registry") when it is; undefined when it
   *   is not or cannot be told. Never throws for an unreachable service: that is "cannot tell".
   */
  upToDate?(node: NodeDef, ctx: UpToDateContext): Promise<{ outputs: NodeOutputs['outputs']; reason: string } | undefined>;
  /**
   * Optional: write a cached result's visible files (`NodeOutputs.files`) again from the store,
   * without running the node (an image layout, a SIF's name under .graph/out). The planner uses it
   * when those files are gone from the workspace but every artifact is intact in the store (a new
   * checkout sharing a cache, a deleted .graph/out); without it, such a node runs again.
   * @throws Error when it cannot; the node then fails with that reason.
   */
  restore?(node: NodeDef, result: NodeOutputs, ctx: RestoreContext): Promise<void>;
}

/** What `Rule.restore` may use. */
export interface RestoreContext {
  readonly decls: Declarations;
  readonly store: ContentStore;
  /** As `ExecContext.outDir`. */
  readonly outDir: string;
}

/** What `Rule.upToDate` may use. */
export interface UpToDateContext {
  readonly decls: Declarations;
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
