/**
 * publish:IMAGE — pushes an image (and its SIF) to the references in its `publish:` list, or to
 * the local default `dist/` when it names none. It depends on the image's build and convert and
 * on every test of every model that runs in the image: an image whose tests fail is never
 * published. The pusher arrives with the publish rule's issue.
 */
import { sampledModels, type Declarations } from '../engine/declarations.js';
import { NodeFailure, type NodeDef, type NodeId, type Rule } from '../engine/rule.js';
import { buildId } from './build.js';
import { convertId } from './convert.js';
import { testId } from './test.js';

/** Node id of an image's publication. */
export const publishId = (image: string) => `publish:${image}` as NodeId;

export const publishRule: Rule = {
  kind: 'publish',
  version: 1,
  expand(decls: Declarations): NodeDef[] {
    return [...decls.images.values()].map((image) => {
      const deps: NodeDef['deps'][number][] = [{ id: buildId(image.name) }];
      if (image.convert.includes('sif')) deps.push({ id: convertId(image.name) });
      for (const group of decls.groups.values()) {
        if (!group.test) continue;
        for (const runtime of group.test.runtimes) {
          if ((runtime === 'oci' ? group.image : group.sif) !== image.name) continue;
          for (const model of sampledModels(group)) deps.push({ id: testId(group.name, model.name, runtime), at: () => group.at(['image']) });
        }
      }
      return {
        id: publishId(image.name),
        kind: 'publish',
        deps,
        decl: { references: [...image.publish] },
        inputs: [],
        env: [],
        tool: 'graph-publish/1',
        resources: {},
        image: image.name,
        at: () => (image.publish.length ? image.at(['publish']) : image.at([], 'key')),
      };
    });
  },
  async execute() {
    throw new NodeFailure(`publishing is not implemented yet (the publish rule lands with issue #5)`);
  },
};
