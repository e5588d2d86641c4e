/**
 * convert:IMAGE — turns a built OCI image into a Singularity Image Format (SIF) file, for every
 * image that declares `convert: [sif]` (rules/sif/). Outputs (in the `--report` JSON): `sif` (the
 * file, `.graph/out/sif/NAME.sif`, workspace-relative; `NAME.OS-ARCH.sif` for a platform other
 * than the host's of a multi-platform image, whose node is `convert:NAME@OS/ARCH`), its `sha256`, `md5` and `size` (bytes),
 * and the `manifest` digest of the image it holds (read them with `sifOutputs`).
 */
import path from 'node:path';
import { declarePart, DeclPart, type Declarations, type ImageDecl } from '../engine/validate/declarations.js';
import { captureOutput } from '../engine/process.js';
import { outputsReader, type NodeDef, type NodeId, type Rule } from '../engine/rule.js';
import { findExecutable, type ToolProbe } from '../engine/key/tools.js';
import { buildId, platformManifest, sourceDateEpoch } from './build.js';
import { imagePlatforms, platformSuffix } from './build/platform.js';
import { loadImage } from './oci/image.js';

/** tar2sqfs (squashfs-tools-ng) writes the partition; mksquashfs for layers that cannot stream. */
const SQUASHFS_TOOLS: ToolProbe = {
  name: 'squashfs',
  executables: () => ['tar2sqfs', 'mksquashfs'].map((exe) => findExecutable(exe, process.env.PATH) ?? `${exe} (not on PATH)`),
  identify: async () => {
    const first = async (argv: string[]) => (await captureOutput(argv)).trim().split('\n')[0];
    return `${await first(['tar2sqfs', '--version'])}; ${await first(['mksquashfs', '-version'])}`;
  },
};

/**
 * Node id of an image's conversion to SIF: `convert:NAME`, or `convert:NAME@OS/ARCH` for a platform
 * other than the host's of a multi-platform image (build/platform.ts `platformSuffix`).
 */
export const convertId = (image: string, platform?: string | null) => `convert:${image}${platformSuffix(platform)}` as NodeId;

/** A convert node's `decl`: the format, and for a multi-platform image the platform (`OS/ARCH`). */
export type ConvertDecl = { readonly format: 'sif'; readonly platform?: string };

/** The SIF's file name under `.graph/out/sif`: `NAME.sif`, `NAME.OS-ARCH.sif` for another platform. */
function sifName(image: string, platform: string | undefined): string {
  const suffix = platformSuffix(platform);
  return `${image}${suffix ? `.${suffix.slice(1).replace('/', '-')}` : ''}.sif`;
}

/**
 * The outputs of a convert node: `sif` (the file, workspace-relative), its hex `sha256` and `md5`,
 * its `size` in bytes, and the `manifest` digest of the image it holds.
 * @throws NodeFailure when a conversion's recorded outputs are missing or malformed.
 */
export const sifOutputs = outputsReader({ sif: 'string', sha256: 'string', md5: 'string', size: 'number', manifest: 'string' });

/** The convert rule's part of an image entry: the extra formats to produce (today only `sif`). */
const convertPart = new DeclPart<{ readonly formats: readonly 'sif'[] }>('convert');

/** Whether an image declares `convert: [sif]` (and so has a `convert:NAME` node). */
export function convertsToSif(image: ImageDecl): boolean {
  return convertPart.of(image).formats.includes('sif');
}

/** The convert rule: its part of image entries (`convert: [sif]`). */
export const convertRule: Rule<ConvertDecl, ReturnType<typeof sifOutputs>> = {
  kind: 'convert',
  version: 1,
  outputs: sifOutputs,
  /** The SIF's name under .graph/out, linked again to its store blob. */
  async restore(node, result, ctx) {
    const { sha256 } = sifOutputs(node.id, result);
    ctx.store.linkTo(`sha256:${sha256}`, path.join(ctx.outDir, 'sif', sifName(node.image as string, node.decl.platform)));
  },
  declares: [
    declarePart({
      entry: 'image',
      part: convertPart,
      schema: { properties: { convert: { type: 'array', items: { enum: ['sif'] }, uniqueItems: true } } },
      normalize: (raw) => ({ formats: (raw.convert as 'sif'[] | undefined) ?? [] }),
    }),
  ],
  toolProbes: () => [SQUASHFS_TOOLS],
  expand(decls: Declarations): NodeDef<ConvertDecl>[] {
    return [...decls.images.values()].filter(convertsToSif).flatMap((image) => {
      const { platforms, multi } = imagePlatforms(image, decls);
      // One SIF per platform; a single-platform image's node is exactly what it was before platforms.
      return (multi ? platforms : [undefined]).map((platform) => ({
        id: convertId(image.name, platform),
        kind: 'convert',
        deps: [{ id: buildId(image.name), at: () => image.at(['convert']) }],
        decl: platform ? { format: 'sif' as const, platform } : { format: 'sif' as const },
        inputs: [],
        env: ['SOURCE_DATE_EPOCH'],
        tool: 'graph-sif/2 tar2sqfs-gzip',
        tools: [SQUASHFS_TOOLS],
        resources: {},
        image: image.name,
        at: () => image.at(['convert']),
      }));
    });
  },
  async execute(node, ctx) {
    const name = node.image as string;
    const manifest = platformManifest(buildId(name), ctx.deps.get(buildId(name)), node.decl.platform ?? null);
    const image = loadImage(ctx.store, manifest);
    // The SIF header's and partition's architecture are the image config's (`arm64` for linux/arm64).
    const sifFile = path.join(ctx.scratchDir(), sifName(name, node.decl.platform));
    // Loaded when a conversion runs: a plan never needs the SIF writer.
    const { imageToSif } = await import('./sif/convert.js');
    const result = await imageToSif({
      store: ctx.store,
      image,
      scratchDir: ctx.scratchDir(),
      outFile: sifFile,
      epoch: sourceDateEpoch(ctx.env),
      runner: ctx.runner,
      signal: ctx.signal,
      logFile: ctx.log.path,
    });
    // Into the store under the SHA-256 computed while the SIF was written (a rename, not a copy),
    // and a stable name for it in .graph/out (a hard link the store's memo knows of, replaced
    // atomically; dist/ gets a copy).
    const { digest } = await ctx.store.moveFile(sifFile, `sha256:${result.sha256}`);
    const visible = path.join(ctx.outDir, 'sif', sifName(name, node.decl.platform));
    ctx.store.linkTo(digest, visible);
    ctx.log.write(`sif ${visible}: sha256 ${result.sha256}, md5 ${result.md5}, ${result.size} bytes\n`);
    return {
      outputs: { sif: path.relative(ctx.workspace.root, visible), sha256: result.sha256, md5: result.md5, size: result.size, manifest },
      artifacts: [digest],
      files: [path.relative(ctx.workspace.root, visible)],
    };
  },
};
