/**
 * Flattening an image's layers into one tar stream without unpacking them: the stream holds the
 * root filesystem `unpackImage` would produce (whiteouts applied as image spec v1.1 `layer.md`
 * says), for tools that read a tar, such as tar2sqfs. Nothing is written to disk, and each layer
 * is read and inflated once.
 *
 * Layers are read from the top one down. An entry of a lower layer goes into the stream only
 * when no higher layer hides it, that is, when no higher layer:
 * - has an entry at the same path (the higher one is already in the stream);
 * - deletes the path (`.wh.NAME`), or empties a directory above it (`.wh..wh..opq`);
 * - has something other than a directory at one of its parents.
 *
 * Every owner becomes root (uid and gid 0) and every time the epoch. Device nodes and fifos are
 * left out, as `unpackImage` leaves them out when privileged: container runtimes provide /dev.
 *
 * Some layers cannot be read top down, because applied in order they depend on a lower layer not
 * read yet, or on the order of entries within a layer. Then the stream fails with NotStreamable,
 * and the caller unpacks the image instead. The cases:
 * - an entry or whiteout under a path that a lower layer, or an earlier entry of its own layer,
 *   makes a symbolic link or a file (unpacked in order, it would go through the link);
 * - a directory listed after entries below it, where a lower layer has a non-directory;
 * - a hard link to a file of another layer, or to a file a higher layer replaces;
 * - a path listed twice in one layer, or both deleted and written by one layer, or made a
 *   non-directory after entries below it, or emptied (`.wh..wh..opq`) and made a non-directory.
 * Layers written by docker, buildah, kaniko and `rules/oci/layer.ts` have none of these.
 * test/flatten.test.ts checks the stream against `unpackImage` on random layer stacks.
 */
import { createReadStream } from 'node:fs';
import path from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type tar from 'tar-stream';
import { lazyRequire } from '../../engine/lazy.js';
import type { ContentStore } from '../../engine/cache/store.js';
import type { Descriptor, StoredImage } from './image.js';
import { CHUNK, entryName, feedLayer, OPAQUE, resolveImagePath, symlinkTarget, UnpackError, WHITEOUT } from './unpack.js';

const tarStream = lazyRequire<typeof tar>('tar-stream');

/** The layers cannot be flattened top down (see the module comment); unpack them in order instead. */
export class NotStreamable extends Error {}

/** One entry of the flattened stream; `path` is relative to the root (`a/b`, no leading `/`). */
export type FlatEntry =
  | { readonly path: string; readonly type: 'file'; readonly mode: number; readonly content?: string }
  | { readonly path: string; readonly type: 'directory'; readonly mode: number }
  | { readonly path: string; readonly type: 'symlink'; readonly target: string }
  | { readonly path: string; readonly type: 'link'; readonly target: string };

/** What the flattened root filesystem has at a path: a directory, a file, a symbolic link or a hard link. */
export interface FlatNode {
  readonly type: FlatEntry['type'];
  /** Permission bits (0 for links). */
  readonly mode: number;
  /** The target of a symbolic or hard link. */
  readonly target?: string;
}

/** The flattened root filesystem as far as the stream has gone, for `FlattenOptions.finish`. */
export interface FlatTree {
  /** What is at `p` (a directory when something lies below `p`); undefined when nothing is. */
  get(p: string): FlatNode | undefined;
  /** `p` with symbolic links followed as the container would (`resolveImagePath`). */
  resolve(p: string, followLast: boolean): string;
  /** Append an entry to the stream. @throws Error when something is already at its path. */
  add(entry: FlatEntry): void;
}

export interface FlattenOptions {
  /** Seconds since the epoch for every entry's time; default 0. */
  readonly epoch?: number;
  /** Entries over every layer: whatever the layers have at these paths (and below them) is hidden. */
  readonly top?: readonly FlatEntry[];
  /**
   * Sees each layer entry that goes into the stream, and may change its mode, or drop it: a
   * dropped entry still hides what lower layers have at its path, and `finish` sees it in the
   * tree (and may `add` over it).
   */
  readonly edit?: (entry: FlatEntry) => FlatEntry | 'drop';
  /** Called after the last layer, to add entries that depend on the whole tree. */
  readonly finish?: (tree: FlatTree) => void;
  readonly signal?: AbortSignal;
}

/** What is known at a path: an entry of a higher layer (maybe dropped by `edit`), or a deletion. */
interface Known extends FlatNode {
  readonly deleted?: boolean;
  readonly dropped?: boolean;
  /** A directory no entry of the stream stands for (created as a parent, or by `mkdir -p`). */
  readonly implied?: boolean;
}

const DIRECTORY: Known = { type: 'directory', mode: 0o755, implied: true };
const DELETED: Known = { type: 'file', mode: 0, deleted: true };

/** Every proper ancestor of `p` ('' for the root first): `a/b/c` → '', 'a', 'a/b'. */
function* ancestors(p: string): Generator<string> {
  yield '';
  for (let i = p.indexOf('/'); i !== -1; i = p.indexOf('/', i + 1)) yield p.slice(0, i);
}

/** The layers read so far (the higher ones): what they decide about the root filesystem. */
class Tree implements FlatTree {
  /** Paths the stream has an entry for, or that are deleted for every lower layer. */
  readonly known = new Map<string, Known>();
  /** Parents of the paths in `known`: directories, with or without an entry of their own. */
  readonly parents = new Set<string>();
  /** Directories whose content in lower layers is hidden. */
  readonly opaque = new Set<string>();
  /**
   * Directories above entries the stream leaves out (hidden, or device nodes): unpacked in order,
   * those entries' parents are made (`mkdir -p`) and stay, so the stream must have them too.
   */
  readonly madeDirs = new Set<string>();
  /**
   * For each path that some layer's entries (streamed or not, whiteouts too) went below: the
   * lowest such layer's index. Unpacked in order, those entries went through whatever the
   * layers under it had there, so no lower layer may have a non-directory at the path...
   */
  readonly usedFrom = new Map<string, number>();
  /**
   * ...unless the stream's directory entry at the path came from a layer at or below that one,
   * before anything below it in its own layer: the index of that layer, for such directories.
   */
  readonly dirFrom = new Map<string, number>();

  constructor(private readonly emit: (entry: FlatEntry) => void) {}

  /** Whether what a lower layer has at `p` is hidden by the layers read so far. */
  hides(p: string): boolean {
    if (this.known.has(p)) return true;
    for (const a of ancestors(p)) {
      const k = a === '' ? undefined : this.known.get(a);
      if ((k && (k.deleted || k.type !== 'directory')) || this.opaque.has(a)) return true;
    }
    return false;
  }

  get(p: string): FlatNode | undefined {
    const k = this.known.get(p);
    if (k && !k.deleted) return k;
    return this.parents.has(p) || p === '' ? DIRECTORY : undefined;
  }

  resolve(p: string, followLast: boolean): string {
    return resolveImagePath(p, followLast, (q) => {
      const k = this.known.get(q);
      return k && !k.deleted && k.type === 'symlink' ? k.target : undefined;
    });
  }

  record(p: string, node: Known): void {
    this.known.set(p, node);
    if (!node.deleted) for (const a of ancestors(p)) if (a !== '') this.parents.add(a);
  }

  /**
   * NotStreamable when a lower layer may not have a non-directory at `p` (`usedFrom`).
   * @param what e.g. `layer sha256:… makes 'lib' a symlink`.
   */
  checkNonDirectory(p: string, what: string): void {
    const used = this.usedFrom.get(p);
    if (used !== undefined && !((this.dirFrom.get(p) ?? Infinity) <= used)) {
      throw new NotStreamable(`${what}, and a higher layer has entries or whiteouts under it`);
    }
  }

  /**
   * Unpacked in order, an entry at `p` makes the directories above it; those that no higher layer
   * hides stay. Call for each entry the stream leaves out.
   */
  madeAbove(p: string, into: Set<string>): void {
    for (const a of ancestors(p)) {
      if (a === '') continue;
      const k = this.known.get(a);
      if (k) {
        if (k.deleted || k.type !== 'directory') return; // replaced above: nothing below it stays
        continue; // a directory already
      }
      if (this.hides(a)) return;
      into.add(a);
    }
  }

  /** Directory entries for the `madeDirs` nothing in the stream made. */
  addMadeDirs(): void {
    for (const d of this.madeDirs) {
      const k = this.known.get(d);
      if (this.parents.has(d) || (k && !k.deleted && !k.implied)) continue;
      this.record(d, { type: 'directory', mode: 0o755 });
      this.emit({ path: d, type: 'directory', mode: 0o755 });
    }
  }

  add(entry: FlatEntry): void {
    const k = this.known.get(entry.path);
    if ((k && !k.deleted && !k.dropped) || this.parents.has(entry.path)) throw new Error(`the flattened image already has '${entry.path}'`);
    this.record(entry.path, nodeOf(entry));
    this.emit(entry);
  }
}

function nodeOf(entry: FlatEntry): Known {
  return entry.type === 'symlink' || entry.type === 'link' ? { type: entry.type, mode: 0, target: entry.target } : { type: entry.type, mode: entry.mode };
}

/** What one layer puts in the stream, kept apart until the layer ends (it hides only lower layers). */
class LayerState {
  readonly entries = new Map<string, Known>();
  readonly parents = new Set<string>();
  readonly deletions: string[] = [];
  /** Directories this layer empties (`.wh..wh..opq`). */
  readonly opaque: string[] = [];
  /** Paths this layer makes non-directories, which a higher layer makes directories again: they start empty. */
  readonly replacedDirs: string[] = [];
  /** Regular files of this layer that a higher layer hides: a hard link to one cannot be streamed. */
  readonly hiddenFiles = new Set<string>();
  /** `Tree.madeDirs` of this layer. */
  readonly madeDirs = new Set<string>();
  /** Every non-directory of this layer, hidden or not: in order, entries below one go through it. */
  readonly nonDirectories = new Map<string, string>();
  /** Every directory above an entry (or whiteout) of this layer so far. */
  readonly used = new Set<string>();
  /** Every path this layer has an entry for (whiteouts aside), streamed or not. */
  readonly seen = new Set<string>();
  /** Directories of this layer listed before anything below them. */
  readonly earlyDirs = new Set<string>();

  /** @param index the layer's position in the manifest (0 for the lowest). */
  constructor(
    readonly id: string,
    readonly index: number,
  ) {}

  /**
   * Note an entry of this layer (`type`: a FlatEntry type, 'whiteout' or 'device'), streamed or
   * not, in the layer's order.
   * @throws NotStreamable when the layer lists `p` twice, or has a non-directory above it
   *   (unpacked in order, the entry would go through a symbolic link, or fail under a file), or
   *   makes `p` a non-directory after entries below it.
   */
  note(p: string, type: string): void {
    if (type !== 'whiteout' && this.seen.has(p)) throw new NotStreamable(`layer ${this.id} lists '${p}' twice`);
    for (const a of ancestors(p)) {
      const other = this.nonDirectories.get(a);
      if (other) throw new NotStreamable(`layer ${this.id} has '${p}' under '${a}', which it makes a ${other}`);
    }
    if (type === 'directory' && !this.used.has(p)) this.earlyDirs.add(p);
    else if (type === 'file' || type === 'symlink' || type === 'link') {
      // In order, it replaces what the layer put below it so far.
      if (this.used.has(p)) throw new NotStreamable(`layer ${this.id} makes '${p}' a ${type} after entries under it`);
      this.nonDirectories.set(p, type);
    }
    if (type !== 'whiteout') this.seen.add(p);
    for (const a of ancestors(p)) if (a !== '') this.used.add(a);
  }

  /** Record `p` as streamed (after `note`, which refused what cannot be). */
  place(p: string, node: Known): void {
    this.entries.set(p, node);
    for (const a of ancestors(p)) if (a !== '') this.parents.add(a);
  }

  /** Hand what this layer decided to the tree, for the layers below it. */
  mergeInto(tree: Tree): void {
    for (const p of this.deletions) {
      if (this.seen.has(p) || this.used.has(p)) throw new NotStreamable(`layer ${this.id} both deletes and writes '${p}'`);
      if (tree.hides(p)) {
        // A higher layer has a directory here: it starts empty for everything below this layer.
        if (tree.known.get(p)?.type === 'directory') tree.opaque.add(p);
      } else if (tree.parents.has(p) || tree.madeDirs.has(p)) {
        // Higher layers put entries under p without an entry for p itself: a fresh directory.
        tree.record(p, DIRECTORY);
        tree.opaque.add(p);
      } else {
        tree.record(p, DELETED);
      }
    }
    for (const p of this.opaque) {
      // Unpacked in order, the marker acts when the layer ends: through any link the layer made.
      for (const a of [...ancestors(p), p]) {
        const other = this.nonDirectories.get(a);
        if (other) throw new NotStreamable(`layer ${this.id} empties '${p}', and makes '${a}' a ${other}`);
      }
      tree.opaque.add(p);
    }
    for (const p of this.replacedDirs) tree.opaque.add(p);
    for (const [p, node] of this.entries) {
      tree.record(p, node);
      if (node.type === 'directory' && this.earlyDirs.has(p)) tree.dirFrom.set(p, this.index);
    }
    for (const p of this.parents) tree.parents.add(p);
    for (const p of this.madeDirs) tree.madeDirs.add(p);
    for (const p of this.used) tree.usedFrom.set(p, this.index); // lower than any index before
  }
}

/**
 * The root filesystem of `image` as one tar stream (see the module comment), with
 * `options.top` over the layers and `options.finish`'s entries after them.
 * @returns a readable tar stream; it fails with NotStreamable when the layers must be unpacked in
 *   order instead, UnpackError for an unsafe entry or an unreadable layer (as `unpackImage`), or
 *   the signal's reason when aborted. Destroying it stops reading the layers.
 */
export function flattenImage(store: ContentStore, image: StoredImage, options: FlattenOptions = {}): Readable {
  const pack = tarStream().pack();
  const mtime = new Date((options.epoch ?? 0) * 1000);
  /** The header for an entry (type bits in the mode: tar-stream replaces a mode of 0 with its default). */
  const header = (e: FlatEntry, size = 0): tar.Header => {
    const common = { name: e.path, uid: 0, gid: 0, uname: '', gname: '', mtime, devmajor: 0, devminor: 0 };
    if (e.type === 'symlink' || e.type === 'link') return { ...common, type: e.type, linkname: e.target, mode: 0o120777, size: 0 };
    return { ...common, type: e.type, linkname: '', mode: e.mode | (e.type === 'directory' ? 0o040000 : 0o100000), size };
  };
  const emit = (e: FlatEntry) => {
    // A file entry without its bytes would wait for them: give every file its content, maybe ''.
    if (e.type === 'file') pack.entry(header(e, Buffer.byteLength(e.content ?? '')), e.content ?? '');
    else pack.entry(header(e));
  };
  const tree = new Tree(emit);

  const produce = async () => {
    const layers = image.manifest.layers;
    const top = new LayerState('top', layers.length);
    for (const e of options.top ?? []) {
      top.note(e.path, e.type);
      top.place(e.path, nodeOf(e));
      emit(e);
    }
    top.mergeInto(tree);
    for (let i = layers.length - 1; i >= 0; i--) {
      const source = createReadStream(store.pathOf(layers[i].digest), { highWaterMark: CHUNK });
      await flattenLayer(source, layers[i], i, tree, pack, header, options);
    }
    tree.addMadeDirs();
    options.finish?.(tree);
  };
  produce().then(
    () => pack.finalize(),
    (e: Error) => pack.destroy(e),
  );
  // A Node.js stream (tar-stream's is a streamx one, which execa does not take as input); its
  // errors are the pack's, and destroying it destroys the pack.
  const out = new PassThrough({ highWaterMark: CHUNK });
  pipeline(pack, out).catch(() => undefined);
  return out;
}

/** Stream what `layer` adds to the layers above it (recorded in `tree`), then record it there. */
async function flattenLayer(
  source: Readable,
  layer: Descriptor,
  index: number,
  tree: Tree,
  pack: tar.Pack,
  header: (e: FlatEntry, size?: number) => tar.Header,
  options: FlattenOptions,
): Promise<void> {
  const id = layer.digest;
  const extract = tarStream().extract();
  const input = feedLayer(source, layer, extract);
  const state = new LayerState(id, index);

  const read = async () => {
    for await (const entry of extract) {
      options.signal?.throwIfAborted();
      if (pack.destroyed) throw new Error('the flattened stream was closed');
      const h = entry.header;
      const name = entryName(h.name, id);
      const base = path.posix.basename(name);
      const dir = name.includes('/') ? path.posix.dirname(name) : '';
      let node: Known | undefined;
      if (!name) {
        // the root's own entry: its mode is the converter's to set
      } else if (base === OPAQUE) {
        state.note(name, 'whiteout');
        state.opaque.push(dir);
      } else if (base.startsWith(WHITEOUT)) {
        state.note(name, 'whiteout');
        state.deletions.push(dir ? `${dir}/${base.slice(WHITEOUT.length)}` : base.slice(WHITEOUT.length));
      } else if (h.type === 'directory') {
        node = { type: 'directory', mode: h.mode ?? 0o755 };
      } else if (h.type === 'file' || h.type === 'contiguous-file') {
        node = { type: 'file', mode: h.mode ?? 0o644 };
      } else if (h.type === 'symlink') {
        node = { type: 'symlink', mode: 0, target: symlinkTarget(name, h.linkname, id) };
      } else if (h.type === 'link') {
        node = { type: 'link', mode: 0, target: entryName(h.linkname ?? '', id) };
      } else {
        // A device node, a fifo, or a type tar-stream does not know: left out, as unpackImage
        // does (after making its parents).
        state.note(name, 'device');
        tree.madeAbove(name, state.madeDirs);
      }

      if (!node) {
        entry.resume();
        continue;
      }
      state.note(name, node.type);
      if (node.type !== 'directory') tree.checkNonDirectory(name, `layer ${id} makes '${name}' a ${node.type}`);
      if (tree.hides(name)) {
        tree.madeAbove(name, state.madeDirs);
        if (node.type === 'file') state.hiddenFiles.add(name);
        // Something other than a directory here removed what lower layers had below it, before a
        // higher layer made the directory again.
        if (node.type !== 'directory' && tree.known.get(name)?.type === 'directory') state.replacedDirs.push(name);
        entry.resume();
        continue;
      }
      if (node.type === 'link') {
        const target = state.entries.get(node.target as string);
        if (!target || target.type !== 'file' || target.dropped) {
          const why = state.hiddenFiles.has(node.target as string) ? 'a file a higher layer replaces' : 'nothing earlier in the same layer';
          throw new NotStreamable(`layer ${id}: hard link '${name}' -> '${node.target}' points to ${why}`);
        }
      }
      let e: FlatEntry =
        node.type === 'symlink' || node.type === 'link'
          ? { path: name, type: node.type, target: node.target as string }
          : { path: name, type: node.type as 'file' | 'directory', mode: node.mode & 0o7777 };
      const edited = options.edit ? options.edit(e) : e;
      if (edited === 'drop') {
        state.place(name, { ...node, dropped: true });
        entry.resume();
        continue;
      }
      e = edited;
      state.place(name, nodeOf(e));
      if (e.type === 'file') {
        await pipeline(entry, pack.entry(header(e, h.size ?? 0)));
      } else {
        pack.entry(header(e));
        entry.resume();
      }
    }
  };

  try {
    await Promise.all([input, read()]);
  } catch (e) {
    extract.destroy();
    if (options.signal?.aborted || e instanceof NotStreamable || e instanceof UnpackError) throw e;
    throw new UnpackError(`layer ${id}: ${(e as Error).message}`);
  }
  state.mergeInto(tree);
}
