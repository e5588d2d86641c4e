/**
 * The recorder: makes a finished node's result durable before anything depends on it. A success
 * is recorded as its log (a blob in the content-addressed store) and an action-cache entry under
 * the node's key; only then does the scheduler release the node's dependents.
 */
import { readFile } from 'node:fs/promises';
import type { ActionCache } from '../cache.js';
import type { ContentStore } from '../store.js';
import type { Job } from './executor.js';
import type { NodeOutputs } from '../rule.js';

export interface Recorder {
  /**
   * Record a success.
   * @throws the cause (a full disk, an unwritable cache) when the result is not recorded; the
   *   scheduler then fails the node with a `record` failure.
   */
  record(job: Job, result: NodeOutputs, duration_ms: number): Promise<void>;
}

/** Records into the local action cache and content-addressed store. */
export class CacheRecorder implements Recorder {
  constructor(
    private readonly cache: ActionCache,
    private readonly store: ContentStore,
  ) {}

  async record(job: Job, result: NodeOutputs, duration_ms: number): Promise<void> {
    const p = job.planned;
    const log = (await this.store.putBytesAsync(await readFile(job.log))).digest;
    await this.cache.put(p.node.id, p.key, p.recordText, { outputs: result.outputs, artifacts: result.artifacts, log, duration_ms });
  }
}
