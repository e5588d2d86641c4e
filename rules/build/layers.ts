/**
 * The `layers:` recipe (the embedded, daemonless builder): each entry copies workspace files into
 * one new layer on top of the base (`from:`, default scratch), with Dockerfile COPY semantics.
 * Version 2 of the layer writer: gzip in parallel blocks (rules/oci/gzip.ts).
 */
import path from 'node:path';
import type { Boundary } from '../../engine/validate/boundary.js';
import { globBase, isGlob, matchPaths } from '../../engine/key/files.js';
import { NodeFailure } from '../../engine/rule.js';
import { composeImage } from '../oci/image.js';
import { entriesForCopy, writeLayer, type LayerEntry } from '../oci/layer.js';
import { configChanges, type Recipe } from './recipe.js';
import { platformArchitecture, platformOs } from './platform.js';

/** One `layers:` entry, normalized. */
export interface LayerCopy {
  /** File, directory or glob, workspace-relative. */
  readonly copy: string;
  /** Absolute destination inside the image. */
  readonly to: string;
  /** File mode bits, e.g. 0o755; undefined keeps the source file's permission bits. */
  readonly mode?: number;
}

/** A `layers:` recipe's decl. */
export type LayersRecipe = { readonly kind: 'layers'; readonly layers: readonly LayerCopy[] };

/**
 * The `layers:` recipe's entries, with Dockerfile COPY semantics: a glob's matches, or any source
 * copied to a destination ending in '/', land in that directory under their own names; a single
 * file or directory otherwise lands at the destination itself (a directory's contents under it).
 * Symbolic links in a copied directory or matched by a glob are copied as links, never followed.
 * @param boundary checked again here (validation did first): a plain path must resolve inside it,
 *   a glob's directory part and every match's directory too.
 * @throws OutsideWorkspaceError when one does not; NodeFailure when a copy matches nothing.
 */
export function layerEntries(root: string, copies: readonly LayerCopy[], boundary: Boundary): LayerEntry[] {
  const entries: LayerEntry[] = [];
  for (const c of copies) {
    const glob = isGlob(c.copy);
    boundary.realInside(path.join(root, glob ? globBase(c.copy) : c.copy), c.copy);
    const matches = matchPaths(root, c.copy);
    if (!matches.length) throw new NodeFailure(`layers: '${c.copy}' matches no file`);
    const intoDir = glob || c.to.endsWith('/');
    for (const m of matches) {
      if (glob) boundary.realInside(path.dirname(path.join(root, m)), m);
      const dest = intoDir ? path.posix.join(c.to, path.posix.basename(m)) : c.to;
      // A loop, not push(...list): a large directory has more entries than a call takes arguments.
      for (const e of entriesForCopy(path.join(root, m), dest, c.mode)) entries.push(e);
    }
  }
  return entries;
}

/** The `layers:` recipe. */
export const layersRecipe: Recipe<LayersRecipe> = {
  kind: 'layers',
  properties: {
    layers: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        required: ['copy', 'to'],
        additionalProperties: false,
        properties: {
          copy: { type: 'string', minLength: 1, description: 'File, directory or glob, relative to this file.' },
          to: { type: 'string', pattern: '^/', description: 'Absolute destination in the image.' },
          mode: { type: 'integer', minimum: 0, maximum: 4095, description: 'File mode, e.g. 0o755.' },
        },
      },
    },
  },
  normalize(raw, rel) {
    return { kind: 'layers', layers: (raw.layers as Array<{ copy: string; to: string; mode?: number }>).map((l) => ({ copy: rel(l.copy), to: l.to, mode: l.mode })) };
  },
  check(recipe, _image, raw, ctx) {
    const rawLayers = raw.layers as Array<{ copy: string }>;
    return recipe.layers.flatMap((l, i) => {
      const outside = ctx.outside(l.copy, ['layers', i, 'copy'], `'${rawLayers[i].copy}'`);
      if (outside) return [outside];
      if (!ctx.exists({ kind: 'glob', pattern: l.copy })) return [{ code: 'missing-file', message: `'${l.copy}' matches no file`, span: ctx.at(['layers', i, 'copy']) }];
      return [];
    });
  },
  defaultFrom: { kind: 'scratch' },
  inputs: (recipe) => recipe.layers.map((l) => ({ kind: 'glob', pattern: l.copy })),
  tool: () => 'graph-layers/2',
  async build({ decl, recipe, ctx, epoch, base, platform }) {
    const { root, boundary } = ctx.workspace;
    const from = await base();
    const entries = layerEntries(root, recipe.layers, boundary);
    ctx.log.write(`layers: ${entries.length} entries from ${recipe.layers.map((l) => l.copy).join(', ')}\n`);
    const blob = await writeLayer(entries, ctx.store, { mtime: epoch, signal: ctx.signal, within: boundary });
    ctx.log.write(`layer ${blob.digest} (${blob.size} bytes), diff_id ${blob.diffId}\n`);
    const createdBy = `graph layers: ${recipe.layers.map((l) => `${l.copy} -> ${l.to}`).join(', ')}`;
    // The same layer on every platform's base; `platform` names the config's only on scratch.
    const built = composeImage(ctx.store, from, [{ descriptor: blob, diffId: blob.diffId, createdBy }], configChanges(decl), epoch, platform ? { os: platformOs(platform), architecture: platformArchitecture(platform) } : undefined);
    ctx.log.write(`image ${built.manifestDescriptor.digest}\n`);
    return built;
  },
};
