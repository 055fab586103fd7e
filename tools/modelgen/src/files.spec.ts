import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { defaultModelPairFiles, ensureDefaultModels, filesFingerprint, MODEL_FILES, modelFingerprint, writeDefaultModels } from './files';

/**
 * Pinned fingerprints of the default pair. If a change to the generator is intended, update
 * these (and re-check the quality numbers in libs/models/src/estimate.spec.ts); otherwise this catches accidental
 * changes to the bytes every consumer caches.
 */
const EXPECTED_FINGERPRINTS = {
  target: '860ee1d2ff9efee682b69217a2a580cd627c86327cd48ee4600578ecf56c6b62',
  drafter: '6e6fe4f77efd0f6358dd23a77df1dfadad2432b79a766b1824170d236e2dd65c',
};

const sha256 = (file: string) => createHash('sha256').update(fs.readFileSync(file)).digest('hex');

const temps: string[] = [];
function tempDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'modelgen-files-'));
  temps.push(d);
  return d;
}
afterAll(() => {
  for (const d of temps) fs.rmSync(d, { recursive: true, force: true });
});

function fileHashes(root: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const model of ['target', 'drafter']) {
    for (const name of fs.readdirSync(path.join(root, model)).sort()) out[`${model}/${name}`] = sha256(path.join(root, model, name));
  }
  return out;
}

describe('writeDefaultModels', () => {
  it('writes the same bytes on every run (two fresh folders) and matches the pinned fingerprints', async () => {
    const a = await writeDefaultModels(tempDir());
    const b = await writeDefaultModels(tempDir());
    const ha = fileHashes(a.root);
    expect(Object.keys(ha)).toEqual([...MODEL_FILES.map((f) => `target/${f}`), ...MODEL_FILES.map((f) => `drafter/${f}`)]);
    expect(fileHashes(b.root)).toEqual(ha);
    const fingerprints = { target: modelFingerprint(a.target), drafter: modelFingerprint(a.drafter) };
    console.log(`fingerprints ${JSON.stringify(fingerprints)}`);
    expect(fingerprints).toEqual(EXPECTED_FINGERPRINTS);
    expect(modelFingerprint(b.target)).toBe(fingerprints.target);
  });

  it('returns absolute folder paths and is idempotent', async () => {
    const root = tempDir();
    const rel = path.relative(process.cwd(), root);
    const p = await writeDefaultModels(rel);
    expect(p).toEqual({ root, target: path.join(root, 'target'), drafter: path.join(root, 'drafter') });
    const before = fileHashes(root);
    await writeDefaultModels(root);
    expect(fileHashes(root)).toEqual(before);
    expect(fs.readdirSync(p.target).sort()).toEqual([...MODEL_FILES].sort()); // no temp files left
  });

  it('reports model file sizes', () => {
    const { target, drafter } = defaultModelPairFiles();
    const size = (m: Map<string, Uint8Array>) => [...m].map(([n, d]) => `${n} ${d.length}`).join(', ');
    console.log(`target: ${size(target)}\ndrafter: ${size(drafter)}`);
    expect((target.get('model.onnx') as Uint8Array).length).toBeLessThan(20e6);
    expect((drafter.get('model.onnx') as Uint8Array).length).toBeLessThan((target.get('model.onnx') as Uint8Array).length / 2);
  });
});

describe('modelFingerprint', () => {
  it('equals the in-memory fingerprint and changes when a file changes or goes missing', async () => {
    const p = await writeDefaultModels(tempDir());
    const fp = modelFingerprint(p.target);
    expect(filesFingerprint(defaultModelPairFiles().target)).toBe(fp);
    expect(modelFingerprint(p.drafter)).not.toBe(fp);
    fs.writeFileSync(path.join(p.target, 'extra.txt'), 'ignored');
    expect(modelFingerprint(p.target)).toBe(fp);
    const cfg = path.join(p.target, 'config.json');
    fs.appendFileSync(cfg, ' ');
    const changed = modelFingerprint(p.target);
    expect(changed).not.toBe(fp);
    fs.rmSync(cfg);
    expect(modelFingerprint(p.target)).not.toBe(changed);
    expect(modelFingerprint(p.target)).not.toBe(fp);
  });
});

describe('ensureDefaultModels', () => {
  it('writes missing models, then leaves current ones untouched', async () => {
    const cache = path.join(tempDir(), 'nested', 'cache');
    const p = await ensureDefaultModels(cache);
    const fp = { target: modelFingerprint(p.target), drafter: modelFingerprint(p.drafter) };
    expect(fp).toEqual({
      target: filesFingerprint(defaultModelPairFiles().target),
      drafter: filesFingerprint(defaultModelPairFiles().drafter),
    });
    const inode = fs.statSync(path.join(p.target, 'model.onnx')).ino;
    const mtime = fs.statSync(path.join(p.target, 'model.onnx')).mtimeMs;
    await ensureDefaultModels(cache);
    expect(fs.statSync(path.join(p.target, 'model.onnx')).ino).toBe(inode);
    expect(fs.statSync(path.join(p.target, 'model.onnx')).mtimeMs).toBe(mtime);
    expect(fs.readdirSync(cache).sort()).toEqual(['drafter', 'target']); // no temp folders left
  });

  it('replaces a corrupted or half-written folder atomically', async () => {
    const cache = tempDir();
    const p = await ensureDefaultModels(cache);
    const drafterInode = fs.statSync(path.join(p.drafter, 'model.onnx')).ino;
    fs.truncateSync(path.join(p.target, 'model.onnx'), 1000);
    fs.rmSync(path.join(p.target, 'tokenizer.json'));
    await ensureDefaultModels(cache);
    expect(modelFingerprint(p.target)).toBe(filesFingerprint(defaultModelPairFiles().target));
    expect(fs.statSync(path.join(p.drafter, 'model.onnx')).ino).toBe(drafterInode); // untouched
    expect(fs.readdirSync(cache).sort()).toEqual(['drafter', 'target']);
  });

  it('copes with concurrent callers', async () => {
    const cache = tempDir();
    const results = await Promise.all([ensureDefaultModels(cache), ensureDefaultModels(cache), ensureDefaultModels(cache)]);
    for (const r of results) expect(modelFingerprint(r.target)).toBe(filesFingerprint(defaultModelPairFiles().target));
    expect(fs.readdirSync(cache).sort()).toEqual(['drafter', 'target']);
  });
});
