/**
 * convert:IMAGE — turns a built OCI image into a Singularity Image Format (SIF) file, for every
 * image that declares `convert: [sif]`. The SIF writer arrives with the convert rule's issue.
 */
import type { Declarations } from '../engine/declarations.js';
import { NodeFailure, type NodeDef, type NodeId, type Rule } from '../engine/rule.js';
import { buildId } from './build.js';

/** Node id of an image's conversion to SIF. */
export const convertId = (image: string) => `convert:${image}` as NodeId;

export const convertRule: Rule = {
  kind: 'convert',
  version: 1,
  expand(decls: Declarations): NodeDef[] {
    return [...decls.images.values()]
      .filter((image) => image.convert.includes('sif'))
      .map((image) => ({
        id: convertId(image.name),
        kind: 'convert',
        deps: [{ id: buildId(image.name), at: () => image.at(['convert']) }],
        decl: { format: 'sif' },
        inputs: [],
        env: ['SOURCE_DATE_EPOCH'],
        tool: 'graph-sif/1',
        resources: {},
        image: image.name,
        at: () => image.at(['convert']),
      }));
  },
  async execute() {
    throw new NodeFailure(`SIF conversion is not implemented yet (the convert rule lands with issue #4)`);
  },
};
