// Load held, the CI version of `dsi bench --suite soak`: 32 streaming clients for 75 s on a local
// synthetic stack (real processes), every answer checked, each process's RSS and descriptors sampled.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { QUICK_SOAK, soakBench, soakReport } from './commands/bench-soak';

jest.setTimeout(180_000);

it('32 streaming clients for 75 s: no error, identical answers, RSS and descriptors flat, p99 stable', async () => {
  const outDir = fs.mkdtempSync(path.join(os.tmpdir(), 'dsi-soak-'));
  try {
    const result = await soakBench({ ...QUICK_SOAK, outDir }, () => undefined);
    const report = soakReport(result).join('\n');
    if (process.env.DSI_SOAK_REPORT) fs.writeFileSync(process.env.DSI_SOAK_REPORT, report + '\n');
    expect(result.requests).toBeGreaterThan(100);
    // Every criterion holds; a failure prints which, with its figures.
    expect(result.criteria.filter((c) => !c.pass)).toEqual([]);
  } finally {
    fs.rmSync(outDir, { recursive: true, force: true });
  }
});
