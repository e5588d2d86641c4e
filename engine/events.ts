/**
 * Everything the executor reports, as typed events. The engine never prints: reporters
 * (engine/report/) turn these into a live terminal view, plain CI lines, JSON or JUnit.
 */
import type { Placement } from './execute/executor.js';
import type { HeldDevices } from './execute/devices.js';
import type { Failure } from './execute/failure.js';
import type { Json, NodeId } from './rule.js';

/**
 * How a node ended: `ran` (and its result is recorded), `cached`, `failed` (its own failure),
 * `interrupted` (ended by SIGINT/SIGTERM while it ran), `skipped` (never started: a dependency
 * failed, the run stopped first, or this host lacks what it claims, e.g. "no GPU on this host").
 */
export type NodeStatus = 'ran' | 'cached' | 'failed' | 'interrupted' | 'skipped';

/** The end state of one node in a run. */
export interface NodeResult {
  readonly id: NodeId;
  readonly kind: string;
  readonly status: NodeStatus;
  /** Wall time of this run of the node in milliseconds; for a cached node, 0. */
  readonly duration_ms: number;
  /** Why it ran (from the plan), why it failed, or why it was skipped, as text. */
  readonly reasons: readonly string[];
  /** For failed, interrupted and skipped nodes: why, as data (reporters switch on its `type`). */
  readonly failure?: Failure;
  /** The node's outputs (ran or cached). */
  readonly outputs?: { readonly [k: string]: Json };
  /** Absolute path of its log file (ran or failed). */
  readonly log?: string;
  /** Where it ran, when not in this process (a Slurm job and its host). */
  readonly where?: Placement;
  /** The devices it held while it ran, by resource token (`{gpu: ['1']}`; engine/execute/devices.ts). */
  readonly devices?: HeldDevices;
}

export interface RunSummary {
  readonly results: readonly NodeResult[];
  readonly counts: Readonly<Record<NodeStatus, number>>;
  /** Wall time of the whole execution in milliseconds. */
  readonly duration_ms: number;
  readonly interrupted: boolean;
}

export type EngineEvent =
  | { readonly type: 'run-start'; readonly total: number; readonly toRun: number; readonly cached: number; readonly jobs: number }
  | { readonly type: 'node-start'; readonly id: NodeId; readonly kind: string; readonly log: string; readonly devices?: HeldDevices }
  /** Another graph process (`pid` on `host`) is running the same action: this node waits for it. */
  | { readonly type: 'node-waiting'; readonly id: NodeId; readonly pid: number; readonly host: string }
  /** The node succeeded; its result is being recorded (its dependents wait for that). */
  | { readonly type: 'node-executed'; readonly id: NodeId; readonly duration_ms: number }
  | { readonly type: 'node-finish'; readonly result: NodeResult }
  | { readonly type: 'run-finish'; readonly summary: RunSummary };

export type EventSink = (event: EngineEvent) => void;
