/** Perplexity windows: scored positions, context and NTK alpha per window, checked against plain model.logits. */
import { loadModel, Model } from '../lib/model/model';
import { perplexity } from '../lib/ppl';
import { removeDir, tinyCheckpoint } from './helpers/fixtures';
import { rng } from './helpers/weights';

let dir: string;
let model: Model;
beforeAll(async () => {
  dir = await tinyCheckpoint('bf16', { seq_length: 16 });
  model = await loadModel(dir, { device: 'cpu' });
});
afterAll(async () => {
  await model.dispose();
  removeDir(dir);
});

/** mean NLL of ids[from..to) given the window ids[begin..], from one full-window logits call. */
async function windowNll(ids: number[], begin: number, end: number, from: number): Promise<[number, number]> {
  const V = model.config.vocab_size;
  const logits = await model.logits(ids.slice(begin, end)); // alpha from the window length, as perplexity() does
  let s = 0, n = 0;
  for (let t = from; t < end; t++) {
    const off = (t - 1 - begin) * V;
    let mx = -Infinity, z = 0;
    for (let i = 0; i < V; i++) mx = Math.max(mx, logits[off + i]);
    for (let i = 0; i < V; i++) z += Math.exp(logits[off + i] - mx);
    s += Math.log(z) + mx - logits[off + ids[t]];
    n++;
  }
  return [s, n];
}

test('sliding windows score every token once with the right context (ctx 24 > seq_length, stride 10, chunks of 7)', async () => {
  const r0 = rng(9);
  const ids = Array.from({ length: 50 }, () => Math.floor(r0() * 151000));
  const r = await perplexity(model, ids, { ctx: 24, stride: 10, chunk: 7 });
  // windows [0,24) [10,34) [20,44) [30,50): score 1..23, 24..33, 34..43, 44..49
  const parts = await Promise.all([windowNll(ids, 0, 24, 1), windowNll(ids, 10, 34, 24), windowNll(ids, 20, 44, 34), windowNll(ids, 30, 50, 44)]);
  const s = parts.reduce((a, p) => a + p[0], 0), n = parts.reduce((a, p) => a + p[1], 0);
  expect(r.scored).toBe(49);
  expect(n).toBe(49);
  expect(r.windows).toBe(4);
  expect(r.nll).toBeCloseTo(s / n, 5);
  expect(Math.abs(r.ppl / Math.exp(s / n) - 1)).toBeLessThan(1e-5);
});

test('bad arguments name the parameter', async () => {
  await expect(perplexity(model, [1, 2, 3], { ctx: 1 })).rejects.toThrow(/ctx/);
  await expect(perplexity(model, [1, 2, 3], { ctx: 4, stride: 5 })).rejects.toThrow(/stride/);
  await expect(perplexity(model, [1], { ctx: 4 })).rejects.toThrow(/ids/);
});
