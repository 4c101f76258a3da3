/**
 * End-to-end: logits of the CPU engine against the independent float64 reference (test/reference/qwen64.ts) on tiny
 * random checkpoints in BF16, F16 and F32, for prompts shorter and longer than seq_length (dynamic NTK alpha 3 and 7,
 * logN), incremental decoding, chunks on top of a cache, the 512-token prefill chunking, and the context limit.
 */
import { loadModel, Model } from '../lib/model/model';
import { Qwen64 } from './reference/qwen64';
import { relErr, removeDir, tinyCheckpoint } from './helpers/fixtures';
import { rng } from './helpers/weights';

const S = 16; // seq_length of the test checkpoints: prompts past it switch NTK and logN on
const TOL = 1e-4; // the bound for fp32 compute against float64

function ids(n: number, seed: number): number[] {
  const r = rng(seed);
  return Array.from({ length: n }, () => Math.floor(r() * 151851));
}

describe.each(['bf16', 'fp16', 'fp32'] as const)('tiny %s checkpoint', (dtype) => {
  let dir: string;
  let model: Model;
  let ref: Qwen64;
  beforeAll(async () => {
    dir = await tinyCheckpoint(dtype, { seq_length: S });
    model = await loadModel(dir, { device: 'cpu', threads: 2 });
    ref = Qwen64.load(dir);
  });
  afterAll(async () => {
    await model.dispose();
    removeDir(dir);
  });

  test.each([
    [5, 1], // shorter than seq_length: alpha 1, no logN
    [24, 3], // S < L <= 2S: alpha 3, logN from position 16
    [40, 7], // 2S < L <= 4S: alpha 7
  ])('all-position logits of a %i-token prompt (alpha %i) match float64', async (n, alpha) => {
    const p = ids(n, n);
    expect(ref.ntkAlpha(n)).toBe(alpha);
    const got = await model.logits(p);
    const V = model.config.vocab_size;
    expect(got.length).toBe(n * V);
    // Every row is checked up to the lm_head (a cheap checksum row), the float64 lm_head only at these positions.
    const positions = [...new Set([0, 1, S - 1, S, n - 2, n - 1].filter((t) => t >= 0 && t < n))];
    const want = ref.logits(p, positions);
    let worst = 0;
    positions.forEach((t, i) => (worst = Math.max(worst, relErr(got, want[i], t * V))));
    expect(worst).toBeLessThan(TOL);
  });

  test('one token at a time equals the full-sequence logits (within seq_length)', async () => {
    const p = ids(S, 99);
    const full = await model.logits(p);
    const seq = model.createSequence();
    const V = model.config.vocab_size;
    for (let t = 0; t < p.length; t++) {
      const last = await seq.forward([p[t]]);
      expect(relErr(last, full.subarray(t * V, (t + 1) * V))).toBeLessThan(1e-5);
    }
    expect(seq.length).toBe(S);
    expect(seq.ntkAlpha).toBe(1);
    seq.dispose();
  });

  test('the folded layer (QWEN_FOLD_NORM=1: RMSNorms into the GEMVs that read h, residual adds into those that write it) gives the same logits bit for bit', async () => {
    const folded = await loadModel(dir, { device: 'cpu', threads: 2, switches: { QWEN_FOLD_NORM: '1' } });
    try {
      expect(folded.switches.QWEN_FOLD_NORM).toBe(true); // the backend runs folded (else this test would compare nothing)
      expect(model.switches.QWEN_FOLD_NORM).toBe(false);
      // index of the first element whose bits differ, -1 if none (NaN-safe, and fast on 3.6M logits)
      const firstDiff = (x: Float32Array, y: Float32Array) => {
        const u = new Uint32Array(x.buffer, x.byteOffset, x.length), v = new Uint32Array(y.buffer, y.byteOffset, y.length);
        if (u.length !== v.length) return 0;
        for (let i = 0; i < u.length; i++) if (u[i] !== v[i]) return i;
        return -1;
      };
      const p = ids(24, 31), more = ids(3, 32);
      expect(firstDiff(await folded.logits(p), await model.logits(p))).toBe(-1);
      const a = folded.createSequence(), b = model.createSequence();
      await a.forward(p);
      await b.forward(p);
      for (const id of more) expect(firstDiff(await a.forward([id]), await b.forward([id]))).toBe(-1);
      a.dispose();
      b.dispose();
    } finally {
      await folded.dispose();
    }
  });

  test('alpha is frozen at the first forward; decoding past seq_length and multi-token chunks match float64', async () => {
    const prompt = ids(20, 5); // alpha 3 from the 20-token prefill
    const chunk = ids(7, 6); // a multi-token chunk on top of the cache: bottom-right causal mask
    const singles = ids(6, 7); // decode steps up to position 32 (logN on)
    const seq = model.createSequence();
    await seq.forward(prompt);
    expect(seq.ntkAlpha).toBe(3);
    const afterChunk = await seq.forward(chunk);
    expect(relErr(afterChunk, ref.logitsWithCache([prompt, chunk]))).toBeLessThan(TOL);
    let last = afterChunk;
    for (const id of singles) last = await seq.forward([id]);
    expect(seq.ntkAlpha).toBe(3); // 33 tokens now, but alpha stays that of the prefill
    expect(relErr(last, ref.logitsWithCache([prompt, chunk, ...singles.map((i) => [i])]))).toBeLessThan(TOL);
    seq.dispose();
  });
});

describe('long prompts', () => {
  let dir: string;
  let model: Model;
  beforeAll(async () => {
    dir = await tinyCheckpoint('bf16', { seq_length: 64 });
    model = await loadModel(dir, { device: 'cpu', threads: 2 });
  });
  afterAll(async () => {
    await model.dispose();
    removeDir(dir);
  });

  test('a 600-token prompt (two native prefill chunks, alpha 31) matches float64 around the chunk boundary', async () => {
    const ref = Qwen64.load(dir);
    const p = ids(600, 600);
    const positions = [0, 63, 64, 511, 512, 599];
    const V = model.config.vocab_size;
    const got = await model.logits(p);
    const want = ref.logits(p, positions);
    expect(ref.ntkAlpha(600)).toBe(31);
    positions.forEach((pos, i) => expect(relErr(got, want[i], pos * V)).toBeLessThan(TOL));
  });

  test('the context limit of 32767 positions is a clear error and leaves the sequence usable', async () => {
    const seq = model.createSequence();
    await expect(seq.forward(new Array(32768).fill(1))).rejects.toMatchObject({ code: 'E_CONTEXT' });
    await seq.forward([1, 2, 3]);
    expect(seq.length).toBe(3);
    seq.dispose();
  });

  test('bad ids are rejected naming the index and the range', async () => {
    const seq = model.createSequence();
    await expect(seq.forward([1, 151936])).rejects.toThrow(/ids\[1\] must be an integer in \[0, 151935\]/);
    await expect(seq.forward([1.5])).rejects.toThrow(/ids\[0\]/);
    await expect(seq.forward([])).rejects.toThrow(/non-empty/);
    expect(seq.length).toBe(0);
    seq.dispose();
  });
});
