/**
 * `graph build --profile FILE.json`: the run as a Chrome Trace Event Format file (the JSON Object
 * Format of "Trace Event Format", Google, docs.google.com/document/d/1CvAClvFfyA5R-PhYUmn5OOQtYMH4h6I0nSsKchNAySU;
 * what Bazel's `--profile` writes; opens in ui.perfetto.dev and chrome://tracing).
 *
 * Built by a reporter from the events the scheduler already emits (engine/events.ts); the
 * scheduler is not changed. Shape:
 *
 *     {"traceEvents": [...], "displayTimeUnit": "ms", "otherData": {"graph_version": 1, "critical_path": [ids]}}
 *
 * - pid 1 is the build. Metadata events (`ph: "M"`) name the process and each lane.
 * - One lane (`tid`) per slot: a node that starts takes the lowest free lane, so at most `--jobs`
 *   lanes are used and slices in one lane never overlap (lane 1 is slot 1…).
 * - One complete event (`ph: "X"`, `ts` and `dur` in microseconds since the run started) per node
 *   that started: `name` its id, `cat` its kind, `args` {kind, status, key, reasons, critical}.
 *   A node's slot is held from `node-start` to `node-finish` (recording included, as the scheduler
 *   holds its `--jobs` slot).
 * - Lane 0 ("critical path") repeats the slices of the critical path: the chain of dependencies
 *   that ended last, each link the dependency that finished last (what made the build as long as
 *   it was). Those slices also carry `args.critical: true` and a `cname` colour.
 * - A counter (`ph: "C"`, name `running`) after every start and finish: nodes running at once.
 * - Cached nodes have no slice (they take no time); they are counted in `otherData`.
 *
 * Phases inside a node (pull, unpack, squash…) are not recorded: the rules do not report them yet.
 */
import type { EngineEvent, EventSink, NodeStatus } from '../events.js';
import type { NodeId } from '../rule.js';

/** One trace event (the Trace Event Format's fields that graph writes). */
export interface TraceEvent {
  readonly name: string;
  readonly ph: 'X' | 'C' | 'M';
  /** Microseconds since the run started. */
  readonly ts: number;
  /** Microseconds (complete events only). */
  readonly dur?: number;
  readonly pid: number;
  readonly tid: number;
  readonly cat?: string;
  readonly cname?: string;
  readonly args?: Record<string, unknown>;
}

export interface TraceFile {
  readonly traceEvents: TraceEvent[];
  readonly displayTimeUnit: 'ms';
  readonly otherData: { readonly graph_version: 1; readonly critical_path: string[]; readonly cached: number; readonly duration_ms: number };
}

export interface ProfileOptions {
  /** Milliseconds clock (engine/execute/clock.ts `Clock.now`; a fake one in tests). */
  readonly now: () => number;
  /** The dependencies of a node (the plan's graph): for the critical path. */
  readonly deps: (id: NodeId) => readonly NodeId[];
  /** The action key of a node, if known (the plan's). */
  readonly key?: (id: NodeId) => string | undefined;
}

/** The nodes a run started: lane, start and end in ms since the run started, kind and status. */
export interface ProfiledNode {
  readonly id: NodeId;
  readonly kind: string;
  readonly lane: number;
  readonly start: number;
  end: number;
  status?: NodeStatus;
  reasons: readonly string[];
}

const PID = 1;
const CRITICAL_LANE = 0;

/**
 * A reporter that records the run, and `trace()` to turn it into a trace file once it finished
 * (or at any time: nodes still running end at the current time).
 */
export function profileReporter(options: ProfileOptions): { emit: EventSink; trace(): TraceFile; nodes(): ProfiledNode[] } {
  let t0: number | undefined;
  const since = () => options.now() - (t0 ??= options.now());
  const lanes: boolean[] = [];
  const nodes = new Map<NodeId, ProfiledNode>();
  const counters: TraceEvent[] = [];
  let running = 0;
  let cached = 0;
  let duration = 0;
  const count = (at: number) => counters.push({ name: 'running', ph: 'C', ts: us(at), pid: PID, tid: 1, args: { nodes: running } });

  const emit: EventSink = (e: EngineEvent) => {
    switch (e.type) {
      case 'run-start':
        t0 = options.now();
        count(0);
        break;
      case 'node-start': {
        const at = since();
        let lane = lanes.findIndex((busy) => !busy);
        if (lane < 0) lane = lanes.length;
        lanes[lane] = true;
        nodes.set(e.id, { id: e.id, kind: e.kind, lane: lane + 1, start: at, end: at, reasons: [] });
        running++;
        count(at);
        break;
      }
      case 'node-finish': {
        const n = nodes.get(e.result.id);
        if (e.result.status === 'cached') cached++;
        if (!n) break; // cached or skipped: never started
        n.end = since();
        n.status = e.result.status;
        n.reasons = e.result.reasons;
        lanes[n.lane - 1] = false;
        running--;
        count(n.end);
        break;
      }
      case 'run-finish':
        duration = e.summary.duration_ms;
        break;
    }
  };

  const trace = (): TraceFile => {
    const now = t0 === undefined ? 0 : since();
    const list = [...nodes.values()].map((n) => (n.status ? n : { ...n, end: now }));
    const critical = criticalPath(list, options.deps);
    const onPath = new Set(critical);
    const events: TraceEvent[] = [
      { name: 'process_name', ph: 'M', ts: 0, pid: PID, tid: 0, args: { name: 'graph build' } },
      { name: 'thread_name', ph: 'M', ts: 0, pid: PID, tid: CRITICAL_LANE, args: { name: 'critical path' } },
    ];
    const laneCount = Math.max(0, ...list.map((n) => n.lane));
    for (let l = 1; l <= laneCount; l++) events.push({ name: 'thread_name', ph: 'M', ts: 0, pid: PID, tid: l, args: { name: `slot ${l}` } });
    const slice = (n: ProfiledNode, tid: number): TraceEvent => ({
      name: n.id,
      cat: n.kind,
      ph: 'X',
      ts: us(n.start),
      dur: us(n.end - n.start),
      pid: PID,
      tid,
      ...(onPath.has(n.id) ? { cname: 'terrible' } : n.status === 'failed' ? { cname: 'bad' } : {}),
      args: { kind: n.kind, status: n.status ?? 'running', key: options.key?.(n.id) ?? null, reasons: n.reasons, critical: onPath.has(n.id) },
    });
    for (const n of list) events.push(slice(n, n.lane));
    for (const id of critical) events.push(slice(list.find((n) => n.id === id) as ProfiledNode, CRITICAL_LANE));
    events.push(...counters);
    return { traceEvents: events, displayTimeUnit: 'ms', otherData: { graph_version: 1, critical_path: critical, cached, duration_ms: duration } };
  };
  return { emit, trace, nodes: () => [...nodes.values()] };
}

/** Milliseconds to whole microseconds. */
function us(ms: number): number {
  return Math.round(ms * 1000);
}

/**
 * The critical path of a run, first node first: from the node that ended last, back through the
 * dependency (among those that ran in this run) that ended last, until a node with none.
 */
export function criticalPath(nodes: readonly { readonly id: NodeId; readonly end: number }[], deps: (id: NodeId) => readonly NodeId[]): NodeId[] {
  const byId = new Map(nodes.map((n) => [n.id, n]));
  let last = nodes.reduce<(typeof nodes)[number] | undefined>((a, n) => (!a || n.end > a.end ? n : a), undefined);
  const path: NodeId[] = [];
  while (last) {
    path.push(last.id);
    let next: (typeof nodes)[number] | undefined;
    for (const d of deps(last.id)) {
      const dn = byId.get(d);
      if (dn && (!next || dn.end > next.end)) next = dn;
    }
    last = next;
  }
  return path.reverse();
}
