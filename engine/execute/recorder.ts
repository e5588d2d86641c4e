/**
 * The recorder: makes a finished node's result durable before anything depends on it. A success
 * is recorded as its log (a blob in the content-addressed store, unless the log holds nothing but
 * the executor's header) and an action-cache entry under the node's key; only then does the
 * scheduler release the node's dependents. With a remote cache, the result is uploaded after it
 * is recorded locally, in the background (dependents need only the local record); the run waits
 * for the uploads at its end (`flush`).
 */
import { readFile } from 'node:fs/promises';
import type { ActionCache, CachedResult, RemoteCache } from '../cache/action-cache.js';
import type { ContentStore } from '../cache/store.js';
import { logHeader, type Job } from './executor.js';
import type { NodeOutputs } from '../rule.js';

export interface Recorder {
  /**
   * Record a success.
   * @param log the log's whole text when the executor handed it over (`Outcome.log`); else it is
   *   read from `job.log`.
   * @throws the cause (a full disk, an unwritable cache) when the result is not recorded; the
   *   scheduler then fails the node with a `record` failure.
   */
  record(job: Job, result: NodeOutputs, duration_ms: number, log?: string): Promise<void>;
  /** Wait for work the recorder does after `record` resolved (uploads). Never rejects. */
  flush?(): Promise<void>;
}

/** Records into the local action cache and content-addressed store, then uploads to `remote`. */
export class CacheRecorder implements Recorder {
  private readonly uploads: Array<Promise<void>> = [];

  constructor(
    private readonly cache: ActionCache,
    private readonly store: ContentStore,
    private readonly remote?: RemoteCache,
  ) {}

  async record(job: Job, result: NodeOutputs, duration_ms: number, logText?: string): Promise<void> {
    const p = job.planned;
    const text = logText ?? (await readFile(job.log, 'utf8'));
    // A log that is only the header says nothing the record does not: no blob for it.
    const log = text === logHeader(p) ? undefined : this.store.putBytes(text).digest;
    const cached: CachedResult = { outputs: result.outputs, artifacts: result.artifacts, ...(result.files ? { files: result.files } : {}), ...(log ? { log } : {}), duration_ms };
    await this.cache.put(p.node.id, p.key, p.recordText, cached);
    if (this.remote) this.uploads.push(this.remote.upload(p.node.id, p.key, p.recordText, cached, this.store).catch(() => {}));
  }

  async flush(): Promise<void> {
    await Promise.all(this.uploads);
  }
}
