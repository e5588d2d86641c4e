/** `graph clean`: deletes a workspace's `.graph/` state. */
import { renameSync, rmSync } from 'node:fs';
import path from 'node:path';
import { STATE_DIR } from '../key/files.js';
import type { CommandOutput } from '../rule.js';
import type { CommandOutcome } from './command.js';

/**
 * Delete `root/.graph` (the action cache, the store, logs, memos); says what it removed, or
 * `nothing to clean`, on `io.out`. A cache in GRAPH_CACHE_DIR is not touched.
 * @throws the file system's error when .graph cannot be renamed or removed.
 */
export function cleanCommand(root: string, io: CommandOutput): CommandOutcome {
  const state = path.join(root, STATE_DIR);
  // Rename first, so a concurrent reader sees the whole state or none of it.
  const trash = `${state}.trash-${process.pid}`;
  try {
    renameSync(state, trash);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
      io.out('nothing to clean\n');
      return 'ok';
    }
    throw e;
  }
  rmSync(trash, { recursive: true, force: true });
  io.out(`removed ${path.relative(process.cwd(), state) || state}\n`);
  return 'ok';
}
