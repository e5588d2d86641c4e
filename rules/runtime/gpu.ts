/**
 * GPUs for test sandboxes: which NVIDIA GPUs this host has, and what a sandbox must bind so that
 * a command inside sees exactly the GPUs it holds (device nodes, the driver's user-space libraries
 * and tools, environment).
 *
 * Discovery (`discoverGpus`), in this order:
 * 1. The host's Container Device Interface specs (CDI, github.com/cncf-tags/container-device-interface
 *    SPEC.md): `/etc/cdi/*.{yaml,yml,json}` then `/var/run/cdi/*` (the dynamic directory has the
 *    higher priority: a device it names replaces one of the same name). Only specs of `kind:
 *    nvidia.com/gpu` count. Each `devices[]` entry but `all` (which aggregates the others) is one
 *    GPU, held by its `name` (`0`, `1`, `GPU-<uuid>`, `0:1` for a MIG device); its
 *    `containerEdits` plus the spec's top-level `containerEdits` (device nodes, mounts, env) are
 *    what the sandbox gets. `hooks` are not run (bubblewrap has none): `create-symlinks`
 *    `--link TARGET::LINK` hooks become symbolic links beside the libraries, and the library
 *    directory goes on `LD_LIBRARY_PATH` instead of the `update-ldcache` hook.
 * 2. Without a CDI spec: the device nodes `/dev/nvidia[0-9]+` (one GPU each, held by its minor
 *    number), the control nodes `/dev/nvidiactl`, `/dev/nvidia-uvm`, `/dev/nvidia-uvm-tools`,
 *    `/dev/nvidia-modeset` when present, UUIDs from `/proc/driver/nvidia/gpus/ * /information`
 *    (`Device Minor:` and `GPU UUID:` lines), and the driver's files found the way Apptainer's
 *    `--nv` finds them: the library basenames of its `nvliblist.conf` looked up in the dynamic
 *    linker's cache (`ldconfig -p`, entries of this machine's ABI only), and its binaries
 *    (`nvidia-smi`, …) on the host's standard binary directories.
 *
 * Inside a bubblewrap sandbox the files go to directories graph owns, as Apptainer puts them in
 * `/.singularity.d/libs`: libraries in {@link GPU_LIB_DIR} (appended to `LD_LIBRARY_PATH`),
 * binaries in {@link GPU_BIN_DIR} (appended to `PATH`). Binding them at their host paths would
 * need mount points inside the image's read-only `/usr`. Other CDI mounts (sockets, firmware) are
 * not bound, and the log says so.
 *
 * Every path is read under an injectable `root` (default `/`), so tests run against fake `/dev`,
 * `/proc` and `/etc/cdi` trees and a fake `ldconfig -p` text.
 */
import { closeSync, existsSync, openSync, readdirSync, readFileSync, readSync, realpathSync, statSync } from 'node:fs';
import path from 'node:path';
import { lazyRequire } from '../../engine/lazy.js';
import { captureOutput } from '../../engine/process.js';
import { findExecutable } from '../../engine/key/tools.js';
import { SBIN_DIRS } from './probe.js';

const yaml = lazyRequire<typeof import('yaml')>('yaml');

/** The CDI device kind of NVIDIA GPUs (`vendor/class`). */
export const NVIDIA_GPU_KIND = 'nvidia.com/gpu';
/** Where a sandbox sees the driver's libraries (on `LD_LIBRARY_PATH`). */
export const GPU_LIB_DIR = '/.graph/gpu/lib';
/** Where a sandbox sees the driver's binaries (on `PATH`). */
export const GPU_BIN_DIR = '/.graph/gpu/bin';
/** CDI spec directories, lowest priority first (CDI SPEC.md "Specification file location"). */
export const CDI_DIRS = ['/etc/cdi', '/var/run/cdi'] as const;
/** Control device nodes every GPU needs, bound when present (fallback discovery). */
export const CONTROL_NODES = ['/dev/nvidiactl', '/dev/nvidia-uvm', '/dev/nvidia-uvm-tools', '/dev/nvidia-modeset'] as const;

/**
 * The driver's libraries, by the basename prefix looked up in `ldconfig -p`: Apptainer's
 * `etc/nvliblist.conf` (the `.so` entries), which `--nv` binds.
 */
export const NVLIBLIST = [
  'libcuda.so', 'libcudadebugger.so', 'libEGL_nvidia.so', 'libGLESv1_CM_nvidia.so', 'libGLESv2_nvidia.so', 'libGLX_nvidia.so',
  'libnvcuvid.so', 'libnvidia-allocator.so', 'libnvidia-cbl.so', 'libnvidia-cfg.so', 'libnvidia-compiler.so', 'libnvidia-eglcore.so',
  'libnvidia-egl-wayland.so', 'libnvidia-encode.so', 'libnvidia-fatbinaryloader.so', 'libnvidia-fbc.so', 'libnvidia-glcore.so',
  'libnvidia-glsi.so', 'libnvidia-glvkspirv.so', 'libnvidia-gpucomp.so', 'libnvidia-gtk2.so', 'libnvidia-gtk3.so', 'libnvidia-ifr.so',
  'libnvidia-ml.so', 'libnvidia-ngx.so', 'libnvidia-nvvm.so', 'libnvidia-opencl.so', 'libnvidia-opticalflow.so',
  'libnvidia-ptxjitcompiler.so', 'libnvidia-rtcore.so', 'libnvidia-tls.so', 'libnvidia-wfb.so', 'libnvoptix.so', 'libOpenCL.so',
  'libvdpau_nvidia.so',
] as const;
/** The driver's binaries Apptainer's `nvliblist.conf` lists, looked up in {@link BIN_DIRS}. */
export const NVBINLIST = ['nvidia-smi', 'nvidia-debugdump', 'nvidia-persistenced', 'nvidia-cuda-mps-control', 'nvidia-cuda-mps-server'] as const;
/** Host directories searched for {@link NVBINLIST}. */
export const BIN_DIRS = ['/usr/bin', '/usr/sbin', '/bin', '/sbin', '/usr/local/bin'] as const;

/** A device node: host path, and its path in the sandbox (CDI `deviceNodes[].hostPath` / `path`). */
export interface DeviceNode {
  readonly hostPath: string;
  readonly path: string;
}

/** A file made visible in the sandbox: host path → container path (CDI `mounts[]`). */
export interface HostMount {
  readonly hostPath: string;
  readonly containerPath: string;
}

/** What the sandbox needs for one GPU, or for every GPU (CDI `containerEdits`, the parts graph applies). */
export interface GpuEdits {
  readonly deviceNodes: readonly DeviceNode[];
  readonly mounts: readonly HostMount[];
  /** `KEY=VALUE` entries, in order. */
  readonly env: readonly string[];
  /** `create-symlinks` hooks' `--link TARGET::LINK` pairs. */
  readonly links: readonly { readonly target: string; readonly link: string }[];
}

/** One GPU of the host. */
export interface GpuDevice {
  /** What a test holds: the CDI device name, else the minor number of `/dev/nvidiaN`. */
  readonly id: string;
  /** `GPU-…`, when `/proc/driver/nvidia/gpus` says. */
  readonly uuid?: string;
  /** The minor number (`N` of `/dev/nvidiaN`), when known. */
  readonly minor?: number;
  readonly edits: GpuEdits;
}

/** The GPUs of a host and how to reach them. */
export interface GpuHost {
  /** `cdi`: from the CDI specs in `specs`; `dev`: from /dev, /proc and the linker cache. */
  readonly source: 'cdi' | 'dev';
  /** Host paths of the CDI spec files read (empty for `dev`). */
  readonly specs: readonly string[];
  /** Sorted by id (numbers in numeric order). */
  readonly devices: readonly GpuDevice[];
  /** Edits every GPU needs (CDI top-level `containerEdits`; for `dev`, the control nodes only). */
  readonly common: GpuEdits;
  /** From `/proc/driver/nvidia/version`, e.g. `535.104.05`. */
  readonly driverVersion?: string;
}

/** Where discovery reads; every field optional. */
export interface GpuDiscoveryOptions {
  /** Prefix of every path read (`/etc/cdi`, `/dev`, `/proc`, binaries); default `/`. */
  readonly root?: string;
}

const NO_EDITS: GpuEdits = { deviceNodes: [], mounts: [], env: [], links: [] };

/**
 * Find the host's NVIDIA GPUs (module comment: CDI first, else /dev and /proc).
 * @returns undefined when there is none.
 * @throws Error naming the file for a CDI spec of kind nvidia.com/gpu that cannot be parsed.
 */
export function discoverGpus(options: GpuDiscoveryOptions = {}): GpuHost | undefined {
  const root = options.root ?? '/';
  const at = (p: string) => path.join(root, p);
  const driverVersion = readDriverVersion(at('/proc/driver/nvidia/version'));
  const uuids = readUuids(at('/proc/driver/nvidia/gpus'));
  const cdi = readCdiSpecs(root);
  if (cdi && cdi.devices.size) {
    const devices = [...cdi.devices.values()].map((d) => {
      const minor = d.edits.deviceNodes.map((n) => /^\/dev\/nvidia(\d+)$/.exec(n.path)).find(Boolean);
      const m = minor ? Number(minor[1]) : undefined;
      const uuid = d.name.startsWith('GPU-') ? d.name : m !== undefined ? uuids.get(m) : undefined;
      return { id: d.name, ...(uuid ? { uuid } : {}), ...(m !== undefined ? { minor: m } : {}), edits: d.edits };
    });
    return { source: 'cdi', specs: cdi.files, devices: devices.sort(byId), common: cdi.common, ...(driverVersion ? { driverVersion } : {}) };
  }
  const dev = at('/dev');
  const minors = (existsSync(dev) ? readdirSync(dev) : [])
    .map((name) => /^nvidia(\d+)$/.exec(name))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => Number(m[1]))
    .sort((a, b) => a - b);
  if (!minors.length) return undefined;
  const devices = minors.map((minor) => {
    const uuid = uuids.get(minor);
    return { id: String(minor), ...(uuid ? { uuid } : {}), minor, edits: { ...NO_EDITS, deviceNodes: [{ hostPath: at(`/dev/nvidia${minor}`), path: `/dev/nvidia${minor}` }] } };
  });
  const control = CONTROL_NODES.filter((n) => existsSync(at(n))).map((n) => ({ hostPath: at(n), path: n }));
  return { source: 'dev', specs: [], devices, common: { ...NO_EDITS, deviceNodes: control }, ...(driverVersion ? { driverVersion } : {}) };
}

function byId(a: GpuDevice, b: GpuDevice): number {
  const na = /^\d+$/.test(a.id) ? Number(a.id) : NaN;
  const nb = /^\d+$/.test(b.id) ? Number(b.id) : NaN;
  if (!Number.isNaN(na) && !Number.isNaN(nb)) return na - nb;
  if (!Number.isNaN(na)) return -1;
  if (!Number.isNaN(nb)) return 1;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/** `535.104.05` from the NVRM line of /proc/driver/nvidia/version; undefined when unreadable. */
function readDriverVersion(file: string): string | undefined {
  try {
    return /Kernel Module\s+(?:for \S+\s+)?([0-9][0-9.]*)/.exec(readFileSync(file, 'utf8'))?.[1];
  } catch {
    return undefined;
  }
}

/** Minor number → `GPU-…` from /proc/driver/nvidia/gpus/BUS/information. */
function readUuids(dir: string): Map<number, string> {
  const out = new Map<number, string>();
  if (!existsSync(dir)) return out;
  for (const bus of readdirSync(dir)) {
    try {
      const text = readFileSync(path.join(dir, bus, 'information'), 'utf8');
      const minor = /^Device Minor:\s*(\d+)/m.exec(text);
      const uuid = /^GPU UUID:\s*(\S+)/m.exec(text);
      if (minor && uuid) out.set(Number(minor[1]), uuid[1]);
    } catch {
      // not a GPU's directory
    }
  }
  return out;
}

/** The parts of a CDI `containerEdits` object graph applies. */
function readEdits(raw: unknown, root: string): GpuEdits {
  if (!raw || typeof raw !== 'object') return NO_EDITS;
  const e = raw as { deviceNodes?: unknown; mounts?: unknown; env?: unknown; hooks?: unknown };
  const list = (v: unknown) => (Array.isArray(v) ? v : []) as Record<string, unknown>[];
  const deviceNodes = list(e.deviceNodes)
    .filter((n) => typeof n?.path === 'string')
    .map((n) => ({ hostPath: path.join(root, (typeof n.hostPath === 'string' ? n.hostPath : n.path) as string), path: n.path as string }));
  const mounts = list(e.mounts)
    .filter((m) => typeof m?.hostPath === 'string' && typeof m.containerPath === 'string')
    .map((m) => ({ hostPath: path.join(root, m.hostPath as string), containerPath: m.containerPath as string }));
  const env = (Array.isArray(e.env) ? e.env : []).filter((v): v is string => typeof v === 'string' && v.includes('='));
  const links: { target: string; link: string }[] = [];
  for (const h of list(e.hooks)) {
    const args = Array.isArray(h?.args) ? (h.args as unknown[]).filter((a): a is string => typeof a === 'string') : [];
    if (!args.includes('create-symlinks')) continue;
    for (let i = 0; i < args.length - 1; i++) {
      if (args[i] !== '--link') continue;
      const [target, link] = args[i + 1].split('::');
      if (target && link) links.push({ target, link });
    }
  }
  return { deviceNodes, mounts, env, links };
}

function mergeEdits(a: GpuEdits, b: GpuEdits): GpuEdits {
  return { deviceNodes: [...a.deviceNodes, ...b.deviceNodes], mounts: [...a.mounts, ...b.mounts], env: [...a.env, ...b.env], links: [...a.links, ...b.links] };
}

/**
 * The nvidia.com/gpu devices of the CDI specs under `root`, later directories and files
 * overriding earlier ones by device name; undefined when there is no such spec.
 */
function readCdiSpecs(root: string): { files: string[]; devices: Map<string, { name: string; edits: GpuEdits }>; common: GpuEdits } | undefined {
  const files: string[] = [];
  const devices = new Map<string, { name: string; edits: GpuEdits }>();
  let common = NO_EDITS;
  for (const dir of CDI_DIRS) {
    const abs = path.join(root, dir);
    if (!existsSync(abs)) continue;
    for (const name of readdirSync(abs).sort()) {
      if (!/\.(ya?ml|json)$/.test(name)) continue;
      const file = path.join(abs, name);
      if (!statSync(file).isFile()) continue;
      let spec: { kind?: unknown; devices?: unknown; containerEdits?: unknown };
      try {
        const text = readFileSync(file, 'utf8');
        spec = (name.endsWith('.json') ? JSON.parse(text) : yaml().parse(text)) ?? {};
      } catch (e) {
        throw new Error(`cannot read CDI spec ${file}: ${(e as Error).message}`);
      }
      if (spec.kind !== NVIDIA_GPU_KIND) continue;
      files.push(file);
      common = mergeEdits(common, readEdits(spec.containerEdits, root));
      for (const d of (Array.isArray(spec.devices) ? spec.devices : []) as Record<string, unknown>[]) {
        if (typeof d?.name !== 'string' || d.name === 'all') continue;
        devices.set(d.name, { name: d.name, edits: readEdits(d.containerEdits, root) });
      }
    }
  }
  return files.length ? { files, devices, common } : undefined;
}

// ---------------------------------------------------------------------------------------------
// What a sandbox gets for the GPUs a test holds.

/**
 * The GPUs one test holds, as a sandbox applies them. Host paths are absolute; sandbox paths are
 * absolute in the sandbox.
 */
export interface GpuGrant {
  /** The held GPUs' ids (CDI names or minor numbers), in the order they were handed out. */
  readonly ids: readonly string[];
  /** `nvidia.com/gpu` when the host has a CDI spec (podman takes `--device nvidia.com/gpu=ID`). */
  readonly cdiKind?: string;
  /** Device nodes bound read-write (`--dev-bind`): control nodes first, then the held GPUs'. */
  readonly deviceNodes: readonly DeviceNode[];
  /** Files bound read-only, by sandbox path, sorted: libraries in {@link GPU_LIB_DIR}, binaries in {@link GPU_BIN_DIR}. */
  readonly files: readonly { readonly hostPath: string; readonly path: string }[];
  /** Symbolic links made in {@link GPU_LIB_DIR} (a soname → the bound file's basename), sorted by path. */
  readonly links: readonly { readonly target: string; readonly path: string }[];
  /**
   * Variables the command gets on top of the image's: the CDI specs' env, then
   * `NVIDIA_VISIBLE_DEVICES` (the held ids) and `CUDA_VISIBLE_DEVICES` (their UUIDs when every
   * one is known, else `0..N-1`: the sandbox has only the held GPUs' device nodes, so CUDA
   * numbers them from 0). `LD_LIBRARY_PATH` and `PATH` are not here: see {@link gpuEnv}.
   */
  readonly env: Readonly<Record<string, string>>;
  /** Host files found but not bound (sockets, firmware), for the log. */
  readonly notBound: readonly string[];
  readonly driverVersion?: string;
}

/** What `gpuGrant` may use besides the host. */
export interface GrantOptions {
  /** Prefix of host paths (as in discovery); default `/`. */
  readonly root?: string;
  /** The output of `ldconfig -p` (needed only when the host has no CDI spec). */
  readonly ldconfig?: string;
  /** The ABI tag of this machine's libraries in `ldconfig -p` (default from `process.arch`: `x86-64`, `AArch64`). */
  readonly abi?: string;
}

/** The `ldconfig -p` ABI tag of libraries for `arch` (Node's `process.arch`). */
export function ldconfigAbi(arch: string = process.arch): string {
  return ({ x64: 'x86-64', arm64: 'AArch64', ppc64: 'PowerPC64' } as Record<string, string>)[arch] ?? arch;
}

/**
 * Parse `ldconfig -p`: `\tNAME (FLAGS) => PATH` lines, kept when FLAGS name `abi` (e.g.
 * `libc6,x86-64`; 32-bit entries lack it). @returns name → path, the first entry of each name.
 */
export function parseLdconfig(text: string, abi: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^\s+(\S+) \(([^)]*)\) => (\S+)$/.exec(line);
    if (!m || !m[2].split(',').includes(abi) || out.has(m[1])) continue;
    out.set(m[1], m[3]);
  }
  return out;
}

/**
 * The grant for holding `ids` of `host` (module comment; {@link GpuGrant}).
 * @throws Error for an id the host does not have.
 */
export function gpuGrant(host: GpuHost, ids: readonly string[], options: GrantOptions = {}): GpuGrant {
  const root = options.root ?? '/';
  const held = ids.map((id) => {
    const d = host.devices.find((x) => x.id === id);
    if (!d) throw new Error(`GPU '${id}' is not one of this host's (${host.devices.map((x) => x.id).join(', ') || 'none'})`);
    return d;
  });
  const edits = held.reduce((acc, d) => mergeEdits(acc, d.edits), host.common);
  const deviceNodes = uniqueBy(edits.deviceNodes, (n) => n.path);
  const files = new Map<string, string>();
  const notBound: string[] = [];
  const links = new Map<string, string>();
  if (host.source === 'cdi') {
    for (const m of edits.mounts) {
      const base = path.posix.basename(m.containerPath);
      if (isLibrary(base)) files.set(`${GPU_LIB_DIR}/${base}`, m.hostPath);
      else if (/\/s?bin\//.test(m.containerPath)) files.set(`${GPU_BIN_DIR}/${base}`, m.hostPath);
      else notBound.push(m.hostPath);
    }
    for (const l of edits.links) {
      const target = path.posix.basename(l.target);
      const link = path.posix.basename(l.link);
      if (files.has(`${GPU_LIB_DIR}/${target}`) && !files.has(`${GPU_LIB_DIR}/${link}`)) links.set(`${GPU_LIB_DIR}/${link}`, target);
    }
  } else {
    const cache = parseLdconfig(options.ldconfig ?? '', options.abi ?? ldconfigAbi());
    for (const [name, p] of cache) {
      if (!NVLIBLIST.some((lib) => name.startsWith(lib))) continue;
      files.set(`${GPU_LIB_DIR}/${name}`, realOrSelf(path.join(root, p)));
    }
    for (const bin of NVBINLIST) {
      const found = BIN_DIRS.map((dir) => path.join(root, dir, bin)).find((p) => existsSync(p));
      if (found) files.set(`${GPU_BIN_DIR}/${bin}`, realOrSelf(found));
    }
  }
  // A library bound under its file name (libcuda.so.535.104.05) must also answer to its soname
  // (libcuda.so.1, from its ELF DT_SONAME), the link the update-ldcache hook would have made.
  for (const [p, hostPath] of [...files]) {
    if (!p.startsWith(`${GPU_LIB_DIR}/`)) continue;
    const soname = elfSoname(hostPath);
    const link = soname && `${GPU_LIB_DIR}/${soname}`;
    if (link && !files.has(link) && !links.has(link)) links.set(link, path.posix.basename(p));
  }
  const env: Record<string, string> = {};
  for (const kv of edits.env) env[kv.slice(0, kv.indexOf('='))] = kv.slice(kv.indexOf('=') + 1);
  env.NVIDIA_VISIBLE_DEVICES = ids.join(',');
  env.CUDA_VISIBLE_DEVICES = held.every((d) => d.uuid) ? held.map((d) => d.uuid).join(',') : held.map((_, i) => String(i)).join(',');
  return {
    ids: [...ids],
    ...(host.source === 'cdi' ? { cdiKind: NVIDIA_GPU_KIND } : {}),
    deviceNodes,
    files: [...files].sort(([a], [b]) => (a < b ? -1 : 1)).map(([p, hostPath]) => ({ hostPath, path: p })),
    links: [...links].sort(([a], [b]) => (a < b ? -1 : 1)).map(([p, target]) => ({ target, path: p })),
    env,
    notBound,
    ...(host.driverVersion ? { driverVersion: host.driverVersion } : {}),
  };
}

/**
 * The command's environment with a grant applied: the grant's variables, then {@link GPU_LIB_DIR}
 * appended to `LD_LIBRARY_PATH` and {@link GPU_BIN_DIR} to `PATH` (appended, as Apptainer's `--nv`
 * does: the image's own CUDA compatibility libraries and tools come first). `PATH` falls back to
 * `defaultPath` when the image sets none.
 */
export function gpuEnv(env: Readonly<Record<string, string>>, grant: GpuGrant, defaultPath: string): Record<string, string> {
  const out: Record<string, string> = { ...env, ...grant.env };
  out.LD_LIBRARY_PATH = env.LD_LIBRARY_PATH ? `${env.LD_LIBRARY_PATH}:${GPU_LIB_DIR}` : GPU_LIB_DIR;
  out.PATH = `${env.PATH ?? defaultPath}:${GPU_BIN_DIR}`;
  return out;
}

/**
 * The DT_SONAME of a 64-bit little-endian ELF shared object (ELF spec: program headers, PT_LOAD
 * and PT_DYNAMIC; the dynamic section's DT_STRTAB address mapped to a file offset through the
 * PT_LOAD that holds it). @returns undefined for anything else or anything unreadable.
 */
export function elfSoname(file: string): string | undefined {
  let fd: number | undefined;
  try {
    fd = openSync(file, 'r');
    const at = (offset: number, length: number, partial = false) => {
      const b = Buffer.alloc(length);
      const n = readSync(fd as number, b, 0, length, offset);
      return n === length || (partial && n > 0) ? b.subarray(0, n) : undefined;
    };
    const h = at(0, 64);
    if (!h || h.readUInt32BE(0) !== 0x7f454c46 || h[4] !== 2 || h[5] !== 1) return undefined;
    const phoff = Number(h.readBigUInt64LE(32));
    const phentsize = h.readUInt16LE(54);
    const phnum = h.readUInt16LE(56);
    const loads: { vaddr: number; offset: number; size: number }[] = [];
    let dynamic: { offset: number; size: number } | undefined;
    for (let i = 0; i < phnum; i++) {
      const ph = at(phoff + i * phentsize, 56);
      if (!ph) return undefined;
      const type = ph.readUInt32LE(0);
      const offset = Number(ph.readBigUInt64LE(8));
      if (type === 1) loads.push({ vaddr: Number(ph.readBigUInt64LE(16)), offset, size: Number(ph.readBigUInt64LE(32)) });
      if (type === 2) dynamic = { offset, size: Number(ph.readBigUInt64LE(32)) };
    }
    const dyn = dynamic && dynamic.size <= 1 << 20 ? at(dynamic.offset, dynamic.size) : undefined;
    if (!dyn) return undefined;
    let strtab: number | undefined;
    let soname: number | undefined;
    for (let o = 0; o + 16 <= dyn.length; o += 16) {
      const tag = Number(dyn.readBigInt64LE(o));
      const value = Number(dyn.readBigUInt64LE(o + 8));
      if (tag === 0) break;
      if (tag === 5) strtab = value;
      if (tag === 14) soname = value;
    }
    if (strtab === undefined || soname === undefined) return undefined;
    const load = loads.find((l) => (strtab as number) >= l.vaddr && (strtab as number) < l.vaddr + l.size);
    if (!load) return undefined;
    const name = at(load.offset + (strtab - load.vaddr) + soname, 256, true);
    if (!name) return undefined;
    const end = name.indexOf(0);
    const text = name.subarray(0, end < 0 ? 0 : end).toString('latin1');
    return /^[A-Za-z0-9_.+-]+$/.test(text) ? text : undefined;
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

function isLibrary(base: string): boolean {
  return /\.so(\.|$)/.test(base);
}

function realOrSelf(p: string): string {
  try {
    return realpathSync(p);
  } catch {
    return p;
  }
}

function uniqueBy<T>(xs: readonly T[], key: (x: T) => string): T[] {
  const seen = new Set<string>();
  return xs.filter((x) => (seen.has(key(x)) ? false : (seen.add(key(x)), true)));
}

/**
 * The dynamic linker cache's listing (`ldconfig -p`; ldconfig is looked up on PATH and in the sbin
 * directories). @returns '' when ldconfig is missing or fails (no driver library is found then).
 */
export async function ldconfigOutput(): Promise<string> {
  const ldconfig = findExecutable('ldconfig', process.env.PATH, SBIN_DIRS);
  if (!ldconfig) return '';
  try {
    return await captureOutput([ldconfig, '-p']);
  } catch {
    return '';
  }
}

/** The reason a test claiming `amount` GPUs cannot run on a host with `found`. */
export function noGpuReason(amount: number, found: number): string {
  return found === 0 ? 'no GPU on this host' : `needs ${amount} GPUs, this host has ${found}`;
}
