import { createHash } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { parseConfig } from '../lib/model/config';
import { PRESETS, makeRandomCheckpoint } from '../lib/model/makeRandom';
import { StTensor, bf16ToF32, readSafetensorsHeader } from '../lib/model/safetensors';
import { parameterCount, weightTable } from '../lib/model/weights';
import { Qwen64 } from './reference/qwen64';

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qwen-rand-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const sha = (file: string) => createHash('sha256').update(fs.readFileSync(file)).digest('hex');
const shardFiles = (dir: string) => fs.readdirSync(dir).filter((f) => f.endsWith('.safetensors')).sort();
const readJson = (file: string) => JSON.parse(fs.readFileSync(file, 'utf8'));

/** All headers of a checkpoint: name -> [file, tensor]. */
async function headers(dir: string): Promise<Map<string, [string, StTensor]>> {
  const out = new Map<string, [string, StTensor]>();
  for (const f of shardFiles(dir)) {
    for (const [n, t] of (await readSafetensorsHeader(path.join(dir, f))).tensors) out.set(n, [f, t]);
  }
  return out;
}
const fileCache = new Map<string, Buffer>();
const tensorBytes = (dir: string, [f, t]: [string, StTensor]) => {
  const file = path.join(dir, f);
  if (!fileCache.has(file)) fileCache.set(file, fs.readFileSync(file));
  return fileCache.get(file)!.subarray(t.offset, t.offset + t.nbytes);
};

const realTiktoken = path.resolve(__dirname, '..', '..', 'shared', 'qwen', 'qwen.tiktoken');
const realConfig = path.resolve(__dirname, '..', '..', 'shared', 'qwen', 'Qwen-7B.config.json');

describe('presets', () => {
  test('7b is Qwen-7B v1.1 exactly', () => {
    const c = PRESETS['7b'];
    expect(parameterCount(c)).toBe(7_721_324_544);
    if (fs.existsSync(realConfig)) {
      const real = readJson(realConfig);
      for (const [k, v] of Object.entries(c)) expect([k, v]).toEqual([k, real[k]]);
    }
    expect(parseConfig(c)).toEqual(c);
  });
  test('small is ~0.9 B params with head_dim 128; tiny is valid', () => {
    expect(parameterCount(PRESETS.small) / 1e9).toBeCloseTo(0.92, 2);
    expect(PRESETS.small.kv_channels).toBe(128);
    expect(parseConfig(PRESETS.tiny)).toEqual(PRESETS.tiny);
    expect(PRESETS.tiny.vocab_size).toBe(151936);
  });
});

describe('makeRandomCheckpoint (tiny)', () => {
  let a: string; // seed 1, 8 MB shards, in-thread
  beforeAll(async () => {
    a = path.join(tmp, 'a');
    const fr: number[] = [];
    const tk = fs.existsSync(realTiktoken) ? realTiktoken : null;
    const r = await makeRandomCheckpoint({ preset: 'tiny', dtype: 'bf16', seed: 1, out: a, shardBytes: 8e6, workers: 0, tiktoken: tk, onProgress: (f) => fr.push(f) });
    expect(r.dir).toBe(a);
    expect(fr[fr.length - 1]).toBe(1);
    expect(fr.every((f, i) => f >= 0 && f <= 1 && (i === 0 || f >= fr[i - 1]))).toBe(true);
    expect(r.bytes).toBe(shardFiles(a).reduce((n, f) => n + fs.statSync(path.join(a, f)).size, 0));
  });

  test('files, config and generation config', () => {
    const files = fs.readdirSync(a).sort();
    expect(files).toEqual(expect.arrayContaining(['config.json', 'generation_config.json', 'model.safetensors.index.json']));
    if (fs.existsSync(realTiktoken)) expect(sha(path.join(a, 'qwen.tiktoken'))).toBe(sha(realTiktoken));
    const shards = shardFiles(a);
    expect(shards.length).toBeGreaterThan(2);
    shards.forEach((f, i) => expect(f).toBe(`model-${String(i + 1).padStart(5, '0')}-of-${String(shards.length).padStart(5, '0')}.safetensors`));
    const cfg = readJson(path.join(a, 'config.json'));
    expect(cfg).toMatchObject({ architectures: ['QWenLMHeadModel'], model_type: 'qwen', max_position_embeddings: 32768, no_bias: true,
      tie_word_embeddings: false, tokenizer_class: 'QWenTokenizer', qwen_node_random: { preset: 'tiny', seed: 1, dtype: 'bf16' } });
    expect(parseConfig(cfg)).toEqual(PRESETS.tiny);
    expect(readJson(path.join(a, 'generation_config.json'))).toEqual({ chat_format: 'chatml', eos_token_id: 151643, pad_token_id: 151643,
      stop_words_ids: [[151643]], max_new_tokens: 512, max_window_size: 6144, do_sample: true, top_k: 0, top_p: 0.8, repetition_penalty: 1.1 });
    expect(fs.readdirSync(tmp).filter((f) => f.includes('.partial-'))).toEqual([]);
  });

  test('index is consistent with shards, headers and weightTable', async () => {
    const index = readJson(path.join(a, 'model.safetensors.index.json'));
    const hs = await headers(a);
    const table = weightTable(PRESETS.tiny);
    expect(Object.keys(index.weight_map).sort()).toEqual(table.map((t) => t.name).sort());
    expect([...hs.keys()].sort()).toEqual(table.map((t) => t.name).sort());
    let total = 0;
    for (const t of table) {
      const [file, h] = hs.get(t.name)!;
      expect([t.name, index.weight_map[t.name]]).toEqual([t.name, file]);
      expect([t.name, h.shape, h.dtype]).toEqual([t.name, t.shape, 'BF16']);
      total += h.nbytes;
    }
    expect(index.metadata.total_size).toBe(total);
    // Shards follow weightTable order, never split a tensor, and exceed the target only when holding one tensor.
    const order = table.map((t) => hs.get(t.name)![0]);
    expect([...order].sort()).toEqual(order);
    for (const f of shardFiles(a)) {
      const { tensors } = await readSafetensorsHeader(path.join(a, f));
      const bytes = [...tensors.values()].reduce((n, t) => n + t.nbytes, 0);
      if (tensors.size > 1) expect(bytes).toBeLessThanOrEqual(8e6);
    }
  });

  test('deterministic per seed, independent of sharding and workers; another seed differs', async () => {
    const b = path.join(tmp, 'b');
    await makeRandomCheckpoint({ preset: 'tiny', dtype: 'bf16', seed: 1, out: b, shardBytes: 8e6, workers: 2, tiktoken: null });
    expect(fs.existsSync(path.join(b, 'qwen.tiktoken'))).toBe(false);
    expect(shardFiles(b).map((f) => sha(path.join(b, f)))).toEqual(shardFiles(a).map((f) => sha(path.join(a, f))));

    const c = path.join(tmp, 'c'); // one big shard: same tensor bytes
    await makeRandomCheckpoint({ preset: 'tiny', dtype: 'bf16', seed: 1, out: c, tiktoken: null });
    expect(shardFiles(c)).toEqual(['model-00001-of-00001.safetensors']);
    const [ha, hc] = [await headers(a), await headers(c)];
    for (const [name, e] of ha) expect(tensorBytes(c, hc.get(name)!).equals(tensorBytes(a, e))).toBe(true);

    const d = path.join(tmp, 'd');
    await makeRandomCheckpoint({ preset: 'tiny', dtype: 'bf16', seed: 2, out: d, tiktoken: null });
    const hd = await headers(d);
    for (const [name, e] of hc) expect(tensorBytes(d, hd.get(name)!).equals(tensorBytes(c, e))).toBe(false);
    // The same seed replaces a previous random checkpoint in place.
    await makeRandomCheckpoint({ preset: 'tiny', dtype: 'bf16', seed: 1, out: d, tiktoken: null });
    expect(sha(path.join(d, shardFiles(d)[0]))).toBe(sha(path.join(c, shardFiles(c)[0])));
  });

  test('value scales: gains ~1 +- 0.1, bias std ~0.1, wte std ~1, lm_head std ~3/sqrt(H)', async () => {
    const hs = await headers(a);
    const vals = (name: string, limit = Infinity) => {
      const b = tensorBytes(a, hs.get(name)!);
      return Array.from({ length: Math.min(limit, b.length / 2) }, (_, i) => bf16ToF32(b.readUInt16LE(2 * i)));
    };
    const std = (v: number[]) => {
      const m = v.reduce((s, x) => s + x, 0) / v.length;
      return Math.sqrt(v.reduce((s, x) => s + (x - m) ** 2, 0) / v.length);
    };
    const g = vals('transformer.ln_f.weight');
    expect(Math.min(...g)).toBeGreaterThanOrEqual(0.9 - 2 ** -8); // bf16 rounding of 1 +- 0.1
    expect(Math.max(...g)).toBeLessThanOrEqual(1.1 + 2 ** -7);
    expect(std(vals('transformer.h.0.attn.c_attn.bias'))).toBeCloseTo(0.1, 1);
    expect(std(vals('transformer.wte.weight', 200000))).toBeCloseTo(1, 1);
    expect(std(vals('lm_head.weight', 200000)) * Math.sqrt(64)).toBeCloseTo(3, 1);
    expect(std(vals('transformer.h.1.mlp.c_proj.weight')) * Math.sqrt(96)).toBeCloseTo(1, 1);
  });

  test('overrides are applied; fp16 and fp32 are readable', async () => {
    for (const dtype of ['fp16', 'fp32'] as const) {
      const dir = path.join(tmp, `o-${dtype}`);
      const r = await makeRandomCheckpoint({ preset: 'tiny', dtype, seed: 1, out: dir, tiktoken: null, overrides: { seq_length: 16, num_hidden_layers: 3 } });
      expect(r.config.seq_length).toBe(16);
      expect(readJson(path.join(dir, 'config.json'))).toMatchObject({ seq_length: 16, num_hidden_layers: 3 });
      const hs = await headers(dir);
      expect(hs.size).toBe(weightTable(r.config).length);
      expect(hs.get('transformer.h.2.mlp.w2.weight')![1]).toMatchObject({ dtype: dtype === 'fp16' ? 'F16' : 'F32', shape: [96, 64] });
    }
  });

  test('bad arguments and refusing to overwrite a foreign directory', async () => {
    const out = path.join(tmp, 'x');
    await expect(makeRandomCheckpoint({ preset: 'huge' as 'tiny', dtype: 'bf16', seed: 1, out })).rejects.toMatchObject({ code: 'E_BAD_ARG' });
    await expect(makeRandomCheckpoint({ preset: 'tiny', dtype: 'int8' as 'bf16', seed: 1, out })).rejects.toMatchObject({ code: 'E_BAD_ARG' });
    await expect(makeRandomCheckpoint({ preset: 'tiny', dtype: 'bf16', seed: 1.5, out })).rejects.toMatchObject({ code: 'E_BAD_ARG' });
    await expect(makeRandomCheckpoint({ preset: 'tiny', dtype: 'bf16', seed: 1, out, overrides: { hidden_size: 65 } }))
      .rejects.toMatchObject({ code: 'E_BAD_ARG' });
    fs.mkdirSync(out);
    fs.writeFileSync(path.join(out, 'precious.bin'), 'x');
    await expect(makeRandomCheckpoint({ preset: 'tiny', dtype: 'bf16', seed: 1, out, tiktoken: null })).rejects.toThrow(/refusing/);
    expect(fs.readdirSync(out)).toEqual(['precious.bin']);
  });

  test('abort leaves nothing behind', async () => {
    const out = path.join(tmp, 'aborted');
    const ac = new AbortController();
    await expect(makeRandomCheckpoint({ preset: 'tiny', dtype: 'fp32', seed: 1, out, tiktoken: null, signal: ac.signal,
      onProgress: (f) => { if (f > 0) ac.abort(); } })).rejects.toMatchObject({ code: 'E_ABORTED' });
    const pre = new AbortController();
    pre.abort();
    await expect(makeRandomCheckpoint({ preset: 'tiny', dtype: 'fp32', seed: 1, out, signal: pre.signal })).rejects.toMatchObject({ code: 'E_ABORTED' });
    expect(fs.existsSync(out)).toBe(false);
    expect(fs.readdirSync(tmp).filter((f) => f.startsWith('aborted'))).toEqual([]);
  });
});

describe('Qwen64 reference on a tiny checkpoint (seq_length 16: NTK and logN active)', () => {
  let m: Qwen64;
  let noLogn: Qwen64;
  const ids = Array.from({ length: 40 }, (_, i) => (i * 7919 + 13) % 151851);
  beforeAll(async () => {
    const base = { preset: 'tiny', dtype: 'bf16', seed: 7, tiktoken: null } as const;
    await makeRandomCheckpoint({ ...base, out: path.join(tmp, 'q'), overrides: { seq_length: 16 } });
    await makeRandomCheckpoint({ ...base, out: path.join(tmp, 'q-nologn'), overrides: { seq_length: 16, use_logn_attn: false } });
    m = Qwen64.load(path.join(tmp, 'q'));
    noLogn = Qwen64.load(path.join(tmp, 'q-nologn'));
  });
  const maxDiff = (x: Float64Array, y: Float64Array) => {
    let d = 0;
    for (let i = 0; i < x.length; i++) d = Math.max(d, Math.abs(x[i] - y[i]));
    return d;
  };

  test('logits are finite and spread', () => {
    const all = m.logits(ids);
    expect(all.length).toBe(40);
    for (const l of all) {
      expect(l.length).toBe(151936);
      let lo = Infinity;
      let hi = -Infinity;
      let finite = true;
      for (let i = 0; i < l.length; i++) {
        const v = l[i];
        finite &&= v - v === 0;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
      expect(finite).toBe(true);
      expect(hi - lo).toBeGreaterThan(1);
    }
    expect(maxDiff(all[0], all[1])).toBeGreaterThan(0.1);
  });

  test('causality: a prefix gives the same logits (same NTK alpha); NTK alpha changes them', () => {
    const full = m.logits(ids, [5, 30]);
    for (const [k, f] of [[6, full[0]], [31, full[1]]] as const) {
      expect(maxDiff(m.logits(ids.slice(0, k), [k - 1], { prefillLength: 40 })[0], f)).toBe(0);
    }
    expect(m.ntkAlpha(16)).toBe(1);
    expect(m.ntkAlpha(17)).toBe(3);
    expect(m.ntkAlpha(40)).toBe(7);
    expect(maxDiff(m.logits(ids.slice(0, 6), [5])[0], full[0])).toBeGreaterThan(1e-6); // alpha 1 vs 7
  });

  test('chunked KV cache equals the full-sequence path with alpha frozen at the first chunk', () => {
    const chunks = [ids.slice(0, 10), ids.slice(10, 11), ids.slice(11, 16), ids.slice(16, 40)];
    expect(maxDiff(m.logitsWithCache(chunks), m.logits(ids, [39], { prefillLength: 10 })[0])).toBeLessThan(1e-12);
    const two = [ids.slice(0, 20), ids.slice(20, 33)];
    expect(maxDiff(m.logitsWithCache(two), m.logits(ids.slice(0, 33), [32], { prefillLength: 20 })[0])).toBeLessThan(1e-12);
  });

  test('fp32 and fp16 checkpoints of the same seed load and agree with bf16 up to rounding', async () => {
    const ref = m.logits(ids.slice(0, 8), [7])[0];
    for (const dtype of ['fp32', 'fp16'] as const) {
      const dir = path.join(tmp, `q-${dtype}`);
      await makeRandomCheckpoint({ preset: 'tiny', dtype, seed: 7, tiktoken: null, out: dir, overrides: { seq_length: 16 } });
      const d = maxDiff(Qwen64.load(dir).logits(ids.slice(0, 8), [7])[0], ref);
      expect(d).toBeGreaterThan(0); // different rounding of the same values...
      expect(d).toBeLessThan(0.5); // ...but the same model (logits: std ~3, range ~25)
    }
  });

  test('logN scales only queries past seq_length', () => {
    const a = m.logits(ids, [0, 15, 16, 39]);
    const b = noLogn.logits(ids, [0, 15, 16, 39]);
    expect(maxDiff(a[0], b[0])).toBe(0);
    expect(maxDiff(a[1], b[1])).toBe(0);
    expect(maxDiff(a[2], b[2])).toBeGreaterThan(1e-6);
    expect(maxDiff(a[3], b[3])).toBeGreaterThan(1e-6);
  });
});
