/**
 * The official JSON schemas of the SBOM formats, vendored under test/fixtures/schemas/ (SPDX 2.3
 * from spdx/spdx-spec `support/2.3:schemas/spdx-schema.json`; CycloneDX 1.6 with the SPDX licence
 * list and JSF schemas it references, from CycloneDX/specification `schema/`), compiled with ajv.
 * Format keywords (`date-time`, `iri-reference`) are not checked by ajv here (no ajv-formats);
 * tests check the few formats graph writes with exact expectations instead.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import AjvModule from 'ajv';
import { REPO } from './helpers.js';

const Ajv = AjvModule.default;
const schema = (name: string) => JSON.parse(readFileSync(path.join(REPO, 'test', 'fixtures', 'schemas', name), 'utf8')) as object;

function compile(main: string, extra: readonly string[]) {
  const ajv = new Ajv({ strict: false, validateFormats: false, allErrors: true });
  for (const e of extra) ajv.addSchema(schema(e));
  return ajv.compile(schema(main));
}

let spdx: ReturnType<typeof compile> | undefined;
let cdx: ReturnType<typeof compile> | undefined;

/** The schema errors of an SPDX 2.3 JSON document, as `path: message` lines; empty when valid. */
export function spdxErrors(text: string): string[] {
  spdx ??= compile('spdx-2.3.schema.json', []);
  return spdx(JSON.parse(text)) ? [] : (spdx.errors ?? []).map((e) => `${e.instancePath}: ${e.message}`);
}

/** The schema errors of a CycloneDX 1.6 JSON document; empty when valid. */
export function cycloneDxErrors(text: string): string[] {
  cdx ??= compile('bom-1.6.schema.json', ['spdx.schema.json', 'jsf-0.82.schema.json']);
  return cdx(JSON.parse(text)) ? [] : (cdx.errors ?? []).map((e) => `${e.instancePath}: ${e.message}`);
}
