/**
 * publish:IMAGE — pushes an image (and its SIF, as an ORAS artifact tagged `TAG-sif`) to the
 * references in its `publish:` list with the OCI distribution API (rules/registry/push.ts), or,
 * when it names none, writes them into `dist/oci` (one OCI image layout, a tag per image) and
 * `dist/sif/NAME.sif` (copies of the store's blobs, never hard links). It depends on the image's build and convert and on every test of every
 * model that runs in the image: an image whose tests fail is never published. Each publication
 * is recorded in `published.lock.json`.
 */
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { copyFileAtomic, readJsonFile, withLock, writeFileAtomic } from '../engine/atomic.js';
import { declarePart, DeclPart, type Declarations, type Settings } from '../engine/validate/declarations.js';
import { keyCommand, verifyCommand } from './trust/commands.js';
import { KeyError, keyFingerprint, loadPrivateKey } from './trust/sign.js';
import { formatReference, parseReference, type ImageReference } from '../engine/validate/reference.js';
import { NodeFailure, UsageError, type ExecContext, type Json, type NodeDef, type NodeId, type Rule } from '../engine/rule.js';
import type { InputSpec } from '../engine/key/files.js';
import { loadImage, loadImageIndex } from './oci/image.js';
import { buildDeclOf, buildId, imageOutputs, newExpansion } from './build.js';
import { indexOutputs } from './build/recipe.js';
import type { AttestDecl, AttachmentKind } from './trust/attest.js';
import { convertId, convertsToSif, sifOutputs } from './convert.js';
import { sampledModels, testId, testOf } from './test.js';
import { imagePlatforms } from './build/platform.js';

/** The registry push code, loaded when a publish asks a registry or pushes (a plan of dist/ publishes never does). */
const push = () => import('./registry/push.js');

/** Node id of an image's publication. */
export const publishId = (image: string) => `publish:${image}` as NodeId;

/** The publish rule's part of an image entry: the references it is pushed to (none: dist/). */
const publishPart = new DeclPart<{ readonly references: readonly string[] }>('publish');

/**
 * A publish node's `decl` (in its key): the references, as declared, and what its attestations
 * state (the image's and its declared bases' build declarations).
 */
type PublishNodeDecl = { readonly references: readonly string[]; readonly attest: AttestDecl & Json };

/**
 * The signing key (`--sign-key FILE`, else GRAPH_SIGNING_KEY; a file name relative to the current
 * directory) and its public key's fingerprint, which goes into publish keys: the key's bytes never
 * do, and are read again only when a publish signs.
 */
const signingSetting = new DeclPart<{ readonly keyFile: string | null; readonly fingerprint: string | null }>('signing');

/**
 * The signing key the settings name, loaded; undefined when none is named.
 * @throws KeyError when it became unreadable, NodeFailure when it changed since planning.
 */
function signingKey(settings: Settings) {
  const { keyFile, fingerprint } = signingSetting.of(settings);
  if (!keyFile) return undefined;
  const key = loadPrivateKey(keyFile);
  if (keyFingerprint(key) !== fingerprint) throw new NodeFailure(`the signing key ${keyFile} changed while graph ran (now ${keyFingerprint(key)}, planned ${fingerprint})`);
  return { key, fingerprint: fingerprint as string };
}

/** The publish rule: its part of image entries (`publish:`), and the note on published.lock.json. */
export const publishRule: Rule<PublishNodeDecl> = {
  kind: 'publish',
  version: 2,
  declares: [
    declarePart({
      entry: 'image',
      part: publishPart,
      schema: { properties: { publish: { type: 'array', items: { type: 'string', minLength: 1 }, uniqueItems: true } } },
      normalize: (raw) => ({ references: (raw.publish as string[] | undefined) ?? [] }),
      check: (part, image) =>
        part.references.flatMap((ref, i) => {
          const parsed = parseReference(ref);
          return typeof parsed === 'string' ? [{ code: 'bad-reference', message: parsed, span: image.at(['publish', i]) }] : [];
        }),
    }),
    declarePart({
      entry: 'settings',
      part: signingSetting,
      schema: { properties: {} },
      normalize: (_raw, ctx) => {
        const given = ctx.overrides['sign-key'] ?? process.env.GRAPH_SIGNING_KEY;
        if (!given) return { keyFile: null, fingerprint: null };
        const keyFile = path.resolve(given);
        try {
          return { keyFile, fingerprint: keyFingerprint(loadPrivateKey(keyFile)) };
        } catch (e) {
          if (e instanceof KeyError) throw new UsageError(`${ctx.overrides['sign-key'] ? '--sign-key' : 'GRAPH_SIGNING_KEY'} ${e.message}`);
          throw e;
        }
      },
      options: [{ name: 'sign-key', metavar: 'FILE', help: 'sign published images and SIFs with this ECDSA P-256 PEM key (or GRAPH_SIGNING_KEY)' }],
    }),
  ],
  expand(decls: Declarations): NodeDef<PublishNodeDecl>[] {
    const expansion = newExpansion(decls.root, decls.images);
    const { fingerprint } = signingSetting.of(decls.settings);
    return [...decls.images.values()].map((image) => {
      const { references } = publishPart.of(image);
      const deps: NodeDef['deps'][number][] = [{ id: buildId(image.name) }];
      // The image and its bases declared here: their builds' declarations and inputs are attested.
      const chain: Array<{ name: string; build: Json }> = [];
      const inputs: InputSpec[] = [];
      const seen = new Set<string>();
      for (let link: typeof image | undefined = image; link && !seen.has(link.name); link = link.from?.kind === 'image' ? decls.images.get(link.from.name) : undefined) {
        seen.add(link.name);
        const { decl, inputs: linkInputs } = buildDeclOf(link, expansion);
        chain.push({ name: link.name, build: decl as unknown as Json });
        for (const spec of linkInputs) if (!inputs.some((i) => JSON.stringify(i) === JSON.stringify(spec))) inputs.push(spec);
        if (link !== image) deps.push({ id: buildId(link.name), at: () => image.at(['from']) });
      }
      // A multi-platform image waits for every platform's SIF and tests (build/platform.ts).
      const { platforms, multi } = imagePlatforms(image, decls);
      const each = multi ? platforms : [undefined];
      if (convertsToSif(image)) for (const p of each) deps.push({ id: convertId(image.name, p) });
      for (const group of decls.groups.values()) {
        const test = testOf(group);
        if (!test) continue;
        for (const runtime of test.runtimes) {
          if ((runtime === 'oci' ? group.image : group.sif) !== image.name) continue;
          for (const model of sampledModels(group)) for (const p of each) deps.push({ id: testId(group.name, model.name, runtime, p), at: () => group.at(['image']) });
        }
      }
      return {
        id: publishId(image.name),
        kind: 'publish',
        deps,
        decl: { references: [...references], attest: { chain } },
        inputs,
        env: [],
        // The signing key by its public fingerprint: another key re-signs; the secret never enters a key.
        tool: fingerprint ? `graph-publish/2 signed-by:${fingerprint}` : 'graph-publish/2',
        resources: {},
        image: image.name,
        at: () => (references.length ? image.at(['publish']) : image.at([], 'key')),
      };
    });
  },
  /**
   * Registry-aware planning: a publish is done when every reference already holds exactly this
   * image's manifest digest (and the SIF artifact is there). The digest comes from the cached
   * build, or, on a runner with an empty cache, from published.lock.json when its build key is
   * the one planned now. dist/ publications are local and cheap: never checked.
   */
  async upToDate(node, ctx) {
    const name = node.image as string;
    const decl = node.decl;
    if (decl.references.length === 0) return undefined;
    const locked = (readJsonFile(path.join(ctx.workspace.root, PUBLISHED_LOCK)) as { images?: Record<string, PublishedImage> } | undefined)?.images?.[name];
    const fromLock = (id: NodeId) => (locked && locked.keys[id] === ctx.deps.get(id)?.key ? locked : undefined);
    const built = ctx.deps.get(buildId(name));
    // A multi-platform image's tag names its index.
    const manifest = (built?.outputs ? ((built.outputs.index as string | undefined) ?? imageOutputs(buildId(name), { outputs: built.outputs }).manifest) : undefined) ?? fromLock(buildId(name))?.manifest;
    if (!manifest) return undefined;
    let sif: PublishedImage['sif'] = null;
    if (node.deps.some((d) => d.id === convertId(name))) {
      const converted = ctx.deps.get(convertId(name));
      // A signed SIF's digests are the lock's (the signature makes a new file of the converted one).
      const signed = signingSetting.of(ctx.workspace.settings).fingerprint !== null;
      const known = signed ? fromLock(convertId(name))?.sif : ((converted?.outputs ? sifOutputs(convertId(name), { outputs: converted.outputs }) : undefined) ?? fromLock(convertId(name))?.sif);
      if (!known) return undefined;
      sif = { sha256: known.sha256, md5: known.md5, size: known.size, references: [] };
    }
    // The attachments must be there too: known only from the lock, for this very build.
    const attachments = fromLock(buildId(name))?.attachments;
    if (!attachments) return undefined;
    const { fingerprint } = signingSetting.of(ctx.workspace.settings);
    if ((fromLock(buildId(name))?.signed_by ?? null) !== fingerprint) return undefined;
    const references: string[] = [];
    for (const ref of publishReferences(decl)) {
      if ((await (await push()).remoteDigest(ref, ctx.signal)) !== manifest) return undefined;
      const referrers = new Set((await (await push()).listReferrers(ref, manifest, ctx.signal)).map((d) => d.digest));
      if (!Object.values(attachments).every((d) => referrers.has(d))) return undefined;
      if (fingerprint && (await (await push()).remoteDigest({ ...ref, tag: `${manifest.replace(':', '-')}.sig`, digest: undefined }, ctx.signal)) === undefined) return undefined;
      references.push(formatReference(ref));
      if (sif) {
        const sifRef = sifReference(ref);
        if ((await (await push()).remoteDigest(sifRef, ctx.signal)) === undefined) return undefined;
        sif = { ...sif, references: [...sif.references, `oras://${formatReference(sifRef)}`] };
      }
      // A multi-platform image's other SIFs, at TAG-sif-OS-ARCH.
      for (const { id } of node.deps.filter((d) => d.id.startsWith(`${convertId(name)}@`))) {
        const platformRef = { ...sifReference(ref), tag: `${sifReference(ref).tag}-${id.slice(convertId(name).length + 1).replace('/', '-')}` };
        if ((await (await push()).remoteDigest(platformRef, ctx.signal)) === undefined) return undefined;
      }
    }
    return { outputs: { manifest, references, sif, attachments }, reason: `already in registry (${references.join(', ')})` };
  },
  async execute(node, ctx) {
    const name = node.image as string;
    const root = ctx.workspace.root;
    const decl = node.decl;
    const built = ctx.deps.get(buildId(name));
    const image = loadImage(ctx.store, imageOutputs(buildId(name), built).manifest);
    // A multi-platform image is published as its index: the tag, the attachments' subject, the
    // signature and the lock name the index's digest (the SBOMs read its first platform's layers).
    const index = built?.outputs.index !== undefined ? loadImageIndex(ctx.store, indexOutputs(buildId(name), built).index) : undefined;
    const manifest = index ? index.indexDescriptor.digest : image.manifestDescriptor.digest;
    const sif = node.deps.some((d) => d.id === convertId(name)) ? sifOutputs(convertId(name), ctx.deps.get(convertId(name))) : undefined;
    const sifBlob = sif && ctx.store.pathOf(`sha256:${sif.sha256}`);
    const references: string[] = [];
    const sifReferences: string[] = [];
    const files: string[] = [];
    // SBOMs, provenance and test results, as artifacts about the image (rules/trust/attest.ts).
    const chainImages = decl.attest.chain.map((link, i) => (i === 0 ? image : loadImage(ctx.store, imageOutputs(buildId(link.name), ctx.deps.get(buildId(link.name))).manifest)));
    const tests = node.deps
      .filter((d) => d.id.startsWith('test:'))
      .map((d) => ({ id: d.id, runtime: /@(oci|sif)(?:@|$)/.exec(d.id)?.[1] ?? '', key: ctx.keys.deps[d.id] }));
    const { attest, ATTACHMENTS } = await import('./trust/attest.js');
    const attestation = await attest(decl.attest, {
      store: ctx.store,
      root,
      boundary: ctx.workspace.boundary,
      images: chainImages,
      inputs: node.inputs,
      keys: lineageKeys(node.id, ctx.keys),
      tests,
      signal: ctx.signal,
      ...(index ? { subject: index.indexDescriptor } : {}),
    });
    const signer = signingKey(ctx.workspace.settings);
    const { putSignature, signatureTag } = await import('./trust/sign.js');
    const kinds = Object.keys(ATTACHMENTS) as AttachmentKind[];
    // The SIF published: the store's, or with a key, a signed copy (a DSSE signature object added,
    // as `apptainer sign --key` adds it) whose digests the lock records instead.
    let publishedSif = sif && sifBlob ? { file: sifBlob, sha256: sif.sha256, md5: sif.md5, size: sif.size } : undefined;
    if (publishedSif && signer) {
      if (!ctx.store.has(`sha256:${publishedSif.sha256}`)) throw new NodeFailure(`the SIF of '${name}' (sha256:${publishedSif.sha256}) is missing or corrupt in the store`);
      const signed = path.join(ctx.scratchDir(), `${name}.sif`);
      copyFileSync(publishedSif.file, signed);
      (await import('./trust/sif-sign.js')).signSif(signed, signer.key);
      const bytes = readFileSync(signed);
      publishedSif = { file: signed, sha256: createHash('sha256').update(bytes).digest('hex'), md5: createHash('md5').update(bytes).digest('hex'), size: bytes.length };
      ctx.log.write(`signed the SIF with key ${signer.fingerprint}: sha256:${publishedSif.sha256}\n`);
    }
    const attachments = Object.fromEntries(kinds.map((k) => [k, attestation.artifacts[k].descriptor.digest])) as Record<AttachmentKind, string>;
    for (const k of kinds) ctx.log.write(`${k}: ${attachments[k]} (${ATTACHMENTS[k].artifactType})\n`);
    if (decl.references.length === 0) {
      // The embedded default: a local OCI image layout (a tag per image) and the SIFs, in dist/.
      const layout = await import('./oci/layout.js');
      await layout.addToLayout(ctx.store, path.join(root, DIST, 'oci'), name, index ?? image);
      // Artifacts after the image, as on a registry.
      await layout.addArtifactsToLayout(ctx.store, path.join(root, DIST, 'oci'), manifest, kinds.map((k) => attestation.artifacts[k]));
      if (signer) {
        // The cosign signature image, tagged sha256-<hex>.sig in the layout as on a registry.
        const signature = putSignature(ctx.store, signer.key, name, manifest);
        await layout.addToLayout(ctx.store, path.join(root, DIST, 'oci'), signatureTag(manifest), loadImage(ctx.store, signature.descriptor.digest));
        ctx.log.write(`signed ${manifest} with key ${signer.fingerprint}: ${signatureTag(manifest)}\n`);
      }
      references.push(`oci-layout:${DIST}/oci:${name}`);
      files.push(path.join(DIST, 'oci', 'blobs', 'sha256', manifest.slice('sha256:'.length)));
      if (publishedSif) {
        // A copy (a reflink where the file system has them): dist/ never shares an inode with the
        // store, so editing one cannot corrupt the other.
        if (!signer && !ctx.store.has(`sha256:${publishedSif.sha256}`)) throw new NodeFailure(`the SIF of '${name}' (sha256:${publishedSif.sha256}) is missing or corrupt in the store`);
        const target = path.join(root, DIST, 'sif', `${name}.sif`);
        copyFileAtomic(publishedSif.file, target);
        sifReferences.push(path.relative(root, target));
        files.push(path.relative(root, target));
      }
    }
    for (const ref of publishReferences(decl)) {
      ctx.log.write(`pushing ${formatReference(ref)}\n`);
      const pushOptions = { signal: ctx.signal, log: (line: string) => ctx.log.write(`${line}\n`) };
      const pushed = await (index ? (await push()).pushIndex(ctx.store, index, ref, pushOptions) : (await push()).pushImage(ctx.store, image, ref, pushOptions));
      ctx.log.write(`pushed ${formatReference(ref)}: ${pushed.pushedBlobs} blobs uploaded, ${pushed.skippedBlobs} present, ${pushed.mountedBlobs} mounted\n`);
      references.push(formatReference(ref));
      if (publishedSif) {
        const sifRef = sifReference(ref);
        await (await push()).pushArtifact(ctx.store, publishedSif.file, sifRef, { signal: ctx.signal, title: `${name}.sif` });
        sifReferences.push(`oras://${formatReference(sifRef)}`);
      }
      const attached = await (await push()).pushReferrers(ctx.store, manifest, kinds.map((k) => attestation.artifacts[k]), ref, { signal: ctx.signal, log: (line) => ctx.log.write(`${line}\n`) });
      ctx.log.write(`attached ${attached.digests.length} artifacts to ${formatReference(ref)} ${attached.via === 'api' ? '(referrers API)' : `(referrers tag ${attached.tag})`}\n`);
      if (signer) {
        const signature = putSignature(ctx.store, signer.key, `${ref.registry ?? process.env.GRAPH_DEFAULT_REGISTRY}/${ref.repository}`, manifest);
        const sigRef = { ...ref, tag: signatureTag(manifest), digest: undefined };
        await (await push()).pushImage(ctx.store, loadImage(ctx.store, signature.descriptor.digest), sigRef, { signal: ctx.signal });
        ctx.log.write(`signed ${manifest} with key ${signer.fingerprint}: ${formatReference(sigRef)}\n`);
      }
    }
    const platformSifs = await publishPlatformSifs(node, ctx, name, signer?.key);
    for (const { references: at } of Object.values(platformSifs ?? {})) for (const r of at) if (!r.startsWith('oras://')) files.push(r);
    const entry: PublishedImage = {
      manifest,
      references,
      sif: publishedSif
        ? { sha256: publishedSif.sha256, md5: publishedSif.md5, size: publishedSif.size, partition: (await import('./trust/sif-sign.js')).partitionDigest(publishedSif.file), references: sifReferences }
        : null,
      keys: Object.fromEntries(Object.entries({ [node.id]: ctx.keys.node, ...ctx.keys.deps }).filter(([id]) => id === buildId(name) || id === convertId(name) || id === node.id).sort()),
      attachments,
      ...(signer ? { signed_by: signer.fingerprint } : {}),
      ...(platformSifs ? { platform_sifs: platformSifs } : {}),
    };
    await recordPublished(root, name, entry);
    // The attachments' blobs are not artifacts of the result: their effect is in the registry or
    // dist/ (as the image's), and a publish's cache entry must not need bytes (a remote cache hit
    // brings none).
    return { outputs: { manifest, references, sif: entry.sif, attachments }, artifacts: [], files };
  },
  commands: [keyCommand, verifyCommand],
  /** Builds and conversions published under their keys: found again in the registry (rules/registry/source.ts). */
  resultSource: async (workspace) => (existsSync(path.join(workspace.root, PUBLISHED_LOCK)) ? (await import('./registry/source.js')).publishedSource(workspace.root) : undefined),
  planNote(root, plannedKey) {
    const lines = stalePublished(root, plannedKey);
    return lines.length ? { heading: `${PUBLISHED_LOCK} is out of date for`, jsonKey: 'stale_published', lines } : undefined;
  },
};

/**
 * Images whose published.lock.json entry no longer matches what would be built: an action key it
 * records differs from the key planned now. One line per image, e.g.
 * `pwm-scanner: build:pwm-scanner changed since it was published`.
 * @param plannedKey the planned key of a node id, or undefined when the node is not in the plan.
 */
export function stalePublished(root: string, plannedKey: (id: NodeId) => string | undefined): string[] {
  const images = (readJsonFile(path.join(root, PUBLISHED_LOCK)) as { images?: Record<string, PublishedImage> } | undefined)?.images ?? {};
  const out: string[] = [];
  for (const [name, entry] of Object.entries(images)) {
    const changed = Object.entries(entry.keys ?? {})
      .filter(([id, key]) => id !== publishId(name) && plannedKey(id as NodeId) !== undefined && plannedKey(id as NodeId) !== key)
      .map(([id]) => id);
    if (changed.length) out.push(`${name}: ${changed.join(', ')} changed since it was published`);
  }
  return out;
}

/** A publish node's references, parsed (validated with the declarations), `latest` by default. */
function publishReferences(decl: PublishNodeDecl): ImageReference[] {
  return decl.references.map((text) => {
    const parsed = parseReference(text) as ImageReference;
    return parsed.tag || parsed.digest ? parsed : { ...parsed, tag: 'latest' };
  });
}

/** Where an image's SIF goes: the same repository, tag `TAG-sif`, as an ORAS artifact. */
function sifReference(ref: ImageReference): ImageReference {
  return { ...ref, tag: `${ref.tag ?? 'latest'}-sif`, digest: undefined };
}

/** The directory the embedded default publishes into, beside images.yaml. */
export const DIST = 'dist';

/** The lineage lock's file name, beside images.yaml (meant to be committed). */
export const PUBLISHED_LOCK = 'published.lock.json';

/** One image's entry in published.lock.json. */
export interface PublishedImage {
  /** Manifest digest of the published image. */
  readonly manifest: string;
  /** Every reference it was pushed to (or the dist/ layout tag). */
  readonly references: readonly string[];
  /**
   * The SIF pushed with it: hex sha256 and md5 and size in bytes of the file published (signed, with
   * a key), `partition` the `sha256:<hex>` of its primary system partition, where it went.
   */
  readonly sif: { readonly sha256: string; readonly md5: string; readonly size: number; readonly partition?: string; readonly references: readonly string[] } | null;
  /** Action keys of the publish, build and convert nodes that produced it. */
  readonly keys: Readonly<Record<string, string>>;
  /**
   * Manifest digests of the OCI artifacts attached to the image (subject: its manifest): `spdx`
   * and `cyclonedx` (SBOMs), `provenance` (SLSA v1) and `tests` (in-toto test results).
   */
  readonly attachments?: Readonly<Record<AttachmentKind, string>>;
  /** The fingerprint (`sha256:<hex>` of the SPKI DER) of the key that signed the image and SIF. */
  readonly signed_by?: string;
  /**
   * A multi-platform image's SIFs of platforms other than the host's (`convert:NAME@OS/ARCH`), by
   * platform, as `sif` describes the host's: in `dist/sif/NAME.OS-ARCH.sif`, or pushed at tag
   * `TAG-sif-OS-ARCH` beside each reference.
   */
  readonly platform_sifs?: Readonly<Record<string, NonNullable<PublishedImage['sif']>>>;
}

/**
 * Publish the SIFs of a multi-platform image's other platforms (the publish node's
 * `convert:NAME@OS/ARCH` dependencies), as the host's SIF is: signed with `key` when given, copied
 * to `dist/sif/NAME.OS-ARCH.sif` or pushed as an ORAS artifact at `TAG-sif-OS-ARCH`.
 * @returns each platform's published SIF, or undefined when there is none.
 * @throws NodeFailure when a SIF is missing from the store; RegistryError as the pushes.
 */
async function publishPlatformSifs(node: NodeDef<PublishNodeDecl>, ctx: ExecContext, name: string, key: ReturnType<typeof loadPrivateKey> | undefined): Promise<PublishedImage['platform_sifs']> {
  const prefix = `${convertId(name)}@`;
  const out: Record<string, { sha256: string; md5: string; size: number; partition: string; references: string[] }> = {};
  for (const { id } of node.deps.filter((d) => d.id.startsWith(prefix))) {
    const platform = id.slice(prefix.length);
    const sif = sifOutputs(id, ctx.deps.get(id));
    if (!ctx.store.has(`sha256:${sif.sha256}`)) throw new NodeFailure(`the SIF of '${name}' for ${platform} (sha256:${sif.sha256}) is missing or corrupt in the store`);
    const label = `${name}.${platform.replace('/', '-')}.sif`;
    let file = ctx.store.pathOf(`sha256:${sif.sha256}`);
    let published = { sha256: sif.sha256, md5: sif.md5, size: sif.size };
    if (key) {
      file = path.join(ctx.scratchDir(), label);
      copyFileSync(ctx.store.pathOf(`sha256:${sif.sha256}`), file);
      (await import('./trust/sif-sign.js')).signSif(file, key);
      const bytes = readFileSync(file);
      published = { sha256: createHash('sha256').update(bytes).digest('hex'), md5: createHash('md5').update(bytes).digest('hex'), size: bytes.length };
    }
    const references: string[] = [];
    if (node.decl.references.length === 0) {
      const target = path.join(ctx.workspace.root, DIST, 'sif', label);
      copyFileAtomic(file, target);
      references.push(path.relative(ctx.workspace.root, target));
    }
    for (const ref of publishReferences(node.decl)) {
      const sifRef = sifReference(ref);
      const platformRef = { ...sifRef, tag: `${sifRef.tag}-${platform.replace('/', '-')}` };
      await (await push()).pushArtifact(ctx.store, file, platformRef, { signal: ctx.signal, title: label });
      references.push(`oras://${formatReference(platformRef)}`);
    }
    ctx.log.write(`sif ${platform}: sha256:${published.sha256} -> ${references.join(', ')}\n`);
    out[platform] = { ...published, partition: (await import('./trust/sif-sign.js')).partitionDigest(file), references };
  }
  return Object.keys(out).length ? out : undefined;
}

/** The action keys a publication's lineage records: its builds' and convert's, never the tests'. */
function lineageKeys(self: NodeId, keys: { readonly deps: Readonly<Record<string, string>> }): Record<string, string> {
  return Object.fromEntries(Object.entries(keys.deps).filter(([id]) => id !== self && !id.startsWith('test:')).sort(([a], [b]) => (a < b ? -1 : 1)));
}

/**
 * Record a publication in `published.lock.json`: `{"version": 1, "images": {NAME: PublishedImage}}`,
 * keys sorted, written atomically under a lock (publish nodes run in parallel). It is what the
 * Kipoi zoo kept by hand in model-to-singularity.json.
 */
export async function recordPublished(root: string, name: string, entry: PublishedImage): Promise<void> {
  const file = path.join(root, PUBLISHED_LOCK);
  await withLock(file, () => {
    const old = (readJsonFile(file) as { images?: Record<string, PublishedImage> } | undefined)?.images ?? {};
    const images = Object.fromEntries(Object.entries({ ...old, [name]: entry }).sort(([a], [b]) => (a < b ? -1 : 1)));
    writeFileAtomic(file, `${JSON.stringify({ version: 1, images }, null, 2)}\n`);
  });
}
