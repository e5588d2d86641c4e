/**
 * test:GROUP/MODEL@RUNTIME — runs a model's test command inside its image, in the `oci` runtime
 * (the unpacked image) or the `sif` runtime (the SIF's partition). One node per sampled model and
 * runtime. The runtime backends arrive with the test rule's issue.
 */
import type { Declarations, GroupDecl, ModelDecl, Runtime } from '../engine/declarations.js';
import type { InputSpec } from '../engine/files.js';
import { NodeFailure, type NodeDef, type NodeId, type Rule } from '../engine/rule.js';
import { buildId } from './build.js';
import { convertId } from './convert.js';

/** Node id of one model's test in one runtime. */
export const testId = (group: string, model: string, runtime: Runtime) => `test:${group}/${model}@${runtime}` as NodeId;

/** The models of a group that are tested: all, or the first N by name. */
export function sampledModels(group: GroupDecl): readonly ModelDecl[] {
  const sample = group.test?.sample ?? 'all';
  return sample === 'all' ? group.models : group.models.slice(0, sample);
}

/** Substitute `{model}` and the model's vars into each argument; unknown names stay as written. */
export function substitute(command: readonly string[], model: ModelDecl): string[] {
  const vars: Record<string, string> = { ...model.vars, model: model.name };
  return command.map((arg) => arg.replace(/\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (all, name: string) => vars[name] ?? all));
}

export const testRule: Rule = {
  kind: 'test',
  version: 1,
  expand(decls: Declarations): NodeDef[] {
    const nodes: NodeDef[] = [];
    for (const group of decls.groups.values()) {
      const test = group.test;
      if (!test) continue;
      const inputs: InputSpec[] = [];
      if (test.inputs) inputs.push({ kind: 'dir', path: test.inputs });
      if (test.expect) inputs.push({ kind: 'dir', path: test.expect });
      for (const model of sampledModels(group)) {
        for (const runtime of test.runtimes) {
          const runsIn = runtime === 'oci' ? group.image : group.sif;
          nodes.push({
            id: testId(group.name, model.name, runtime),
            kind: 'test',
            deps: [{ id: runtime === 'oci' ? buildId(runsIn) : convertId(runsIn), at: () => group.at([runtime === 'oci' ? 'image' : 'sif']) }],
            decl: {
              image: runsIn,
              runtime,
              command: substitute(test.command, model),
              inputs: test.inputs ?? null,
              expect: test.expect ?? null,
              timeout_ms: test.timeoutMs,
            },
            inputs,
            env: [],
            tool: `graph-test-${runtime}/1`,
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
