#!/usr/bin/env node
/**
 * The `graph` command line: parses arguments, runs the engine's stages, sets the exit code.
 * Exit codes: 0 success; 1 a node failed; 2 bad usage or bad declarations; 130 interrupted.
 */
import { availableParallelism } from 'node:os';
import { readFileSync, renameSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ActionCache } from './engine/cache/action-cache.js';
import { affectedSince, ChangedSinceError } from './engine/compile/changed.js';
import { DiagnosticError, formatDiagnostic } from './engine/diagnostics.js';
import { systemClock } from './engine/execute/clock.js';
import { EXECUTORS } from './engine/execute/executor-settings.js';
import { placementOf, runNodeCommand, setUpExecutor } from './engine/execute/executor-setup.js';
import { KeyLeases } from './engine/execute/lease.js';
import { runNode } from './engine/execute/run-node.js';
import { SlurmConfigError } from './engine/execute/slurm.js';
import { executePlan } from './engine/execute/scheduler.js';
import { hostDevices, localHostResources } from './engine/execute/devices.js';
import { FileDigester } from './engine/key/files.js';
import { checkRemote, checkUpToDate, planBuild, planSummary, type Plan } from './engine/plan.js';
import type { RemoteCache } from './engine/cache/action-cache.js';
import { CacheRecorder } from './engine/execute/recorder.js';
import { openRemoteCache, RemoteCacheConfigError } from './engine/cache/remote/config.js';
import { materializeNeeded } from './engine/cache/remote/materialize.js';
import { SourceTier, tieredRemote } from './engine/cache/registry-source.js';
import { ExecaRunner, killAllProcesses } from './engine/process.js';
import { reportJson, reportJunit, reportPathProblem, writeReport } from './engine/report/build-report.js';
import { junitFromReport, mergedJson, mergeMessage, mergeReports, readReport } from './engine/report/merge.js';
import { PLAN_FORMATS, renderPlan, renderShardMatrix, shardLine, type PlanFormat } from './engine/report/plan.js';
import { progressReporter } from './engine/report/progress.js';
import { explainNode, explainText } from './engine/report/explain.js';
import { addTimeline, dagSvg, pageFromPlan, pageFromReport, readJsonFile, renderHtml, type ReportInput } from './engine/report/html.js';
import { profileReporter, type TraceFile } from './engine/report/profile.js';
import { appendStepSummary, buildMarkdown, planMarkdown } from './engine/report/step-summary.js';
import { UsageError, type NodeId, type RuleCommand } from './engine/rule.js';
import { parseShard, selectShard, shardCountFor, type ShardSpec, type ShardSummary } from './engine/compile/shard.js';
import { ContentStore } from './engine/cache/store.js';
import { matchTargets, TargetError } from './engine/compile/targets.js';
import { recordProcess, removeOwnTemps, sweepTemps } from './engine/tmp.js';
import { resolveTools } from './engine/key/tools.js';
import { openWorkspace, type Workspace } from './engine/workspace.js';
import { defaultRules } from './rules/index.js';

const EXIT_OK = 0;
const EXIT_FAILED = 1;
const EXIT_USAGE = 2;
const EXIT_INTERRUPTED = 130;
const EXIT_INTERNAL = 70;
/** A second SIGINT/SIGTERM sooner than this after the first is the same interrupt (ms). */
const REPEAT_SIGNAL_MS = 1000;

const common = {
  directory: { type: 'string', short: 'C' },
  help: { type: 'boolean', short: 'h' },
} as const;
/** The settings the rules let the command line override (`--builder`, `--sandbox`). */
const settingOptions = defaultRules.flatMap((r) => (r.declares ?? []).flatMap((part) => (part.entry === 'settings' ? (part.options ?? []) : [])));
const selection = {
  'changed-since': { type: 'string' },
  only: { type: 'string' },
  ...Object.fromEntries(settingOptions.map((o) => [o.name, { type: o.flag ? 'boolean' : 'string' }] as const)),
  offline: { type: 'boolean' },
  'remote-cache': { type: 'string' },
  'remote-cache-mode': { type: 'string' },
} as const;

interface Command {
  readonly summary: string;
  readonly usage: string;
  readonly options: NonNullable<ParseArgsConfig['options']>;
  run(ws: () => Workspace, values: Record<string, unknown>, positionals: string[]): Promise<number>;
}

const targetHelp = `Targets: node ids (build:base, test:Basset/Basset@oci), image:NAME, group:NAME, or globs
(test:CpGenie/*). A target pulls in its dependencies. No target means every node.
  --changed-since REF  only nodes whose inputs changed since git revision REF, and what is downstream
  --only KIND,...      keep only nodes of these kinds (${defaultRules.map((r) => r.kind).join(', ')})
${settingOptions.map((o) => `  ${`--${o.name}${o.flag ? '' : ` ${o.metavar ?? 'NAME'}`}`.padEnd(19)}  ${o.help}\n`).join('')}  --offline            do not ask registries whether a publish is already done, nor for published builds
  --remote-cache URL   a shared cache over the Bazel HTTP cache protocol (also GRAPH_REMOTE_CACHE,
                       settings.remote_cache); credentials in the URL, GRAPH_REMOTE_CACHE_HEADER or netrc
  --remote-cache-mode M  readwrite (default) or read: look up and download only, never upload
  -C DIR               work on DIR/images.yaml and DIR/models.yaml`;

/** A rule's command (`graph lock`) as the CLI runs it. */
function ruleCommand(c: RuleCommand): Command {
  return {
    summary: c.summary,
    usage: c.usage,
    options: { ...common, ...c.options },
    run: (open, values, positionals) => c.run(open, { values, positionals }, { out: (t) => process.stdout.write(t), err: (t) => process.stderr.write(t) }),
  };
}

const commands: Record<string, Command> = {
  plan: {
    summary: 'show what a build would run and why (a dry run)',
    usage: `graph plan [TARGET...] [--changed-since REF] [--only KIND,...] [--format text|json|dot|mermaid|matrix] [-v]
           [--shard I/N] [--format matrix --max-shards N]

For each selected node: will it run or is it cached, and why (no previous record; input X
changed, old -> new digest; dependency Y will run; output missing or corrupt; cache entry corrupt).
Reads, never builds.
  --format F     text (default), json (stable: {version, nodes:[{id,kind,deps,key,status,reasons}], summary}),
                 dot, mermaid (draw the graph), matrix (a GitHub Actions matrix, one entry per image)
  -v, --verbose  list cached nodes too (text)
  --shard I/N    plan shard I of N only, as 'graph build --shard I/N' runs it (also GRAPH_SHARD)
  --max-shards N with --format matrix: the shards' matrix instead, {"include":[{"shard":"1/3"},...]},
                 one shard per image with nodes to run, at most N ({"include":[]} when nothing runs)
  --executor E   plan as 'graph build --executor E' runs: nodes that would run as Slurm jobs say
                 (slurm) in text, "executor": "slurm" in JSON
${targetHelp}`,
    options: {
      ...common,
      ...selection,
      format: { type: 'string', default: 'text' },
      verbose: { type: 'boolean', short: 'v' },
      shard: { type: 'string' },
      'max-shards': { type: 'string' },
      executor: { type: 'string' },
    },
    async run(open, values, positionals) {
      const format = values.format as PlanFormat;
      if (!PLAN_FORMATS.includes(format)) throw new UsageError(`unknown --format '${format}' (one of: ${PLAN_FORMATS.join(', ')})`);
      const maxShards = values['max-shards'] === undefined ? undefined : positiveInt(values['max-shards'] as string, '--max-shards');
      if (maxShards !== undefined && format !== 'matrix') throw new UsageError('--max-shards goes with --format matrix');
      if (format === 'matrix' && values.shard !== undefined) {
        throw new UsageError(maxShards === undefined ? '--format matrix lists every image: it takes no --shard (use --max-shards N for a shards matrix)' : '--max-shards plans every shard: it takes no --shard');
      }
      // A matrix plans for every runner: a GRAPH_SHARD meant for the build jobs does not apply.
      const shard = format === 'matrix' ? undefined : shardOption(values);
      const ws = open();
      const { plan, digester, shard: shardSummary } = await makePlan(ws, values, positionals, shard);
      digester.save();
      if (maxShards !== undefined) {
        process.stdout.write(renderShardMatrix(shardCountFor(plan, maxShards)));
        return EXIT_OK;
      }
      const notes = defaultRules.flatMap((r) => r.planNote?.(ws.root, (id) => plan.byId.get(id)?.key) ?? []);
      const elsewhere = (kind: string) => (placementOf(ws, kind) === 'local' ? undefined : placementOf(ws, kind));
      process.stdout.write(renderPlan(plan, format, values.verbose === true, notes, shardSummary, elsewhere));
      // A matrix job only feeds the build jobs, whose summaries say more.
      if (format !== 'matrix') stepSummary(planMarkdown(plan));
      return EXIT_OK;
    },
  },
  build: {
    summary: 'run every selected node that is not cached',
    usage: `graph build [TARGET...] [--changed-since REF] [--only KIND,...] [--jobs N] [--limit KIND=N]
            [--keep-going | --fail-fast] [--report FILE.json] [--junit FILE.xml] [--profile FILE.json] [--shard I/N]
            [--executor local|slurm] [--retries N]

Runs the nodes that are not cached, in parallel, longest remaining chain first. A failed node's
dependents are skipped; independent nodes go on (--keep-going, the default) or nothing new starts
(--fail-fast). Ctrl-C stops cleanly: finished nodes stay cached, the next build resumes.
  -j, --jobs N       most nodes at once (default: number of cores)
  --limit KIND=N     most nodes of KIND at once (repeatable; overrides settings.concurrency)
  --report FILE      write the JSON report (per node: id, kind, status, duration_ms, reasons, outputs)
  --junit FILE       write JUnit XML (one testcase per node)
  --profile FILE     write a Chrome Trace Event Format profile (Perfetto, chrome://tracing): one lane
                     per slot, a slice per node, the running-nodes counter, the critical path
With GITHUB_STEP_SUMMARY set, a Markdown summary (counts, what ran and why, failures with their
log tail) is appended to that file.
  --shard I/N        run shard I of N (1-based; also GRAPH_SHARD=I/N): the selected nodes split by
                     image, balanced by earlier durations; a shard also runs the dependencies of its
                     nodes unless cached. 'graph plan --format matrix --max-shards N' sizes N,
                     'graph report merge' joins the shards' reports.
  --executor E       where nodes run: local, or slurm (one batch job per node; overrides
                     settings.executor for every kind)
  --retries N        with slurm: submit a node again up to N times after NODE_FAIL, PREEMPTED or
                     BOOT_FAIL, without the host that failed (default 0)
Exit status: 0 all succeeded or cached, 1 a node failed, 2 bad usage or declarations, 130 interrupted.
${targetHelp}`,
    options: {
      ...common,
      ...selection,
      jobs: { type: 'string', short: 'j' },
      limit: { type: 'string', multiple: true },
      'keep-going': { type: 'boolean' },
      'fail-fast': { type: 'boolean' },
      report: { type: 'string' },
      junit: { type: 'string' },
      profile: { type: 'string' },
      shard: { type: 'string' },
      executor: { type: 'string' },
      retries: { type: 'string' },
    },
    async run(open, values, positionals) {
      const shard = shardOption(values);
      const retries = values.retries === undefined ? 0 : nonNegativeInt(values.retries as string, '--retries');
      const interrupt = handleInterrupts();
      const jobs = values.jobs === undefined ? availableParallelism() : positiveInt(values.jobs as string, '--jobs');
      if (values['keep-going'] && values['fail-fast']) throw new UsageError('--keep-going and --fail-fast exclude each other');
      const cliLimits: Record<string, number> = {};
      for (const l of (values.limit as string[] | undefined) ?? []) {
        const m = /^([a-z]+)=(.+)$/.exec(l);
        if (!m) throw new UsageError(`--limit takes KIND=N, got '${l}'`);
        cliLimits[m[1]] = positiveInt(m[2], `--limit ${m[1]}`);
      }
      for (const flag of ['report', 'junit', 'profile'] as const) {
        const file = values[flag] as string | undefined;
        const problem = file === undefined ? undefined : reportPathProblem(file);
        if (problem) throw new UsageError(`cannot write --${flag} ${file}: ${problem}`);
      }
      const ws = open();
      for (const kind of Object.keys(cliLimits)) {
        if (!ws.graph.rules.has(kind)) throw new UsageError(`--limit: unknown node kind '${kind}' (kinds: ${[...ws.graph.rules.keys()].join(', ')})`);
      }
      interrupt.workspace(ws);
      // Before this process makes any temp file: those of processes that are gone go first.
      const swept = sweepTemps(ws.root, ws.stateDir);
      if (swept.removed.length) process.stderr.write(`removed ${swept.removed.length} temp file${swept.removed.length === 1 ? '' : 's'} left by graph processes that are gone\n`);
      for (const k of swept.kept) process.stderr.write(`kept ${path.relative(ws.root, k.path)}, left by a graph process that is gone: ${k.why}\n`);
      recordProcess(ws.stateDir);
      const made = await makePlan(ws, values, positionals, shard);
      const { digester, cache, store, remote, lookups, shard: shardSummary } = made;
      digester.save();
      cache.compact();
      if (shardSummary) process.stderr.write(`${shardLine(shardSummary, made.plan.nodes.length)}\n`);
      // Builds without the bytes: only the remote hits a node that runs needs are downloaded.
      // Targets named on the command line are wanted for their outputs too (as Bazel downloads
      // top-level outputs); a build of everything downloads nothing it does not use.
      const wanted = positionals.length ? made.selected : undefined;
      const plan = lookups ? await materializeNeeded(made.plan, { cache, remote: lookups, store, root: ws.root, signal: interrupt.signal, wanted }) : made.plan;
      const live = process.stderr.isTTY === true && !process.env.CI;
      const progress = progressReporter({ write: (t) => process.stderr.write(t), live, columns: process.stderr.columns, root: ws.root });
      const profile = values.profile ? profileReporter({ now: systemClock.now, deps: (id) => ws.graph.node(id).deps.map((d) => d.id), key: (id) => plan.byId.get(id)?.key }) : undefined;
      const runner = new ExecaRunner();
      const overrides = Object.fromEntries(settingOptions.filter((o) => typeof values[o.name] === 'string' || values[o.name] === true).map((o) => [o.name, String(values[o.name])]));
      const { executor } = await setUpExecutor({ ws, plan, cache, store, runner, retries, command: runNodeCommand(fileURLToPath(import.meta.url), ws.root, overrides) });
      const summary = await executePlan(plan, {
        workspace: ws.forRules,
        jobs,
        limits: { ...ws.decls.settings.concurrency, ...cliLimits },
        resources: ws.decls.settings.resources,
        devices: hostDevices(ws.decls.settings),
        failFast: values['fail-fast'] === true,
        signal: interrupt.signal,
        runner,
        ...(executor ? { executor } : {}),
        cache,
        store,
        stateDir: ws.stateDir,
        leases: new KeyLeases({ dir: path.join(ws.cacheDir, 'leases'), clock: systemClock }),
        recorder: new CacheRecorder(cache, store, remote),
        emit: profile
          ? (e) => {
              profile.emit(e);
              progress(e);
            }
          : progress,
      });
      interrupt.finished();
      if (profile) writeReport(values.profile as string, `${JSON.stringify(profile.trace())}\n`);
      stepSummary(buildMarkdown(summary));
      if (values.report) writeReport(values.report as string, reportJson(summary, ws.root, shardSummary));
      if (values.junit) writeReport(values.junit as string, reportJunit(summary));
      if (summary.interrupted) return EXIT_INTERRUPTED;
      return summary.counts.failed > 0 ? EXIT_FAILED : EXIT_OK;
    },
  },
  'run-node': {
    summary: 'run exactly one node by its action key (what a Slurm job runs; internal)',
    usage: `graph run-node --key KEY [--failure-file FILE] NODE

Runs exactly NODE, whose action key must be KEY, with every dependency taken from the cache (none
is run), and records its result in the action cache (GRAPH_CACHE_DIR, else .graph/). This is the
command each Slurm job of 'graph build --executor slurm' runs on its compute node.
  --key KEY            the action key the coordinator planned (64 hex digits)
  --failure-file FILE  on failure, write the typed failure there as JSON
Exit status: 0 ran and recorded (or already recorded), 1 failed, 2 bad usage, 130 interrupted.`,
    options: { ...common, ...selection, key: { type: 'string' }, 'failure-file': { type: 'string' } },
    async run(open, values, positionals) {
      if (positionals.length !== 1) throw new UsageError('run-node takes exactly one node id');
      if (typeof values.key !== 'string' || !/^[0-9a-f]{64}$/.test(values.key)) throw new UsageError('run-node needs --key KEY (64 hex digits)');
      const interrupt = handleInterrupts();
      const ws = open();
      if (!ws.graph.has(positionals[0])) throw new UsageError(`no node '${positionals[0]}'`);
      const result = await runNode(ws, {
        id: positionals[0],
        key: values.key,
        ...(typeof values['failure-file'] === 'string' ? { failureFile: values['failure-file'] } : {}),
        signal: interrupt.signal,
        write: (t) => process.stdout.write(t),
      });
      interrupt.finished();
      if (interrupt.signal.aborted) return EXIT_INTERRUPTED;
      return result.code === 0 ? EXIT_OK : EXIT_FAILED;
    },
  },
  report: {
    summary: 'merge build reports; write a report page (HTML)',
    usage: `graph report merge OUT.json IN.json... [--junit OUT.xml]
graph report html OUT.html [--from REPORT.json] [--profile PROFILE.json] [TARGET...]

html: one self-contained page (works offline, a CI artifact): the summary, the DAG coloured by
status (Graphviz dot), every node by image with why it runs (old -> new digests) and, for a
build, its log tail, a timeline with the critical path, filters by kind and status. From a build's
--report (and its --profile for the timeline), else from the plan of the targets (as graph plan).

Joins the --report files of several builds (the shards of 'graph build --shard I/N') into one
report of the same format, counts recomputed, plus "merged_from" and "conflicts". A node in
several reports keeps its result (ran or cached beats a shard's skipped or interrupted); a
conflict is a node that succeeded in one report and failed in another, or succeeded with
different outputs: it is listed and merged as failed. Shard reports must cover shards 1..N of
one split, each once.
  --junit FILE   also write JUnit XML of the merged report
Exit status: 0 merged; 1 merged, with conflicts or missing shards (printed); 2 bad usage, or an
input that cannot be read or is not a graph report.`,
    options: { ...common, ...selection, junit: { type: 'string' }, from: { type: 'string' }, profile: { type: 'string' } },
    async run(open, values, positionals) {
      const [sub, out, ...inputs] = positionals;
      if (sub === 'html') return reportHtml(open, values, out, inputs);
      if (sub !== 'merge') throw new UsageError(sub === undefined ? 'which report command? (merge, html)' : `unknown report command '${sub}' (report commands: merge, html)`);
      if (out === undefined || !inputs.length) throw new UsageError('merge takes OUT.json and at least one IN.json');
      for (const [flag, file] of [['OUT', out], ['--junit', values.junit as string | undefined]] as const) {
        const problem = file === undefined ? undefined : reportPathProblem(file);
        if (problem) throw new UsageError(`cannot write ${flag} ${file}: ${problem}`);
      }
      const reports = inputs.map((name) => {
        const read = readReport(name);
        if (!read.ok) throw new UsageError(read.message);
        return { name, report: read.report };
      });
      const merged = mergeReports(reports);
      const { report, problems } = merged;
      writeReport(out, mergedJson(report));
      if (values.junit) writeReport(values.junit as string, junitFromReport(report));
      process.stderr.write(mergeMessage(merged, out));
      return report.conflicts.length || problems.length ? EXIT_FAILED : EXIT_OK;
    },
  },
  validate: {
    summary: 'check images.yaml and models.yaml and report every problem',
    usage: `graph validate [-C DIR]

Loads, validates and compiles the declarations; prints every problem as file:line:col with the
line and a caret, and exits 2 if there is any; then nothing in .graph/ is touched.`,
    options: { ...common },
    async run(open) {
      const ws = open();
      const models = [...ws.decls.groups.values()].reduce((n, g) => n + g.models.length, 0);
      process.stdout.write(`ok: ${ws.decls.images.size} images, ${ws.decls.groups.size} groups, ${models} models, ${ws.graph.size} nodes\n`);
      return EXIT_OK;
    },
  },
  query: {
    summary: 'list targets: nodes, images and groups',
    usage: `graph query [TARGET...] [--changed-since REF] [--only KIND,...] [--deps] [--format text|json]

Lists the nodes the targets select (every node without targets), one id per line; with
--changed-since, only those affected by the changes (not the dependencies a build pulls in).
  --deps          include the dependencies the targets pull in
  --format json   [{id, kind, deps, image, group}]
${targetHelp}`,
    options: { ...common, ...selection, deps: { type: 'boolean' }, format: { type: 'string', default: 'text' } },
    async run(open, values, positionals) {
      const format = values.format as string;
      if (format !== 'text' && format !== 'json') throw new UsageError(`unknown --format '${format}' (one of: text, json)`);
      const ws = open();
      let selected = await selectTargets(ws, values, positionals);
      if (values.deps) selected = ws.graph.withDependencies(selected);
      const nodes = ws.graph.order.filter((id) => selected.has(id)).map((id) => ws.graph.node(id));
      if (format === 'json') {
        const rows = nodes.map((n) => ({ id: n.id, kind: n.kind, deps: n.deps.map((d) => d.id).sort(), image: n.image ?? null, group: n.group ?? null }));
        process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
      } else {
        process.stdout.write(nodes.map((n) => `${n.id}\n`).join(''));
      }
      return EXIT_OK;
    },
  },
  explain: {
    summary: "show a node's whole key record beside its last record",
    usage: `graph explain NODE [--format text|json] [-C DIR]

Every field of NODE's key record (rule, declaration leaves, input files and their digests,
environment, tool, dependency keys), each with what it was in the node's last record in the
action cache: = same, ~ changed (was ...), + added, - removed. Reads, never builds.
  --format json   {version, id, kind, key, status, reasons, last: {key, same_key}|null,
                  fields: [{field, now, last, change}]}`,
    options: { ...common, format: { type: 'string', default: 'text' }, offline: { type: 'boolean' } },
    async run(open, values, positionals) {
      const format = values.format as string;
      if (format !== 'text' && format !== 'json') throw new UsageError(`unknown --format '${format}' (one of: text, json)`);
      if (positionals.length !== 1) throw new UsageError('explain takes one node id');
      const ws = open();
      const id = positionals[0] as NodeId;
      if (!ws.graph.has(id)) matchTargets(ws.graph, [id]); // throws the target error, with "did you mean"
      if (!ws.graph.has(id)) throw new UsageError(`'${id}' is not one node: name a node id (graph query lists them)`);
      const { plan, cache, digester } = await makePlan(ws, { ...values, offline: true, registry: values.offline !== true }, [id]);
      digester.save();
      const p = plan.byId.get(id);
      if (!p) throw new UsageError(`'${id}' is not planned`);
      const lastKey = cache.lastKey(id);
      const record = lastKey === undefined ? undefined : lastKey === p.key ? p.record : cache.get(lastKey)?.record;
      const x = explainNode(p, lastKey !== undefined && record ? { key: lastKey, record } : undefined);
      process.stdout.write(format === 'json' ? `${JSON.stringify(x, null, 2)}\n` : explainText(x));
      return EXIT_OK;
    },
  },
  // The rules' commands come after the engine's own, `clean` last.
  ...Object.fromEntries(defaultRules.flatMap((r) => r.commands ?? []).map((c) => [c.name, ruleCommand(c)])),
  clean: {
    summary: 'delete the local state in .graph/ (cache, store, logs)',
    usage: `graph clean [-C DIR]

Deletes .graph/: the action cache, the content-addressed store, logs and the file memo. The next
build runs everything. Declarations and outputs outside .graph/ are not touched, nor is a cache
in GRAPH_CACHE_DIR (shared with other checkouts or machines: remove it yourself).`,
    options: { ...common },
    async run(_open, values) {
      const root = path.resolve((values.directory as string | undefined) ?? '.');
      const state = path.join(root, '.graph');
      // Rename first, so a concurrent reader sees the whole state or none of it.
      const trash = `${state}.trash-${process.pid}`;
      try {
        renameSync(state, trash);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
          process.stdout.write('nothing to clean\n');
          return EXIT_OK;
        }
        throw e;
      }
      rmSync(trash, { recursive: true, force: true });
      process.stdout.write(`removed ${path.relative(process.cwd(), state) || state}\n`);
      return EXIT_OK;
    },
  },
};

/**
 * SIGINT and SIGTERM for a build, from its start to its exit. The first aborts the returned signal
 * (the scheduler stops the running nodes, their process groups get SIGTERM, and the interrupted
 * summary follows); the second SIGKILLs those process groups at once (the summary still follows);
 * the third quits without a summary, after killing them and removing this process's temp files.
 * A repeat within REPEAT_SIGNAL_MS is the same interrupt delivered twice; a signal after the run
 * has finished exits 130 at once. A safety net: a stream or promise that fails unexpectedly while
 * the nodes stop must not end graph without its summary; outside an interrupt it is graph's bug,
 * reported as one (exit 70).
 */
function handleInterrupts(): { signal: AbortSignal; workspace(ws: Workspace): void; finished(): void } {
  const interrupt = new AbortController();
  let workspace: Workspace | undefined;
  let count = 0;
  let lastAt = 0;
  let done = false;
  const onSignal = () => {
    if (done) process.exit(EXIT_INTERRUPTED);
    // One Ctrl-C can arrive twice: from the terminal, and forwarded by a wrapper (npx, npm run).
    if (count > 0 && Date.now() - lastAt < REPEAT_SIGNAL_MS) return;
    lastAt = Date.now();
    count++;
    if (count === 1) {
      process.stderr.write('\ninterrupt: stopping running nodes (again to kill them at once)\n');
      interrupt.abort(new Error('interrupted'));
    } else if (count === 2) {
      process.stderr.write('\ninterrupt: killing running nodes (again to quit at once)\n');
      killAllProcesses();
    } else {
      killAllProcesses();
      if (workspace) removeOwnTemps(workspace.root, workspace.stateDir);
      process.stderr.write('\ninterrupted: quit at once\n');
      process.exit(EXIT_INTERRUPTED);
    }
  };
  const onUnexpected = (e: unknown) => {
    if (interrupt.signal.aborted) {
      process.stderr.write(`graph: while stopping: ${(e as Error)?.message ?? e}\n`);
      return;
    }
    process.stderr.write(`graph: internal error: ${(e as Error)?.stack ?? e}\n`);
    process.exit(EXIT_INTERNAL);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('uncaughtException', onUnexpected);
  process.on('unhandledRejection', onUnexpected);
  return {
    signal: interrupt.signal,
    workspace: (ws) => {
      workspace = ws;
    },
    finished: () => {
      done = true;
    },
  };
}

function splitList(v: unknown): string[] | undefined {
  return typeof v === 'string' ? v.split(',').map((s) => s.trim()).filter(Boolean) : undefined;
}

/** Append to GITHUB_STEP_SUMMARY when it is set; a failure to is a warning, never a failed command. */
function stepSummary(markdown: string): void {
  const problem = appendStepSummary(process.env, markdown);
  if (problem) process.stderr.write(`warning: cannot append to GITHUB_STEP_SUMMARY: ${problem}\n`);
}

/** `graph report html OUT.html [--from REPORT.json] [--profile PROFILE.json] [TARGET...]`. */
async function reportHtml(open: () => Workspace, values: Record<string, unknown>, out: string | undefined, targets: string[]): Promise<number> {
  if (out === undefined) throw new UsageError('html takes OUT.html');
  const problem = reportPathProblem(out);
  if (problem) throw new UsageError(`cannot write OUT ${out}: ${problem}`);
  const read = <T>(file: string): T => {
    try {
      return readJsonFile<T>(file);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  };
  let data;
  if (values.from !== undefined) {
    if (targets.length) throw new UsageError('--from draws the whole report: it takes no targets');
    const report = read<ReportInput>(values.from as string);
    if (!report || !Array.isArray(report.nodes) || !report.summary) throw new UsageError(`${values.from} is not a graph build report`);
    // The workspace, when it still declares the nodes, gives the edges and images.
    let ws: Workspace | undefined;
    try {
      ws = open();
    } catch {
      ws = undefined;
    }
    const root = ws?.root ?? path.resolve((values.directory as string | undefined) ?? '.');
    data = pageFromReport(report, root, (id) => (ws?.graph.has(id as NodeId) ? { deps: ws.graph.node(id as NodeId).deps.map((d) => d.id), image: ws.graph.node(id as NodeId).image } : undefined));
  } else {
    const ws = open();
    const { plan, digester } = await makePlan(ws, values, targets);
    digester.save();
    data = pageFromPlan(plan);
  }
  if (values.profile !== undefined) addTimeline(data, read<TraceFile>(values.profile as string));
  writeReport(out, renderHtml(data, await dagSvg(data)));
  process.stderr.write(`wrote ${out}: ${data.nodes.length} nodes\n`);
  return EXIT_OK;
}

function nonNegativeInt(text: string, what: string): number {
  if (!/^(0|[1-9][0-9]*)$/.test(text)) throw new UsageError(`${what} takes a whole number (0 or more), got '${text}'`);
  return Number(text);
}

function positiveInt(text: string, what: string): number {
  if (!/^[1-9][0-9]*$/.test(text)) throw new UsageError(`${what} takes a positive integer, got '${text}'`);
  return Number(text);
}

/** `--shard I/N`, else `GRAPH_SHARD` (set and not empty), else none. */
function shardOption(values: Record<string, unknown>): ShardSpec | undefined {
  const flag = values.shard as string | undefined;
  const env = process.env.GRAPH_SHARD;
  const [text, source] = flag !== undefined ? [flag, '--shard'] : env ? [env, 'GRAPH_SHARD'] : [undefined, ''];
  if (text === undefined) return undefined;
  const parsed = parseShard(text, source);
  if (!parsed.ok) throw new UsageError(parsed.message);
  return parsed.shard;
}

/** The nodes targets, --only and --changed-since select (before dependencies are pulled in). */
async function selectTargets(ws: Workspace, values: Record<string, unknown>, positionals: string[]): Promise<ReadonlySet<NodeId>> {
  const selected = matchTargets(ws.graph, positionals, splitList(values.only));
  if (typeof values['changed-since'] !== 'string') return selected;
  const { affected } = await affectedSince(ws, values['changed-since'], defaultRules);
  return new Set([...selected].filter((id) => affected.has(id)));
}

/** The plan of the selected nodes, or of `shard`'s part of them (engine/compile/shard.ts). */
async function makePlan(ws: Workspace, values: Record<string, unknown>, positionals: string[], shard?: ShardSpec) {
  const selected = await selectTargets(ws, values, positionals);
  const cache = new ActionCache(ws.cacheDir);
  const store = new ContentStore(path.join(ws.cacheDir, 'cas'));
  const digester = new FileDigester(ws.root, path.join(ws.stateDir, 'stat-memo.json'), ws.decls.boundary);
  const selection = ws.graph.withDependencies(selected);
  // The external tools' identities go into the keys (memoized by their executables' stat).
  const tools = await resolveTools([...selection].map((id) => ws.graph.node(id)), path.join(ws.stateDir, 'tools.json'));
  let plan: Plan = planBuild(ws.graph, selection, { root: ws.root, cache, store, digester, env: process.env, tools, hostResources: localHostResources(ws.decls.settings) });
  // Split before asking registries or remote caches: their answers change while shards run (one
  // shard's upload is another's hit), this machine's cache as it was does not.
  let shardSummary: ShardSummary | undefined;
  if (shard) ({ plan, shard: shardSummary } = selectShard(plan, shard, (id) => cache.last(id)?.result.duration_ms));
  const remote = await remoteCache(ws, values);
  if (remote) plan = await checkRemote(plan, cache, remote, store, ws.root);
  // Local first (planBuild), then the remote cache, then the registries published results are in:
  // their hits vouch for what is upstream of them, but nothing cached before does (a publish found
  // already in a registry spares no test that never ran here).
  const sources = (values.registry ?? !values.offline) ? await resultSources(ws) : [];
  for (const source of sources) plan = await checkRemote(plan, cache, source, store, ws.root, undefined, { prune: 'under-hits' });
  const lookups = tieredRemote([remote, ...sources]);
  if (!values.offline) plan = await checkUpToDate(plan, cache, ws.forRules);
  return { plan, cache, store, digester, remote, lookups, selected, summary: planSummary(plan), shard: shardSummary };
}

/** The rules' sources of published results (`Rule.resultSource`), as tiers; their one warning each goes to stderr. */
async function resultSources(ws: Workspace): Promise<SourceTier[]> {
  const tiers: SourceTier[] = [];
  for (const rule of ws.graph.rules.values()) {
    const source = await rule.resultSource?.(ws.forRules).catch(() => undefined);
    if (source) tiers.push(new SourceTier(source, (m) => process.stderr.write(`warning: ${m}\n`)));
  }
  return tiers;
}

/** The remote cache the options, the environment or images.yaml name; its warnings go to stderr. */
async function remoteCache(ws: Workspace, values: Record<string, unknown>): Promise<RemoteCache | undefined> {
  try {
    return await openRemoteCache({ flag: values['remote-cache'] as string | undefined, mode: values['remote-cache-mode'] as string | undefined, settings: ws.decls.settings.remoteCache }, process.env, (m) =>
      process.stderr.write(`warning: ${m}\n`),
    );
  } catch (e) {
    if (e instanceof RemoteCacheConfigError) throw new UsageError(e.message);
    throw e;
  }
}

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

function mainHelp(): string {
  const width = Math.max(...Object.keys(commands).map((c) => c.length));
  return `graph ${version()}: a build graph for model container images (build, convert to SIF, test, publish)

Usage: graph <command> [options]

Commands:
${Object.entries(commands)
  .map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`)
  .join('\n')}

Every command works on images.yaml and models.yaml in the current directory, or in -C DIR.
Run 'graph <command> --help' for a command's options.

Environment:
  GRAPH_CACHE_DIR            where the action cache, the store and the leases live (default .graph/)
  GRAPH_DEBIAN_MIRROR        the Debian mirror for debian: images (default: the host's apt sources)
  GRAPH_DEFAULT_REGISTRY     the registry of image references without a host
  GRAPH_INSECURE_REGISTRIES  registries reached over plain HTTP (comma-separated)
  GRAPH_REGISTRY_USERNAME, GRAPH_REGISTRY_PASSWORD   registry credentials (never printed)
  GRAPH_REMOTE_CACHE         a shared cache over the Bazel HTTP cache protocol (as --remote-cache)
  GRAPH_REMOTE_CACHE_MODE    readwrite (default) or read (as --remote-cache-mode)
  GRAPH_REMOTE_CACHE_HEADER  'Name: value' sent to the remote cache, e.g. a token (never printed)
  GRAPH_SHARD                I/N: plan and build shard I of N (as --shard; the flag wins)
`;
}

/** Run the CLI with `argv` (without node and script); resolves to the exit code. */
async function main(argv: string[]): Promise<number> {
  // Like make and ninja, `-C DIR` may come before the command.
  const leading: string[] = [];
  while (argv[0] === '-C' || argv[0] === '--directory') {
    if (argv[1] === undefined) {
      process.stderr.write(`graph: ${argv[0]} needs a directory\n`);
      return EXIT_USAGE;
    }
    leading.push('-C', argv[1]);
    argv = argv.slice(2);
  }
  const [name, ...afterName] = argv;
  const rest = [...leading, ...afterName];
  if (name === undefined) {
    // No command is a usage error, as with git and make: a script that lost its arguments fails.
    process.stderr.write(mainHelp());
    return EXIT_USAGE;
  }
  if (name === '--help' || name === '-h' || name === 'help') {
    const topic = name === 'help' ? rest[0] : undefined;
    process.stdout.write(topic && commands[topic] ? `${commands[topic].usage}\n` : mainHelp());
    return EXIT_OK;
  }
  if (name === '--version' || name === '-V') {
    process.stdout.write(`${version()}\n`);
    return EXIT_OK;
  }
  const command = commands[name];
  if (!command) {
    process.stderr.write(`graph: unknown command '${name}' (commands: ${Object.keys(commands).join(', ')})\n`);
    return EXIT_USAGE;
  }
  try {
    const { values, positionals } = parseArgs({ args: rest, options: command.options, allowPositionals: true, strict: true });
    if (values.help) {
      process.stdout.write(`${command.usage}\n`);
      return EXIT_OK;
    }
    if (name === 'validate' || name === 'clean') {
      if (positionals.length) throw new UsageError(`graph ${name} takes no targets`);
    }
    const dir = path.resolve((values.directory as string | undefined) ?? '.');
    const overrides: Record<string, string> = {};
    for (const o of settingOptions) {
      const given = (values as Record<string, unknown>)[o.name] as string | boolean | undefined;
      if (given === undefined || given === false) continue;
      const value = String(given);
      if (o.values && !o.values.includes(value)) throw new UsageError(`unknown --${o.name} '${value}' (one of: ${o.values.join(', ')})`);
      overrides[o.name] = value;
    }
    const executorFlag = (values as Record<string, unknown>).executor as string | undefined;
    if (executorFlag !== undefined) {
      if (!(EXECUTORS as readonly string[]).includes(executorFlag)) throw new UsageError(`unknown --executor '${executorFlag}' (one of: ${EXECUTORS.join(', ')})`);
      overrides.executor = executorFlag;
    }
    return await command.run(() => openWorkspace(dir, defaultRules, overrides), values, positionals);
  } catch (e) {
    if (e instanceof DiagnosticError) {
      process.stderr.write(`${e.diagnostics.map(formatDiagnostic).join('\n\n')}\n\n${e.diagnostics.length} error${e.diagnostics.length === 1 ? '' : 's'}\n`);
      return EXIT_USAGE;
    }
    if (e instanceof SlurmConfigError) {
      process.stderr.write(`graph ${name}: ${e.message}\n`);
      return EXIT_USAGE;
    }
    if (e instanceof UsageError || e instanceof TargetError || e instanceof ChangedSinceError || (e as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`graph ${name}: ${(e as Error).message}\nRun 'graph ${name} --help' for usage.\n`);
      return EXIT_USAGE;
    }
    throw e;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    // Interrupted: exit now. While Node tears down after the event loop ends it restores the
    // default SIGINT action, and a repeated Ctrl-C arriving then would kill graph instead.
    if (code === EXIT_INTERRUPTED) process.exit(code);
  },
  (e) => {
    process.stderr.write(`graph: internal error: ${(e as Error).stack ?? e}\n`);
    process.exitCode = EXIT_INTERNAL;
  },
);
