/** The ajv options the declaration schemas are compiled with (at build time, see scripts/). */
export const AJV_OPTIONS = { allErrors: true, verbose: true, strict: true, strictRequired: false, allowUnionTypes: true } as const;
