#!/usr/bin/env node
/**
 * The `graph` command line: parses arguments, hands them to the engine's commands
 * (engine/commands/*, each imported when its command runs, so `graph plan` and `--help` load
 * nothing that runs nodes) and sets the exit code.
 * Exit codes: 0 success; 1 a node failed; 2 bad usage or bad declarations; 130 interrupted.
 */
import { availableParallelism } from 'node:os';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ChangedSinceError } from './engine/compile/changed.js';
import { parseShard, type ShardSpec } from './engine/compile/shard.js';
import { TargetError } from './engine/compile/targets.js';
import type { CommandContext, CommandOutcome } from './engine/commands/command.js';
// The commands that read (plan, explain, query, validate) load with the CLI: importing them later
// would add a wave of module loading to every plan. What runs nodes, reports and cleans is
// imported by its command.
import { explainCommand, planCommand, queryCommand, validateCommand } from './engine/commands/plan.js';
import { DiagnosticError, formatDiagnostic } from './engine/diagnostics.js';
import { EXECUTORS } from './engine/execute/executor-settings.js';
import { PLAN_FORMATS, type PlanFormat } from './engine/report/plan.js';
import { UsageError, type CommandOutput, type RuleCommand } from './engine/rule.js';
import { openWorkspace, type Workspace } from './engine/workspace.js';
import { defaultRules } from './rules/index.js';

const EXIT_OK = 0;
const EXIT_FAILED = 1;
const EXIT_USAGE = 2;
const EXIT_INTERRUPTED = 130;
const EXIT_INTERNAL = 70;
const EXIT_OF: Readonly<Record<CommandOutcome, number>> = { ok: EXIT_OK, failed: EXIT_FAILED, interrupted: EXIT_INTERRUPTED };
/** stdout and stderr, for the commands. */
const io: CommandOutput = { out: (t) => process.stdout.write(t), err: (t) => process.stderr.write(t) };
/** What an engine command gets (engine/commands/command.ts). */
const context = (open: () => Workspace): CommandContext => ({ open, rules: defaultRules, io });

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
    run: (open, values, positionals) => c.run(open, { values, positionals }, io),
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
      return EXIT_OF[await planCommand(context(open), { values, targets: positionals, format, verbose: values.verbose === true, ...(maxShards !== undefined ? { maxShards } : {}), ...(shard ? { shard } : {}) })];
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
      const jobs = values.jobs === undefined ? availableParallelism() : positiveInt(values.jobs as string, '--jobs');
      if (values['keep-going'] && values['fail-fast']) throw new UsageError('--keep-going and --fail-fast exclude each other');
      const limits: Record<string, number> = {};
      for (const l of (values.limit as string[] | undefined) ?? []) {
        const m = /^([a-z]+)=(.+)$/.exec(l);
        if (!m) throw new UsageError(`--limit takes KIND=N, got '${l}'`);
        limits[m[1]] = positiveInt(m[2], `--limit ${m[1]}`);
      }
      const [{ buildCommand }, { handleInterrupts }, { reportPathProblem }] = await Promise.all([import('./engine/commands/build.js'), import('./engine/commands/interrupts.js'), import('./engine/report/build-report.js')]);
      for (const flag of ['report', 'junit', 'profile'] as const) {
        const file = values[flag] as string | undefined;
        const problem = file === undefined ? undefined : reportPathProblem(file);
        if (problem) throw new UsageError(`cannot write --${flag} ${file}: ${problem}`);
      }
      const interrupts = handleInterrupts(io.err, { interrupted: EXIT_INTERRUPTED, internal: EXIT_INTERNAL });
      const file = (flag: 'report' | 'junit' | 'profile') => (typeof values[flag] === 'string' ? { [flag]: values[flag] as string } : {});
      const outcome = await buildCommand(context(open), {
        values,
        targets: positionals,
        jobs,
        limits,
        failFast: values['fail-fast'] === true,
        ...file('report'),
        ...file('junit'),
        ...file('profile'),
        ...(shard ? { shard } : {}),
        retries,
        overrides: settingOverrides(values),
        cliPath: fileURLToPath(import.meta.url),
        live: process.stderr.isTTY === true && !process.env.CI,
        ...(process.stderr.columns !== undefined ? { columns: process.stderr.columns } : {}),
        interrupts,
      });
      return EXIT_OF[outcome];
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
      const [{ runNodeCommandLine }, { handleInterrupts }] = await Promise.all([import('./engine/commands/build.js'), import('./engine/commands/interrupts.js')]);
      const interrupts = handleInterrupts(io.err, { interrupted: EXIT_INTERRUPTED, internal: EXIT_INTERNAL });
      const failureFile = typeof values['failure-file'] === 'string' ? values['failure-file'] : undefined;
      return EXIT_OF[await runNodeCommandLine(context(open), positionals[0], values.key, failureFile, interrupts)];
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
      if (sub !== 'merge' && sub !== 'html') throw new UsageError(sub === undefined ? 'which report command? (merge, html)' : `unknown report command '${sub}' (report commands: merge, html)`);
      const { reportHtml, reportMerge } = await import('./engine/commands/report.js');
      const str = (v: unknown) => (typeof v === 'string' ? v : undefined);
      if (sub === 'merge') return EXIT_OF[reportMerge(context(open), out, inputs, str(values.junit))];
      const from = str(values.from);
      const profile = str(values.profile);
      const directory = str(values.directory);
      return EXIT_OF[await reportHtml(context(open), { out, ...(from !== undefined ? { from } : {}), ...(profile !== undefined ? { profile } : {}), ...(directory !== undefined ? { directory } : {}), targets: inputs, values })];
    },
  },
  validate: {
    summary: 'check images.yaml and models.yaml and report every problem',
    usage: `graph validate [-C DIR]

Loads, validates and compiles the declarations; prints every problem as file:line:col with the
line and a caret, and exits 2 if there is any; then nothing in .graph/ is touched.`,
    options: { ...common },
    async run(open) {
      return EXIT_OF[await validateCommand(context(open))];
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
      return EXIT_OF[await queryCommand(context(open), values, positionals, values.deps === true, format)];
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
      return EXIT_OF[await explainCommand(context(open), values, positionals[0], format)];
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
      const { cleanCommand } = await import('./engine/commands/clean.js');
      return EXIT_OF[cleanCommand(path.resolve((values.directory as string | undefined) ?? '.'), io)];
    },
  },
};

/** The settings overrides given on the command line (`--builder`, `--sandbox`), by option name. */
function settingOverrides(values: Record<string, unknown>): Record<string, string> {
  return Object.fromEntries(settingOptions.filter((o) => typeof values[o.name] === 'string' || values[o.name] === true).map((o) => [o.name, String(values[o.name])]));
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
    return await command.run(() => openWorkspace(dir, defaultRules, overrides, { compiledCache: true }), values, positionals);
  } catch (e) {
    if (e instanceof DiagnosticError) {
      process.stderr.write(`${e.diagnostics.map(formatDiagnostic).join('\n\n')}\n\n${e.diagnostics.length} error${e.diagnostics.length === 1 ? '' : 's'}\n`);
      return EXIT_USAGE;
    }
    // Loaded by then when one of its errors was thrown (by a build, a plan with --executor slurm).
    const { SlurmConfigError } = await import('./engine/execute/slurm.js');
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
