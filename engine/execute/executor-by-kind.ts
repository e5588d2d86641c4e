/**
 * An executor that hands each node to the executor of its kind (`settings.executor: {test:
 * slurm}`: tests as Slurm jobs, the rest on this machine).
 */
import type { Executor, Job, Outcome } from './executor.js';

export class ExecutorByKind implements Executor {
  /**
   * @param byKind the executor of each kind that has its own.
   * @param fallback the executor of every other kind.
   */
  constructor(
    private readonly byKind: ReadonlyMap<string, Executor>,
    private readonly fallback: Executor,
  ) {}

  run(job: Job): Promise<Outcome> {
    return (this.byKind.get(job.planned.node.kind) ?? this.fallback).run(job);
  }
}
