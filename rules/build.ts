/**
 * build:IMAGE — produces an OCI image (image spec v1.1) from one of three recipes: `layers:`
 * (the embedded daemonless builder), `debian:` (a base from Debian packages) or `dockerfile:`
 * (an external builder). This module declares the nodes and their key inputs; the builders that
 * execute them arrive with the build rule's own issue.
 */
import type { BaseImage, Declarations, ImageDecl } from '../engine/declarations.js';
import type { InputSpec } from '../engine/files.js';
import { NodeFailure, type Json, type NodeDef, type NodeId, type Rule } from '../engine/rule.js';

/** Node id of an image's build. */
export const buildId = (image: string) => `build:${image}` as NodeId;

function baseDecl(from: BaseImage | undefined): Json {
  if (!from) return null;
  switch (from.kind) {
    case 'image':
      return { image: from.name };
    case 'registry':
      return { registry: from.ref };
    case 'oci-layout':
      return { ociLayout: from.dir, tag: from.tag ?? null };
    case 'scratch':
      return 'scratch';
  }
}

function inputsOf(image: ImageDecl): InputSpec[] {
  const r = image.recipe;
  const inputs: InputSpec[] = [];
  if (r.kind === 'dockerfile') {
    inputs.push({ kind: 'file', path: r.dockerfile }, { kind: 'dir', path: r.context, ignoreFile: '.dockerignore' });
  } else if (r.kind === 'layers') {
    for (const l of r.layers) inputs.push({ kind: 'glob', pattern: l.copy });
  } else {
    // A lock pins every package's version and SHA-256; without one the build resolves anew.
    inputs.push({ kind: 'glob', pattern: 'images.lock' });
  }
  if (image.from?.kind === 'oci-layout') inputs.push({ kind: 'dir', path: image.from.dir });
  return inputs;
}

const tools = { layers: 'graph-layers/1', debian: 'graph-debian/1', dockerfile: 'dockerfile-builder:auto' } as const;

export const buildRule: Rule = {
  kind: 'build',
  version: 1,
  expand(decls: Declarations): NodeDef[] {
    return [...decls.images.values()].map((image) => {
      const deps = image.from?.kind === 'image' ? [{ id: buildId(image.from.name), at: () => image.at(['from']) }] : [];
      const { at: _at, name: _name, convert: _convert, publish: _publish, ...rest } = image;
      const decl = {
        from: baseDecl(image.from),
        recipe: rest.recipe as unknown as Json,
        env: rest.env,
        entrypoint: (rest.entrypoint as Json) ?? null,
        cmd: (rest.cmd as Json) ?? null,
        workdir: rest.workdir ?? null,
        labels: rest.labels,
      };
      return {
        id: buildId(image.name),
        kind: 'build',
        deps,
        decl,
        inputs: inputsOf(image),
        env: ['SOURCE_DATE_EPOCH'],
        tool: tools[image.recipe.kind],
        resources: {},
        image: image.name,
        at: () => image.at([], 'key'),
      };
    });
  },
  async execute() {
    throw new NodeFailure(`building images is not implemented yet (the build rule lands with issue #3)`);
  },
};
