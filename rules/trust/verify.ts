/**
 * `graph verify` (rules/trust/commands.ts declares it): checks a publication — its cosign
 * signature, that its SBOMs, provenance and test results are attached and name its digest, that
 * the provenance's input files match the workspace, that a SIF is the one published.lock.json
 * records and its DSSE signature verifies. Loaded only when the command runs.
 */
import { createHash, type KeyObject } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { FileDigester } from '../../engine/key/files.js';
import { formatReference, parseReference, type ImageReference } from '../../engine/validate/reference.js';
import { UsageError, type CommandOutput } from '../../engine/rule.js';
import type { Workspace } from '../../engine/workspace.js';
import type { Descriptor } from '../oci/image.js';
import { ANNOTATION_SUBJECT, REF_NAME } from '../oci/layout.js';
import type { PublishedImage } from '../publish.js';
import { partitionDigest, verifySifSignature } from './sif-sign.js';
import { checkSignatureManifest, KeyError, keyFingerprint, loadPublicKey, signatureTag } from './sign.js';

/** Where a published image can be read: a registry repository or an OCI image layout. */
interface Source {
  /** How it is shown (`127.0.0.1:5000/zoo/model`, `dist/oci`). */
  readonly name: string;
  /** The manifest a tag (or digest) names: its bytes, digest verified; undefined when absent. */
  manifest(reference: string): Promise<{ bytes: Buffer; digest: string } | undefined>;
  /** A blob's bytes, verified against its digest. @throws Error when absent or corrupt. */
  blob(digest: string): Promise<Buffer>;
  /** The referrers of a manifest (API, referrers tag, or the layout's index). */
  referrers(subject: string): Promise<Descriptor[]>;
}

const sha256 = (data: Buffer) => `sha256:${createHash('sha256').update(data).digest('hex')}`;

/** An OCI image layout directory as a source. */
function layoutSource(dir: string, shown: string): Source {
  const index = () => (JSON.parse(readFileSync(path.join(dir, 'index.json'), 'utf8')) as { manifests: Descriptor[] }).manifests;
  const read = (digest: string) => {
    const bytes = readFileSync(path.join(dir, 'blobs', 'sha256', digest.replace(/^sha256:/, '')));
    if (sha256(bytes) !== digest) throw new Error(`${shown}: blob ${digest} does not match its digest`);
    return bytes;
  };
  return {
    name: shown,
    async manifest(reference) {
      const digest = reference.startsWith('sha256:') ? reference : index().find((m) => m.annotations?.[REF_NAME] === reference)?.digest;
      if (!digest || !existsSync(path.join(dir, 'blobs', 'sha256', digest.slice(7)))) return undefined;
      return { bytes: read(digest), digest };
    },
    async blob(digest) {
      return read(digest);
    },
    async referrers(subject) {
      return index().filter((m) => m.annotations?.[ANNOTATION_SUBJECT] === subject);
    },
  };
}

/** A registry repository as a source. */
async function registrySource(ref: ImageReference): Promise<Source> {
  const { RegistryClient, RegistryError } = await import('../registry/client.js');
  const { listReferrers } = await import('../registry/push.js');
  const host = ref.registry ?? process.env.GRAPH_DEFAULT_REGISTRY ?? '';
  const client = new RegistryClient(host);
  return {
    name: `${host}/${ref.repository}`,
    async manifest(reference) {
      try {
        const got = await client.getManifest(ref.repository, reference);
        return { bytes: got.bytes, digest: got.digest };
      } catch (e) {
        if (e instanceof RegistryError && e.status === 404) return undefined;
        throw e;
      }
    },
    async blob(digest) {
      const res = await client.request('GET', `/v2/${ref.repository}/blobs/${digest}`, `repository:${ref.repository}:pull`);
      if (!res.ok) throw new Error(`${host}/${ref.repository}: blob ${digest} answered ${res.status}`);
      const bytes = Buffer.from(await res.arrayBuffer());
      if (sha256(bytes) !== digest) throw new Error(`${host}/${ref.repository}: blob ${digest} does not match its digest`);
      return bytes;
    },
    referrers: (subject) => listReferrers(ref, subject),
  };
}

/** The results of one verification: checks passed and failed, one line each. */
class Findings {
  readonly ok: string[] = [];
  readonly failed: string[] = [];
  pass(line: string): void {
    this.ok.push(line);
  }
  fail(line: string): void {
    this.failed.push(line);
  }
}

/** The digest a document names as its subject, by kind of document. */
function documentSubject(kind: string, text: string): string | undefined {
  const doc = JSON.parse(text) as Record<string, unknown>;
  if (kind === 'spdx') {
    const described = (doc.documentDescribes as string[] | undefined)?.[0];
    return (doc.packages as Array<{ SPDXID: string; versionInfo?: string }> | undefined)?.find((p) => p.SPDXID === described)?.versionInfo;
  }
  if (kind === 'cyclonedx') return (doc.metadata as { component?: { version?: string } } | undefined)?.component?.version;
  const hex = (doc.subject as Array<{ digest?: { sha256?: string } }> | undefined)?.[0]?.digest?.sha256;
  return hex ? `sha256:${hex}` : undefined;
}

/** Check the image `reference` names in `source` against the lock entry. */
async function verifyImage(source: Source, reference: string, entry: PublishedImage, key: KeyObject, ws: Workspace | undefined, f: Findings): Promise<void> {
  const at = `${source.name}:${reference}`;
  const got = await source.manifest(reference);
  if (!got) return f.fail(`${at}: no such image`);
  if (got.digest !== entry.manifest) return f.fail(`${at}: names ${got.digest}, published.lock.json records ${entry.manifest}`);
  f.pass(`${at}: manifest ${got.digest}`);
  const digest = got.digest;
  // The signature.
  const sig = await source.manifest(signatureTag(digest));
  if (!sig) f.fail(`${at}: no signature (no tag ${signatureTag(digest)})`);
  else {
    const manifest = JSON.parse(sig.bytes.toString('utf8')) as { layers?: Descriptor[] };
    const blobs = new Map<string, Buffer>();
    for (const l of manifest.layers ?? []) blobs.set(l.digest, await source.blob(l.digest));
    const why = checkSignatureManifest(manifest, (d) => blobs.get(d) as Buffer, key, digest);
    if (why) f.fail(`${at}: signature invalid: ${why}`);
    else f.pass(`${at}: signed by ${keyFingerprint(key)}`);
  }
  // The attachments: present as referrers, about this digest, and naming it.
  const referrers = new Set((await source.referrers(digest)).map((d) => d.digest));
  for (const [kind, artifact] of Object.entries(entry.attachments ?? {})) {
    if (!referrers.has(artifact)) {
      f.fail(`${at}: ${kind} ${artifact} is not among the image's referrers`);
      continue;
    }
    const a = await source.manifest(artifact);
    if (!a) {
      f.fail(`${at}: ${kind} artifact ${artifact} is missing`);
      continue;
    }
    const manifest = JSON.parse(a.bytes.toString('utf8')) as { subject?: Descriptor; layers?: Descriptor[] };
    if (manifest.subject?.digest !== digest) {
      f.fail(`${at}: ${kind} artifact ${artifact} is about ${manifest.subject?.digest ?? 'nothing'}, not ${digest}`);
      continue;
    }
    const text = (await source.blob(manifest.layers?.[0]?.digest ?? '')).toString('utf8');
    const named = documentSubject(kind, text);
    if (named !== digest) {
      f.fail(`${at}: ${kind} names ${named ?? 'no image'}, not ${digest}`);
      continue;
    }
    f.pass(`${at}: ${kind} ${artifact} names it`);
    if (kind === 'provenance' && ws) checkInputs(text, ws, at, f);
  }
  if (!entry.attachments) f.fail(`${at}: published.lock.json records no attachments (SBOMs, provenance)`);
}

/** Compare the provenance's input files with the workspace's. */
function checkInputs(statement: string, ws: Workspace, at: string, f: Findings): void {
  const deps = (JSON.parse(statement) as { predicate?: { buildDefinition?: { resolvedDependencies?: Array<{ uri?: string; digest?: { sha256?: string } }> } } }).predicate?.buildDefinition?.resolvedDependencies ?? [];
  const digester = new FileDigester(ws.root, undefined, ws.decls.boundary);
  const changed: string[] = [];
  let files = 0;
  for (const d of deps) {
    if (!d.uri?.startsWith('file:') || !d.digest?.sha256) continue;
    files++;
    const p = d.uri.slice('file:'.length);
    const now = digester.fingerprint(p);
    const hex = /^sha256:([0-9a-f]{64})/.exec(now)?.[1];
    if (now === 'missing') changed.push(`input file ${p} removed`);
    else if (hex !== d.digest.sha256) changed.push(`input file ${p} changed (sha256:${d.digest.sha256.slice(0, 12)} → ${hex ? `sha256:${hex.slice(0, 12)}` : now})`);
  }
  if (changed.length) for (const c of changed) f.fail(`${at}: provenance: ${c}`);
  else f.pass(`${at}: provenance: ${files} input files match the workspace`);
}

/** Check a SIF file: the lock's digest, and its signature. */
function verifySif(file: string, shown: string, entry: PublishedImage | undefined, key: KeyObject, f: Findings): void {
  const bytes = readFileSync(file);
  const digest = createHash('sha256').update(bytes).digest('hex');
  if (!entry?.sif) f.fail(`${shown}: published.lock.json records no SIF for it`);
  else if (entry.sif.sha256 !== digest) f.fail(`${shown}: sha256 ${digest} does not match published.lock.json (${entry.sif.sha256})`);
  else f.pass(`${shown}: sha256 ${digest} as published.lock.json records`);
  if (entry?.sif?.partition) {
    let partition: string;
    try {
      partition = partitionDigest(file);
    } catch (e) {
      partition = (e as Error).message;
    }
    if (partition !== entry.sif.partition) f.fail(`${shown}: its system partition is ${partition}, published.lock.json records ${entry.sif.partition}`);
    else f.pass(`${shown}: system partition ${partition} as published.lock.json records`);
  }
  if (entry && !entry.signed_by) return f.fail(`${shown}: published unsigned (published.lock.json names no signing key)`);
  let why: string | undefined;
  try {
    why = verifySifSignature(file, key);
  } catch (e) {
    why = (e as Error).message;
  }
  if (why) f.fail(`${shown}: signature invalid: ${why}`);
  else f.pass(`${shown}: signed by ${keyFingerprint(key)} (DSSE, object group 1)`);
}

function readLockEntries(root: string): Record<string, PublishedImage> {
  try {
    return (JSON.parse(readFileSync(path.join(root, 'published.lock.json'), 'utf8')) as { images?: Record<string, PublishedImage> }).images ?? {};
  } catch {
    return {};
  }
}

/** Verify one image of published.lock.json: every reference it was published to, and its SIF. */
async function verifyPublished(name: string, entry: PublishedImage, key: KeyObject, ws: Workspace | undefined, root: string, f: Findings): Promise<void> {
  for (const ref of entry.references) {
    const layout = /^oci-layout:(.*):([^:]+)$/.exec(ref);
    if (layout) await verifyImage(layoutSource(path.resolve(root, layout[1]), layout[1]), layout[2], entry, key, ws, f);
    else {
      const parsed = parseReference(ref);
      if (typeof parsed === 'string') f.fail(`${name}: ${parsed}`);
      else await verifyImage(await registrySource(parsed), parsed.tag ?? parsed.digest ?? 'latest', entry, key, ws, f);
    }
  }
  // The host's SIF, then a multi-platform image's other platforms' SIFs, each checked as the host's.
  const sifEntries = [entry, ...Object.values(entry.platform_sifs ?? {}).map((sif) => ({ ...entry, sif }))];
  for (const [sifEntry, sifRef] of sifEntries.flatMap((e) => (e.sif?.references ?? []).map((r) => [e, r] as const))) {
    if (sifRef.startsWith('oras://')) {
      // The registry's copy: its ORAS manifest's layer must be the SIF the lock records (its
      // signature is checked on a local copy: graph verify FILE.sif).
      const parsed = parseReference(sifRef.slice('oras://'.length));
      if (typeof parsed === 'string') {
        f.fail(`${sifRef}: ${parsed}`);
        continue;
      }
      const got = await (await registrySource(parsed)).manifest(parsed.tag ?? 'latest');
      const layer = got && (JSON.parse(got.bytes.toString('utf8')) as { layers?: Descriptor[] }).layers?.[0];
      if (!layer) f.fail(`${sifRef}: no such artifact`);
      else if (layer.digest !== `sha256:${sifEntry.sif?.sha256}`) f.fail(`${sifRef}: holds ${layer.digest}, published.lock.json records sha256:${sifEntry.sif?.sha256}`);
      else f.pass(`${sifRef}: ${layer.digest} as published.lock.json records`);
      continue;
    }
    const file = path.resolve(root, sifRef);
    if (!existsSync(file)) f.fail(`${sifRef}: missing`);
    else verifySif(file, sifRef, sifEntry, key, f);
  }
}

/**
 * Run `graph verify`.
 * @returns 0 when every check passed, 1 when one failed (each printed).
 * @throws UsageError for a missing or bad --key, or a target that is nothing published.
 */
export async function runVerify(open: () => Workspace, values: Readonly<Record<string, unknown>>, positionals: readonly string[], output: CommandOutput): Promise<number> {
  const keyFile = values.key as string | undefined;
  if (!keyFile) throw new UsageError('--key PUB.pem is required');
  let key: KeyObject;
  try {
    key = loadPublicKey(path.resolve(keyFile));
  } catch (e) {
    if (e instanceof KeyError) throw new UsageError(`--key ${e.message}`);
    throw e;
  }
  const root = path.resolve((values.directory as string | undefined) ?? '.');
  const ws = existsSync(path.join(root, 'images.yaml')) ? open() : undefined;
  const entries = readLockEntries(root);
  const f = new Findings();
  const targets = positionals.length ? positionals : Object.keys(entries);
  if (!targets.length) throw new UsageError('nothing to verify: published.lock.json lists no images; name an image, a reference or a SIF');
  for (const target of targets) {
    try {
      if (target.endsWith('.sif') && existsSync(path.resolve(target))) {
        const name = path.basename(target, '.sif');
        const entry = entries[name] ?? Object.values(entries).find((e) => e.sif?.sha256 === createHash('sha256').update(readFileSync(path.resolve(target))).digest('hex'));
        verifySif(path.resolve(target), target, entry, key, f);
      } else if (entries[target]) {
        await verifyPublished(target, entries[target], key, ws, root, f);
      } else {
        const parsed = parseReference(target);
        if (typeof parsed === 'string' || (!parsed.registry && !target.includes('/'))) throw new UsageError(`'${target}' is not a published image, a SIF file or a registry reference`);
        const source = await registrySource(parsed);
        const reference = parsed.tag ?? parsed.digest ?? 'latest';
        const got = await source.manifest(reference);
        const entry = Object.values(entries).find((e) => e.manifest === got?.digest) ?? { manifest: got?.digest ?? '(none)', references: [formatReference(parsed)], sif: null, keys: {} };
        await verifyImage(source, reference, entry, key, ws, f);
      }
    } catch (e) {
      if (e instanceof UsageError) throw e;
      f.fail(`${target}: ${(e as Error).message}`);
    }
  }
  for (const line of f.ok) output.out(`ok    ${line}\n`);
  for (const line of f.failed) output.out(`FAIL  ${line}\n`);
  output.out(f.failed.length ? `${f.failed.length} check${f.failed.length === 1 ? '' : 's'} failed, ${f.ok.length} passed\n` : `verified: ${f.ok.length} checks passed\n`);
  return f.failed.length ? 1 : 0;
}
