/**
 * Why a node did not succeed, as data. Every node that neither ran nor was cached ends with
 * exactly one `Failure`; reporters switch on `type` (never on wording), and `describeFailure`
 * gives the one line shown to people.
 */
import { formatMs } from '../duration.js';
import type { NodeId } from '../rule.js';

export type Failure =
  /** A command the rule ran exited non-zero (`code`) or was killed by a signal (`signal`). */
  | { readonly type: 'exit'; readonly message: string; readonly code?: number; readonly signal?: string }
  /** The node ran past its `timeout` (`limit_ms`, milliseconds). */
  | { readonly type: 'timeout'; readonly limit_ms: number }
  /** The run was interrupted (SIGINT/SIGTERM) while the node ran. */
  | { readonly type: 'interrupted' }
  /** The sandbox a test runs in could not be started (missing tool, unusable backend). */
  | { readonly type: 'sandbox'; readonly message: string }
  /** The rule failed for another reason it expected (`NodeFailure`) or did not (`Error`). */
  | { readonly type: 'error'; readonly message: string }
  /**
   * The node ended well, but its rule's outputs reader (`Rule.outputs`) rejected what it produced
   * (a missing or mistyped field): nothing is recorded, and nothing downstream reads it.
   */
  | { readonly type: 'outputs'; readonly message: string }
  /** The node succeeded, but its result could not be written to the action cache. */
  | { readonly type: 'record'; readonly message: string }
  /** A dependency (`dependency`, the node that failed first on the path) did not succeed. */
  | { readonly type: 'dependency'; readonly dependency: NodeId; readonly cause: Failure }
  /**
   * A cluster job of the node ended in a failed `state` (Slurm's: FAILED, TIMEOUT, OUT_OF_MEMORY,
   * NODE_FAIL, CANCELLED, PREEMPTED, …): `job` its id, `host` where it ran, `code` the batch
   * script's exit code, `cause` the node's own failure when the job recorded one.
   */
  | { readonly type: 'cluster'; readonly state: string; readonly job: string; readonly host?: string; readonly code?: number; readonly message: string; readonly cause?: Failure }
  /**
   * Never started: this host cannot run the node (`message`: "no GPU on this host", or its rule's
   * `NodeDef.skip`, e.g. no QEMU user emulation for a foreign platform). The node is `skipped`,
   * or `failed` when the user `required` it to run (`--require-gpu`).
   */
  | { readonly type: 'unavailable'; readonly message: string; readonly required: boolean }
  /** Never started: the run stopped first (`--fail-fast` after `after` failed, or an interrupt). */
  | { readonly type: 'not-started'; readonly why: 'fail-fast' | 'interrupted'; readonly after?: NodeId };

/** The failure as one line of text, e.g. `timed out after 10m`. */
export function describeFailure(f: Failure): string {
  switch (f.type) {
    case 'unavailable':
      return f.message;
    case 'exit':
    case 'cluster':
    case 'sandbox':
    case 'error':
      return f.message;
    case 'timeout':
      return `timed out after ${formatMs(f.limit_ms)}`;
    case 'interrupted':
      return 'interrupted';
    case 'outputs':
      return `ran, but its outputs are malformed: ${f.message}`;
    case 'record':
      return `ran, but its result could not be recorded in the action cache: ${f.message}`;
    case 'dependency':
      if (f.cause.type === 'interrupted') return 'interrupted';
      if (f.cause.type === 'unavailable') return `dependency ${f.dependency} cannot run on this host: ${f.cause.message}`;
      return f.cause.type === 'record'
        ? `dependency ${f.dependency} failed (could not record its result: ${f.cause.message})`
        : `dependency ${f.dependency} failed`;
    case 'not-started':
      return f.why === 'fail-fast' ? `not started: --fail-fast after ${f.after} failed` : 'interrupted';
  }
}
