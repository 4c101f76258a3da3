/**
 * Continuous batching over the paged KV cache (lib/model/scheduler.ts, cpp/core/engine.cc step): concurrent
 * generations share steps and give the single-request results; admission, preemption-and-recompute, the queue bound,
 * aborts and disposal return every KV block.
 */
import { loadModel, Model } from '../lib/model/model';
import type { StepStats } from '../lib/model/scheduler';
import { relErr, removeDir, tinyCheckpoint } from './helpers/fixtures';

// Both the single and the batched path are within TOL * max|logit| of float64 (engine.test.ts), so they differ by at
// most 2 * TOL * max|logit|: where the single path's top-2 gap is wider, the batched argmax must be the same token.
const TOL = 1e-4;

let dir: string;
let model: Model;
beforeAll(async () => {
  dir = await tinyCheckpoint('bf16');
  model = await loadModel(dir, { device: 'cpu' });
});
afterAll(async () => {
  await model.dispose();
  removeDir(dir);
});

const prompts = [
  'The capital of France is',
  '1, 2, 3, 4,',
  'def fib(n):',
  '春眠不觉晓，',
  'A long prompt that goes on and on about nothing in particular, to be prefilled while others decode already.',
  'x',
];

/** Greedy continuation by hand, one request at a time: the ids and, per step, the top-2 gap relative to max|logit|. */
async function single(m: Model, prompt: string, n: number): Promise<{ ids: number[]; gaps: number[] }> {
  const seq = m.createSequence();
  const V = m.tokenizer.vocabSize;
  let logits = await seq.forward(m.tokenizer.encode(prompt));
  const ids: number[] = [], gaps: number[] = [];
  for (let i = 0; i < n; i++) {
    let a = 0, b = 1, mx = 0;
    if (logits[b] > logits[a]) [a, b] = [b, a];
    for (let v = 0; v < V; v++) {
      mx = Math.max(mx, Math.abs(logits[v]));
      if (v < 2) continue;
      if (logits[v] > logits[a]) [a, b] = [v, a];
      else if (logits[v] > logits[b]) b = v;
    }
    ids.push(a);
    gaps.push((logits[a] - logits[b]) / mx);
    if (i + 1 < n) logits = await seq.forward([a]);
  }
  seq.dispose();
  return { ids, gaps };
}

function expectSameGreedy(got: number[], want: { ids: number[]; gaps: number[] }) {
  const k = want.ids.findIndex((id, i) => got[i] !== id);
  if (k < 0) return expect(got).toEqual(want.ids);
  expect(want.gaps[k]).toBeLessThan(2 * TOL); // they may part only at a near-tie
}

const greedy = { doSample: false, repetitionPenalty: 1 } as const;

test('concurrent greedy generations share steps and equal the single-request results', async () => {
  const N = 10;
  const want: Array<{ ids: number[]; gaps: number[] }> = [];
  for (const p of prompts) want.push(await single(model, p, N));
  const steps: StepStats[] = [];
  const off = model.onStep((s) => steps.push(s));
  const got = await Promise.all(prompts.map((p) => model.generate(p, { ...greedy, maxNewTokens: N }).result()));
  off();
  got.forEach((r, i) => {
    expect(r.finishReason).toBe('length');
    expectSameGreedy(r.tokens, want[i]);
  });
  // Every prompt was prefilled in the first step, then all decoded together: N - 1 more steps of one token each.
  expect(steps[0]).toMatchObject({ sequences: prompts.length, decodeTokens: 0 });
  expect(steps.slice(1).every((s) => s.sequences === prompts.length && s.decodeTokens === prompts.length)).toBe(true);
  expect(steps.length).toBe(N);
  expect(model.stats()).toMatchObject({ running: 0, waiting: 0, kvBlocksUsed: 0 });
});

test('a prompt arriving mid-stream is prefilled in the same steps as the running decoders', async () => {
  const steps: StepStats[] = [];
  const off = model.onStep((s) => steps.push(s));
  const first = model.generate(prompts[0], { ...greedy, maxNewTokens: 12 });
  const it = first[Symbol.asyncIterator]();
  await it.next(); // first is decoding now
  const late = model.generate(prompts[4], { ...greedy, maxNewTokens: 4 }).result();
  const rest = (async () => {
    for (let r = await it.next(); !r.done; r = await it.next());
  })();
  await Promise.all([late, rest]);
  off();
  expect(steps.some((s) => s.prefillTokens > 1 && s.decodeTokens === 1)).toBe(true);
  expect(model.stats().kvBlocksUsed).toBe(0);
});

test('a prompt longer than maxBatchTokens is prefilled in chunks, exactly, with the alpha of the whole prompt', async () => {
  const m = await loadModel(dir, { device: 'cpu', maxBatchTokens: 48 });
  try {
    const ids = Array.from({ length: 150 }, (_, i) => (i * 7919) % 151000);
    const want = await model.logits(ids); // one native call: passes of 512
    const seq = m.createSequence();
    const steps: StepStats[] = [];
    const off = m.onStep((s) => steps.push(s));
    const got = await seq.forwardAll(ids);
    off();
    expect(steps.map((s) => s.prefillTokens)).toEqual([48, 48, 48, 6]);
    // Reference: max(2^ceil(log2(L / S) + 1) - 1, 1) with L = 150 (the whole prompt, not a 48-token chunk), S = 64.
    expect(seq.ntkAlpha).toBe(Math.max(2 ** Math.ceil(Math.log2(150 / 64) + 1) - 1, 1));
    const V = m.config.vocab_size;
    for (const t of [0, 47, 48, 100, 149]) expect(relErr(got, want.subarray(t * V, (t + 1) * V), t * V, V)).toBeLessThan(2 * TOL);
    seq.dispose();
  } finally {
    await m.dispose();
  }
});

test('a KV cache too small for everyone preempts the youngest and recomputes it: same greedy output', async () => {
  // 6 blocks of 32 positions; each generation needs ~2 blocks (prompt + 40 tokens), 4 of them at once do not fit.
  const m = await loadModel(dir, { device: 'cpu', kvCacheTokens: 6 * 32 });
  try {
    const N = 40;
    const ps = prompts.slice(0, 4);
    const want: Array<{ ids: number[]; gaps: number[] }> = [];
    for (const p of ps) want.push(await single(m, p, N));
    const got = await Promise.all(ps.map((p) => m.generate(p, { ...greedy, maxNewTokens: N }).result()));
    got.forEach((r, i) => expectSameGreedy(r.tokens, want[i]));
    const s = m.stats();
    expect(s.preemptions).toBeGreaterThan(0);
    expect(s).toMatchObject({ running: 0, waiting: 0, kvBlocksUsed: 0, kvBlocksTotal: 6 });
  } finally {
    await m.dispose();
  }
});

test('a full queue refuses new sequences with E_QUEUE_FULL; a sequence bigger than the cache gets E_KV_FULL', async () => {
  const m = await loadModel(dir, { device: 'cpu', maxQueue: 2, kvCacheTokens: 64 });
  try {
    expect(m.contextLimit).toBe(64);
    const gens = [0, 1, 2].map((i) => m.generate(prompts[i], { ...greedy, maxNewTokens: 3 }).result().catch((e: unknown) => e));
    const [a, b, c] = await Promise.all(gens);
    expect(a).toMatchObject({ finishReason: 'length' });
    expect(b).toMatchObject({ finishReason: 'length' });
    expect(c).toMatchObject({ code: 'E_QUEUE_FULL', message: expect.stringMatching(/maxQueue = 2/) });
    await expect(m.createSequence().forward(new Array(70).fill(5))).rejects.toMatchObject({ code: 'E_KV_FULL' });
    // A generation that would outgrow the cache while decoding fails clearly too (64 positions, 60-token prompt).
    const long = m.generate(new Array(60).fill(7), { ...greedy, maxNewTokens: 10 }).result();
    await expect(long).rejects.toMatchObject({ code: 'E_KV_FULL' });
    expect(m.stats()).toMatchObject({ running: 0, waiting: 0, kvBlocksUsed: 0 });
  } finally {
    await m.dispose();
  }
});

test('aborting a queued generation ends it at once; disposing sequences returns their blocks', async () => {
  const m = await loadModel(dir, { device: 'cpu', maxBatchSequences: 1 });
  try {
    const ac = new AbortController();
    const running = m.generate(prompts[0], { ...greedy, maxNewTokens: 20 }).result();
    const queued = m.generate(prompts[1], { ...greedy, maxNewTokens: 20, signal: ac.signal }).result();
    await new Promise((r) => setImmediate(r));
    expect(m.stats().waiting).toBe(1);
    ac.abort();
    const q = await queued;
    expect(q).toMatchObject({ finishReason: 'abort', tokens: [] });
    expect(m.stats().waiting).toBe(0);
    expect((await running).finishReason).toBe('length');
    const seqs = [m.createSequence(), m.createSequence()];
    await Promise.all(seqs.map((s, i) => s.forward(new Array(40 + i).fill(3))));
    expect(m.stats()).toMatchObject({ running: 2, kvBlocksUsed: 4 }); // 40 and 41 positions: 2 blocks each
    seqs.forEach((s) => s.dispose());
    expect(m.stats()).toMatchObject({ running: 0, kvBlocksUsed: 0 });
  } finally {
    await m.dispose();
  }
});
