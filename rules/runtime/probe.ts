/**
 * What a plan needs of the test runtimes, without loading them: the probe of a sandbox backend for
 * action keys (engine/key/tools.ts), and where system binaries live.
 */
import { findExecutable, type ToolProbe } from '../../engine/key/tools.js';

/** Directories of system binaries (runc) that a user's PATH may lack. */
export const SBIN_DIRS = ['/usr/sbin', '/sbin', '/usr/local/sbin'];

/**
 * The probe of test runtime backend `name`: the executables it would run, and its `version()`
 * (runtime.ts, loaded when the probe runs).
 */
export function sandboxProbe(name: string): ToolProbe {
  const executables: Record<string, Array<[string, readonly string[]]>> = {
    bubblewrap: [['bwrap', []]],
    podman: [['podman', []], ['runc', SBIN_DIRS]],
    apptainer: [['apptainer', []], ['singularity', []]],
  };
  return {
    name: `sandbox:${name}`,
    executables: () => (executables[name] ?? []).map(([exe, extra]) => findExecutable(exe, process.env.PATH, extra) ?? `${exe} (not on PATH)`),
    identify: async () => (await (await import('./runtime.js')).detectBackend(name)).version(),
  };
}
