/** The one HTTP client (engine/http.ts) against a real HTTP server on 127.0.0.1. */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { ConnectionError, httpRequest, TransientError, withRetries } from '../../engine/http.js';
import { freePort } from '../helpers.js';

const test = suite('http');
const FAST = { backoffMs: [1] };

/** Serve `answers` in turn (the last repeats); record each request's method and body. */
async function serve(answers: Array<{ status: number; headers?: Record<string, string> }>) {
  const seen: Array<{ method: string; body: string }> = [];
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      seen.push({ method: req.method ?? '', body });
      const a = answers[Math.min(seen.length - 1, answers.length - 1)];
      res.writeHead(a.status, a.headers).end(`answer ${seen.length}`);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return { url: `http://127.0.0.1:${port}/x`, seen, close: () => new Promise((r) => server.close(r)) };
}

test('503 and 429 are retried; the first other answer is returned with its body', async () => {
  const s = await serve([{ status: 503 }, { status: 429 }, { status: 200 }]);
  const res = await httpRequest(s.url, {}, FAST);
  assert.is(res.status, 200);
  assert.is(await res.text(), 'answer 3');
  assert.is(s.seen.length, 3);
  await s.close();
});

test('a 404 is the caller\'s: returned at once, no retry', async () => {
  const s = await serve([{ status: 404 }]);
  assert.is((await httpRequest(s.url, {}, FAST)).status, 404);
  assert.is(s.seen.length, 1);
  await s.close();
});

test('after the last attempt, a 5xx answer is returned as it is', async () => {
  const s = await serve([{ status: 500 }]);
  const res = await httpRequest(s.url, {}, { ...FAST, attempts: 3 });
  assert.is(res.status, 500);
  assert.is(s.seen.length, 3);
  await s.close();
});

test('a body made by a function is made afresh for every attempt', async () => {
  const s = await serve([{ status: 502 }, { status: 201 }]);
  let made = 0;
  const body = () => {
    made++;
    return Readable.from([Buffer.from('hello')]);
  };
  const res = await httpRequest(s.url, { method: 'PUT', body }, FAST);
  assert.is(res.status, 201);
  assert.is(made, 2);
  assert.equal(s.seen, [{ method: 'PUT', body: 'hello' }, { method: 'PUT', body: 'hello' }]);
  await s.close();
});

test('no server: ConnectionError with the cause, after every attempt', async () => {
  const port = await freePort();
  try {
    await httpRequest(`http://127.0.0.1:${port}/x`, {}, { ...FAST, attempts: 2 });
    assert.unreachable('should throw');
  } catch (e) {
    assert.instance(e, ConnectionError);
    assert.is((e as ConnectionError).code, 'ECONNREFUSED');
    assert.is((e as Error).message, `cannot reach 127.0.0.1:${port}: ECONNREFUSED`);
  }
});

test('withRetries: a TransientError is retried, then given up on with the hint; another error fails at once', async () => {
  let calls = 0;
  try {
    await withRetries(async () => {
      calls++;
      throw new TransientError('reset mid-body');
    }, { ...FAST, attempts: 3, hint: 'check the network' });
    assert.unreachable('should throw');
  } catch (e) {
    assert.is((e as Error).message, 'reset mid-body (gave up after 3 attempts; check the network)');
  }
  assert.is(calls, 3);
  calls = 0;
  try {
    await withRetries(async () => {
      calls++;
      throw new Error('digest mismatch');
    }, FAST);
  } catch (e) {
    assert.is((e as Error).message, 'digest mismatch');
  }
  assert.is(calls, 1);
  assert.is(await withRetries(async (n) => (n < 2 ? Promise.reject(new TransientError('once')) : 'ok'), FAST), 'ok');
});

test.run();
