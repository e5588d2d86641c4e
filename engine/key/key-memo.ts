/**
 * The key memo: the action keys of the last plans of a compiled graph, kept in `.graph/keys.bin`,
 * node by node, with what each key's record held besides the graph's own nodes. A later plan of
 * the same compiled graph takes a node's key from the memo when none of that changed, so a plan
 * writes out and hashes a canonical record only for the nodes whose inputs changed (none in a
 * no-change plan, a model's tests and what depends on them after one model's files changed).
 *
 * A node's record is its rule and version, its declaration and the other fields of its node (all
 * fixed by the compiled graph's key, engine/compile/snapshot.ts), then three parts that come from
 * outside the graph (`Keyer.parts`: its input files' fingerprints, its environment variables'
 * values, its tools' identities) and its dependencies' keys. A node's key is remembered with its
 * three parts; a plan uses it when the node's three parts are the same texts as then and every
 * dependency's key is its remembered one (dependencies come first in topological order). That
 * holds because every key in the file was made with its dependencies' keys as the file holds them:
 * a plan writes the nodes it planned, and keeps the earlier keys of nodes it did not select only
 * where none of their dependencies was keyed again (`write`'s `keep`).
 *
 * The file is one JSON header line (`{"format", "graph", "count", "texts", "sum"}`: the graph's
 * key, how many nodes, the byte length of the texts' part, the SHA-256 of everything after the
 * header), then the distinct part texts as a JSON array, then per node four little-endian
 * 32-bit numbers (its position in the graph's order and its three parts' indices in the texts),
 * then the keys' 64 hex digits each, in the same order. A file that does not match is no memo; one
 * that cannot be written is left out (the memo only saves time).
 */
import { createHash, hash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { writeFileAtomic } from '../atomic.js';

const FORMAT = 'graph-keys/2';

/** The memo's name under `.graph/`. */
export const KEYS_FILE = 'keys.bin';

/** Distinct texts, numbered in the order first seen. */
export class TextTable {
  private readonly ids = new Map<string, number>();
  readonly texts: string[] = [];

  /** The number of `text`, a new one if it is new. */
  add(text: string): number {
    let n = this.ids.get(text);
    if (n === undefined) {
      this.ids.set(text, (n = this.texts.length));
      this.texts.push(text);
    }
    return n;
  }

  /** The number of `text`, or -1 when it is not in the table. */
  find(text: string): number {
    return this.ids.get(text) ?? -1;
  }
}

/** The memo as read: for each node position of the graph, its remembered key and parts. */
export class RememberedKeys {
  private readonly at: Int32Array;

  /**
   * @param refs per remembered node: position, files, env and tool part numbers (in `texts`).
   * @param keysText the keys, 64 hex digits each, in the same order.
   */
  constructor(
    readonly texts: readonly string[],
    private readonly refs: Uint32Array,
    private readonly keysText: string,
    size: number,
  ) {
    this.at = new Int32Array(size).fill(-1);
    for (let i = 0; i < refs.length; i += 4) if (refs[i] < size) this.at[refs[i]] = i >> 2;
  }

  /** How many nodes are remembered. */
  get count(): number {
    return this.refs.length >> 2;
  }

  /**
   * The key remembered for the node at `position` if its parts are the current ones, else
   * undefined.
   * @param parts the node's parts as numbers of the current `TextTable`.
   * @param current each remembered text's number in the current table (-1: not there).
   */
  keyIf(position: number, files: number, env: number, tool: number, current: Int32Array): string | undefined {
    const j = position < this.at.length ? this.at[position] : -1;
    if (j < 0) return undefined;
    const r = this.refs;
    const o = j * 4;
    if (current[r[o + 1]] !== files || current[r[o + 2]] !== env || current[r[o + 3]] !== tool) return undefined;
    return this.keysText.slice(j * 64, j * 64 + 64);
  }

  /** Each remembered node as position, part texts and key (for merging into a new memo). */
  *entries(): Generator<{ position: number; files: string; env: string; tool: string; key: string }> {
    const r = this.refs;
    for (let j = 0; j < this.count; j++) {
      const o = j * 4;
      yield { position: r[o], files: this.texts[r[o + 1]], env: this.texts[r[o + 2]], tool: this.texts[r[o + 3]], key: this.keysText.slice(j * 64, j * 64 + 64) };
    }
  }
}

/** The memo file of one compiled graph (module comment). */
export class KeyMemo {
  /**
   * @param file absolute path of the memo (`.graph/keys.bin`).
   * @param graph the compiled graph's key (`BuildGraph.key`).
   * @param size the number of nodes in the graph.
   */
  constructor(
    private readonly file: string,
    private readonly graph: string,
    private readonly size: number,
  ) {}

  /** The memo of this graph; undefined when there is none, or it does not match. */
  read(): RememberedKeys | undefined {
    let bytes: Buffer;
    try {
      bytes = readFileSync(this.file);
    } catch {
      return undefined;
    }
    try {
      const nl = bytes.indexOf(10);
      if (nl < 0) return undefined;
      const header = JSON.parse(bytes.subarray(0, nl).toString('utf8')) as { format?: string; graph?: string; count?: number; texts?: number; sum?: string };
      const { count, texts } = header;
      if (header.format !== FORMAT || header.graph !== this.graph || typeof count !== 'number' || typeof texts !== 'number') return undefined;
      const body = bytes.subarray(nl + 1);
      if (body.length !== texts + count * 16 + count * 64 || header.sum !== hash('sha256', body, 'hex')) return undefined;
      const table = JSON.parse(body.subarray(0, texts).toString('utf8')) as unknown;
      if (!Array.isArray(table) || !table.every((t) => typeof t === 'string')) return undefined;
      // A copy: the numbers must be 4-byte aligned.
      const refs = new Uint32Array(count * 4);
      for (let i = 0; i < count * 4; i++) refs[i] = body.readUInt32LE(texts + i * 4);
      for (let i = 0; i < refs.length; i += 4) if (refs[i + 1] >= table.length || refs[i + 2] >= table.length || refs[i + 3] >= table.length) return undefined;
      return new RememberedKeys(table as string[], refs, body.toString('latin1', texts + count * 16), this.size);
    } catch {
      return undefined;
    }
  }

  /**
   * Store the keys of the nodes planned (`nodes`: position, part numbers in `table`, key), and
   * those of `earlier` at other positions (nodes this plan did not select) that `keep` says are
   * still good: not downstream of a node this plan keyed again (their keys hold its old key).
   * Never throws.
   */
  write(table: TextTable, nodes: ReadonlyArray<{ position: number; files: number; env: number; tool: number; key: string }>, earlier?: RememberedKeys, keep: (position: number) => boolean = () => true): void {
    try {
      const all = [...nodes];
      if (earlier) {
        const planned = new Set(nodes.map((n) => n.position));
        for (const e of earlier.entries()) {
          if (planned.has(e.position) || e.position >= this.size || !keep(e.position)) continue;
          all.push({ position: e.position, files: table.add(e.files), env: table.add(e.env), tool: table.add(e.tool), key: e.key });
        }
      }
      const keysText = all.map((n) => n.key).join('');
      if (keysText.length !== all.length * 64 || !/^[0-9a-f]*$/.test(keysText)) return;
      const texts = Buffer.from(JSON.stringify(table.texts));
      const refs = Buffer.alloc(all.length * 16);
      all.forEach((n, i) => {
        refs.writeUInt32LE(n.position, i * 16);
        refs.writeUInt32LE(n.files, i * 16 + 4);
        refs.writeUInt32LE(n.env, i * 16 + 8);
        refs.writeUInt32LE(n.tool, i * 16 + 12);
      });
      const keys = Buffer.from(keysText, 'latin1');
      const sum = createHash('sha256').update(texts).update(refs).update(keys).digest('hex');
      const header = JSON.stringify({ format: FORMAT, graph: this.graph, count: all.length, texts: texts.length, sum });
      writeFileAtomic(this.file, [Buffer.from(`${header}\n`), texts, refs, keys]);
    } catch {
      // only time lost (module comment)
    }
  }
}
