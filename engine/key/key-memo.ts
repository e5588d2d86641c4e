/**
 * The key memo: a plan's action keys, kept in `.graph/keys.bin` and used again by the next plan of
 * the same compiled graph when nothing else its key records hold changed, so a no-change plan
 * does not write out and hash a canonical record per node.
 *
 * A node's record is its rule and version, its declaration and the other fields of its node (all
 * fixed by the compiled graph's key, engine/compile/snapshot.ts), its input files' fingerprints,
 * its environment variables' values, its tools' identities, and its dependencies' keys. The memo
 * is stored under a digest (`InputsDigest`) of the selected nodes' positions and of every part of
 * the second kind (`Keyer.parts`); dependencies' keys follow, node by node in topological order,
 * from the rest being equal. Any difference (an edited input, another selection, a new tool
 * version, a changed variable) is a miss: keys are computed as without a memo, and stored again.
 *
 * The file is one JSON header line (`{"format", "graph", "inputs", "sum"}`, `sum` the SHA-256 of
 * the body) and the keys' 64 hex digits each, one after the other, in the selection's order. A file that does not match is
 * a miss; one that cannot be written is left out (the memo only saves time).
 */
import { createHash, hash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { writeFileAtomic } from '../atomic.js';

const FORMAT = 'graph-keys/1';

/** The memo's name under `.graph/`. */
export const KEYS_FILE = 'keys.bin';

/** Builds the digest a memo is stored under from each selected node's parts (module comment). */
export class InputsDigest {
  private readonly texts = new Map<string, number>();
  private readonly hash = createHash('sha256');
  private readonly refs: number[] = [];

  /** Number of a distinct text; a new one goes into the digest. */
  private ref(text: string): number {
    let n = this.texts.get(text);
    if (n === undefined) {
      this.texts.set(text, (n = this.texts.size));
      this.hash.update(`${text.length}\0${text}\0`);
    }
    return n;
  }

  /**
   * Add the next selected node.
   * @param position its index in the graph's topological order.
   * @param files, env, tool its record's parts, as `Keyer.parts` writes them.
   */
  add(position: number, files: string, env: string, tool: string): void {
    this.refs.push(position, this.ref(files), this.ref(env), this.ref(tool));
  }

  digest(): string {
    this.hash.update(new Uint8Array(Uint32Array.from(this.refs).buffer));
    return this.hash.digest('hex');
  }
}

/** The memo file of one compiled graph (module comment). */
export class KeyMemo {
  /**
   * @param file absolute path of the memo (`.graph/keys.bin`).
   * @param graph the compiled graph's key (`BuildGraph.key`).
   */
  constructor(
    private readonly file: string,
    private readonly graph: string,
  ) {}

  /** The `count` keys stored under `inputs`, in the selection's order; undefined on any mismatch. */
  read(inputs: string, count: number): string[] | undefined {
    let bytes: Buffer;
    try {
      bytes = readFileSync(this.file);
    } catch {
      return undefined;
    }
    const nl = bytes.indexOf(10);
    if (nl < 0) return undefined;
    try {
      const header = JSON.parse(bytes.subarray(0, nl).toString('utf8')) as { format?: string; graph?: string; inputs?: string; sum?: string };
      const body = bytes.subarray(nl + 1);
      if (header.format !== FORMAT || header.graph !== this.graph || header.inputs !== inputs || body.length !== count * 64) return undefined;
      if (header.sum !== hash('sha256', body, 'hex')) return undefined;
      const text = body.toString('latin1');
      const keys = new Array<string>(count);
      for (let i = 0; i < count; i++) keys[i] = text.slice(i * 64, i * 64 + 64);
      return keys;
    } catch {
      return undefined;
    }
  }

  /** Store `keys` (64 hex digits each, the selection's order) under `inputs`. Never throws. */
  write(inputs: string, keys: readonly string[]): void {
    try {
      const body = Buffer.from(keys.join(''), 'latin1');
      if (body.length !== keys.length * 64 || !/^[0-9a-f]*$/.test(body.toString('latin1'))) return;
      const header = JSON.stringify({ format: FORMAT, graph: this.graph, inputs, sum: hash('sha256', body, 'hex') });
      writeFileAtomic(this.file, Buffer.concat([Buffer.from(`${header}\n`), body]));
    } catch {
      // only time lost (module comment)
    }
  }
}
