/**
 * test:GROUP/MODEL@RUNTIME — runs a model's test command inside its image, in the `oci` runtime
 * (the image's layers unpacked) or the `sif` runtime (the SIF's squashfs partition unpacked), in
 * a sandbox (settings.sandbox: bubblewrap by default; rules/runtime/), with the test's inputs at
 * /input (read-only) and an empty /output, then compares /output with `expect` (exact bytes, or
 * numbers within `tolerance` in TSV/CSV). One node per sampled model and runtime. The output is
 * kept in `.graph/out/test/NODE/output` for inspection.
 */
import { sampledModels, substituteVars, type Declarations, type Runtime } from '../engine/declarations.js';
import type { InputSpec } from '../engine/files.js';
import { mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { NodeFailure, type ExecContext, type Json, type NodeDef, type NodeId, type Rule } from '../engine/rule.js';
import { loadImage } from './oci/image.js';
import { sandboxProbe } from './runtime/probe.js';
import { buildId } from './build.js';
import { convertId } from './convert.js';

/** Node id of one model's test in one runtime. */
export const testId = (group: string, model: string, runtime: Runtime) => `test:${group}/${model}@${runtime}` as NodeId;


export const testRule: Rule = {
  kind: 'test',
  version: 1,
  expand(decls: Declarations): NodeDef[] {
    const nodes: NodeDef[] = [];
    const sandbox = [sandboxProbe(decls.settings.sandbox)];
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
            tools: sandbox,
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
  async execute(node, ctx) {
    const decl = node.decl as unknown as TestNodeDecl;
    const root = ctx.decls.root;
    const depId = node.deps[0].id;
    const manifest = ctx.deps.get(depId)?.outputs.manifest;
    if (typeof manifest !== 'string') throw new NodeFailure(`${depId} has no manifest output`);
    const image = loadImage(ctx.store, manifest);
    // Loaded when a test runs: a plan never needs the unpacker, the sandboxes or the SIF reader.
    const [{ unpackImage }, { compareOutputs }, { cachedRootfs }, { detectBackend }] = await Promise.all([
      import('./oci/unpack.js'),
      import('./runtime/expect.js'),
      import('./runtime/rootfs-cache.js'),
      import('./runtime/runtime.js'),
    ]);
    let rootfs: string;
    if (decl.runtime === 'oci') {
      rootfs = await cachedRootfs(path.join(ctx.cacheDir, 'rootfs', manifest.slice('sha256:'.length)), (dir) => unpackImage(ctx.store, image, dir, { signal: ctx.signal }), (why) => ctx.log.write(why));
    } else {
      const sif = ctx.deps.get(depId)?.outputs;
      const sifFile = path.join(root, String(sif?.sif));
      rootfs = await cachedRootfs(path.join(ctx.cacheDir, 'sif-rootfs', String(sif?.sha256)), (dir) => extractSifPartition(sifFile, dir, ctx), (why) => ctx.log.write(why));
    }
    const outputDir = path.join(ctx.outDir, 'test', testDirName(node.id), 'output');
    rmSync(outputDir, { recursive: true, force: true });
    mkdirSync(outputDir, { recursive: true });
    let backend;
    try {
      backend = await detectBackend(ctx.decls.settings.sandbox, { runner: ctx.runner, scratchDir: ctx.scratchDir() });
    } catch (e) {
      throw new NodeFailure((e as Error).message, { type: 'sandbox' });
    }
    ctx.log.write(`sandbox: ${await backend.version()}; image ${manifest}; runtime ${decl.runtime}\n`);
    const config = image.config.config ?? {};
    const env = Object.fromEntries((config.Env ?? []).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
    const outcome = await backend.run({
      rootfs,
      command: [...decl.command],
      env,
      workdir: config.WorkingDir || undefined,
      // Checked again (validation did first); the sandbox mounts the real directory.
      inputDir: decl.inputs ? ctx.decls.boundary.realInside(path.join(root, decl.inputs), decl.inputs) : undefined,
      outputDir,
      signal: ctx.signal,
      logFile: ctx.log.path,
    });
    const kept = `output kept in ${path.relative(root, outputDir)}`;
    if (outcome.exitCode !== 0) throw new NodeFailure(`${outcome.reason ?? 'the command failed'} (${kept})`, { type: 'exit', code: outcome.exitCode });
    if (decl.expect) {
      const boundary = ctx.decls.boundary;
      const verdict = compareOutputs(outputDir, boundary.realInside(path.join(root, decl.expect), decl.expect), decl.tolerance ?? undefined, boundary);
      if (!verdict.ok) {
        ctx.log.write(`differences:\n${verdict.differences.map((d) => `  ${d}`).join('\n')}\n`);
        throw new NodeFailure(`output differs from ${decl.expect}: ${verdict.differences.slice(0, 3).join('; ')}${verdict.differences.length > 3 ? '; …' : ''} (${kept})`);
      }
    }
    return { outputs: { output: path.relative(root, outputDir), image: manifest, runtime: decl.runtime }, artifacts: [] };
  },
};

/** The part of a test node's declaration its execution reads. */
interface TestNodeDecl {
  readonly runtime: Runtime;
  readonly command: readonly string[];
  readonly inputs: string | null;
  readonly expect: string | null;
  readonly tolerance: { absolute?: number; relative?: number } | null;
}

/** A node id as one directory name. */
function testDirName(id: NodeId): string {
  return id.replace(/%/g, '%25').replace(/\//g, '%2F');
}

/** Unpack a SIF's primary system partition (squashfs) into `dir` with unsquashfs. */
async function extractSifPartition(sifFile: string, dir: string, ctx: ExecContext): Promise<void> {
  const { primaryPartition, readSif } = await import('./sif/sif.js');
  const partition = primaryPartition(readSif(sifFile));
  const r = await ctx.runner.run(['unsquashfs', '-no-progress', '-quiet', '-o', String(partition.offset), '-d', dir, sifFile], { signal: ctx.signal, logFile: ctx.log.path });
  if (r.exitCode !== 0) throw new NodeFailure(`unsquashfs could not unpack the SIF's partition (exit ${r.exitCode ?? r.signal}); see the log`);
}
