/**
 * The publish rule's trust commands: `graph key generate` (an ECDSA P-256 key pair for
 * `--sign-key`) and `graph verify` (checks a publication: its signature, that its SBOMs and
 * provenance name its digest, that the provenance's inputs match the workspace, that the SIF is
 * the one published.lock.json records). Exit status: 0 valid, 1 invalid (each failed check
 * printed), 2 usage.
 */
import { chmodSync, closeSync, existsSync, openSync, writeSync } from 'node:fs';
import path from 'node:path';
import { UsageError, type RuleCommand } from '../../engine/rule.js';
import { generateKeyPair } from './sign.js';

/** `graph key generate [--out FILE]`. */
export const keyCommand: RuleCommand = {
  name: 'key',
  summary: 'generate an ECDSA P-256 signing key pair (graph key generate)',
  usage: `graph key generate [--out FILE]

Writes a new ECDSA P-256 key pair for --sign-key / GRAPH_SIGNING_KEY: the private key (PKCS#8 PEM,
mode 0600) to FILE (default graph.key) and the public key (SPKI PEM) beside it, FILE with its
extension replaced by .pub (graph.pub). Refuses to overwrite either. Prints the public key's
fingerprint; never the private key.
  --out FILE   where the private key goes (default graph.key)`,
  options: { out: { type: 'string' } },
  async run(_open, { values, positionals }, output) {
    if (positionals[0] !== 'generate' || positionals.length !== 1) throw new UsageError(positionals[0] === undefined ? 'which key command? (generate)' : `unknown key command '${positionals.join(' ')}' (key commands: generate)`);
    const dir = path.resolve((values.directory as string | undefined) ?? '.');
    const privateFile = path.resolve(dir, (values.out as string | undefined) ?? 'graph.key');
    const publicFile = `${privateFile.replace(/\.(key|pem)$/, '')}.pub`;
    for (const f of [privateFile, publicFile]) {
      if (existsSync(f)) {
        output.err(`graph key: ${f} exists; not overwriting a key\n`);
        return 1;
      }
    }
    const pair = generateKeyPair();
    // Created 0600 before a byte is written: the private key is never readable by others.
    const fd = openSync(privateFile, 'wx', 0o600);
    try {
      writeSync(fd, pair.privatePem);
    } finally {
      closeSync(fd);
    }
    chmodSync(privateFile, 0o600);
    const pfd = openSync(publicFile, 'wx', 0o644);
    try {
      writeSync(pfd, pair.publicPem);
    } finally {
      closeSync(pfd);
    }
    output.out(`wrote ${path.relative(process.cwd(), privateFile) || privateFile} (private: keep it secret) and ${path.relative(process.cwd(), publicFile) || publicFile}\nfingerprint ${pair.fingerprint}\n`);
    return 0;
  },
};

/** `graph verify [IMAGE|REF|FILE.sif] --key PUB.pem`. */
export const verifyCommand: RuleCommand = {
  name: 'verify',
  summary: 'check published images and SIFs: signatures, SBOMs and provenance, inputs, digests',
  usage: `graph verify [IMAGE|REF|FILE.sif...] --key PUB.pem

Checks what was published (every image of published.lock.json, or those named: an image name, a
registry reference REGISTRY/REPO:TAG, or a SIF file): the cosign signature (tag sha256-<hex>.sig)
with the public key; that the SBOMs, provenance and test results are attached to the image and name
its digest; that every input file in the provenance matches the workspace (or which differ); that
a SIF's digest is the one published.lock.json records and its signature verifies.
Exit status: 0 valid, 1 invalid (each failed check printed), 2 usage.
  --key FILE   the public key (PEM) to verify signatures with`,
  options: { key: { type: 'string' } },
  run: (open, { values, positionals }, output) => import('./verify.js').then((v) => v.runVerify(open, values, positionals, output)),
};
