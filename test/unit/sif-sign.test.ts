/**
 * SIF signatures (rules/trust/sif-sign.ts): apptainer's own DSSE-signed test image verifies with
 * graph's verifier (the signed metadata is computed as pkg/integrity computes it); graph's
 * signatures verify, name the key as ssh-keygen does, and catch a flipped byte, naming the object.
 */
import { createPublicKey } from 'node:crypto';
import { copyFileSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { pae, sifSignatures, SIF_METADATA_TYPE, verifySifSignature } from '../../rules/trust/sif-sign.js';
import { flipByte, REPO } from '../helpers.js';

const test = suite('sif-sign');
const fixture = (name: string) => path.join(REPO, 'test', 'fixtures', 'sif', name);

test("apptainer's DSSE-signed SIF verifies with its RSA key; a flipped partition byte is named", () => {
  const key = createPublicKey(readFileSync(fixture('rsa-public.pem')));
  assert.is(verifySifSignature(fixture('one-group-signed-dsse.sif'), key), undefined);
  const [sig] = sifSignatures(fixture('one-group-signed-dsse.sif'));
  assert.is(sig.envelope.payloadType, SIF_METADATA_TYPE);
  assert.is(sig.envelope.signatures[1].keyid, 'SHA256:BhCwr7qZulYcOMSl2Jt2DuYHxHNnN6th4NdMqR/PGa4');
  const copy = path.join(mkdtempSync(path.join(tmpdir(), 'graph-sif-')), 'x.sif');
  copyFileSync(fixture('one-group-signed-dsse.sif'), copy);
  flipByte(copy, 36864 + 100);
  assert.match(verifySifSignature(copy, key) as string, /^object 3: object 2 \(partition\): its data changed since it was signed \(sha256:[0-9a-f]{12} → sha256:[0-9a-f]{12}\)$/);
});

test('the pre-authentication encoding is DSSEv1 with byte lengths', () => {
  assert.is(pae('t/x', Buffer.from('héllo')).toString(), 'DSSEv1 3 t/x 6 héllo');
});

test.run();
