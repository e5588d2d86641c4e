/**
 * OCI image → SIF, the way `apptainer build IMAGE.sif docker://…` converts an image
 * (`internal/pkg/build/sources/conveyorPacker_oci.go`, `base_environment.go`,
 * `internal/pkg/build/assemblers/sif.go`), but reproducibly:
 *
 * 1. flatten the layers into one tar stream (whiteouts applied, `rules/oci/flatten.ts`), with
 *    what apptainer's runtime looks for inside the root filesystem (`runtimeFiles`):
 *    `/.singularity.d/` (env scripts carrying ENV, a runscript running ENTRYPOINT + CMD,
 *    labels.json, actions/, libs/), mount points and the compatibility symbolic links;
 * 2. pipe it into `tar2sqfs` (squashfs-tools-ng), which writes a temp file beside `outFile`:
 *    gzip (the compressor every apptainer installation reads), owners root, every time the
 *    epoch, no xattrs. Inflating the layers overlaps compressing, and nothing is unpacked to disk.
 *    The same image and epoch give the same bytes, whatever the processor count (measured);
 * 3. make that file the SIF (`squashfsToSif`): compute the content id and the file's digests
 *    while the squashfs is still in the page cache, move it to the primary partition's offset
 *    (`fallocate --insert-range` moves no data on ext4 and XFS; elsewhere, a copy), write the
 *    header, descriptor table, definition file and `oci-config.json` in front; rename the file
 *    to `outFile`.
 *
 * Layers that cannot be flattened top down (`NotStreamable`: rare, never written by docker,
 * buildah or kaniko) are unpacked into `scratchDir/rootfs` instead; `mksquashfs` (the same
 * settings) compresses that directory straight into the SIF's partition (`-offset`), and
 * `completeSif` writes the rest in front of it. The result is as reproducible, but its bytes
 * differ from what tar2sqfs would write.
 *
 * (Why hash before moving: `fallocate --insert-range` drops the file from the page cache, and
 * copying 458 MB costs about 1.2 s on these machines; hashing after either took 2.4–2.7 s.)
 *
 * Ownership is not kept: every file in the SIF belongs to root. (apptainer, building as root,
 * keeps the layers' owners; images whose files belong to other users differ there.)
 */
import { appendFileSync, chmodSync, createReadStream, createWriteStream, lstatSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { withTempFile } from '../../engine/atomic.js';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { ProcessRunner, RunResult } from '../../engine/process.js';
import type { ContentStore } from '../../engine/cache/store.js';
import { flattenImage, NotStreamable, type FlatEntry, type FlattenOptions } from '../oci/flatten.js';
import type { ImageConfig, StoredImage } from '../oci/image.js';
import { CHUNK, makeParents, resolveInRoot, unpackImage, UnpackError } from '../oci/unpack.js';
import { completeSif, sifPartitionOffset, squashfsToSif } from './sif.js';

/** Thrown when a conversion step fails (tar2sqfs or mksquashfs missing or failing). */
export class ConvertError extends Error {}

/** What `imageToSif` converts, where it works, and how it starts tools. */
export interface ImageToSifOptions {
  /** The content-addressed store holding the image's layers. */
  readonly store: ContentStore;
  /** The image (its layers in order, and its config: architecture, Env, Entrypoint, Cmd, Labels). */
  readonly image: StoredImage;
  /** A directory the conversion may fill: layers that cannot be streamed are unpacked there (and removed). */
  readonly scratchDir: string;
  /** Where the SIF goes (atomically: a temp file beside it is filled, then renamed). */
  readonly outFile: string;
  /** Seconds since the epoch for every time in the squashfs and the SIF (SOURCE_DATE_EPOCH); default 0. */
  readonly epoch?: number;
  /**
   * Compressor threads for tar2sqfs (`--num-jobs`); default `os.availableParallelism()`. The
   * squashfs is the same bytes for any count: tar2sqfs writes the compressed blocks in order.
   */
  readonly jobs?: number;
  /** Starts `tar2sqfs`, `fallocate` and (for layers that cannot be streamed) `mksquashfs`. */
  readonly runner: ProcessRunner;
  /** Aborting stops the conversion (and mksquashfs) and cleans up. */
  readonly signal?: AbortSignal;
  /** Absolute path of the node's log; the tools' output, and why a fallback was taken, are appended there. */
  readonly logFile?: string;
}

/** A SIF written by `imageToSif`. */
export interface SifResult {
  /** Hex SHA-256 of the SIF file. */
  readonly sha256: string;
  /** Hex MD5 of the SIF file. */
  readonly md5: string;
  /** Bytes. */
  readonly size: number;
}

/**
 * Convert `image` into a SIF at `outFile` (see the module comment for the steps).
 * @returns the SIF's SHA-256, MD5 (hex) and size in bytes.
 * @throws SifError for an architecture SIF has no code for; UnpackError for an unsafe or
 *   unreadable layer; ConvertError when tar2sqfs or mksquashfs is missing or fails (the log has
 *   its output); the signal's reason when aborted. `outFile` is never left half-written, and the
 *   scratch root filesystem and the temp file are removed whatever happens.
 */
export async function imageToSif(options: ImageToSifOptions): Promise<SifResult> {
  const { image, scratchDir, signal } = options;
  const epoch = options.epoch ?? 0;
  if (!Number.isSafeInteger(epoch) || epoch < 0) throw new ConvertError(`epoch must be a whole number of seconds ≥ 0, not ${epoch}`);
  const rootfs = path.join(scratchDir, 'rootfs');
  const contents = {
    arch: image.config.architecture,
    epoch,
    definition: definitionFile(image),
    json: { 'oci-config.json': JSON.stringify(image.config.config ?? {}) },
  };
  const offset = sifPartitionOffset(contents); // fails before the slow part for an unknown architecture
  const clean = () => rmSync(rootfs, { recursive: true, force: true });
  clean(); // a root filesystem left by an interrupted run must not leak into this one
  try {
    try {
      return await withTempFile(options.outFile, async (tmp) => {
        await streamSquashfs(tmp, epoch, options);
        const written = await squashfsToSif(tmp, contents, (at) => makeRoom(tmp, at, options), signal);
        return { sha256: written.sha256, md5: written.md5, size: written.size };
      });
    } catch (e) {
      if (!(e instanceof NotStreamable)) throw e;
      if (options.logFile) appendFileSync(options.logFile, `graph: ${e.message}: unpacking the layers in order instead\n`);
    }
    await unpackImage(options.store, image, rootfs, { signal });
    addRuntimeFiles(rootfs, image.config);
    return await withTempFile(options.outFile, async (tmp) => {
      await makeSquashfs(rootfs, tmp, offset, epoch, options);
      // The root filesystem goes while the SIF is completed (the removal runs on libuv's threads).
      const removed = rm(rootfs, { recursive: true, force: true });
      try {
        const written = await completeSif(tmp, contents, signal);
        return { sha256: written.sha256, md5: written.md5, size: written.size };
      } finally {
        await removed.catch(() => undefined); // clean() below reports nothing either
      }
    });
  } finally {
    clean();
  }
}

/**
 * The tar2sqfs arguments (before the output file) for a reproducible gzip squashfs, as
 * `mksquashfsArgs`, compressing on `jobs` threads (as mksquashfs does on every processor).
 */
export function tar2sqfsArgs(epoch: number, jobs: number = availableParallelism()): string[] {
  return ['--force', '--quiet', '--no-skip', '--compressor', 'gzip', '--no-xattr', '--no-keep-time', '--num-jobs', String(jobs), '--defaults', `mode=0755,mtime=${epoch}`];
}

/** The mksquashfs arguments (after source and destination) for a reproducible gzip squashfs. */
export function mksquashfsArgs(epoch: number): string[] {
  return ['-noappend', '-comp', 'gzip', '-all-root', '-root-mode', '755', '-no-xattrs', '-mkfs-time', String(epoch), '-all-time', String(epoch), '-quiet', '-no-progress'];
}

/** Why a tool failed, for an error message. */
function failed(tool: string, result: RunResult, logFile: string | undefined): ConvertError {
  const how = result.exitCode === undefined ? `was ended by ${result.signal ?? 'a signal'}` : `exited with ${result.exitCode}`;
  return new ConvertError(`${tool} ${how} while building the SIF's root filesystem${logFile ? `; its output is in ${logFile}` : ''}`);
}

/**
 * The image's layers, flattened with the runtime files, piped into `tar2sqfs`, which writes `out`.
 * @throws NotStreamable (nothing useful in `out`), UnpackError, ConvertError, the signal's reason.
 */
async function streamSquashfs(out: string, epoch: number, options: ImageToSifOptions): Promise<void> {
  const { signal } = options;
  const stop = new AbortController();
  const flat = flattenImage(options.store, options.image, { epoch, signal, ...runtimeOverlay(options.image.config) });
  let failure: Error | undefined;
  flat.on('error', (e: Error) => {
    failure ??= e;
    stop.abort(e); // ends tar2sqfs: its input is incomplete
  });
  // tar2sqfs takes the superblock's time from SOURCE_DATE_EPOCH (0 when unset).
  const env = { ...process.env, SOURCE_DATE_EPOCH: String(epoch) };
  let result: RunResult;
  try {
    result = await options.runner.run(['tar2sqfs', ...tar2sqfsArgs(epoch, options.jobs), out], {
      input: flat,
      signal: signal ? AbortSignal.any([signal, stop.signal]) : stop.signal,
      logFile: options.logFile,
      env,
    });
  } catch (e) {
    throw new ConvertError(`cannot run tar2sqfs (Debian package squashfs-tools-ng): ${(e as Error).message}`);
  } finally {
    flat.destroy(); // stops reading the layers if tar2sqfs ended early
  }
  signal?.throwIfAborted();
  // The stream's own failure first (tar2sqfs was stopped for it), then tar2sqfs's (its input
  // then fails too, with a broken pipe, which says less).
  if (failure instanceof NotStreamable || failure instanceof UnpackError) throw failure;
  if (result.exitCode !== 0) throw failed('tar2sqfs', result, options.logFile);
  if (failure) throw failure;
}

/**
 * Move the squashfs at the start of `file` `offset` bytes further in (a multiple of 4096), zeros
 * before it: `fallocate --insert-range` shifts the file's extents without moving data (ext4,
 * XFS); on a file system that cannot (tmpfs, btrfs), a copy into a new file renamed over it.
 */
async function makeRoom(file: string, offset: number, options: ImageToSifOptions): Promise<void> {
  const argv = ['fallocate', '--insert-range', '--offset', '0', '--length', String(offset), file];
  const inserted = await options.runner.run(argv, { signal: options.signal, logFile: options.logFile }).catch(() => undefined);
  options.signal?.throwIfAborted();
  if (inserted?.exitCode === 0) return;
  if (options.logFile) appendFileSync(options.logFile, `graph: fallocate --insert-range is not available here: copying the squashfs to offset ${offset}\n`);
  await withTempFile(file, async (shifted) => {
    const sink = createWriteStream(shifted, { start: offset });
    try {
      await pipeline(createReadStream(file, { highWaterMark: CHUNK }), sink, { signal: options.signal });
    } finally {
      // An abort can fail the pipeline before `shifted` is open: it must not be created after its removal.
      if (!sink.closed) await new Promise<void>((resolve) => sink.once('close', () => resolve()));
    }
  });
}

/** `mksquashfs` `rootfs` into `out`, the squashfs starting `offset` bytes into the file (zeros before it). */
async function makeSquashfs(rootfs: string, out: string, offset: number, epoch: number, options: ImageToSifOptions): Promise<void> {
  // mksquashfs refuses SOURCE_DATE_EPOCH together with -mkfs-time/-all-time ("can't be used at the
  // same time"), and the flags already carry it.
  const env: Record<string, string | undefined> = { ...process.env };
  delete env.SOURCE_DATE_EPOCH;
  let result;
  try {
    result = await options.runner.run(['mksquashfs', rootfs, out, ...mksquashfsArgs(epoch), '-offset', String(offset)], { signal: options.signal, logFile: options.logFile, env });
  } catch (e) {
    throw new ConvertError(`cannot run mksquashfs (Debian package squashfs-tools): ${(e as Error).message}`);
  }
  options.signal?.throwIfAborted();
  if (result.exitCode !== 0) throw failed('mksquashfs', result, options.logFile);
}

/** The definition file recorded in the SIF (apptainer records the recipe it built from). */
function definitionFile(image: StoredImage): string {
  return [
    '# Converted by graph from an OCI image (this records the source; it is not a recipe):',
    `# manifest: ${image.manifestDescriptor.digest}`,
    `# config: ${image.manifest.config.digest}`,
    `# architecture: ${image.config.architecture}`,
    '',
  ].join('\n');
}

/** One thing `addRuntimeFiles` places in a root filesystem; `path` is relative to the root. */
export type RuntimeFile =
  /** Written over whatever is there (apptainer's OCI build overwrites its own files). */
  | { readonly kind: 'file'; readonly path: string; readonly mode: number; readonly content: string }
  /** Created empty when missing; an existing regular file keeps its content and gets `mode`. */
  | { readonly kind: 'mountpoint-file'; readonly path: string; readonly mode: number }
  /** Created when missing (anything already there, a symbolic link too, is left alone). */
  | { readonly kind: 'dir'; readonly path: string; readonly mode: number }
  /** Created when missing or when a symbolic link points elsewhere; other files are left alone. */
  | { readonly kind: 'symlink'; readonly path: string; readonly target: string };

const SOURCE_ENV = `for script in /.singularity.d/env/*.sh; do
    if [ -f "$script" ]; then
        . "$script"
    fi
done
`;

/**
 * What apptainer expects inside a root filesystem built from an OCI image, for `config`
 * (`base_environment.go` `makeBaseEnv`, `conveyorPacker_oci.go` `insertRunScript`, `insertEnv`,
 * `insertOCILabels`), in the order it is applied:
 *
 * - directories `/.singularity.d/{libs,actions,env}` and the mount points `/dev /proc /root
 *   /var/tmp /tmp /etc /sys /home`; empty `/etc/hosts` and `/etc/resolv.conf` when missing;
 * - `env/10-docker2singularity.sh` exporting ENV, `env/90-environment.sh` (the `/environment`
 *   target), `env/99-base.sh` (LD_LIBRARY_PATH ends with `/.singularity.d/libs`; apptainer injects
 *   `--env` variables right after sourcing it) and `env/99-runtimevars.sh` (`--env PREPEND_PATH…`);
 * - `runscript` (ENTRYPOINT + CMD), `startscript`, `actions/{exec,run,shell,start,test}` (used by
 *   runtimes that do not bring their own), `labels.json` (the image's labels, tab-indented, keys
 *   sorted as Go writes a map);
 * - the links `/singularity`, `/.run`, `/.exec`, `/.test`, `/.shell`, `/environment`.
 */
export function runtimeFiles(config: ImageConfig): RuntimeFile[] {
  const c = config.config ?? {};
  const dirs: RuntimeFile[] = [
    '.singularity.d/libs',
    '.singularity.d/actions',
    '.singularity.d/env',
    'dev',
    'proc',
    'root',
    'var/tmp',
    'tmp',
    'etc',
    'sys',
    'home',
  ].map((p) => ({ kind: 'dir', path: p, mode: p === 'tmp' || p === 'var/tmp' ? 0o1777 : p === 'root' ? 0o700 : 0o755 }));
  const script = (p: string, content: string): RuntimeFile => ({ kind: 'file', path: p, mode: 0o755, content });
  return [
    ...dirs,
    { kind: 'mountpoint-file', path: 'etc/hosts', mode: 0o644 },
    { kind: 'mountpoint-file', path: 'etc/resolv.conf', mode: 0o644 },
    script('.singularity.d/env/10-docker2singularity.sh', envScript(c.Env ?? [])),
    script('.singularity.d/env/90-environment.sh', '#!/bin/sh\n# Environment settings added to the image after its conversion go here.\n'),
    script(
      '.singularity.d/env/99-base.sh',
      `#!/bin/sh
# Libraries apptainer binds into /.singularity.d/libs (GPU drivers with --nv) are searched last.
LD_LIBRARY_PATH="\${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/.singularity.d/libs"
PS1="\${PS1:-Apptainer> }"
export LD_LIBRARY_PATH PS1
`,
    ),
    script(
      '.singularity.d/env/99-runtimevars.sh',
      `#!/bin/sh
# PATH changes asked for when the container starts (apptainer --env PREPEND_PATH=, APPEND_PATH=, PATH=).
if [ -n "\${SING_USER_DEFINED_PREPEND_PATH:-}" ]; then
    PATH="$SING_USER_DEFINED_PREPEND_PATH:$PATH"
fi
if [ -n "\${SING_USER_DEFINED_APPEND_PATH:-}" ]; then
    PATH="$PATH:$SING_USER_DEFINED_APPEND_PATH"
fi
if [ -n "\${SING_USER_DEFINED_PATH:-}" ]; then
    PATH="$SING_USER_DEFINED_PATH"
fi
unset SING_USER_DEFINED_PREPEND_PATH SING_USER_DEFINED_APPEND_PATH SING_USER_DEFINED_PATH
export PATH
`,
    ),
    script('.singularity.d/runscript', runscript(c.Entrypoint ?? [], c.Cmd ?? [])),
    script('.singularity.d/startscript', '#!/bin/sh\n# `apptainer instance start` runs this; OCI images start no service.\n'),
    script('.singularity.d/actions/exec', `#!/bin/sh\n${SOURCE_ENV}exec "$@"\n`),
    script(
      '.singularity.d/actions/run',
      `#!/bin/sh
${SOURCE_ENV}if [ -x /.singularity.d/runscript ]; then
    exec /.singularity.d/runscript "$@"
fi
echo "No runscript in this image; running /bin/sh" >&2
exec /bin/sh "$@"
`,
    ),
    script(
      '.singularity.d/actions/shell',
      `#!/bin/sh
${SOURCE_ENV}if [ -n "\${SINGULARITY_SHELL:-}" ] && [ -x "$SINGULARITY_SHELL" ]; then
    exec "$SINGULARITY_SHELL" "$@"
elif [ -x /bin/bash ]; then
    SHELL=/bin/bash
    export SHELL
    exec /bin/bash --norc "$@"
elif [ -x /bin/sh ]; then
    SHELL=/bin/sh
    export SHELL
    exec /bin/sh "$@"
fi
echo "This image has no /bin/sh" >&2
exit 1
`,
    ),
    script(
      '.singularity.d/actions/start',
      `#!/bin/sh
# Older runtimes wait for this signal before the instance counts as started.
kill -CONT 1
${SOURCE_ENV}if [ -x /.singularity.d/startscript ]; then
    exec /.singularity.d/startscript
fi
`,
    ),
    script(
      '.singularity.d/actions/test',
      `#!/bin/sh
${SOURCE_ENV}if [ -x /.singularity.d/test ]; then
    exec /.singularity.d/test "$@"
fi
echo "This image defines no test" >&2
exit 0
`,
    ),
    { kind: 'file', path: '.singularity.d/labels.json', mode: 0o644, content: labelsJson(c.Labels ?? {}) },
    { kind: 'symlink', path: 'singularity', target: '.singularity.d/runscript' },
    { kind: 'symlink', path: '.run', target: '.singularity.d/actions/run' },
    { kind: 'symlink', path: '.exec', target: '.singularity.d/actions/exec' },
    { kind: 'symlink', path: '.test', target: '.singularity.d/actions/test' },
    { kind: 'symlink', path: '.shell', target: '.singularity.d/actions/shell' },
    { kind: 'symlink', path: 'environment', target: '.singularity.d/env/90-environment.sh' },
  ];
}

/**
 * Place `runtimeFiles(config)` in the root filesystem at `root`. Every path is resolved inside
 * `root` as the container sees it (symbolic links in the image never lead outside `root`).
 * @throws the fs error when something cannot be created (e.g. a regular file where a directory must be).
 */
export function addRuntimeFiles(root: string, config: ImageConfig): void {
  chmodSync(root, 0o755);
  for (const f of runtimeFiles(config)) {
    const parent = resolveInRoot(root, path.posix.dirname(f.path), true);
    const target = path.join(parent, path.posix.basename(f.path));
    const existing = lstatOrUndefined(target);
    if (f.kind === 'dir') {
      if (existing) continue;
      makeParents(target);
      chmodSync(target, f.mode);
    } else if (f.kind === 'symlink') {
      if (existing && !existing.isSymbolicLink()) continue;
      rmSync(target, { force: true });
      symlinkSync(f.target, target);
    } else if (f.kind === 'mountpoint-file') {
      const resolved = resolveInRoot(root, f.path, true); // a link to a file elsewhere in the image
      const st = lstatOrUndefined(resolved);
      if (st?.isFile()) chmodSync(resolved, f.mode); // bind mounts need it readable
      else if (!st) {
        makeParents(path.dirname(resolved));
        writeFileSync(resolved, '', { mode: f.mode });
        chmodSync(resolved, f.mode);
      }
    } else {
      if (existing) rmSync(target, { recursive: true, force: true });
      makeParents(parent);
      writeFileSync(target, f.content, { mode: f.mode });
      chmodSync(target, f.mode);
    }
  }
}

/**
 * `runtimeFiles(config)` as `flattenImage` options, giving the tree `addRuntimeFiles` gives when
 * the image is unpacked: its files over every layer (`top`); mount-point files the image has
 * made readable, and its symbolic links where the image has links (`edit`); directories,
 * mount-point files and links where the image has nothing (`finish`).
 * @throws (from `finish`) NotStreamable when a mount-point file must change its mode behind a
 *   link the stream has passed.
 */
export function runtimeOverlay(config: ImageConfig): Pick<FlattenOptions, 'top' | 'edit' | 'finish'> {
  const files = runtimeFiles(config);
  const byPath = new Map(files.map((f) => [f.path, f]));
  return {
    top: files.flatMap((f): FlatEntry[] => (f.kind === 'file' ? [{ path: f.path, type: 'file', mode: f.mode, content: f.content }] : [])),
    edit(entry) {
      const f = byPath.get(entry.path);
      if (f?.kind === 'symlink' && entry.type === 'symlink') return 'drop'; // replaced in finish
      if (f?.kind === 'mountpoint-file' && entry.type === 'file') return { ...entry, mode: f.mode };
      return entry;
    },
    finish(tree) {
      for (const f of files) {
        if (f.kind === 'file') continue;
        const parent = tree.resolve(path.posix.dirname(f.path), true);
        const target = parent ? `${parent}/${path.posix.basename(f.path)}` : path.posix.basename(f.path);
        const existing = tree.get(target);
        if (f.kind === 'dir') {
          if (!existing) tree.add({ path: target, type: 'directory', mode: f.mode });
        } else if (f.kind === 'symlink') {
          if (!existing || existing.type === 'symlink') tree.add({ path: target, type: 'symlink', target: f.target });
        } else {
          const resolved = tree.resolve(f.path, true);
          const file = tree.get(resolved);
          if (!file) tree.add({ path: resolved, type: 'file', mode: f.mode, content: '' });
          else if (file.type === 'link' || (file.type === 'file' && file.mode !== f.mode)) {
            throw new NotStreamable(`/${f.path} leads to /${resolved}, whose mode must become ${f.mode.toString(8)} after it was streamed`);
          }
        }
      }
    },
  };
}

function lstatOrUndefined(p: string) {
  try {
    return lstatSync(p);
  } catch {
    return undefined;
  }
}

const VARIABLE = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Inside double quotes: escape `\`, `"`, `` ` `` and `$` (apptainer's `shell.Escape`). */
function doubleQuoted(s: string): string {
  return s.replace(/[\\"`$]/g, (c) => `\\${c}`);
}

/** A single-quoted shell word. */
function singleQuoted(s: string): string {
  return `'${s.replace(/'/g, `'"'"'`)}'`;
}

/**
 * `env/10-docker2singularity.sh`: the image's ENV as apptainer's OCI conversion exports it. PATH
 * is set; any other variable keeps a value it already has when the container starts; entries
 * whose name is not a shell variable name are left out.
 */
export function envScript(env: readonly string[]): string {
  const lines = ['#!/bin/sh', '# ENV of the OCI image.'];
  for (const entry of env) {
    const eq = entry.indexOf('=');
    const name = eq === -1 ? entry : entry.slice(0, eq);
    if (!VARIABLE.test(name)) continue;
    if (eq === -1) lines.push(`export ${name}="\${${name}:-}"`);
    else if (name === 'PATH') lines.push(`export PATH="${doubleQuoted(entry.slice(eq + 1))}"`);
    else lines.push(`export ${name}="\${${name}:-"${doubleQuoted(entry.slice(eq + 1))}"}"`);
  }
  return `${lines.join('\n')}\n`;
}

/**
 * `/.singularity.d/runscript`: ENTRYPOINT followed by CMD, or by the arguments of
 * `apptainer run IMAGE ARGS…`, which replace CMD. ENTRYPOINT and CMD words are used as the image
 * config has them; as apptainer's OCI conversion does, the arguments given pass once through the
 * shell inside the container (so `'$HOME'` expands there), except with `--no-eval`
 * (APPTAINER_NO_EVAL / SINGULARITY_NO_EVAL set), when they too are used exactly.
 */
export function runscript(entrypoint: readonly string[], cmd: readonly string[]): string {
  const words = (args: readonly string[]) => args.map((a) => `"${doubleQuoted(a)}"`).join(' ');
  const exact = (args: readonly string[]) => args.map(singleQuoted).join(' ');
  return `#!/bin/sh
# Runs the image's ENTRYPOINT followed by its CMD, or by the arguments given, which replace CMD.
OCI_ENTRYPOINT=${singleQuoted(words(entrypoint))}
OCI_CMD=${singleQuoted(words(cmd))}

if [ -n "\${APPTAINER_NO_EVAL:-}\${SINGULARITY_NO_EVAL:-}" ]; then
    # --no-eval: every word exactly as given.
${cmd.length ? `    if [ $# -eq 0 ]; then\n        set -- ${exact(cmd)}\n    fi\n` : ''}${entrypoint.length ? `    set -- ${exact(entrypoint)} "$@"\n` : ''}${cmd.length || entrypoint.length ? '' : '    :\n'}else
    # As apptainer does by default: the arguments given pass through the shell once.
    CMDLINE_ARGS=
    for arg in "$@"; do
        CMDLINE_ARGS="$CMDLINE_ARGS \\"$arg\\""
    done
    if [ $# -eq 0 ]; then
        CMDLINE_ARGS=$OCI_CMD
    fi
    eval "set -- $OCI_ENTRYPOINT $CMDLINE_ARGS"
fi
if [ $# -eq 0 ]; then
    echo "This image has no ENTRYPOINT or CMD; give the command to run." >&2
    exit 1
fi
exec "$@"
`;
}

/** `labels.json`: the labels, tab-indented with keys sorted, as apptainer writes them (Go `json.MarshalIndent`). */
export function labelsJson(labels: Readonly<Record<string, string>>): string {
  const sorted = Object.fromEntries(Object.keys(labels).sort().map((k) => [k, labels[k]]));
  return JSON.stringify(sorted, null, '\t');
}
