/**
 * test:GROUP/MODEL@RUNTIME — runs a model's test command inside its image, in the `oci` runtime
 * (the unpacked image) or the `sif` runtime (the SIF's partition). One node per sampled model and
 * runtime. The runtime backends arrive with the test rule's issue.
 */
import { sampledModels, substituteVars, type Declarations, type Runtime } from '../engine/declarations.js';
import type { InputSpec } from '../engine/files.js';
import { NodeFailure, type Json, type NodeDef, type NodeId, type Rule } from '../engine/rule.js';
import { buildId } from './build.js';
import { convertId } from './convert.js';

/** Node id of one model's test in one runtime. */
export const testId = (group: string, model: string, runtime: Runtime) => `test:${group}/${model}@${runtime}` as NodeId;


export const testRule: Rule = {
  kind: 'test',
  version: 1,
  expand(decls: Declarations): NodeDef[] {
    const nodes: NodeDef[] = [];
    for (const group of decls.groups.values()) {
      const test = group.test;
      if (!test) continue;
      for (const model of sampledModels(group)) {
        const inputsDir = test.inputs === undefined ? undefined : substituteVars(test.inputs, model);
        const expectDir = test.expect === undefined ? undefined : substituteVars(test.expect, model);
        const inputs: InputSpec[] = [];
        if (inputsDir) inputs.push({ kind: 'dir', path: inputsDir });
        if (expectDir) inputs.push({ kind: 'dir', path: expectDir });
        for (const runtime of test.runtimes) {
          const runsIn = runtime === 'oci' ? group.image : group.sif;
          nodes.push({
            id: testId(group.name, model.name, runtime),
            kind: 'test',
            deps: [{ id: runtime === 'oci' ? buildId(runsIn) : convertId(runsIn), at: () => group.at([runtime === 'oci' ? 'image' : 'sif']) }],
            decl: {
              image: runsIn,
              runtime,
              command: test.command.map((arg) => substituteVars(arg, model)),
              inputs: inputsDir ?? null,
              expect: expectDir ?? null,
              timeout_ms: test.timeoutMs,
              tolerance: (test.tolerance as Json) ?? null,
            },
            inputs,
            env: [],
            tool: `graph-test-${runtime}/1 sandbox:${decls.settings.sandbox}`,
            timeoutMs: test.timeoutMs,
            resources: test.resources,
            image: group.image,
            group: group.name,
            at: () => group.at(['models'], 'key'),
          });
        }
      }
    }
    return nodes;
  },
  async execute() {
    throw new NodeFailure(`running model tests is not implemented yet (the test rule lands with issue #4)`);
  },
};
