/**
 * `graph report html FILE.html [--from report.json] [--profile profile.json]`: one self-contained
 * HTML page for review (a CI artifact): it loads nothing (no CDN, no fonts, no images from
 * elsewhere) and works offline.
 *
 * The page holds: the summary (counts); the DAG, laid out by Graphviz `dot -Tsvg`
 * (graphviz.org/docs/outputs/svg/) and coloured by status; every node, grouped by image, with its
 * reasons (old → new digests, as the plan states them) and, for a build, the end of its log; a
 * timeline (Gantt) of the build from a `--profile` trace with the critical path in red; filters by
 * kind and status.
 *
 * Made to stay usable on a 4,500-node zoo: above `GROUP_NODES` nodes the DAG has one box per image
 * (its nodes' worst status, edges between images), and a group's rows are written into the page
 * only when it is opened, so loading does not build thousands of elements.
 *
 * Data (`PageData`) is embedded as JSON in a `<script type="application/json">` element; the
 * page's script reads it. Without `dot` on PATH the page says so in place of the DAG.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { Plan } from '../plan.js';
import { planSummary } from '../plan.js';
import { captureOutput } from '../process.js';
import type { NodeId } from '../rule.js';
import type { TraceFile } from './profile.js';
import { logTail } from './step-summary.js';

/** Above this many nodes, the DAG is drawn one box per image. */
export const GROUP_NODES = 300;

export type PageStatus = 'run' | 'cached' | 'ran' | 'failed' | 'interrupted' | 'skipped';

/** One node as the page shows it. */
export interface PageNode {
  readonly id: string;
  readonly kind: string;
  /** The image the node belongs to, or `-`. */
  readonly image: string;
  readonly deps: readonly string[];
  readonly status: PageStatus;
  readonly key: string | null;
  readonly reasons: readonly string[];
  readonly duration_ms: number | null;
  /** The end of its log (a build's failed, interrupted or ran node). */
  readonly log_tail: string | null;
  /** Its slice in the timeline: ms since the run started, the slot, on the critical path. */
  span?: { readonly start: number; readonly end: number; readonly lane: number; readonly critical: boolean };
}

export interface PageData {
  readonly version: 1;
  /** `plan` (what a build would do) or `build` (what one did). */
  readonly source: 'plan' | 'build';
  readonly title: string;
  readonly counts: Readonly<Record<string, number>>;
  readonly duration_ms: number | null;
  readonly nodes: PageNode[];
  critical_path: string[];
}

/** The page's data for a plan. */
export function pageFromPlan(plan: Plan, title = 'graph plan'): PageData {
  const s = planSummary(plan);
  return {
    version: 1,
    source: 'plan',
    title,
    counts: { total: s.total, run: s.run, cached: s.cached },
    duration_ms: null,
    critical_path: [],
    nodes: plan.nodes.map((p) => ({
      id: p.node.id,
      kind: p.node.kind,
      image: p.node.image ?? '-',
      deps: p.node.deps.map((d) => d.id).sort(),
      status: p.status,
      key: p.key,
      reasons: p.reasons,
      duration_ms: null,
      log_tail: null,
    })),
  };
}

/** What `pageFromReport` needs of a JSON build report (engine/report/build-report.ts). */
export interface ReportInput {
  readonly summary: { readonly duration_ms: number; readonly ran: number; readonly cached: number; readonly failed: number; readonly skipped: number; readonly interrupted_nodes?: number };
  readonly nodes: ReadonlyArray<{ readonly id: string; readonly kind: string; readonly status: PageStatus; readonly duration_ms: number; readonly reasons: readonly string[]; readonly log: string | null }>;
}

/**
 * The page's data for a build report.
 * @param root the workspace its log paths are relative to.
 * @param graph the nodes' dependencies, images and keys where the workspace still declares them
 *   (undefined for a node it does not: drawn without edges).
 */
export function pageFromReport(report: ReportInput, root: string, graph: (id: string) => { deps: readonly string[]; image?: string; key?: string } | undefined, title = 'graph build'): PageData {
  const ids = new Set(report.nodes.map((n) => n.id));
  const s = report.summary;
  return {
    version: 1,
    source: 'build',
    title,
    counts: { total: report.nodes.length, ran: s.ran, cached: s.cached, failed: s.failed, skipped: s.skipped, interrupted: s.interrupted_nodes ?? 0 },
    duration_ms: s.duration_ms,
    critical_path: [],
    nodes: report.nodes.map((n) => {
      const g = graph(n.id);
      const withLog = n.status === 'failed' || n.status === 'interrupted' || n.status === 'ran';
      return {
        id: n.id,
        kind: n.kind,
        image: g?.image ?? '-',
        deps: (g?.deps ?? []).filter((d) => ids.has(d)),
        status: n.status,
        key: g?.key ?? null,
        reasons: n.reasons,
        duration_ms: n.duration_ms,
        log_tail: withLog && n.log ? (logTail(path.resolve(root, n.log)) ?? null) : null,
      };
    }),
  };
}

/** Add a `--profile` trace's slices (lanes 1…) and critical path to the page's nodes. */
export function addTimeline(data: PageData, trace: TraceFile): void {
  const byId = new Map(data.nodes.map((n) => [n.id, n]));
  const critical = new Set(trace.otherData?.critical_path ?? []);
  for (const e of trace.traceEvents) {
    if (e.ph !== 'X' || e.tid === 0) continue;
    const n = byId.get(e.name);
    if (n) n.span = { start: e.ts / 1000, end: (e.ts + (e.dur ?? 0)) / 1000, lane: e.tid, critical: critical.has(e.name as NodeId) };
  }
  data.critical_path = [...critical].filter((id) => byId.has(id));
}

const FILL: Record<PageStatus, string> = { run: '#ffd8a8', cached: '#e9ecef', ran: '#b2f2bb', failed: '#ff8787', interrupted: '#ffa94d', skipped: '#fff3bf' };
/** Worst first: an image box takes the colour of its worst node. */
const SEVERITY: readonly PageStatus[] = ['failed', 'interrupted', 'skipped', 'run', 'ran', 'cached'];

function dotString(s: string): string {
  return `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

/**
 * The DOT text of the page's DAG: one box per node (`id` n0, n1… in the SVG, by index in
 * `data.nodes`), or above `GROUP_NODES` nodes one box per image (`id` g0, g1…, in order of first
 * appearance) labelled with its node count.
 */
export function pageDot(data: PageData): string {
  const lines = ['digraph page {', '  rankdir=LR;', '  node [shape=box, style=filled, fontname="monospace", fontsize=10];', '  edge [color="#868e96"];'];
  if (data.nodes.length <= GROUP_NODES) {
    const index = new Map(data.nodes.map((n, i) => [n.id, i]));
    data.nodes.forEach((n, i) => lines.push(`  n${i} [id="n${i}", label=${dotString(n.id)}, tooltip=${dotString(`${n.id}: ${n.status}`)}, fillcolor="${FILL[n.status]}"];`));
    data.nodes.forEach((n, i) => n.deps.forEach((d) => index.has(d) && lines.push(`  n${index.get(d)} -> n${i};`)));
  } else {
    const images = [...new Set(data.nodes.map((n) => n.image))];
    const gi = new Map(images.map((im, i) => [im, i]));
    const imageOf = new Map(data.nodes.map((n) => [n.id, n.image]));
    images.forEach((im, i) => {
      const ns = data.nodes.filter((n) => n.image === im);
      const worst = SEVERITY.find((s) => ns.some((n) => n.status === s)) as PageStatus;
      lines.push(`  g${i} [id="g${i}", label=${dotString(`${im} (${ns.length})`)}, tooltip=${dotString(`image ${im}: ${ns.length} nodes, worst ${worst}`)}, fillcolor="${FILL[worst]}"];`);
    });
    const edges = new Set<string>();
    for (const n of data.nodes) {
      for (const d of n.deps) {
        const from = imageOf.get(d);
        if (from === undefined || from === n.image) continue;
        edges.add(`  g${gi.get(from)} -> g${gi.get(n.image)};`);
      }
    }
    lines.push(...[...edges].sort());
  }
  lines.push('}');
  return `${lines.join('\n')}\n`;
}

/**
 * The DAG as inline SVG from `dot -Tsvg` (its XML prologue and DOCTYPE removed), or the reason it
 * could not be drawn (dot missing or failing) as `{error}`.
 */
export async function dagSvg(data: PageData): Promise<{ svg: string } | { error: string }> {
  try {
    const out = await captureOutput(['dot', '-Tsvg'], { input: pageDot(data) });
    const at = out.indexOf('<svg');
    return at < 0 ? { error: 'dot wrote no SVG' } : { svg: out.slice(at) };
  } catch (e) {
    return { error: (e as Error).message };
  }
}

function escapeHtml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** JSON safe inside a `<script>` element (no `</script>`, no `<!--`). */
function scriptJson(v: unknown): string {
  return JSON.stringify(v).replace(/</g, '\\u003c').replace(/\u2028/g, '\\u2028').replace(/\u2029/g, '\\u2029');
}

/** The whole page (module comment); `dag` is `dagSvg`'s answer. */
export function renderHtml(data: PageData, dag: { svg: string } | { error: string }): string {
  const dagHtml = 'svg' in dag ? dag.svg : `<p class="note">The DAG could not be drawn: ${escapeHtml(dag.error)} (Graphviz <code>dot</code> draws it).</p>`;
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<title>${escapeHtml(data.title)}</title>
<style>${CSS}</style>
</head>
<body>
<header><h1>${escapeHtml(data.title)}</h1><div id="summary"></div></header>
<section id="filters"></section>
<main>
<div id="left">
<section id="dag-section"><h2>Graph${data.nodes.length > GROUP_NODES ? ' (one box per image)' : ''} <button id="dag-zoom" type="button">actual size</button></h2><div id="dag" class="fit">${dagHtml}</div></section>
<section id="timeline-section"><h2>Timeline</h2><div id="timeline"></div></section>
<section id="nodes-section"><h2>Nodes by image</h2><div id="groups"></div></section>
</div>
<aside id="detail"><p class="note">Click a node in the graph, the timeline or the list.</p></aside>
</main>
<script type="application/json" id="page-data">${scriptJson(data)}</script>
<script>${SCRIPT}</script>
</body>
</html>
`;
}

const CSS = `
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#212529;background:#fff}
header{padding:12px 20px;border-bottom:1px solid #dee2e6;display:flex;gap:24px;align-items:baseline;flex-wrap:wrap}
h1{font-size:20px;margin:0}h2{font-size:16px;margin:16px 0 8px}
#summary span{margin-right:14px}
.badge{display:inline-block;padding:0 6px;border-radius:4px;font-size:12px;border:1px solid #adb5bd}
.st-run{background:#ffd8a8}.st-cached{background:#e9ecef}.st-ran{background:#b2f2bb}.st-failed{background:#ff8787}.st-interrupted{background:#ffa94d}.st-skipped{background:#fff3bf}
#filters{padding:8px 20px;border-bottom:1px solid #dee2e6;display:flex;gap:20px;flex-wrap:wrap}
#filters label{margin-right:8px;white-space:nowrap}
main{display:flex;gap:16px;padding:0 20px}
#left{flex:1;min-width:0}
#dag{overflow:auto;max-height:60vh;border:1px solid #dee2e6}
#dag svg{display:block}
#dag.fit svg{max-width:100%;height:auto}
button{font-size:12px}
td:first-child{width:60%}
#dag g.node{cursor:pointer}
#dag g.node.dim{opacity:.15}
#dag g.node.sel polygon{stroke:#1c7ed6;stroke-width:3}
#timeline{overflow:auto;border:1px solid #dee2e6}
#timeline rect.bar{cursor:pointer}
#timeline rect.crit{stroke:#e03131;stroke-width:2}
#groups details{border-bottom:1px solid #f1f3f5}
#groups summary{cursor:pointer;padding:3px 0}
table{border-collapse:collapse;width:100%}
td{padding:2px 6px;vertical-align:top;border-top:1px solid #f1f3f5}
tr.row{cursor:pointer}tr.row:hover{background:#f8f9fa}
code,pre{font-family:ui-monospace,monospace;font-size:12px}
.reasons{color:#495057;font-size:12px}
aside{width:38%;max-width:640px;position:sticky;top:0;align-self:flex-start;max-height:100vh;overflow:auto;padding-top:16px}
pre#log-tail{background:#212529;color:#f8f9fa;padding:8px;overflow:auto;max-height:50vh;white-space:pre-wrap;overflow-wrap:anywhere}
.note{color:#868e96}
.hidden{display:none}
`;

// Browser code: plain ES2020, no template literals (this is inside one).
const SCRIPT = `
(function () {
  'use strict';
  var data = JSON.parse(document.getElementById('page-data').textContent);
  var nodes = data.nodes;
  var byId = new Map();
  nodes.forEach(function (n, i) { n.index = i; byId.set(n.id, n); });
  var grouped = nodes.length > ${GROUP_NODES};
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    if (attrs) Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function ms(v) {
    if (v === null || v === undefined) return '';
    if (v < 1000) return Math.round(v) + 'ms';
    if (v < 60000) return (v / 1000).toFixed(1) + 's';
    return Math.floor(v / 60000) + 'm' + Math.round((v % 60000) / 1000) + 's';
  }
  function badge(status) { return el('span', { 'class': 'badge st-' + status }, status); }

  // Summary.
  var summary = document.getElementById('summary');
  Object.keys(data.counts).forEach(function (k) {
    var s = el('span'); s.appendChild(el('b', null, String(data.counts[k]))); s.appendChild(document.createTextNode(' ' + k)); summary.appendChild(s);
  });
  if (data.duration_ms !== null) summary.appendChild(el('span', null, 'in ' + ms(data.duration_ms)));

  // Filters.
  var kinds = Array.from(new Set(nodes.map(function (n) { return n.kind; })));
  var statuses = Array.from(new Set(nodes.map(function (n) { return n.status; })));
  var shown = { kind: new Set(kinds), status: new Set(statuses) };
  var filters = document.getElementById('filters');
  [['kind', kinds], ['status', statuses]].forEach(function (f) {
    var box = el('div', { id: 'filter-' + f[0] }); box.appendChild(el('b', null, f[0] + ': '));
    f[1].forEach(function (v) {
      var label = el('label'); var cb = el('input', { type: 'checkbox', value: v, 'data-filter': f[0] }); cb.checked = true;
      cb.addEventListener('change', function () { if (cb.checked) shown[f[0]].add(v); else shown[f[0]].delete(v); applyFilters(); });
      label.appendChild(cb); label.appendChild(document.createTextNode(' ' + v)); box.appendChild(label);
    });
    filters.appendChild(box);
  });
  function visible(n) { return shown.kind.has(n.kind) && shown.status.has(n.status); }

  // Detail panel.
  var detail = document.getElementById('detail');
  var selected = null;
  function showNode(id) {
    var n = byId.get(id); if (!n) return;
    detail.textContent = '';
    detail.appendChild(el('h2', { id: 'detail-id' }, n.id));
    var p = el('p'); p.appendChild(badge(n.status)); p.appendChild(document.createTextNode(' ' + n.kind + (n.image !== '-' ? ' · image ' + n.image : '') + (n.duration_ms ? ' · ' + ms(n.duration_ms) : ''))); detail.appendChild(p);
    if (n.key) detail.appendChild(el('p', null, 'key ')).appendChild(el('code', null, n.key));
    if (n.reasons.length) {
      detail.appendChild(el('h3', null, n.status === 'failed' || n.status === 'skipped' ? 'Why it failed' : 'Why it runs'));
      var ul = el('ul', { id: 'detail-reasons' }); n.reasons.forEach(function (r) { ul.appendChild(el('li', null, r)); }); detail.appendChild(ul);
    }
    if (n.deps.length) detail.appendChild(el('p', { 'class': 'reasons' }, 'depends on ' + n.deps.join(', ')));
    if (n.log_tail !== null) { detail.appendChild(el('h3', null, 'Log tail')); var pre = detail.appendChild(el('pre', { id: 'log-tail' }, n.log_tail)); pre.scrollTop = pre.scrollHeight; }
    if (selected) selected.classList.remove('sel');
    selected = document.getElementById(grouped ? 'g' + groupIndex.get(n.image) : 'n' + n.index);
    if (selected) selected.classList.add('sel');
  }

  // Groups by image, rows written when a group opens.
  var images = [];
  var groupIndex = new Map();
  nodes.forEach(function (n) { if (!groupIndex.has(n.image)) { groupIndex.set(n.image, images.length); images.push({ image: n.image, nodes: [] }); } images[groupIndex.get(n.image)].nodes.push(n); });
  var groupsBox = document.getElementById('groups');
  function fillGroup(g) {
    var table = el('table'); var shownCount = 0;
    g.nodes.forEach(function (n) {
      if (!visible(n)) return; shownCount++;
      var tr = el('tr', { 'class': 'row', 'data-id': n.id });
      var td = el('td'); td.appendChild(el('code', null, n.id)); if (n.reasons.length) td.appendChild(el('div', { 'class': 'reasons' }, n.reasons.join('; ')));
      tr.appendChild(td); var st = el('td'); st.appendChild(badge(n.status)); tr.appendChild(st); tr.appendChild(el('td', null, n.kind)); tr.appendChild(el('td', null, ms(n.duration_ms)));
      tr.addEventListener('click', function () { showNode(n.id); });
      table.appendChild(tr);
    });
    g.body.textContent = ''; g.body.appendChild(shownCount ? table : el('p', { 'class': 'note' }, 'no node here passes the filters'));
    g.filled = true;
  }
  // The toggle event comes later, as a task: a group opened by the page is filled at once.
  function openGroup(g) { g.details.open = true; if (!g.filled) fillGroup(g); }
  images.forEach(function (g, i) {
    var d = el('details', { id: 'group-' + i, 'data-image': g.image });
    var counts = {}; g.nodes.forEach(function (n) { counts[n.status] = (counts[n.status] || 0) + 1; });
    var s = el('summary'); s.appendChild(el('b', null, g.image === '-' ? '(no image)' : g.image)); s.appendChild(document.createTextNode(' ' + g.nodes.length + ' nodes '));
    Object.keys(counts).forEach(function (k) { s.appendChild(badge(k)); s.appendChild(document.createTextNode(' ' + counts[k] + ' ')); });
    d.appendChild(s); g.body = el('div'); d.appendChild(g.body); g.details = d;
    d.addEventListener('toggle', function () { if (d.open && !g.filled) fillGroup(g); });
    groupsBox.appendChild(d);
  });
  // Small pages open the groups that have something to look at.
  if (!grouped) images.forEach(function (g) { if (g.nodes.some(function (n) { return n.status !== 'cached'; })) openGroup(g); });

  // The DAG: clicks, and dimming what the filters hide.
  var svg = document.querySelector('#dag svg');
  var zoom = document.getElementById('dag-zoom');
  zoom.addEventListener('click', function () { var d = document.getElementById('dag'); d.classList.toggle('fit'); zoom.textContent = d.classList.contains('fit') ? 'actual size' : 'fit width'; });
  if (svg) {
    svg.addEventListener('click', function (ev) {
      var g = ev.target.closest && ev.target.closest('g.node'); if (!g) return;
      if (grouped) {
        var grp = images[Number(g.id.slice(1))]; if (!grp) return;
        openGroup(grp); grp.details.scrollIntoView({ block: 'nearest' });
        var first = grp.nodes.find(function (n) { return n.status === 'failed'; }) || grp.nodes[0]; showNode(first.id);
      } else { var n = nodes[Number(g.id.slice(1))]; if (n) showNode(n.id); }
    });
  }

  // Timeline (Gantt) from the profile's slices: one row per slot, the critical path outlined in red.
  var timed = nodes.filter(function (n) { return n.span; });
  var tl = document.getElementById('timeline');
  if (!timed.length) {
    tl.appendChild(el('p', { 'class': 'note' }, data.source === 'build' ? 'No timeline: pass the build\\'s --profile FILE.json to graph report html.' : 'A plan has no timeline.'));
  } else {
    var NS = 'http://www.w3.org/2000/svg';
    var lanes = Math.max.apply(null, timed.map(function (n) { return n.span.lane; }));
    var end = Math.max.apply(null, timed.map(function (n) { return n.span.end; })) || 1;
    var ROW = 18, LEFT = 60, W = Math.max(400, tl.clientWidth - LEFT - 20);
    var gs = document.createElementNS(NS, 'svg'); gs.setAttribute('width', String(W + LEFT + 10)); gs.setAttribute('height', String((lanes + 1) * ROW + 20)); gs.setAttribute('id', 'gantt');
    for (var l = 1; l <= lanes; l++) { var t = document.createElementNS(NS, 'text'); t.setAttribute('x', '4'); t.setAttribute('y', String(l * ROW - 4)); t.setAttribute('font-size', '11'); t.textContent = 'slot ' + l; gs.appendChild(t); }
    var axis = document.createElementNS(NS, 'text'); axis.setAttribute('x', String(LEFT)); axis.setAttribute('y', String((lanes + 1) * ROW + 8)); axis.setAttribute('font-size', '11'); axis.textContent = '0 … ' + ms(end) + (data.critical_path.length ? ' · critical path: ' + data.critical_path.join(' → ') : ''); gs.appendChild(axis);
    timed.forEach(function (n) {
      var r = document.createElementNS(NS, 'rect');
      r.setAttribute('x', String(LEFT + (n.span.start / end) * W)); r.setAttribute('y', String((n.span.lane - 1) * ROW + 2));
      r.setAttribute('width', String(Math.max(1, ((n.span.end - n.span.start) / end) * W))); r.setAttribute('height', String(ROW - 4));
      r.setAttribute('fill', ({ ran: '#b2f2bb', failed: '#ff8787', interrupted: '#ffa94d' })[n.status] || '#ced4da');
      r.setAttribute('class', 'bar' + (n.span.critical ? ' crit' : '')); r.setAttribute('data-id', n.id);
      var title = document.createElementNS(NS, 'title'); title.textContent = n.id + ' ' + ms(n.span.end - n.span.start) + (n.span.critical ? ' (critical path)' : ''); r.appendChild(title);
      r.addEventListener('click', function () { showNode(n.id); });
      gs.appendChild(r); n.bar = r;
    });
    tl.appendChild(gs);
  }

  function applyFilters() {
    if (svg && !grouped) nodes.forEach(function (n) { var g = document.getElementById('n' + n.index); if (g) g.classList.toggle('dim', !visible(n)); });
    timed.forEach(function (n) { n.bar.classList.toggle('hidden', !visible(n)); });
    images.forEach(function (g) { if (g.details.open) fillGroup(g); else g.filled = false; g.details.classList.toggle('hidden', !g.nodes.some(visible)); });
  }
})();
`;

/** Read a JSON file written by graph (`--report`, `--profile`); throws with the file's name. */
export function readJsonFile<T>(file: string): T {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as T;
  } catch (e) {
    throw new Error(`cannot read ${file}: ${(e as Error).message}`);
  }
}
