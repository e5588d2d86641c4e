/**
 * A pinned Debian package: what the resolver produces, images.lock stores and the fetcher
 * downloads (a leaf module, so the three need not import each other).
 */
/** A package chosen for an image: everything needed to download and verify it again. */
export interface PackagePin {
  readonly name: string;
  /** Debian version, epoch included (`1:1.35.0-4`). */
  readonly version: string;
  /** The target architecture or `all`. */
  readonly architecture: string;
  /** Path relative to the mirror's archive root (`pool/main/…/X.deb`). */
  readonly filename: string;
  /** Bytes. */
  readonly size: number;
  /** Lowercase hex SHA-256 of the .deb. */
  readonly sha256: string;
}
