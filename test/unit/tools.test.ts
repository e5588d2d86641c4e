/** Tool identities for keys (engine/key/tools.ts): probed once, remembered by the executables' stat. */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { NodeDef } from '../../engine/rule.js';
import { resolveTools, toolField, type ToolProbe } from '../../engine/key/tools.js';

const test = suite('tools');

function setup() {
  const dir = mkdtempSync(path.join(tmpdir(), 'graph-tools-'));
  const exe = path.join(dir, 'buildah');
  writeFileSync(exe, 'v1');
  let probes = 0;
  let version = 'buildah 1.28.2';
  let fails = false;
  const probe: ToolProbe = {
    name: 'dockerfile-builder:auto',
    executables: () => [exe, path.join(dir, 'podman')],
    identify: async () => {
      probes++;
      if (fails) throw new Error('cannot run');
      return `${version}\nsecond line`;
    },
  };
  const node = { id: 'build:x', tool: 'dockerfile-builder:auto', tools: [probe] } as unknown as NodeDef;
  return {
    dir,
    exe,
    node,
    memo: path.join(dir, 'tools.json'),
    probes: () => probes,
    set: (v: string, f = false) => ((version = v), (fails = f)),
  };
}

test('a tool is probed once, then known by its executables\' stat until one changes', async () => {
  const t = setup();
  const first = await resolveTools([t.node, t.node], t.memo);
  assert.equal([...first], [['dockerfile-builder:auto', 'buildah 1.28.2']]);
  assert.is(t.probes(), 1);
  t.set('buildah 1.29.0');
  assert.equal([...(await resolveTools([t.node], t.memo))], [['dockerfile-builder:auto', 'buildah 1.28.2']]);
  assert.is(t.probes(), 1, 'served from the memo: no process started');
  writeFileSync(t.exe, 'v2 (upgraded)');
  assert.equal([...(await resolveTools([t.node], t.memo))], [['dockerfile-builder:auto', 'buildah 1.29.0']]);
  assert.is(t.probes(), 2);
  writeFileSync(path.join(t.dir, 'podman'), 'installed');
  await resolveTools([t.node], t.memo);
  assert.is(t.probes(), 3, 'another candidate installed: probed again');
});

test('a tool that cannot be probed is unavailable, and asked again next time', async () => {
  const t = setup();
  t.set('', true);
  assert.equal([...(await resolveTools([t.node], t.memo))], [['dockerfile-builder:auto', 'dockerfile-builder:auto: unavailable']]);
  t.set('buildah 1.28.2');
  assert.equal([...(await resolveTools([t.node], t.memo))], [['dockerfile-builder:auto', 'buildah 1.28.2']]);
  assert.is(t.probes(), 2);
});

test('the key\'s tool field: graph\'s own tool, then each identity; a node without tools keeps its own', () => {
  const t = setup();
  assert.is(toolField(t.node, new Map([['dockerfile-builder:auto', 'buildah 1.28.2']])), 'dockerfile-builder:auto; buildah 1.28.2');
  assert.is(toolField(t.node, undefined), 'dockerfile-builder:auto; dockerfile-builder:auto: not probed');
  assert.is(toolField({ tool: 'graph-layers/2' } as NodeDef, new Map()), 'graph-layers/2');
});

test.run();
