/**
 * Where the remote cache is and how to authenticate to it, with the secrets kept out of sight.
 *
 * The URL comes from `--remote-cache`, else `GRAPH_REMOTE_CACHE`, else `settings.remote_cache` in
 * images.yaml. Credentials, first found wins:
 *
 * 1. the URL's user info (`https://user:password@host/path`): HTTP Basic;
 * 2. `GRAPH_REMOTE_CACHE_HEADER` (`Name: value`, e.g. `Authorization: Bearer TOKEN`; several
 *    separated by newlines): sent as given, but only to a URL from the command line or the
 *    environment, never to one from images.yaml (a pull request could point it elsewhere);
 * 3. a netrc entry for the host (`$NETRC`, else `~/.netrc`; `machine HOST login L password P`, or
 *    `default`): HTTP Basic.
 *
 * Secrets never leave this module except in request headers: `display` is the URL with the
 * password masked (`https://user:***@host/path`) for every message, and `redact` removes each
 * secret from a text (an error message that might quote a request) before it is shown.
 */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';

/** Where the URL came from: the flag or the environment are the operator's, settings the workspace's. */
export type RemoteCacheSource = 'flag' | 'env' | 'settings';

export interface RemoteCacheEndpoint {
  /** The base URL without user info and without a trailing slash; requests go to `${base}/ac/…`. */
  readonly base: string;
  /** For messages: the URL with the password masked. */
  readonly display: string;
  /** Headers every request carries (authentication). */
  readonly headers: Readonly<Record<string, string>>;
  /** Remove every secret from a text, replacing each with `***`. */
  redact(text: string): string;
}

/** A remote cache URL or credential that cannot be used: a usage error. */
export class RemoteCacheConfigError extends Error {}

const MASK = '***';

/**
 * Resolve the endpoint of `url`.
 * @param env the environment (`GRAPH_REMOTE_CACHE_HEADER`, `NETRC`, `HOME`).
 * @throws RemoteCacheConfigError for a URL that is not http(s), or a malformed header variable.
 */
export function resolveEndpoint(url: string, source: RemoteCacheSource, env: NodeJS.ProcessEnv): RemoteCacheEndpoint {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new RemoteCacheConfigError(`remote cache '${maskUserInfo(url)}' is not a URL (expected http://HOST[:PORT][/PATH] or https://…)`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new RemoteCacheConfigError(`remote cache '${maskUserInfo(url)}' must be an http:// or https:// URL`);
  }
  const secrets: string[] = [];
  const headers: Record<string, string> = {};
  const user = decodeURIComponent(parsed.username);
  const password = decodeURIComponent(parsed.password);
  const rawPassword = parsed.password;
  const display = `${parsed.protocol}//${user ? `${parsed.username}${parsed.password ? `:${MASK}` : ''}@` : ''}${parsed.host}${parsed.pathname.replace(/\/+$/, '')}`;
  parsed.username = '';
  parsed.password = '';
  const base = `${parsed.protocol}//${parsed.host}${parsed.pathname.replace(/\/+$/, '')}`;
  if (user || password) {
    headers.authorization = basic(user, password);
    secrets.push(password, rawPassword);
  } else {
    const fromEnv = env.GRAPH_REMOTE_CACHE_HEADER;
    if (fromEnv && source !== 'settings') {
      for (const line of fromEnv.split('\n').filter((l) => l.trim())) {
        const m = /^\s*([A-Za-z0-9!#$%&'*+.^_`|~-]+)\s*:\s*(.*?)\s*$/.exec(line);
        if (!m) throw new RemoteCacheConfigError('GRAPH_REMOTE_CACHE_HEADER must be `Name: value` (one header a line)');
        headers[m[1].toLowerCase()] = m[2];
        secrets.push(m[2]);
      }
    } else {
      const entry = netrcEntry(parsed.hostname, env);
      if (entry) {
        headers.authorization = basic(entry.login, entry.password);
        secrets.push(entry.password);
      }
    }
  }
  for (const value of Object.values(headers)) secrets.push(value, value.replace(/^\S+\s+/, ''));
  const hidden = secrets.filter((s) => s.length >= 3).sort((a, b) => b.length - a.length);
  return {
    base,
    display,
    headers,
    redact: (text) => hidden.reduce((t, s) => t.split(s).join(MASK), text),
  };
}

/** The URL as text with any password replaced by `***` (also for URLs that do not parse). */
export function maskUserInfo(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/[^/@:]*):[^/@]*@/i, `$1:${MASK}@`);
}

const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

/**
 * The netrc entry for `host` (`machine` tokens, else `default`), from `$NETRC` or `~/.netrc`.
 * Undefined when there is no file or no entry with a password.
 */
function netrcEntry(host: string, env: NodeJS.ProcessEnv): { login: string; password: string } | undefined {
  const file = env.NETRC ?? path.join(env.HOME ?? homedir(), '.netrc');
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  const tokens = text.replace(/^\s*#.*$/gm, '').split(/\s+/).filter(Boolean);
  let current: { machine?: string; login?: string; password?: string } | undefined;
  const entries: Array<{ machine?: string; login?: string; password?: string }> = [];
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i];
    if (t === 'machine') entries.push((current = { machine: tokens[++i] }));
    else if (t === 'default') entries.push((current = {}));
    else if (t === 'login' && current) current.login = tokens[++i];
    else if (t === 'password' && current) current.password = tokens[++i];
    else if (t === 'account' || t === 'macdef') i++;
  }
  const entry = entries.find((e) => e.machine === host) ?? entries.find((e) => e.machine === undefined);
  return entry?.password !== undefined ? { login: entry.login ?? '', password: entry.password } : undefined;
}
