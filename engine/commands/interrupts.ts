/**
 * SIGINT and SIGTERM for a build, from its start to its exit. The first aborts the returned signal
 * (the scheduler stops the running nodes, their process groups get SIGTERM, and the interrupted
 * summary follows); the second SIGKILLs those process groups at once (the summary still follows);
 * the third quits without a summary, after killing them and removing this process's temp files.
 * A repeat within REPEAT_SIGNAL_MS is the same interrupt delivered twice; a signal after the run
 * has finished exits at once. A safety net: a stream or promise that fails unexpectedly while
 * the nodes stop must not end graph without its summary; outside an interrupt it is graph's bug,
 * reported as one.
 */
import { killAllProcesses } from '../process.js';
import type { CommandOutput, Rule } from '../rule.js';
import { removeOwnTemps } from '../tmp.js';
import type { Workspace } from '../workspace.js';

/** A second SIGINT/SIGTERM sooner than this after the first is the same interrupt (ms). */
const REPEAT_SIGNAL_MS = 1000;

/** The exit statuses the command line uses when it quits at once. */
export interface QuitCodes {
  /** After a third signal, or a signal once the run has finished (130). */
  readonly interrupted: number;
  /** An unexpected error outside an interrupt (70). */
  readonly internal: number;
}

/** The interrupt of one build: `signal` aborts on the first SIGINT/SIGTERM. */
export interface Interrupts {
  readonly signal: AbortSignal;
  /** The workspace whose temp files a third signal removes, and the rules (which say where not to look). */
  workspace(ws: Workspace, rules: readonly Rule[]): void;
  /** The run is over: a signal now quits at once. */
  finished(): void;
}

/** Install the handlers (for the rest of the process's life). */
export function handleInterrupts(err: CommandOutput['err'], codes: QuitCodes): Interrupts {
  const interrupt = new AbortController();
  let workspace: Workspace | undefined;
  let rules: readonly Rule[] = [];
  let count = 0;
  let lastAt = 0;
  let done = false;
  const onSignal = () => {
    if (done) process.exit(codes.interrupted);
    // One Ctrl-C can arrive twice: from the terminal, and forwarded by a wrapper (npx, npm run).
    if (count > 0 && Date.now() - lastAt < REPEAT_SIGNAL_MS) return;
    lastAt = Date.now();
    count++;
    if (count === 1) {
      err('\ninterrupt: stopping running nodes (again to kill them at once)\n');
      interrupt.abort(new Error('interrupted'));
    } else if (count === 2) {
      err('\ninterrupt: killing running nodes (again to quit at once)\n');
      killAllProcesses();
    } else {
      killAllProcesses();
      if (workspace) removeOwnTemps(workspace.root, workspace.stateDir, rules);
      err('\ninterrupted: quit at once\n');
      process.exit(codes.interrupted);
    }
  };
  const onUnexpected = (e: unknown) => {
    if (interrupt.signal.aborted) {
      err(`graph: while stopping: ${(e as Error)?.message ?? e}\n`);
      return;
    }
    err(`graph: internal error: ${(e as Error)?.stack ?? e}\n`);
    process.exit(codes.internal);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('uncaughtException', onUnexpected);
  process.on('unhandledRejection', onUnexpected);
  return {
    signal: interrupt.signal,
    workspace: (ws, wsRules) => {
      workspace = ws;
      rules = wsRules;
    },
    finished: () => {
      done = true;
    },
  };
}
