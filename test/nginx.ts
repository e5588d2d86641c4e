/**
 * A real HTTP cache for the end-to-end tests: Debian's nginx with WebDAV on 127.0.0.1, its root
 * and its access log in a temp dir (../shared/SANDBOX.md, "shared HTTP cache"). GET of a missing
 * key is 404, PUT 201 (204 when replacing), HEAD 200; `readOnly` answers every write 403, as a
 * server enforcing read-only access for untrusted builds does.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { freePort } from './helpers.js';

export interface Nginx {
  /** `http://127.0.0.1:PORT` */
  readonly url: string;
  /** The directory served: `ac/` and `cas/` appear under it. */
  readonly root: string;
  /** The access log's requests so far: method, path, status and body bytes sent. */
  requests(): Array<{ method: string; path: string; status: number; bytes: number }>;
  /** Stop at once: master and workers SIGKILLed (a server that vanishes mid-build). */
  kill(): void;
  stop(): Promise<void>;
}

export async function startNginx(options: { readOnly?: boolean } = {}): Promise<Nginx> {
  const prefix = mkdtempSync(path.join(tmpdir(), 'graph-nginx-'));
  const root = path.join(prefix, 'root');
  mkdirSync(root);
  mkdirSync(path.join(prefix, 'tmp'));
  const port = await freePort();
  const log = path.join(prefix, 'access.log');
  const conf = path.join(prefix, 'nginx.conf');
  writeFileSync(
    conf,
    `user root root;
error_log ${prefix}/error.log;
events { worker_connections 256; }
http {
  log_format cache '$request_method $uri $status $body_bytes_sent';
  access_log ${log} cache;
  client_body_temp_path ${prefix}/tmp;
  proxy_temp_path ${prefix}/tmp;
  fastcgi_temp_path ${prefix}/tmp;
  uwsgi_temp_path ${prefix}/tmp;
  scgi_temp_path ${prefix}/tmp;
  server {
    listen 127.0.0.1:${port};
    location / {
      root ${root};
      dav_methods PUT DELETE;
      create_full_put_path on;
      client_max_body_size 0;
      ${options.readOnly ? 'limit_except GET HEAD { deny all; }' : ''}
    }
  }
}
`,
  );
  const child: ChildProcess = spawn('nginx', ['-c', conf, '-p', prefix, '-g', `daemon off; pid ${prefix}/nginx.pid;`], { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
  let stderr = '';
  child.stderr?.on('data', (d) => (stderr += d));
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    try {
      await fetch(`${url}/`);
      break;
    } catch {
      // not listening yet
    }
    if (i > 100 || child.exitCode !== null) throw new Error(`nginx did not start: ${stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url,
    root,
    requests: () => {
      let text = '';
      try {
        text = readFileSync(log, 'utf8');
      } catch {
        // nothing logged yet
      }
      return text
        .split('\n')
        .filter(Boolean)
        .map((line) => {
          const [method, p, status, bytes] = line.split(' ');
          return { method, path: p, status: Number(status), bytes: Number(bytes) };
        });
    },
    kill: () => {
      // The whole process group: nginx's workers outlive a master killed alone.
      if (child.exitCode === null && child.signalCode === null) process.kill(-(child.pid as number), 'SIGKILL');
    },
    stop: () =>
      new Promise((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.on('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}
