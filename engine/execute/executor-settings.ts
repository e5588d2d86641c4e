/**
 * Where nodes run, as images.yaml's `settings.executor` and `settings.slurm` declare it:
 *
 *     settings:
 *       executor: slurm                 # every kind; or per kind: {test: slurm} (others local)
 *       slurm: {partition: gpu, account: lab, qos: normal, args: [--constraint=a100]}
 *
 * `graph build --executor NAME` overrides the setting for every kind. The executor is not part of
 * any action key: a node's output does not depend on where it ran.
 */
import type { Json } from '../rule.js';
import type { SlurmSettings } from './slurm.js';

/** The executors `settings.executor` and `--executor` name. */
export const EXECUTORS = ['local', 'slurm'] as const;
export type ExecutorName = (typeof EXECUTORS)[number];

/** `settings.executor` and `settings.slurm`, normalized. */
export interface ExecutorSettings {
  /** The executor of kinds `byKind` does not name. */
  readonly default: ExecutorName;
  readonly byKind: Readonly<Record<string, ExecutorName>>;
  readonly slurm: SlurmSettings;
}

/** The schemas of `settings.executor` and `settings.slurm` (JSON Schema draft-07). */
export function executorSettingsSchema(kinds: readonly string[]): Record<string, Json> {
  return {
    executor: {
      description: 'Where nodes run: local (this machine, the default) or slurm (one batch job per node); or per node kind, e.g. {test: slurm}.',
      oneOf: [
        { enum: [...EXECUTORS] },
        { type: 'object', propertyNames: { enum: [...kinds] }, additionalProperties: { enum: [...EXECUTORS] } },
      ],
    },
    slurm: {
      description: 'What every Slurm job graph submits asks for: partition, account, qos, and further sbatch arguments.',
      type: 'object',
      additionalProperties: false,
      properties: {
        partition: { type: 'string', minLength: 1 },
        account: { type: 'string', minLength: 1 },
        qos: { type: 'string', minLength: 1 },
        args: { type: 'array', items: { type: 'string' }, description: 'Further sbatch arguments, e.g. [--constraint=a100].' },
      },
    },
  };
}

/**
 * Normalize `settings` (as the schema accepted it).
 * @param override `--executor`, which wins for every kind.
 */
export function readExecutorSettings(raw: Readonly<Record<string, unknown>> | undefined, override?: string): ExecutorSettings {
  const executor = raw?.executor as ExecutorName | Record<string, ExecutorName> | undefined;
  const slurm = (raw?.slurm ?? {}) as { partition?: string; account?: string; qos?: string; args?: string[] };
  const slurmSettings: SlurmSettings = {
    ...(slurm.partition ? { partition: slurm.partition } : {}),
    ...(slurm.account ? { account: slurm.account } : {}),
    ...(slurm.qos ? { qos: slurm.qos } : {}),
    args: slurm.args ?? [],
  };
  if (override !== undefined) return { default: override as ExecutorName, byKind: {}, slurm: slurmSettings };
  if (typeof executor === 'string') return { default: executor, byKind: {}, slurm: slurmSettings };
  return { default: 'local', byKind: { ...executor }, slurm: slurmSettings };
}

/** The executor of node kind `kind`. */
export function executorOf(settings: ExecutorSettings, kind: string): ExecutorName {
  return settings.byKind[kind] ?? settings.default;
}
