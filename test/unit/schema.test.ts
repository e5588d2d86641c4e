/** The declaration schemas: composed from the engine's skeleton and the rules' fragments; schema/ holds them as composed. */
import { readFileSync } from 'node:fs';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { composeSchemas, formatSchema } from '../../engine/validate/schema.js';
import type { DeclaredPart } from '../../engine/validate/declarations.js';
import { DeclPart } from '../../engine/validate/declarations.js';
import type { Rule } from '../../engine/rule.js';
import { defaultRules } from '../../rules/index.js';

const test = suite('schema');
const root = new URL('../../../', import.meta.url);

test('schema/*.schema.json are the schemas the rules compose (run `npm run schemas` after changing a rule)', () => {
  const composed = composeSchemas(defaultRules);
  for (const name of ['images', 'models'] as const) {
    assert.fixture(readFileSync(new URL(`schema/${name}.schema.json`, root), 'utf8'), formatSchema(composed[name]), `schema/${name}.schema.json`);
  }
});

test('each rule adds its keys to the entry it extends, in rule order; recipes make the image oneOf', () => {
  const { images, models } = composeSchemas(defaultRules) as unknown as {
    images: { properties: { settings: { properties: object } }; definitions: { image: { properties: object; oneOf: unknown } } };
    models: { definitions: { group: { properties: object } } };
  };
  assert.equal(Object.keys(images.definitions.image.properties), ['from', 'dockerfile', 'context', 'args', 'target', 'layers', 'debian', 'env', 'entrypoint', 'cmd', 'workdir', 'labels', 'platforms', 'convert', 'publish']);
  assert.equal(images.definitions.image.oneOf, [{ required: ['dockerfile'] }, { required: ['layers'] }, { required: ['debian'] }]);
  assert.equal(Object.keys(images.properties.settings.properties), ['concurrency', 'builder', 'sandbox', 'resources', 'allow_outside', 'remote_cache', 'executor', 'slurm']);
  assert.equal(Object.keys(models.definitions.group.properties), ['image', 'sif', 'models', 'test']);
});

test('two rules declaring one key is an error naming the second', () => {
  const part = (owner: string): DeclaredPart => ({ entry: 'image', part: new DeclPart(owner), schema: { properties: { publish: { type: 'string' } } }, normalize: () => ({}) });
  const rule = (kind: string): Rule => ({ kind, version: 1, declares: [part(kind)], expand: () => [], execute: async () => ({ outputs: {}, artifacts: [] }) });
  assert.throws(() => composeSchemas([rule('a'), rule('b')]), (e: Error) => e.message === "two declarations of 'publish' in an image entry (one by the b rule)");
});

test('formatSchema: an object that fits on one line is written on one line', () => {
  assert.is(formatSchema({ a: { b: [1, 2], c: {} } }), '{ "a": { "b": [1, 2], "c": {} } }\n');
  const long = { description: 'x'.repeat(200), n: 1 };
  assert.is(formatSchema(long), `{\n  "description": "${'x'.repeat(200)}",\n  "n": 1\n}\n`);
});

test.run();
