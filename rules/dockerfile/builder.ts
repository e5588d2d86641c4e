/**
 * External builders for `dockerfile:` recipes: the request a build node hands to a builder, the
 * builder interface, auto-detection, and the plumbing the three backends share (running a step,
 * failure messages, pinning the base image, writing the result layout).
 *
 * Contract of every backend: build `req.dockerfile` in `req.context` and leave the result as an
 * OCI image layout (image-spec v1.1 §image-layout) at `req.outLayout` whose `index.json` names
 * exactly one manifest, tagged `latest`. Builder output is appended to `req.logFile`. Aborting
 * `req.signal` ends the builder's whole process group. Nothing outlives the call: storage roots
 * and temp files live in a private directory under `req.scratchDir` that is removed at the end.
 *
 * The base image (`req.base`): the Dockerfile names it as `FROM <base.name>` (or through an ARG,
 * `ARG BASE=<base.name>` / `FROM ${BASE}`; `COPY --from=<base.name>` works too). The backends
 * make that name resolve, without any registry, to exactly the manifest that `base.tag` points
 * at in `base.layoutDir` when the build starts: see {@link pinBaseImage}.
 */
import {
  appendFileSync,
  closeSync,
  existsSync,
  fstatSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  realpathSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import path from 'node:path';
import { quoteArg, type ProcessRunner, type RunResult } from '../../engine/process.js';
import { findExecutable } from '../../engine/key/tools.js';
import { BUILDER_NAMES, type BuilderName } from './names.js';
import { MEDIA_TYPE_DOCKER_LIST, MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST, type Descriptor } from '../oci/image.js';
import { layoutDescriptor } from '../oci/layout.js';
import { NodeFailure } from '../../engine/rule.js';

/** One Dockerfile build, as the build rule requests it. All paths are absolute. */
export interface DockerfileBuild {
  /** Absolute path of the Dockerfile. */
  dockerfile: string;
  /** Absolute directory sent as the build context (`.dockerignore` in it applies). */
  context: string;
  /** Build arguments (`--build-arg K=V`); passed sorted by key, so the command line is stable. */
  args: Record<string, string>;
  /** Stage to build (`--target`); the last stage when undefined. */
  target?: string;
  /** When the Dockerfile's base is an image built by graph: an OCI image layout dir and the tag in it. */
  base?: { layoutDir: string; tag: string; name: string };
  /** Absolute dir where to write the result as an OCI image layout (tag 'latest'); replaced if present. */
  outLayout: string;
  /** Private temp dir for storage roots etc. (the caller removes it; the builder cleans up its own part). */
  scratchDir: string;
  /** Append builder output here. */
  logFile: string;
  /** Aborting ends the builder's whole process group; `build` then rejects with the signal's reason. */
  signal: AbortSignal;
  /** For reproducible timestamps, in seconds since the Unix epoch (default 0). */
  sourceDateEpoch?: number;
  /**
   * The platform to build for (`OS/ARCH`, `--platform`); the host's when undefined. A foreign
   * platform's RUN steps need QEMU user emulation (binfmt_misc with the F flag).
   */
  platform?: string;
}

/** A Dockerfile builder backend. */
export interface DockerfileBuilder {
  name: 'buildah' | 'podman' | 'docker';
  /**
   * Tool identity for the action key, e.g. `buildah 1.28.2`, `podman 4.3.1`,
   * `docker 28.2.2 (engine 4.3.1)`. @throws Error when the tool cannot run.
   */
  version(): Promise<string>;
  /**
   * Build `req` and write the result layout to `req.outLayout`.
   * @throws NodeFailure naming the failed step, with the builder's last ~20 output lines and the
   *   log path; the signal's reason when `req.signal` aborted.
   */
  build(req: DockerfileBuild): Promise<void>;
}

export { BUILDER_NAMES, type BuilderName } from './names.js';

/**
 * Network of RUN steps. `host` (default): RUN steps reach what the host reaches (e.g. Debian
 * mirrors for `apt-get install`); buildah uses chroot isolation, podman and the classic docker
 * builder `--network host` (so no bridge or firewall rules are set up), docker buildx its
 * default. `none`: loopback only; buildah then needs `--isolation oci` with runc.
 */
export type RunNetwork = 'host' | 'none';

/** How backends run; every field is optional. */
export interface BuilderOptions {
  /** Starts every process (default: the real execa runner). Tests pass a fake. */
  readonly runner?: ProcessRunner;
  /** Network of RUN steps (default `host`). */
  readonly network?: RunNetwork;
  /** Environment for detection and for the builder's processes (default `process.env`). */
  readonly env?: Readonly<Record<string, string | undefined>>;
}

/**
 * Pick a Dockerfile builder: `preferred` first (when given), then buildah, podman and docker.
 * buildah and podman count when their executable is on PATH; docker when its CLI is on PATH and
 * an engine is named (`DOCKER_HOST` set, or `/var/run/docker.sock` exists).
 * @throws Error for an unknown `preferred` name, or when none is usable: the message lists each
 *   candidate with why it was passed over, and how to install buildah.
 */
export async function detectBuilder(preferred?: string, options: BuilderOptions = {}): Promise<DockerfileBuilder> {
  if (preferred !== undefined && !(BUILDER_NAMES as readonly string[]).includes(preferred)) {
    throw new Error(`unknown Dockerfile builder '${preferred}' (choose one of: ${BUILDER_NAMES.join(', ')})`);
  }
  const env = options.env ?? process.env;
  const order = [...new Set([...(preferred ? [preferred as BuilderName] : []), ...BUILDER_NAMES])];
  const passedOver: string[] = [];
  for (const name of order) {
    const why = unusable(name, env);
    if (why) {
      passedOver.push(`  ${name}: ${why}`);
      continue;
    }
    // Loaded on demand: a workspace without Dockerfile builds never reads the backends.
    switch (name) {
      case 'buildah':
        return new (await import('./buildah.js')).BuildahBuilder(options);
      case 'podman':
        return new (await import('./podman.js')).PodmanBuilder(options);
      case 'docker':
        return new (await import('./docker.js')).DockerBuilder(options);
    }
  }
  throw new Error(
    `no Dockerfile builder found; tried:\n${passedOver.join('\n')}\n` +
      'Install one, e.g. `apt-get install buildah` (Debian/Ubuntu).',
  );
}

/** Why backend `name` cannot be used in `env`, or undefined when it can. */
function unusable(name: BuilderName, env: Readonly<Record<string, string | undefined>>): string | undefined {
  const exe = findExecutable(name, env.PATH);
  if (!exe) return 'not on PATH';
  if (name === 'docker' && !env.DOCKER_HOST && !existsSync('/var/run/docker.sock')) {
    return `CLI at ${exe}, but no engine (DOCKER_HOST is unset and /var/run/docker.sock does not exist)`;
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Plumbing shared by the backends.

/** Private working directories of one build, all under one removable root. */
export interface WorkDirs {
  /** Root of everything below (removed when the build ends). */
  readonly dir: string;
  /** containers/storage graph root (`--root`). */
  readonly root: string;
  /** containers/storage run root (`--runroot`). */
  readonly runroot: string;
  /** TMPDIR of the builder, so its temp files (pulled archives, chroot mounts) stay private. */
  readonly tmp: string;
}

/**
 * Validate `req` and make its private working directories under `req.scratchDir`.
 * @throws NodeFailure when a path is not absolute, or holds ':' where a transport reference
 *   (`oci:PATH:TAG`) needs it, or when the epoch or an argument name is malformed.
 */
export function prepareWork(req: DockerfileBuild, builder: BuilderName): WorkDirs {
  for (const [field, p] of [['dockerfile', req.dockerfile], ['context', req.context], ['outLayout', req.outLayout], ['scratchDir', req.scratchDir]] as const) {
    if (!path.isAbsolute(p)) throw new NodeFailure(`${field} must be an absolute path, not '${p}'`);
  }
  // containers/image splits `oci:PATH:TAG` at the first ':', so such paths cannot be named.
  for (const [field, p] of [['outLayout', req.outLayout], ['scratchDir', req.scratchDir]] as const) {
    if (p.includes(':')) throw new NodeFailure(`${field} '${p}' contains ':', which OCI transport references cannot express`);
  }
  const epoch = req.sourceDateEpoch ?? 0;
  if (!Number.isSafeInteger(epoch) || epoch < 0) throw new NodeFailure(`sourceDateEpoch must be a whole number of seconds >= 0, not ${epoch}`);
  for (const key of Object.keys(req.args)) {
    if (!key || key.includes('=')) throw new NodeFailure(`build argument name '${key}' is empty or contains '='`);
  }
  mkdirSync(req.scratchDir, { recursive: true });
  mkdirSync(path.dirname(req.outLayout), { recursive: true });
  const dir = mkdtempSync(path.join(req.scratchDir, `${builder}-`));
  const work = { dir, root: path.join(dir, 'root'), runroot: path.join(dir, 'runroot'), tmp: path.join(dir, 'tmp') };
  mkdirSync(work.tmp);
  return work;
}

/** `--build-arg K=V` pairs sorted by key, then `--target T` when given. */
export function argsAndTarget(req: DockerfileBuild): string[] {
  const out: string[] = [];
  for (const key of Object.keys(req.args).sort()) out.push('--build-arg', `${key}=${req.args[key]}`);
  if (req.target !== undefined) out.push('--target', req.target);
  return out;
}

/** How one step runs. */
export interface StepOptions {
  readonly runner: ProcessRunner;
  /** Complete environment of the step. */
  readonly env: Readonly<Record<string, string | undefined>>;
  /** What the step does, for failure messages: `buildah bud`. */
  readonly what: string;
  readonly cwd?: string;
  /** Exit codes that are not failures (default only 0). */
  readonly okExitCodes?: readonly number[];
}

/**
 * Run one builder step: the command line goes to the log (as `$ argv`), then the output.
 * @returns the result (exit code among `okExitCodes`).
 * @throws the signal's reason when `req.signal` aborted; NodeFailure when the step failed or
 *   cannot start, with the log's last {@link TAIL_LINES} lines and its path.
 */
export async function runStep(argv: readonly string[], req: DockerfileBuild, options: StepOptions): Promise<RunResult> {
  req.signal.throwIfAborted();
  appendFileSync(req.logFile, `$ ${argv.map(quoteArg).join(' ')}\n`);
  let r: RunResult;
  try {
    r = await options.runner.run(argv, { env: options.env, signal: req.signal, logFile: req.logFile, cwd: options.cwd });
  } catch (e) {
    throw new NodeFailure(`${options.what}: cannot run ${argv[0]}: ${(e as Error).message}`);
  }
  if (r.aborted || req.signal.aborted) {
    appendFileSync(req.logFile, `# ${options.what}: aborted\n`);
    req.signal.throwIfAborted();
  }
  if (r.exitCode !== undefined && (options.okExitCodes ?? [0]).includes(r.exitCode)) return r;
  const how = r.exitCode !== undefined ? `exit code ${r.exitCode}` : `signal ${r.signal}`;
  throw new NodeFailure(`${options.what} failed (${how}); last lines of ${req.logFile}:\n${tailOfFile(req.logFile, TAIL_LINES)}`, { type: 'exit', code: r.exitCode, signal: r.signal });
}

/** How many log lines a failure message quotes. */
export const TAIL_LINES = 20;

/** The last `lines` lines of a text file (reads at most its last 64 KiB); '' when unreadable. */
export function tailOfFile(file: string, lines: number): string {
  let fd: number | undefined;
  try {
    fd = openSync(file, 'r');
    const size = fstatSync(fd).size;
    const length = Math.min(size, 64 * 1024);
    const buf = Buffer.alloc(length);
    readSync(fd, buf, 0, length, size - length);
    const text = buf.toString('utf8').replace(/\n+$/, '');
    return text.split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** Media types of OCI and Docker image indexes (image-spec §image-index). */
const INDEX_TYPES = new Set([MEDIA_TYPE_INDEX, MEDIA_TYPE_DOCKER_LIST]);
/** Media types of OCI and Docker image manifests (image-spec §manifest). */
const MANIFEST_TYPES = new Set([MEDIA_TYPE_MANIFEST, MEDIA_TYPE_DOCKER_MANIFEST]);

/** Digests of every blob `root` reaches in `layoutDir`: itself, and for a manifest its config and layers. */
function reachableBlobs(layoutDir: string, root: Descriptor): string[] {
  const seen = new Set<string>();
  const visit = (d: Descriptor) => {
    if (seen.has(d.digest)) return;
    seen.add(d.digest);
    const isIndex = INDEX_TYPES.has(d.mediaType);
    if (!isIndex && !MANIFEST_TYPES.has(d.mediaType)) return; // a config or a layer: a leaf
    const doc = JSON.parse(readFileSync(blobPath(layoutDir, d.digest), 'utf8')) as { manifests?: Descriptor[]; config?: Descriptor; layers?: Descriptor[] };
    if (isIndex) for (const m of doc.manifests ?? []) visit(m);
    else for (const b of [...(doc.config ? [doc.config] : []), ...(doc.layers ?? [])]) visit(b);
  };
  visit(root);
  return [...seen];
}

/** Path of blob `digest` (`alg:hex`) in an OCI image layout (image-spec §image-layout "blobs"). */
function blobPath(layoutDir: string, digest: string): string {
  const m = /^([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$/.exec(digest);
  if (!m) throw new NodeFailure(`malformed digest '${digest}' in ${layoutDir}`);
  return path.join(layoutDir, 'blobs', m[1], m[2]);
}

/**
 * Repository names a Dockerfile can use in `FROM` (one path component of the distribution
 * spec's reference grammar: lowercase; `.`, `_`, `__` or dashes only between alphanumerics).
 */
const REPOSITORY_NAME = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;

/** What {@link pinBaseImage} made. */
export interface PinnedBase {
  /** Directory holding an OCI image layout with only the pinned image (blobs are symlinks). */
  readonly stageDir: string;
  /** The image's descriptor (its digest is what the build uses). */
  readonly descriptor: Descriptor;
}

/**
 * Pin the request's base image: resolve `base.tag` in `base.layoutDir` once, and stage an OCI
 * image layout in `workDir` whose `index.json` holds only that descriptor, annotated with
 * `org.opencontainers.image.ref.name = base.name`, and whose blobs are symlinks to the reachable
 * blobs of the source layout (so a concurrent re-tag of the source cannot change what is built).
 * Backends turn it into an archive their tool loads under the name `base.name`.
 * @throws NodeFailure when `base.name` is not a valid lowercase repository name, or the layout
 *   lacks the tag or a blob.
 */
export function pinBaseImage(base: NonNullable<DockerfileBuild['base']>, workDir: string): PinnedBase {
  if (!REPOSITORY_NAME.test(base.name)) {
    throw new NodeFailure(`base image name '${base.name}' cannot appear in FROM: it must be a lowercase repository name (a-z, 0-9, '.', '_', '-')`);
  }
  let descriptor: Descriptor;
  try {
    descriptor = layoutDescriptor(base.layoutDir, base.tag);
  } catch (e) {
    throw new NodeFailure((e as Error).message);
  }
  const stageDir = path.join(workDir, 'base-layout');
  for (const digest of reachableBlobs(base.layoutDir, descriptor)) {
    const source = blobPath(base.layoutDir, digest);
    if (!existsSync(source)) throw new NodeFailure(`base image layout ${base.layoutDir} lacks blob ${digest}`);
    const target = blobPath(stageDir, digest);
    mkdirSync(path.dirname(target), { recursive: true });
    symlinkSync(source, target);
  }
  writeFileSync(path.join(stageDir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  const pinned = { ...descriptor, annotations: { ...descriptor.annotations, 'org.opencontainers.image.ref.name': base.name } };
  writeFileSync(path.join(stageDir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [pinned] }));
  return { stageDir, descriptor };
}

/**
 * argv that packs the staged layout `stageDir` into the OCI archive (a tar of the layout)
 * `archive`, following the blob symlinks.
 */
export function archiveLayoutArgv(stageDir: string, archive: string): string[] {
  return ['tar', '-C', stageDir, '--dereference', '-cf', archive, 'oci-layout', 'index.json', 'blobs'];
}

/** Path of the sibling directory a result layout is first written to (same file system, so the final rename is atomic). */
export function partialLayoutPath(outLayout: string): string {
  return `${outLayout}.partial-${process.pid}-${Math.random().toString(36).slice(2, 10)}`;
}

/**
 * Move the finished layout `partial` to `outLayout`, replacing whatever was there, and make sure
 * its `index.json` lists exactly one manifest tagged `latest`.
 * @throws NodeFailure when `partial` holds no image layout, or not exactly one image.
 */
export function commitLayout(partial: string, outLayout: string, builder: string): void {
  const indexFile = path.join(partial, 'index.json');
  if (!existsSync(indexFile) || !existsSync(path.join(partial, 'oci-layout'))) {
    throw new NodeFailure(`${builder} wrote no OCI image layout to ${partial}`);
  }
  const index = JSON.parse(readFileSync(indexFile, 'utf8')) as { manifests?: Descriptor[] };
  const manifests = index.manifests ?? [];
  if (manifests.length !== 1) throw new NodeFailure(`${builder} wrote ${manifests.length} images to ${partial}, expected 1`);
  const tag = manifests[0].annotations?.['org.opencontainers.image.ref.name'];
  if (tag !== 'latest') {
    const annotations = { ...manifests[0].annotations, 'org.opencontainers.image.ref.name': 'latest' };
    writeFileSync(`${indexFile}.tmp`, JSON.stringify({ ...index, manifests: [{ ...manifests[0], annotations }] }));
    renameSync(`${indexFile}.tmp`, indexFile);
  }
  rmSync(outLayout, { recursive: true, force: true });
  renameSync(partial, outLayout);
}

/**
 * SIGKILL every process whose root file system is a container directory of the vfs storage at
 * `storageRoot`: its root mount in `/proc/PID/mountinfo` is on the storage's device, at a path
 * under `<storageRoot>/vfs/dir/` (buildah may already have deleted that directory; mountinfo
 * then adds `//deleted`). Ending the builder's process group is not enough with `--isolation
 * oci`: runc starts RUN steps in a session of their own, and a builder ended mid-step may
 * remove the container without ending its process.
 * @returns the pids signalled.
 */
export function killContainerProcesses(storageRoot: string): number[] {
  const where = mountPathOf(path.join(storageRoot, 'vfs', 'dir'));
  if (!where) return [];
  const killed: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    let mountinfo: string;
    try {
      mountinfo = readFileSync(`/proc/${entry}/mountinfo`, 'utf8');
    } catch {
      continue; // gone, or not ours to read
    }
    // Fields: id parent major:minor root mount-point …; the mount at '/' is the process's root.
    const rootMount = mountinfo.split('\n').map((l) => l.split(' ')).find((f) => f[4] === '/');
    if (!rootMount || rootMount[2] !== where.device || !unescapeMountinfo(rootMount[3]).startsWith(`${where.path}/`)) continue;
    try {
      process.kill(Number(entry), 'SIGKILL');
      killed.push(Number(entry));
    } catch {
      // already gone
    }
  }
  return killed;
}

/**
 * Where directory `dir` lies as mountinfo names it: the device (`major:minor`) of the mount that
 * holds it and the path within that file system (which differs from `dir` when the file system
 * is mounted elsewhere than at '/'). Undefined when `dir` does not exist.
 */
function mountPathOf(dir: string): { device: string; path: string } | undefined {
  let real: string;
  try {
    real = realpathSync(dir);
  } catch {
    return undefined;
  }
  let best: { fields: string[]; mountPoint: string } | undefined;
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const fields = line.split(' ');
    if (fields.length < 5) continue;
    const mountPoint = unescapeMountinfo(fields[4]);
    const inside = mountPoint === '/' || real === mountPoint || real.startsWith(`${mountPoint}/`);
    // The longest mount point holding `dir` wins; among equals, the later mount (it covers the earlier).
    if (inside && (!best || mountPoint.length >= best.mountPoint.length)) best = { fields, mountPoint };
  }
  if (!best) return undefined;
  return { device: best.fields[2], path: path.posix.join(unescapeMountinfo(best.fields[3]), path.relative(best.mountPoint, real)) };
}

/** mountinfo writes space, tab, newline and backslash in paths as octal escapes (`\040`). */
function unescapeMountinfo(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

/** Environment of a builder's processes: the options' (or this process's) plus a private TMPDIR. */
export function builderEnv(options: BuilderOptions, work: WorkDirs, extra: Record<string, string> = {}): Record<string, string | undefined> {
  return { ...(options.env ?? process.env), TMPDIR: work.tmp, ...extra };
}
