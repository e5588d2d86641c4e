/**
 * The declaration schemas, composed: the engine's skeleton of images.yaml and models.yaml (the
 * document shape, names, `from`, a group's image and models, the general settings) with every
 * rule's schema fragment (`DeclaredPart.schema`) merged into the entry it extends, in rule order.
 * scripts/compile-schemas.ts compiles the result with ajv at build time and writes it to
 * out/schema/*.schema.json; the copies in schema/ (what editors read) are checked against it by a
 * unit test (`npm run schemas` writes them).
 */
import type { DeclaredPart, JsonSchema, OneOfMessage } from './declarations.js';
import { executorSettingsSchema } from '../execute/executor-settings.js';
import type { Json, Rule } from '../rule.js';

const NAME_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._-]*';
const PATH_NAME_PATTERN = `${NAME_PATTERN}(/[A-Za-z0-9][A-Za-z0-9._-]*)*$`;

/** The composed schemas, by file. */
export interface ComposedSchemas {
  readonly images: JsonSchema;
  readonly models: JsonSchema;
}

function partsOf(rules: readonly Rule[], entry: DeclaredPart['entry']): DeclaredPart[] {
  return rules.flatMap((r) => (r.declares ?? []).filter((p) => p.entry === entry));
}

/**
 * Merge parts into an entry's object schema: properties in order, at most one `oneOf`.
 * @throws Error when two parts declare one key or both declare a `oneOf` (a rule set bug).
 */
function mergeParts(base: { properties: Record<string, Json>; definitions: Record<string, Json>; oneOf?: readonly Json[] }, parts: readonly DeclaredPart[], where: string): void {
  for (const p of parts) {
    for (const [key, schema] of Object.entries(p.schema.properties)) {
      if (key in base.properties) throw new Error(`two declarations of '${key}' in ${where} (one by the ${p.part.owner} rule)`);
      base.properties[key] = schema;
    }
    if (p.schema.oneOf) {
      if (base.oneOf) throw new Error(`two oneOf choices in ${where} (one by the ${p.part.owner} rule)`);
      base.oneOf = p.schema.oneOf;
    }
    Object.assign(base.definitions, p.schema.definitions ?? {});
  }
}

/** images.yaml's and models.yaml's JSON Schemas (draft-07) for a rule set. */
export function composeSchemas(rules: readonly Rule[]): ComposedSchemas {
  const settings = {
    properties: {
      concurrency: {
        description: 'Most nodes of each kind that run at once (on top of --jobs).',
        type: 'object',
        propertyNames: { enum: rules.map((r) => r.kind) },
        additionalProperties: { type: 'integer', minimum: 1 },
      },
    } as Record<string, Json>,
    definitions: {} as Record<string, Json>,
  };
  const general: Record<string, Json> = {
    resources: {
      description: 'Named tokens (e.g. gpu: 1) that nodes claim while they run.',
      type: 'object',
      propertyNames: { pattern: '^[A-Za-z][A-Za-z0-9_-]*$' },
      additionalProperties: { type: 'integer', minimum: 1 },
    },
    allow_outside: {
      description:
        "Directories outside the workspace that declarations may read (copy, dockerfile, context, oci-layout:, test inputs and expect), relative to this file or absolute. Without them, every path must resolve, symbolic links followed, inside the workspace (this file's directory): a declaration must not read the machine's files.",
      type: 'array',
      items: { type: 'string', minLength: 1 },
      uniqueItems: true,
    },
    remote_cache: {
      description:
        'A shared cache over the Bazel HTTP cache protocol (http:// or https://; an empty string: none). --remote-cache and GRAPH_REMOTE_CACHE win over it; GRAPH_REMOTE_CACHE_HEADER is never sent to this URL (a change to this file could point it elsewhere): use netrc for its credentials.',
      type: 'string',
    },
    ...executorSettingsSchema(rules.map((r) => r.kind)),
  };
  mergeParts(settings, partsOf(rules, 'settings'), 'settings');
  for (const [key, schema] of Object.entries(general)) settings.properties[key] = schema;

  const image: { properties: Record<string, Json>; definitions: Record<string, Json>; oneOf?: readonly Json[] } = {
    properties: {
      from: {
        type: 'string',
        minLength: 1,
        description: 'Base: another image declared here, a registry reference, oci-layout:DIR[:TAG], or scratch.',
      },
    },
    definitions: {},
  };
  mergeParts(image, partsOf(rules, 'image'), 'an image entry');

  const group: { properties: Record<string, Json>; definitions: Record<string, Json>; oneOf?: readonly Json[] } = {
    properties: {
      image: { type: 'string', minLength: 1, description: 'The image (declared in images.yaml) its models run in.' },
      sif: { type: 'string', minLength: 1, description: 'Whose SIF the sif runtime tests (default: image).' },
      models: {
        oneOf: [
          { type: 'array', minItems: 1, items: { $ref: '#/definitions/modelName' } },
          {
            type: 'object',
            minProperties: 1,
            propertyNames: { $ref: '#/definitions/modelName' },
            additionalProperties: {
              type: ['object', 'null'],
              additionalProperties: { type: ['string', 'number', 'boolean'] },
            },
          },
        ],
      },
    },
    definitions: { modelName: { type: 'string', pattern: PATH_NAME_PATTERN } },
  };
  mergeParts(group, partsOf(rules, 'group'), 'a group entry');

  const images: JsonSchema = {
    $schema: 'http://json-schema.org/draft-07/schema#',
    $id: 'https://graph.invalid/schema/images.schema.json',
    title: 'graph images.yaml',
    description: "The images of a model zoo: how each is built, converted to SIF and published. Paths are relative to this file's directory.",
    type: 'object',
    required: ['version', 'images'],
    additionalProperties: false,
    properties: {
      version: { const: 1, description: 'Declaration format version; always 1.' },
      settings: { type: 'object', additionalProperties: false, properties: settings.properties },
      images: {
        type: 'object',
        propertyNames: { pattern: `${NAME_PATTERN}$` },
        additionalProperties: { $ref: '#/definitions/image' },
      },
    },
    definitions: {
      ...settings.definitions,
      ...image.definitions,
      image: { type: 'object', additionalProperties: false, ...(image.oneOf ? { oneOf: image.oneOf } : {}), properties: image.properties },
    },
  };
  const models: JsonSchema = {
    $schema: 'http://json-schema.org/draft-07/schema#',
    $id: 'https://graph.invalid/schema/models.schema.json',
    title: 'graph models.yaml',
    description: "Model groups: which image each group's models run in and how they are tested. Paths are relative to this file's directory.",
    type: 'object',
    required: ['version', 'groups'],
    additionalProperties: false,
    properties: {
      version: { const: 1, description: 'Declaration format version; always 1.' },
      groups: {
        type: 'object',
        propertyNames: { pattern: PATH_NAME_PATTERN },
        additionalProperties: { $ref: '#/definitions/group' },
      },
    },
    definitions: {
      ...group.definitions,
      group: { type: 'object', required: ['image', 'models'], additionalProperties: false, ...(group.oneOf ? { oneOf: group.oneOf } : {}), properties: group.properties },
    },
  };
  return { images, models };
}

/** The engine's own `oneOf` messages (a group's `models`), then every rule's, by owning key. */
export function oneOfMessages(rules: readonly Rule[]): Record<string, OneOfMessage> {
  const messages: Record<string, OneOfMessage> = {
    models: ({ field }) => `${field} must be a list of model names or a map of model name to vars`,
  };
  for (const r of rules) for (const part of r.declares ?? []) Object.assign(messages, part.messages ?? {});
  return messages;
}

/**
 * A schema as the files in schema/ are written: two-space indentation, and an object or list
 * that fits on one line (at most 160 columns with its indentation and key) written on one line.
 */
export function formatSchema(schema: Json): string {
  const flat = (v: Json): string => {
    if (v === null || typeof v !== 'object') return JSON.stringify(v);
    if (Array.isArray(v)) return `[${v.map(flat).join(', ')}]`;
    const entries = Object.entries(v as Record<string, Json>);
    return entries.length ? `{ ${entries.map(([k, x]) => `${JSON.stringify(k)}: ${flat(x)}`).join(', ')} }` : '{}';
  };
  const write = (v: Json, indent: string, prefix: number): string => {
    const line = flat(v);
    if (v === null || typeof v !== 'object' || indent.length + prefix + line.length <= 160) return line;
    const inner = `${indent}  `;
    if (Array.isArray(v)) return `[\n${v.map((x) => inner + write(x, inner, 0)).join(',\n')}\n${indent}]`;
    const entries = Object.entries(v as Record<string, Json>);
    return `{\n${entries.map(([k, x]) => `${inner}${JSON.stringify(k)}: ${write(x, inner, JSON.stringify(k).length + 2)}`).join(',\n')}\n${indent}}`;
  };
  return `${write(schema, '', 0)}\n`;
}
