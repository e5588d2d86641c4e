/**
 * Device allocation: the scheduler's resource tokens count how many of a thing are in use; for
 * tokens that stand for distinct devices of the host (GPUs), a node must also know *which* ones it
 * holds, and two nodes running at once must never hold the same one. `DeviceAllocator` keeps, per
 * such token, the ids of the host's devices (rules find them: rules/runtime/gpu.ts) and hands out
 * the lowest free ids when a node starts, taking them back when it ends. The ids a node held are
 * in its `node-start` event and its result (`devices`), never in its key (they differ run to run).
 */

import type { HostResource, Settings } from '../validate/declarations.js';

/**
 * The host devices this process hands out (`Settings.hostResources`): all of them when every node
 * runs on this machine (`executor: local`, the default, or `graph run-node` on a cluster node);
 * none when some kind runs on a cluster (its jobs' nodes have their own devices, found there).
 */
export function localHostResources(settings: Settings, runsHere = allLocal(settings)): Readonly<Record<string, HostResource>> | undefined {
  return runsHere ? settings.hostResources : undefined;
}

/** Every device id per token of `localHostResources`, for `DeviceAllocator`. */
export function hostDevices(settings: Settings, runsHere = allLocal(settings)): Record<string, readonly string[]> {
  return Object.fromEntries(Object.entries(localHostResources(settings, runsHere) ?? {}).map(([token, r]) => [token, r.ids]));
}

function allLocal(settings: Settings): boolean {
  return settings.executor.default === 'local' && Object.values(settings.executor.byKind).every((e) => e === 'local');
}

/** Device ids held by one node, by token, e.g. `{gpu: ['0', '1']}`. */
export type HeldDevices = Readonly<Record<string, readonly string[]>>;

/** Hands out distinct device ids per token. Not thread-safe; the scheduler's loop owns it. */
export class DeviceAllocator {
  readonly #free = new Map<string, string[]>();
  readonly #order = new Map<string, readonly string[]>();

  /** @param pools every device id per token, in the order they are preferred (lowest first). */
  constructor(pools: Readonly<Record<string, readonly string[]>> = {}) {
    for (const [token, ids] of Object.entries(pools)) {
      this.#order.set(token, [...ids]);
      this.#free.set(token, [...ids]);
    }
  }

  /** Whether `token` stands for devices (has a pool). */
  has(token: string): boolean {
    return this.#free.has(token);
  }

  /** Whether every device claim of `resources` (tokens without a pool are ignored) can be met now. */
  fits(resources: Readonly<Record<string, number>>): boolean {
    for (const [token, amount] of Object.entries(resources)) {
      const free = this.#free.get(token);
      if (free && free.length < amount) return false;
    }
    return true;
  }

  /**
   * Take the lowest free ids for every device claim of `resources`.
   * @returns the ids by token (only tokens with a pool), or undefined, taking nothing, when some
   *   claim cannot be met now.
   */
  take(resources: Readonly<Record<string, number>>): HeldDevices | undefined {
    if (!this.fits(resources)) return undefined;
    const held: Record<string, string[]> = {};
    for (const [token, amount] of Object.entries(resources)) {
      const free = this.#free.get(token);
      if (!free) continue;
      held[token] = free.splice(0, amount);
    }
    return held;
  }

  /**
   * Give back what `take` handed out; the ids are free again, in pool order.
   * @throws Error for an id that is not of the pool or is already free (a double release).
   */
  give(held: HeldDevices): void {
    for (const [token, ids] of Object.entries(held)) {
      const free = this.#free.get(token);
      const order = this.#order.get(token);
      if (!free || !order) throw new Error(`no device pool '${token}'`);
      for (const id of ids) {
        if (!order.includes(id)) throw new Error(`device ${token} '${id}' is not in the pool`);
        if (free.includes(id)) throw new Error(`device ${token} '${id}' given back twice`);
        free.push(id);
      }
      free.sort((a, b) => order.indexOf(a) - order.indexOf(b));
    }
  }

  /** The free ids of `token`, in pool order (for tests and reports). */
  free(token: string): readonly string[] {
    return [...(this.#free.get(token) ?? [])];
  }
}
