/**
 * Everything the executor reports, as typed events. The engine never prints: reporters
 * (engine/report/) turn these into a live terminal view, plain CI lines, JSON or JUnit.
 */
import type { Json, NodeId } from './rule.js';

export type NodeStatus = 'ran' | 'cached' | 'failed' | 'skipped';

/** The end state of one node in a run. */
export interface NodeResult {
  readonly id: NodeId;
  readonly kind: string;
  readonly status: NodeStatus;
  /** Wall time of this run of the node in milliseconds; for a cached node, 0. */
  readonly duration_ms: number;
  /** Why it ran (from the plan), why it failed, or why it was skipped. */
  readonly reasons: readonly string[];
  /** The node's outputs (ran or cached). */
  readonly outputs?: { readonly [k: string]: Json };
  /** Absolute path of its log file (ran or failed). */
  readonly log?: string;
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
  | { readonly type: 'node-start'; readonly id: NodeId; readonly kind: string; readonly log: string }
  | { readonly type: 'node-finish'; readonly result: NodeResult }
  | { readonly type: 'run-finish'; readonly summary: RunSummary };

export type EventSink = (event: EngineEvent) => void;
