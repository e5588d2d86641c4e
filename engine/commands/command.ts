/**
 * What the engine's commands (engine/commands/*) take from the command line and give back to it.
 * cli.ts parses the arguments into these and turns the outcome into an exit status; the commands
 * do the work, and write only through `CommandOutput` (stdout, stderr).
 */
import type { CommandOutput, Rule } from '../rule.js';
import type { Workspace } from '../workspace.js';

/** How a command ended: `failed` is a node that failed, a merge with conflicts (exit 1); `interrupted` exit 130. */
export type CommandOutcome = 'ok' | 'failed' | 'interrupted';

/** What every engine command gets. */
export interface CommandContext {
  /** Loads, validates and compiles the workspace. @throws DiagnosticError. */
  readonly open: () => Workspace;
  /** The rules (`defaultRules`). */
  readonly rules: readonly Rule[];
  /** Where the command writes: `out` its result, `err` progress and warnings. */
  readonly io: CommandOutput;
}
