/**
 * `graph explain NODE [--format json]`: a node's whole key record (engine/key/key.ts `KeyRecord`),
 * field by field, each beside what it was in the node's last record in the action cache, so a
 * "changed" is never unexplained.
 *
 * Fields are flattened to leaves, in the record's documented order: `rule`, `ruleVersion`,
 * `decl.PATH` (one per leaf of the declaration: `decl.layers[0].to`), `files["PATH"]` (one per input
 * file, its fingerprint), `env.NAME` (value, or null when unset), `tool`, `deps["ID"]` (that
 * dependency's key). Each has a `change`: `same`, `changed`, `added` (not in the last record) or
 * `removed` (only in the last record; listed after the others). Without a last record every field is
 * `new`.
 *
 * JSON (stable):
 *
 *     {"version": 1, "id", "kind", "key", "status": "run"|"cached", "reasons": [..],
 *      "last": {"key", "same_key": bool} | null,
 *      "fields": [{"field", "now": json|null, "last": json|null, "change"}]}
 */
import { canonicalJson, type KeyRecord } from '../key/key.js';
import type { PlannedNode } from '../plan.js';
import type { Json } from '../rule.js';

export type FieldChange = 'same' | 'changed' | 'added' | 'removed' | 'new';

export interface ExplainedField {
  readonly field: string;
  readonly now: Json;
  readonly last: Json;
  readonly change: FieldChange;
}

export interface Explanation {
  readonly version: 1;
  readonly id: string;
  readonly kind: string;
  readonly key: string;
  readonly status: 'run' | 'cached';
  readonly reasons: readonly string[];
  /** The node's last record in the action cache, when there is one that can be read. */
  readonly last: { readonly key: string; readonly same_key: boolean } | null;
  readonly fields: readonly ExplainedField[];
}

/** Leaves of a key record as `[field, value]`, in the record's field order (module comment). */
export function recordFields(r: KeyRecord): Array<[string, Json]> {
  const out: Array<[string, Json]> = [
    ['rule', r.rule],
    ['ruleVersion', r.ruleVersion],
  ];
  leaves(r.decl, 'decl', out);
  for (const f of Object.keys(r.files).sort()) out.push([`files[${JSON.stringify(f)}]`, r.files[f]]);
  for (const e of Object.keys(r.env).sort()) out.push([`env.${e}`, r.env[e]]);
  out.push(['tool', r.tool]);
  for (const d of Object.keys(r.deps).sort()) out.push([`deps[${JSON.stringify(d)}]`, r.deps[d]]);
  return out;
}

function leaves(v: Json, at: string, out: Array<[string, Json]>): void {
  if (Array.isArray(v)) {
    if (!v.length) out.push([at, []]);
    v.forEach((x, i) => leaves(x, `${at}[${i}]`, out));
  } else if (v !== null && typeof v === 'object') {
    const keys = Object.keys(v).sort();
    if (!keys.some((k) => (v as Record<string, Json | undefined>)[k] !== undefined)) out.push([at, {}]);
    // Undefined is no value: canonicalJson leaves such keys out of the key.
    for (const k of keys) if ((v as Record<string, Json | undefined>)[k] !== undefined) leaves((v as Record<string, Json>)[k], /^[A-Za-z_][A-Za-z0-9_]*$/.test(k) ? `${at}.${k}` : `${at}[${JSON.stringify(k)}]`, out);
  } else {
    out.push([at, v]);
  }
}

/**
 * Explain a planned node against its last record (`last`: its key and record, from
 * `ActionCache.lastKey` and `get`; undefined when there is none or it cannot be read).
 */
export function explainNode(p: PlannedNode, last: { key: string; record: KeyRecord } | undefined): Explanation {
  const now = recordFields(p.record);
  const fields: ExplainedField[] = [];
  if (!last) {
    for (const [field, v] of now) fields.push({ field, now: v, last: null, change: 'new' });
  } else {
    const before = new Map(recordFields(last.record));
    const seen = new Set<string>();
    for (const [field, v] of now) {
      seen.add(field);
      if (!before.has(field)) fields.push({ field, now: v, last: null, change: 'added' });
      else {
        const old = before.get(field) as Json;
        fields.push({ field, now: v, last: old, change: canonicalJson(old) === canonicalJson(v) ? 'same' : 'changed' });
      }
    }
    for (const [field, old] of before) if (!seen.has(field)) fields.push({ field, now: null, last: old, change: 'removed' });
  }
  return {
    version: 1,
    id: p.node.id,
    kind: p.node.kind,
    key: p.key,
    status: p.status,
    reasons: p.reasons,
    last: last ? { key: last.key, same_key: last.key === p.key } : null,
    fields,
  };
}

const MARK: Record<FieldChange, string> = { same: '=', changed: '~', added: '+', removed: '-', new: '+' };

/**
 * The explanation as text: a header, then one line per field, `= ` same, `~ ` changed (with
 * `was …`), `+ ` added or new, `- ` removed; values as JSON.
 */
export function explainText(x: Explanation): string {
  const lines = [`${x.id} (${x.kind}): ${x.status === 'run' ? 'will run' : 'cached'}`, `  key ${x.key}`];
  if (!x.last) lines.push('  last record: none (every field is new)');
  else if (x.last.same_key) lines.push(`  last record: key ${x.last.key} (the same key)`);
  else lines.push(`  last record: key ${x.last.key}`);
  if (x.reasons.length) lines.push('  why:', ...x.reasons.map((r) => `    ${r}`));
  const changed = x.fields.filter((f) => f.change !== 'same' && f.change !== 'new').length;
  lines.push(`  fields (${x.fields.length}${x.last ? `, ${changed} differ from the last record` : ''}):`);
  for (const f of x.fields) {
    const show = (v: Json) => JSON.stringify(v);
    if (f.change === 'changed') lines.push(`    ~ ${f.field}: ${show(f.now)}`, `        was ${show(f.last)}`);
    else if (f.change === 'removed') lines.push(`    - ${f.field}: (not in this record)`, `        was ${show(f.last)}`);
    else if (f.change === 'added') lines.push(`    + ${f.field}: ${show(f.now)}`, '        (not in the last record)');
    else lines.push(`    ${MARK[f.change]} ${f.field}: ${show(f.now)}`);
  }
  return `${lines.join('\n')}\n`;
}
