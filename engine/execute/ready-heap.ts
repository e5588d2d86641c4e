/** The ready queue: a binary max-heap of node ids by priority, ties broken by id (deterministic). */
import type { NodeId } from '../rule.js';

interface Item {
  readonly id: NodeId;
  readonly priority: number;
}

export class ReadyHeap {
  private items: Item[] = [];

  get size(): number {
    return this.items.length;
  }

  private before(a: Item, b: Item): boolean {
    return a.priority > b.priority || (a.priority === b.priority && a.id < b.id);
  }

  push(id: NodeId, priority: number): void {
    const items = this.items;
    items.push({ id, priority });
    let i = items.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.before(items[i], items[p])) break;
      [items[i], items[p]] = [items[p], items[i]];
      i = p;
    }
  }

  /** The highest-priority item, left in place. */
  peek(): Item | undefined {
    return this.items[0];
  }

  pop(): NodeId | undefined {
    const items = this.items;
    if (!items.length) return undefined;
    const top = items[0];
    const last = items.pop() as Item;
    if (items.length) {
      items[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < items.length && this.before(items[l], items[m])) m = l;
        if (r < items.length && this.before(items[r], items[m])) m = r;
        if (m === i) break;
        [items[i], items[m]] = [items[m], items[i]];
        i = m;
      }
    }
    return top.id;
  }

  /** Remove and return every id (in no particular order). */
  drain(): NodeId[] {
    const ids = this.items.map((x) => x.id);
    this.items = [];
    return ids;
  }
}
