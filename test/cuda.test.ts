/**
 * CUDA backend end to end against the CPU fp32 path (runs only where a CUDA device is usable: the GPU check script,
 * scripts/device-check.sh). Op-level checks are in ops.test.ts, which adds the CUDA backends automatically.
 */
import { addon } from '../lib/native/binding';
import { loadModel, Model } from '../lib/model/model';
import { relErr, removeDir, tinyCheckpoint } from './helpers/fixtures';
import { rng } from './helpers/weights';

const available = addon().cudaInfo().available;
const maybe = available ? describe : describe.skip;

function ids(n: number, seed: number): number[] {
  const r = rng(seed);
  return Array.from({ length: n }, () => Math.floor(r() * 151851));
}
function argmax(v: Float32Array, off = 0, n = v.length): number {
  let b = 0;
  for (let i = 1; i < n; i++) if (v[off + i] > v[off + b]) b = i;
  return b;
}

maybe('CUDA vs CPU fp32 on a tiny bf16 checkpoint (seq_length 16: NTK and logN exercised)', () => {
  let dir: string;
  let cpu: Model, cpuBf16: Model, cudaBf16: Model, cudaF32: Model;
  beforeAll(async () => {
    dir = await tinyCheckpoint('bf16', { seq_length: 16 });
    // 4 threads each: two CPU models next to CUDA work on a GPU host oversubscribed its cores at the default count
    cpu = await loadModel(dir, { device: 'cpu', threads: 4 });
    cpuBf16 = await loadModel(dir, { device: 'cpu', dtype: 'bf16', threads: 4 });
    cudaBf16 = await loadModel(dir, { device: 'cuda', dtype: 'bf16' });
    cudaF32 = await loadModel(dir, { device: 'cuda', dtype: 'fp32' });
  });
  afterAll(async () => {
    for (const m of [cpu, cpuBf16, cudaBf16, cudaF32]) await m?.dispose();
    removeDir(dir);
  });

  test.each([5, 24, 40, 600])('logits of a %i-token prompt', async (n) => {
    const p = ids(n, n);
    const V = cpu.config.vocab_size;
    const [ref, mm, gb, gf] = await Promise.all([cpu.logits(p), cpuBf16.logits(p), cudaBf16.logits(p), cudaF32.logits(p)]);
    let eMm = 0, eB = 0, eF = 0;
    for (let t = 0; t < n; t++) {
      const row = ref.subarray(t * V, (t + 1) * V);
      eMm = Math.max(eMm, relErr(mm, row, t * V));
      eB = Math.max(eB, relErr(gb, row, t * V));
      eF = Math.max(eF, relErr(gf, row, t * V));
    }
    console.log(`n=${n}: max rel err vs CPU fp32 — CUDA fp32 ${eF.toExponential(2)}, CUDA bf16 ${eB.toExponential(2)}, CPU bf16-matmul ${eMm.toExponential(2)}`);
    expect(eF).toBeLessThan(1e-4);
    expect(eB).toBeLessThan(0.05); // bf16 activations end to end: ~2^-8 per rounding, a few hundred roundings deep
  });

  // Teacher-forced: both sequences are fed the CPU's argmax, so every step compares the same history. Each step's
  // logits stay within the bf16 bound of the prompt test (0.05 * max|logit|); where the CPU's top-2 margin exceeds
  // twice that bound, no error within it can reorder the top, so the argmax must agree (a near-tie may not).
  // On the H100 (2026-11-27) the previous form of this test compared 8 decisive steps, all equal, and failed only its
  // arbitrary count threshold; this form has not run on a GPU yet.
  test('greedy decoding equals the CPU path where the argmax is not a near-tie', async () => {
    const V = cpu.config.vocab_size;
    const tol = 0.05;
    const a = cpu.createSequence(), b = cudaBf16.createSequence();
    let la = await a.forward(ids(12, 3)), lb = await b.forward(ids(12, 3));
    let decisive = 0;
    for (let step = 0; step < 48; step++) {
      expect(relErr(lb, la, 0)).toBeLessThan(tol);
      let mx = 0;
      for (let i = 0; i < V; i++) mx = Math.max(mx, Math.abs(la[i]));
      const sorted = Float32Array.from(la).sort();
      const ia = argmax(la, 0, V);
      if (sorted[V - 1] - sorted[V - 2] > 2 * tol * mx) {
        expect(argmax(lb, 0, V)).toBe(ia);
        decisive++;
      }
      la = await a.forward([ia]);
      lb = await b.forward([ia]);
    }
    a.dispose();
    b.dispose();
    expect(decisive).toBeGreaterThanOrEqual(3); // 5 of 48 with this checkpoint and prompt (the CPU's logits decide)
  });
});

maybe('CUDA batched steps over the paged KV cache', () => {
  let dir: string;
  let models: Record<'fp32' | 'bf16', Model>;
  beforeAll(async () => {
    dir = await tinyCheckpoint('bf16', { seq_length: 16 });
    models = {
      fp32: await loadModel(dir, { device: 'cuda', dtype: 'fp32' }),
      bf16: await loadModel(dir, { device: 'cuda', dtype: 'bf16' }),
    };
  });
  afterAll(async () => {
    for (const m of Object.values(models ?? {})) await m.dispose();
    removeDir(dir);
  });

  // fp32: only the summation order differs between a sequence alone and in a batch; bf16: the GEMM tiles and the
  // flash/split attention paths round differently, as bounded in the bf16 logits test above.
  test.each([['fp32', 1e-4], ['bf16', 0.05]] as const)('%s: prompts and decoders of many lengths in one step equal each alone', async (dt, tol) => {
    const m = models[dt];
    const V = m.config.vocab_size;
    const lens = [3, 40, 33, 70, 1, 100, 17];
    const alone: Float32Array[] = [];
    for (let i = 0; i < lens.length; i++) {
      const s = m.createSequence();
      await s.forward(ids(lens[i], 50 + i));
      alone.push(Float32Array.from(await s.forward([7, 8].slice(0, 1 + (i % 2)))));
      s.dispose();
    }
    const seqs = lens.map(() => m.createSequence());
    await Promise.all(seqs.map((s, i) => s.forward(ids(lens[i], 50 + i)))); // one step: all the prompts
    const got = await Promise.all(seqs.map((s, i) => s.forward([7, 8].slice(0, 1 + (i % 2))))); // decoders + 2-token chunks
    got.forEach((g, i) => expect(relErr(g, alone[i], 0, V)).toBeLessThan(tol));
    seqs.forEach((s) => s.dispose());
    expect(m.stats()).toMatchObject({ running: 0, kvBlocksUsed: 0 });
  });
});

test('CUDA availability is reported with a reason', () => {
  const info = addon().cudaInfo();
  expect(typeof info.available).toBe('boolean');
  if (!info.available) expect(info.error.length).toBeGreaterThan(0);
});
