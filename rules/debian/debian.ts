/**
 * Debian packages for `debian:` images, as apko and distroless take them: find the mirror
 * (`mirror.ts`) → load the suite's verified package index (`index.ts`) → resolve the dependency
 * closure (`resolve.ts`) → pin it in `images.lock` (`lock.ts`) → download and verify each .deb
 * (`fetch.ts`) → read each package's files and control fields (`extract.ts`). Turning the files into
 * an image layer is the build rule's job, not this module's.
 */
export { chooseMirror, findMirror, MIRROR_ENV, MirrorError, parseDeb822Sources, parseOneLineSources, readAptSources } from './mirror.js';
export type { AptSource, DebianMirror, FindMirrorOptions } from './mirror.js';
export { debianArchitecture, fetchRelease, IndexError, loadIndex, parsePackages, parseRelease, parseStanzas } from './package-index.js';
export type { DebianPackage, LoadIndexOptions, PackageIndex, ReleaseFile } from './package-index.js';
export {
  compareVersions,
  formatRelation,
  parseRelations,
  parseVersion,
  resolveClosure,
  resolvePackages,
  ResolveError,
  satisfiesVersion,
} from './resolve.js';
export type { DebianVersion, PackagePin, Relation, Resolution, VersionOp } from './resolve.js';
export { debCachePath, DigestMismatchError, downloadVerified, fetchDeb, fetchDebs, fetchText, HttpError, sha256File } from './fetch.js';
export type { DownloadOptions, ExpectedContent } from './fetch.js';
export { emptyLock, formatLock, LOCK_FILE, LOCK_VERSION, LockError, parseLock, readLock, withLockedImage, writeLock } from './lock.js';
export type { ImagesLock, LockedImage } from './lock.js';
export { debControl, debDataTar, debModes, dpkgStatusEntry } from './extract.js';
export type { ControlFields, PackageModes } from './extract.js';
