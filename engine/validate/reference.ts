/**
 * Image references: `[REGISTRY[:PORT]/]REPOSITORY[:TAG][@DIGEST]`, following the grammar of the
 * distribution project's reference package (the one `docker pull` accepts). No default registry is
 * assumed here: a reference without one leaves `registry` undefined and the caller decides from
 * configuration.
 */

/** A parsed image reference. */
export interface ImageReference {
  /** Host and optional port (`127.0.0.1:5000`), when the first path component names one. */
  readonly registry?: string;
  /** Repository path, lowercase components separated by '/'. */
  readonly repository: string;
  readonly tag?: string;
  /** `sha256:<64 hex>` when pinned. */
  readonly digest?: string;
}

const component = '[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*';
const referencePattern = new RegExp(
  `^(?:(?<host>(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\\.(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?))*(?::[0-9]+)?|\\[[0-9a-fA-F:]+\\](?::[0-9]+)?)/)?` +
    `(?<repo>${component}(?:/${component})*)` +
    `(?::(?<tag>[\\w][\\w.-]{0,127}))?` +
    `(?:@(?<digest>sha256:[a-f0-9]{64}))?$`,
);

/**
 * Parse `text` as an image reference.
 * @returns the reference, or an error string saying what is wrong (never throws).
 */
export function parseReference(text: string): ImageReference | string {
  const m = referencePattern.exec(text);
  if (!m?.groups) {
    return `'${text}' is not a valid image reference (expected [REGISTRY/]REPOSITORY[:TAG][@sha256:DIGEST], lowercase repository)`;
  }
  let host: string | undefined = m.groups.host;
  let repo = m.groups.repo;
  // Like docker: the first component names a registry only if it has a '.', a ':' or is localhost.
  if (host !== undefined && !/[.:]|^localhost$|^\[/.test(host)) {
    repo = `${host}/${repo}`;
    host = undefined;
    if (!new RegExp(`^${component}$`).test(repo.split('/')[0])) {
      return `'${text}' is not a valid image reference: repository components must be lowercase`;
    }
  }
  return { registry: host, repository: repo, tag: m.groups.tag, digest: m.groups.digest };
}

/** Render a reference back to text (the inverse of `parseReference`). */
export function formatReference(ref: ImageReference): string {
  return `${ref.registry ? `${ref.registry}/` : ''}${ref.repository}${ref.tag ? `:${ref.tag}` : ''}${ref.digest ? `@${ref.digest}` : ''}`;
}
