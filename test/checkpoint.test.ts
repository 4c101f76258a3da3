/**
 * loadModel on broken directories: every defect is a QwenError E_BAD_CHECKPOINT naming the file (and the tensor
 * where there is one) — never a crash, a hang or an out-of-bounds read. The header-level defects of a single file
 * are covered one by one in safetensors.test.ts; here each reaches the user through loadModel.
 */
import * as fs from 'fs';
import * as path from 'path';
import { loadModel } from '../lib/model/model';
import { removeDir, tinyCheckpoint, tmpDir } from './helpers/fixtures';

let base: string;
beforeAll(async () => {
  base = await tinyCheckpoint('bf16', {}, { shardBytes: 4e6 });
});
afterAll(() => removeDir(base));

/** A copy of the good checkpoint, altered by `edit`. */
function broken(edit: (dir: string) => void): string {
  const dir = path.join(tmpDir('broken'), 'model');
  fs.cpSync(base, dir, { recursive: true });
  edit(dir);
  return dir;
}
const shards = (dir: string) => fs.readdirSync(dir).filter((f) => f.endsWith('.safetensors')).sort();
const index = (dir: string) => JSON.parse(fs.readFileSync(path.join(dir, 'model.safetensors.index.json'), 'utf8'));
const writeIndex = (dir: string, v: unknown) => fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify(v));
const writeConfig = (dir: string, edit: (c: Record<string, unknown>) => void) => {
  const c = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
  edit(c);
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(c));
};
/** Rewrites one tensor's header entry of a shard in place (same header length, padded with spaces). */
function editHeader(file: string, edit: (h: Record<string, any>) => void) {
  const buf = fs.readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const h = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
  edit(h);
  const text = Buffer.from(JSON.stringify(h).padEnd(n, ' '));
  if (text.length !== n) throw new Error('edited header does not fit');
  text.copy(buf, 8);
  fs.writeFileSync(file, buf);
}

async function expectBad(dir: string, ...patterns: RegExp[]) {
  const err = await loadModel(dir, { device: 'cpu' }).then(
    () => { throw new Error('loadModel succeeded on a broken checkpoint'); },
    (e) => e,
  );
  expect(err.code).toBe('E_BAD_CHECKPOINT');
  for (const p of patterns) expect(err.message).toMatch(p);
  fs.rmSync(path.dirname(dir), { recursive: true, force: true });
}

test('the good checkpoint loads (the cases below differ from it in one defect each)', async () => {
  expect(shards(base).length).toBeGreaterThan(2);
  const m = await loadModel(base, { device: 'cpu' });
  await m.dispose();
});

test('missing directory', async () => {
  const err = await loadModel('/nonexistent/qwen', { device: 'cpu' }).catch((e) => e);
  expect(err.code).toBe('E_BAD_CHECKPOINT');
  expect(err.message).toMatch(/\/nonexistent\/qwen.*not found/);
});

test('missing config.json', () => expectBad(broken((d) => fs.rmSync(path.join(d, 'config.json'))), /config\.json: not found/));

test('malformed config.json', () =>
  expectBad(broken((d) => fs.writeFileSync(path.join(d, 'config.json'), '{"hidden_size": 64,')), /config\.json: malformed JSON/));

test('inconsistent config: heads do not divide hidden_size', () =>
  expectBad(broken((d) => writeConfig(d, (c) => { c.num_attention_heads = 5; })), /config\.json.*num_attention_heads \(5\) must divide hidden_size \(64\)/));

test('config whose shapes the tensors do not have', () =>
  expectBad(broken((d) => writeConfig(d, (c) => { c.intermediate_size = 256; })), /mlp\.w1\.weight" has shape \[96, 64\], expected \[128, 64\]/));

test('no weights at all', () =>
  expectBad(broken((d) => { for (const f of fs.readdirSync(d)) if (f.startsWith('model')) fs.rmSync(path.join(d, f)); }), /no weights found/));

test('index naming a missing shard', () =>
  expectBad(broken((d) => fs.rmSync(path.join(d, shards(d)[1]))), /model-00002-of-\d+\.safetensors: shard not found \(the index places tensor "transformer\./));

test('index lacking a tensor', () =>
  expectBad(broken((d) => { const i = index(d); delete i.weight_map['transformer.h.1.mlp.w2.weight']; writeIndex(d, i); }),
    /missing tensor "transformer\.h\.1\.mlp\.w2\.weight"/));

test('index pointing a tensor at a shard that does not hold it', () =>
  expectBad(broken((d) => { const i = index(d); i.weight_map['lm_head.weight'] = shards(d)[0]; writeIndex(d, i); }),
    /model-00001-of-\d+\.safetensors: missing tensor "lm_head\.weight"/));

test('truncated shard', () =>
  expectBad(broken((d) => { const f = path.join(d, shards(d)[0]); fs.truncateSync(f, fs.statSync(f).size - 100); }),
    /model-00001-of-\d+\.safetensors.*truncated/));

test('header length beyond the file', () =>
  expectBad(broken((d) => { const f = path.join(d, shards(d)[0]); const b = fs.readFileSync(f); b.writeBigUInt64LE(BigInt(b.length) * 2n, 0); fs.writeFileSync(f, b); }),
    /model-00001-of-\d+\.safetensors: .*header/));

test('malformed header JSON', () =>
  expectBad(broken((d) => { const f = path.join(d, shards(d)[0]); const b = fs.readFileSync(f); b.write('{{', 8); fs.writeFileSync(f, b); }),
    /model-00001-of-\d+\.safetensors: .*JSON/));

test('inverted data_offsets', () =>
  expectBad(broken((d) => editHeader(path.join(d, shards(d)[0]), (h) => {
    const t = h['transformer.wte.weight']; t.data_offsets = [t.data_offsets[1], t.data_offsets[0]];
  })), /transformer\.wte\.weight/, /invert|begin/));

test('overlapping tensors', () =>
  expectBad(broken((d) => editHeader(path.join(d, shards(d)[shards(d).length - 1]), (h) => {
    const names = Object.keys(h).filter((k) => k !== '__metadata__' && h[k].shape.length === 1);
    const [a, b] = names;
    h[b].data_offsets = [h[a].data_offsets[0], h[a].data_offsets[0] + (h[b].data_offsets[1] - h[b].data_offsets[0])];
  })), /overlap/));

test('shape x dtype not matching the byte range', () =>
  expectBad(broken((d) => editHeader(path.join(d, shards(d)[0]), (h) => { h['transformer.wte.weight'].dtype = 'F32'; })),
    /transformer\.wte\.weight/, /bytes/));

test('unknown and unsupported dtypes', async () => {
  await expectBad(broken((d) => editHeader(path.join(d, shards(d)[0]), (h) => { h['transformer.wte.weight'].dtype = 'Q4'; })),
    /transformer\.wte\.weight/, /unknown dtype/);
  await expectBad(broken((d) => editHeader(path.join(d, shards(d)[0]), (h) => { h['transformer.wte.weight'].dtype = 'I16'; })),
    /transformer\.wte\.weight/, /unsupported dtype/);
});

test('bad options name the parameter', async () => {
  await expect(loadModel(base, { device: 'tpu' as never })).rejects.toThrow(/options\.device must be 'auto', 'cpu' or 'cuda'/);
  await expect(loadModel(base, { threads: 0 })).rejects.toThrow(/options\.threads must be an integer in \[1, 1024\]/);
  await expect(loadModel(base, { thread: 2 } as never)).rejects.toThrow(/options\.thread/);
  await expect(loadModel(base, { device: 'cpu', dtype: 'fp16' })).rejects.toThrow(/options\.dtype must be 'auto', 'fp32' or 'bf16' on the CPU/);
  await expect(loadModel(base, { switches: { QWEN_NOPE: '1' } as never })).rejects.toThrow(/options\.switches\.QWEN_NOPE must be one of QWEN_FOLD_NORM/);
  await expect(loadModel(base, { switches: { QWEN_FOLD_NORM: 'yes' as never } })).rejects.toThrow(/options\.switches\.QWEN_FOLD_NORM must be '0' or '1'/);
  await expect(loadModel(base, { switches: 1 as never })).rejects.toThrow(/options\.switches must be an object/);
  await expect(loadModel(base, { switches: [] as never })).rejects.toThrow(/options\.switches must be an object/);
});
