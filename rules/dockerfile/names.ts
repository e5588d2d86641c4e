/** The Dockerfile builders graph knows (a leaf module: a plan needs the names, not the builders). */

/** Backend names, in auto-detection order. */
export const BUILDER_NAMES = ['buildah', 'podman', 'docker'] as const;
/** One of {@link BUILDER_NAMES}. */
export type BuilderName = (typeof BUILDER_NAMES)[number];
