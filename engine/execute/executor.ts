/**
 * The executor interface (ninja's `CommandRunner`): what the scheduler hands a node to. The
 * scheduler decides *when* a node runs (capacity, per-kind limits, resource tokens, order); an
 * executor decides *where* and *how*: `LocalExecutor` runs the rule in this process with child
 * processes on this machine; a cluster executor submits a job. Tests use a fake one.
 */
import type { PlannedNode } from '../plan.js';
import type { NodeId, NodeOutputs } from '../rule.js';
import type { HeldDevices } from './devices.js';
import type { Failure } from './failure.js';

/** One node to run, as the scheduler hands it over. */
export interface Job {
  readonly planned: PlannedNode;
  /** Outputs of the node's dependencies (every one succeeded and is recorded), by node id. */
  readonly deps: ReadonlyMap<NodeId, NodeOutputs>;
  /** Absolute path of the node's log file for this run. */
  readonly log: string;
  /** Aborted when the run is interrupted: the executor ends the node and reports `interrupted`. */
  readonly signal: AbortSignal;
  /** The devices the node holds while it runs (`ExecContext.devices`). */
  readonly devices?: HeldDevices;
}

/** The first lines of a node's log: the node, its key and why it runs. */
export function logHeader(p: PlannedNode): string {
  return `# ${p.node.id}\n# key ${p.key}\n# why: ${p.reasons.join('; ')}\n`;
}

/**
 * Where a node ran when not in this process: the executor (`slurm`), the cluster's job id and the
 * host that ran it (unknown while a job is pending).
 */
export interface Placement {
  readonly executor: string;
  readonly job?: string;
  readonly host?: string;
}

/** How a job ended. `duration_ms` is its wall time in milliseconds; `where` as `Placement`. */
export type Outcome =
  | {
      readonly ok: true;
      readonly result: NodeOutputs;
      readonly duration_ms: number;
      /** The log's whole text, when the executor has it in memory (the recorder then need not read `Job.log` back). */
      readonly log?: string;
      readonly where?: Placement;
    }
  | { readonly ok: false; readonly failure: Failure; readonly duration_ms: number; readonly where?: Placement };

export interface Executor {
  /**
   * Run one job to its end. Resolves with the outcome; never rejects (a failure of the node or of
   * the executor itself is an outcome with a `Failure`).
   */
  run(job: Job): Promise<Outcome>;
}
