/**
 * The report page (`graph report html`) in a real browser: Debian's headless Chromium driven by
 * playwright-core (no browser download). The page must load with no console errors and no network
 * requests, draw the zoo's nodes, and show a failed node's log tail on a click. Screenshots are kept
 * in the test's temp directory (GRAPH_KEEP_TEST_TMP=1 keeps it).
 */
import { copyFileSync, cpSync, existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium, type Browser, type Page } from 'playwright-core';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { modelsForNodes, writeZoo } from '../bench/zoo.js';
import { graph, REPO, workspace } from './helpers.js';

const test = suite('report page');
const CHROMIUM = process.env.GRAPH_CHROMIUM ?? '/usr/bin/chromium';

let browser: Browser;

test.before(async () => {
  // These flags keep Chromium off the network (SANDBOX.md); root needs --no-sandbox. playwright
  // gives it a fresh profile directory in TMPDIR (the test runner's, removed afterwards).
  try {
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
    });
  } catch (e) {
    // uvu reports a failing hook as no tests run, without the reason.
    process.stderr.write(`cannot start ${CHROMIUM}: ${(e as Error).message}\n`);
    process.exitCode = 1;
    throw e;
  }
});

test.after(async () => {
  await browser?.close();
});

/** Open `file` and collect console errors, page errors and every request but the page's own. */
async function open(file: string): Promise<{ page: Page; errors: string[]; requests: string[] }> {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const errors: string[] = [];
  const requests: string[] = [];
  const url = pathToFileURL(file).href;
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') errors.push(`${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('request', (r) => {
    if (r.url() !== url) requests.push(r.url());
  });
  await page.goto(url, { waitUntil: 'load' });
  return { page, errors, requests };
}

test("a plan of the zoo: every node of the zoo is in the DAG, no console errors, no network", async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'graph-page-'));
  for (const f of ['images.yaml', 'models.yaml']) copyFileSync(path.join(REPO, f), path.join(dir, f));
  cpSync(path.join(REPO, 'zoo'), path.join(dir, 'zoo'), { recursive: true });
  const r = graph(dir, 'report', 'html', 'plan.html', '--offline');
  assert.is(r.code, 0, r.stderr);
  const ids = graph(dir, 'query').stdout.trim().split('\n');
  assert.ok(ids.length > 10, ids.join(' '));
  const { page, errors, requests } = await open(path.join(dir, 'plan.html'));
  const titles = await page.$$eval('#dag g.node > title', (ts) => ts.map((t) => t.textContent));
  assert.is(titles.length, ids.length);
  const labels = await page.$$eval('#dag g.node text', (ts) => ts.map((t) => t.textContent));
  assert.equal([...labels].sort(), [...ids].sort());
  // Filters: unticking the `test` kind dims exactly the test nodes.
  await page.click('#filter-kind input[value="test"]');
  const dimmed = await page.$$eval('#dag g.node.dim text', (ts) => ts.map((t) => t.textContent as string));
  assert.equal(dimmed.sort(), ids.filter((i) => i.startsWith('test:')).sort());
  await page.screenshot({ path: path.join(dir, 'plan.png'), fullPage: true });
  assert.ok(existsSync(path.join(dir, 'plan.png')));
  assert.equal(errors, []);
  assert.equal(requests, []);
  await page.close();
});

test('a failed build: clicking the failed node shows its log tail; the timeline marks the critical path; a screenshot is kept', async () => {
  const dir = workspace({
    'not-a-layout/readme.txt': 'nothing here',
    'f.txt': 'x',
    'g.txt': 'y',
    'images.yaml': 'version: 1\nimages:\n  bad:\n    from: oci-layout:not-a-layout\n    layers: [{copy: f.txt, to: /f}]\n  good:\n    layers: [{copy: g.txt, to: /g}]\n    convert: [sif]\n',
  });
  const b = graph(dir, 'build', '--report', 'report.json', '--profile', 'profile.json', '--jobs', '2');
  assert.is(b.code, 1, b.stderr);
  const r = graph(dir, 'report', 'html', 'out/report.html', '--from', 'report.json', '--profile', 'profile.json');
  assert.is(r.code, 0, r.stderr);
  const html = readFileSync(path.join(dir, 'out/report.html'), 'utf8');
  assert.not.match(html, /<(script|link|img)[^>]+(src|href)=/i, 'nothing is loaded from elsewhere');
  const { page, errors, requests } = await open(path.join(dir, 'out/report.html'));
  assert.is(await page.$('#log-tail'), null, 'no log shown before a click');
  await page.click('#dag g.node:has(text:text-is("build:bad"))');
  assert.is(await page.textContent('#detail-id'), 'build:bad');
  const tail = (await page.textContent('#log-tail')) as string;
  assert.match(tail, '# failed: OCI image layout');
  assert.match(tail, 'not-a-layout');
  // The timeline: one bar per node that started, the critical path outlined.
  const bars = await page.$$eval('#gantt rect.bar', (rs) => rs.map((r) => [r.getAttribute('data-id'), r.classList.contains('crit')]));
  assert.equal(Object.fromEntries(bars), { 'build:bad': false, 'build:good': true, 'convert:good': true, 'publish:good': true });
  const shot = path.join(dir, 'out', 'report.png');
  await page.screenshot({ path: shot, fullPage: true });
  assert.ok(readFileSync(shot).subarray(1, 4).toString() === 'PNG');
  assert.equal(errors, []);
  assert.equal(requests, []);
  await page.close();
});

test("a 4,500-node zoo: the DAG has one box per image, the page loads at once, a group's rows appear when it opens", async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'graph-page-'));
  const nodes = writeZoo(dir, { models: modelsForNodes(4500) });
  assert.ok(nodes >= 4400, String(nodes));
  const r = graph(dir, 'report', 'html', 'big.html', '--offline');
  assert.is(r.code, 0, r.stderr);
  const started = Date.now();
  const { page, errors, requests } = await open(path.join(dir, 'big.html'));
  const loadMs = Date.now() - started;
  // Loading writes no node rows: 40 images' groups, closed.
  assert.is(await page.$$eval('#groups tr.row', (rs) => rs.length), 0);
  const boxes = await page.$$eval('#dag g.node text', (ts) => ts.map((t) => t.textContent as string));
  assert.is(boxes.length, 40);
  assert.ok(boxes.includes('kipoi-base-env (2)'), boxes.join(', '));
  // Generous: the machine is shared; what keeps it fast is that no rows are written (above).
  assert.ok(loadMs < 15000, `loaded in ${loadMs} ms`);
  // A click on an image's box opens its group and shows one of its nodes.
  await page.click('#dag g.node:has(text:text-is("kipoi-base-env (2)"))');
  assert.is(await page.textContent('#detail-id'), 'build:kipoi-base-env');
  assert.is(await page.$$eval('#groups details[open] tr.row', (rs) => rs.length), 2);
  assert.equal(errors, []);
  assert.equal(requests, []);
  await page.screenshot({ path: path.join(dir, 'big.png') });
  await page.close();
});

test.run();
