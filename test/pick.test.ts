/**
 * The native greedy pick (Backend::final_pick / pick_logits, cpp/cpu/pick.cc, cuda/pick.cu) against the TS Sampler,
 * the independent reference (lib/sampling): ids exactly, logprobs within a derived bound, for every backend of the
 * op tests; then generate() with the native pick against the TS path on the tiny checkpoint.
 *
 * Logprob bound. The TS sampler weighs w = fround(expNeg(max - x)) (relative error <= U + 3e-9) and sums in double;
 * the native pick weighs expf(x - max) with x - max rounded to fp32 (relative error <= 4U from expf, + U|x - max|
 * from the difference; |x - max| <= 104 for any non-zero fp32 weight) and sums in double; it takes log w of a listed
 * id exactly (x - max in double). log Z then differs by at most the largest relative weight error of either side and
 * each logprob by that plus one TS weight error: (4 + 104 + 2) U + 6e-9. A TS weight below 2^-126 is subnormal in
 * fp32, where rounding is absolute, not relative: its logprob gets subnormalSlack (helpers/nativePath.ts) on top.
 */
import { addon } from '../lib/native/binding';
import type { NativeBackendOptions, NativeOps, NativePick, NativePickRequest } from '../lib/native/types';
import { type SamplerConfig, createSampler, isSamplerRequest } from '../lib/sampling';
import { expectNativeEqualsTs, expectPickEqualsSample, tsPath, useTinyModel } from './helpers/nativePath';
import { gridRow } from './helpers/rows';
import { U, randArray, rng, storeWeight } from './helpers/weights';

const TOL = 110 * U + 6e-9;
const a = addon();
const cpuIsa = a.cpuInfo().isa;
const cuda = a.cudaInfo().available;
// The op tests' backend list (test/ops.test.ts).
const BACKENDS: Array<[string, NativeBackendOptions]> = [['cpu scalar', { device: 'cpu', dtype: 'auto', threads: 2, cpuIsa: 'scalar' }]];
if (cpuIsa !== 'scalar') BACKENDS.push(['cpu avx2', { device: 'cpu', dtype: 'auto', threads: 2, cpuIsa: 'avx2' }]);
if (cpuIsa === 'avx512') BACKENDS.push(['cpu avx512', { device: 'cpu', dtype: 'auto', threads: 2, cpuIsa: 'avx512' }]);
BACKENDS.push(['cpu bf16-matmul', { device: 'cpu', dtype: 'bf16', threads: 2 }]);
if (cuda) for (const act of ['bf16', 'fp16', 'fp32'] as const) BACKENDS.push([`cuda ${act}`, { device: 'cuda', dtype: act }]);

/** One row's penalty history and options, as the sampler sees them. */
interface Case {
  logits: Float32Array;
  prompt: number[];
  generated: number[];
  rp: number;
  presence: number;
  frequency: number;
  vocabLimit: number;
  top?: number;
}

/** The request built by hand from the history (independent of Sampler.pickRequest): every distinct id, counts over
 *  the generated ones; ids >= vocabLimit are included on purpose (the backend must ignore them). */
function requestOf(c: Case): NativePickRequest {
  const counts = new Map<number, number>();
  for (const id of c.prompt) counts.set(id, counts.get(id) ?? 0);
  for (const id of c.generated) counts.set(id, (counts.get(id) ?? 0) + 1);
  const req: NativePickRequest = {
    repetitionPenalty: c.rp,
    presencePenalty: c.presence,
    frequencyPenalty: c.frequency,
    ids: Int32Array.from(counts.keys()),
    counts: Int32Array.from(counts.values()),
    vocabLimit: c.vocabLimit,
  };
  if (c.top !== undefined) req.topLogprobs = c.top;
  return req;
}

function samplerOf(c: Case) {
  const cfg: SamplerConfig = {
    doSample: false,
    temperature: 1,
    topK: 0,
    topP: 1,
    repetitionPenalty: c.rp,
    presencePenalty: c.presence,
    frequencyPenalty: c.frequency,
    tokenizerVocabSize: c.vocabLimit,
    ...(c.top !== undefined ? { logprobs: c.top } : {}),
  };
  const s = createSampler(cfg, c.prompt);
  s.accept(c.generated);
  return s;
}

/** The native pick of row `logits` equals the TS sampler's sample() of it. */
function expectSameAsSampler(got: NativePick, c: Case, logits: Float32Array, what: string) {
  const s = samplerOf(c);
  expectPickEqualsSample(got, () => s.sample(Float32Array.from(logits)), TOL, what);
}

/** Logits on a grid of 1/8 in [-lo, hi]: plenty of exact ties (the pick resolves them by the lowest id). */
/** The rows of one pickLogits call: every special case, each with its own penalties and logprobs request. */
function cases(V: number): Case[] {
  const L = V - 85; // the tokenizer's limit: the last 85 rows are lm_head padding
  const out: Case[] = [];
  // 0: plain, no penalties, the most logprobs
  out.push({ logits: gridRow(V, 1), prompt: [], generated: [], rp: 1, presence: 0, frequency: 0, vocabLimit: L, top: 20 });
  // 1: NaN and -Infinity sprinkled, a 3-way tie at the max
  {
    const x = gridRow(V, 2);
    const r = rng(3);
    for (let i = 0; i < V; i++) {
      const u = r();
      if (u < 0.1) x[i] = NaN;
      else if (u < 0.2) x[i] = -Infinity;
    }
    for (const i of [300, 17, 301]) x[i] = 11;
    x[0] = NaN;
    out.push({ logits: x, prompt: [5, 6], generated: [], rp: 1.1, presence: 0, frequency: 0, vocabLimit: L, top: 5 });
  }
  // 2: the largest logits sit at ids >= vocabLimit; all three penalties, repeated generated ids
  {
    const x = gridRow(V, 4);
    for (let i = L; i < V; i++) x[i] = 1000;
    out.push({ logits: x, prompt: [1, 2, 3, L + 1, L + 2], generated: [3, 3, 7, 9, 9, 9, L], rp: 1.1, presence: 0.5, frequency: 0.3, vocabLimit: L, top: 3 });
  }
  // 3: penalties move the argmax: the top id is repeated (rp), a generated one is boosted (negative penalties)
  {
    const x = gridRow(V, 5);
    x[40] = 12; // best, but in the prompt: 12 / 1.3 = 9.23
    x[41] = 10; // generated twice with negative penalties: 10 + 0.4 * 2 + 0.25 = 11.05 (but 10 / 1.3 first)
    x[42] = 10.5; // untouched: wins unless penalties say otherwise
    out.push({ logits: x, prompt: [40, 100, 200], generated: [41, 41], rp: 1.3, presence: -0.25, frequency: -0.4, vocabLimit: L, top: 0 });
  }
  // 4: all negative, repetition multiplies them; no logprobs asked
  {
    const x = gridRow(V, 6, 20, -1);
    const ids = Array.from({ length: 300 }, (_, k) => (k * 37) % L);
    out.push({ logits: x, prompt: ids, generated: [ids[3], ids[4]], rp: 1.1, presence: 0.1, frequency: 0, vocabLimit: L });
  }
  // 5: +Infinity at two eligible ids (and one padding row): they share all the mass
  {
    const x = gridRow(V, 7);
    x[900] = Infinity;
    x[20] = Infinity;
    x[L + 3] = Infinity;
    x[21] = NaN;
    out.push({ logits: x, prompt: [900], generated: [], rp: 1.2, presence: 0, frequency: 0, vocabLimit: L, top: 4 });
  }
  // 6: no usable logit below vocabLimit (the padding rows are finite)
  {
    const x = new Float32Array(V).fill(-Infinity);
    for (let i = 0; i < L; i += 3) x[i] = NaN;
    for (let i = L; i < V; i++) x[i] = 1;
    out.push({ logits: x, prompt: [1], generated: [2], rp: 1.1, presence: 1, frequency: 1, vocabLimit: L, top: 2 });
  }
  // 7: a wide spread: beyond ~104 nats below the max an id weighs 0 in fp32 and is not listed
  {
    const x = new Float32Array(V).fill(0);
    x[10] = 200;
    x[20] = 150;
    x[30] = 150;
    out.push({ logits: x, prompt: [], generated: [], rp: 1, presence: 0, frequency: 0, vocabLimit: L, top: 20 });
  }
  // 8: every row eligible, repetition < 1 boosts, negative presence only
  {
    const x = gridRow(V, 8);
    out.push({ logits: x, prompt: [0, V - 1, 77], generated: [77, 78], rp: 0.8, presence: -1, frequency: 0, vocabLimit: V, top: 1 });
  }
  // 9: random fp32 values (no grid): ties only by chance; presence / frequency without repetition
  {
    const x = randArray(V, 9, 6);
    out.push({ logits: x, prompt: [4, 5], generated: [6, 6, 7], rp: 1, presence: 0.7, frequency: 0.2, vocabLimit: L, top: 7 });
  }
  // 10: the edge of a non-zero fp32 weight: exp(d) > 2^-150 (rounds up to the least subnormal) for d > -150 ln 2 =
  // -103.9720770839918; the floats on either side of it are 6.7e-7 above and 7.0e-6 below. With the max at 0, d is
  // the logit itself (no rounding in x - m). A 2-ulp expf (CUDA's) may give 0 at the upper one: the list must not
  // depend on it.
  {
    const x = new Float32Array(V).fill(-1000);
    x[10] = 0;
    x[40] = Math.fround(-103.97207641601562);
    x[50] = Math.fround(-103.97208404541016);
    x[60] = -50;
    out.push({ logits: x, prompt: [], generated: [], rp: 1, presence: 0, frequency: 0, vocabLimit: L, top: 20 });
  }
  return out;
}

describe.each(BACKENDS)('%s pick', (_name, opts) => {
  const ops: NativeOps = new a.NativeOps(opts);

  test.each([[5003], [151936]])('pickLogits equals the TS sampler, V=%i (ties, NaN, +-Infinity, penalties, padding ids)', (V) => {
    const cs = cases(V);
    const all = new Float32Array(cs.length * V);
    cs.forEach((c, r) => all.set(c.logits, r * V));
    const got = ops.pickLogits(all, cs.length, V, cs.map(requestOf));
    expect(got.length).toBe(cs.length);
    cs.forEach((c, r) => expectSameAsSampler(got[r], c, c.logits, `row ${r}`));
    // the rows designed to hit a case did hit it
    expect(got[1].id).toBe(17); // lowest of the tied maxima
    expect(got[3].id).toBe(42); // the repeated maximum lost to an untouched id
    expect(got[5]).toMatchObject({ id: 20, logprob: -Math.log(2), top: [{ id: 20 }, { id: 900 }] });
    expect(got[6]).toEqual({ id: -1 });
    expect(got[7].top!.map((t) => t.id)).toEqual([10, 20, 30]);
    expect(got[10].top!.map((t) => t.id)).toEqual([10, 60, 40]); // 40 is 6.7e-7 above the edge, 50 below it
    expect(got[2].id).toBeLessThan(V - 85);
    expect(got[4].logprob).toBeUndefined();
  });

  test('more rows than one launch chunk, each with its own request', () => {
    const V = 301, R = 300;
    const all = new Float32Array(R * V);
    const cs: Case[] = [];
    for (let r = 0; r < R; r++) {
      const c: Case = { logits: gridRow(V, 100 + r, 3, 3), prompt: [r % V, (7 * r) % V], generated: [(3 * r) % V], rp: 1 + (r % 5) / 10, presence: (r % 3) / 4, frequency: (r % 4) / 8, vocabLimit: V - (r % 7), top: r % 4 === 0 ? undefined : r % 21 };
      cs.push(c);
      all.set(c.logits, r * V);
    }
    const got = ops.pickLogits(all, R, V, cs.map(requestOf));
    cs.forEach((c, r) => expectSameAsSampler(got[r], c, c.logits, `row ${r}`));
  });

  test('finalPick (ln_f + lm_head + pick inside the backend) equals the sampler on finalLogits', () => {
    const T = 6, H = 40, V = 1003;
    const h = randArray(T * H, 61, 3);
    for (const dt of ['F32', 'BF16'] as const) {
      const lnf = storeWeight(randArray(H, 62, 1.2), dt), head = storeWeight(randArray(V * H, 63, 0.3), dt);
      const rows = Int32Array.from([5, 0, 2]);
      const logits = ops.finalLogits(h, T, H, rows, lnf.bytes, lnf.code, head.bytes, head.code, V, 1e-6);
      const cs: Case[] = [
        { logits: logits.subarray(0, V), prompt: [1, 2, 3], generated: [4, 4], rp: 1.1, presence: 0.5, frequency: 0.3, vocabLimit: V - 3, top: 5 },
        { logits: logits.subarray(V, 2 * V), prompt: [], generated: [], rp: 1, presence: 0, frequency: 0, vocabLimit: V },
        { logits: logits.subarray(2 * V, 3 * V), prompt: [7], generated: [], rp: 1.3, presence: 0, frequency: 0, vocabLimit: V, top: 0 },
      ];
      // the argmax of each row is penalized too, so the penalties decide something
      cs.forEach((c) => {
        let best = 0;
        for (let i = 1; i < c.vocabLimit; i++) if (c.logits[i] > c.logits[best]) best = i;
        if (c.rp !== 1) c.prompt.push(best);
      });
      const got = ops.finalPick(h, T, H, rows, lnf.bytes, lnf.code, head.bytes, head.code, V, 1e-6, cs.map(requestOf));
      // the same lm_head call computes the logits of both ops, so the sampler sees exactly the backend's logits
      cs.forEach((c, r) => expectSameAsSampler(got[r], c, c.logits, `finalPick ${dt} row ${r}`));
    }
  });

  test('bad requests are refused', () => {
    const x = new Float32Array(10);
    const ok: NativePickRequest = { repetitionPenalty: 1, presencePenalty: 0, frequencyPenalty: 0, ids: Int32Array.of(1, 2), counts: Int32Array.of(0, 1), vocabLimit: 10 };
    expect(ops.pickLogits(x, 1, 10, [ok])).toEqual([{ id: 0 }]);
    expect(() => ops.pickLogits(x, 1, 10, [{ ...ok, ids: Int32Array.of(1, 1) }])).toThrow(/distinct/);
    expect(() => ops.pickLogits(x, 1, 10, [{ ...ok, ids: Int32Array.of(1, 10) }])).toThrow(/\[0, vocab\)/);
    expect(() => ops.pickLogits(x, 1, 10, [{ ...ok, counts: Int32Array.of(0) }])).toThrow(/length/);
    expect(() => ops.pickLogits(x, 1, 10, [{ ...ok, vocabLimit: 11 }])).toThrow(/vocabLimit/);
    expect(() => ops.pickLogits(x, 1, 10, [{ ...ok, topLogprobs: 21 }])).toThrow(/topLogprobs/);
    expect(() => ops.pickLogits(x, 1, 10, [])).toThrow(/one request per row/);
  });
});

test('Sampler.pickRequest follows a growing history step by step: the processors\' lists, in order, as snapshots', () => {
  // The reference: the lists rebuilt from the whole history at each step, as the TS processors read them
  // (RepetitionPenalty: distinct ids of prompt + generated in order of first appearance; PresenceFrequencyPenalty:
  // generated ids in order of first generation), ids outside [0, limit) left out.
  const limit = 50;
  const want = (prompt: number[], gen: number[], mode: 'all' | 'generated' | 'none') => {
    const count = new Map<number, number>();
    for (const id of gen) count.set(id, (count.get(id) ?? 0) + 1);
    const order = mode === 'all' ? [...prompt, ...gen] : mode === 'generated' ? gen : [];
    const ids = [...new Set(order)].filter((id) => id >= 0 && id < limit);
    return { ids, counts: ids.map((id) => count.get(id) ?? 0) };
  };
  const r = rng(77);
  for (const [rp, presence, mode] of [[1.2, 0, 'all'], [1.2, 0.4, 'all'], [1, 0.4, 'generated'], [1, 0, 'none']] as const) {
    const prompt = Array.from({ length: 30 }, () => Math.floor(r() * 70)); // some ids >= limit, repeats
    const s = createSampler({ doSample: false, temperature: 1, topK: 0, topP: 1, repetitionPenalty: rp, presencePenalty: presence,
      frequencyPenalty: 0, tokenizerVocabSize: limit }, prompt);
    const gen: number[] = [];
    const kept: Array<[NativePickRequest, ReturnType<typeof want>]> = [];
    for (let step = 0; step < 120; step++) {
      const req = s.pickRequest()!;
      expect(isSamplerRequest(req) && !isSamplerRequest({ ...req })).toBe(true); // Model.checkPick trusts only these
      const w = want(prompt, gen, mode);
      expect({ step, mode, ids: Array.from(req.ids), counts: Array.from(req.counts) }).toEqual({ step, mode, ...w });
      kept.push([req, w]);
      if (step % 3 === 2) {
        // sample() records its own pick, as accept() records a native one
        const logits = Float32Array.from({ length: limit }, () => r() * 4);
        gen.push(s.sample(logits).id);
      } else {
        const ids = Array.from({ length: 1 + Math.floor(r() * 2) }, () => Math.floor(r() * 60) - 2); // < 0 and >= limit too
        s.accept(ids);
        gen.push(...ids);
      }
    }
    // every request kept the values it had when it was made
    for (const [req, w] of kept) expect({ ids: Array.from(req.ids), counts: Array.from(req.counts) }).toEqual(w);
  }
});

test('Sampler.pickRequest carries the sampler\'s own penalty history (what the hand-built requests above assume)', () => {
  const c: Case = { logits: new Float32Array(0), prompt: [9, 3, 3, 200], generated: [3, 5, 5, 150], rp: 1.1, presence: 0.5, frequency: 0.25, vocabLimit: 160, top: 3 };
  const byId = (r: NativePickRequest) => new Map(Array.from(r.ids, (id, k) => [id, r.counts[k]]));
  const want = requestOf(c);
  const got = samplerOf(c).pickRequest()!;
  expect({ ...got, ids: null, counts: null }).toEqual({ ...want, ids: null, counts: null });
  // ids >= vocabLimit are left out (the backend would ignore them anyway)
  expect(byId(got)).toEqual(new Map([...byId(want)].filter(([id]) => id < c.vocabLimit)));
  // only the active penalties travel: no repetition -> only the generated ids; none -> nothing
  const oa = samplerOf({ ...c, rp: 1 }).pickRequest()!;
  expect(byId(oa)).toEqual(new Map([[3, 1], [5, 2], [150, 1]]));
  expect(oa.repetitionPenalty).toBe(1);
  const off = samplerOf({ ...c, rp: 1, presence: 0, frequency: 0 }).pickRequest()!;
  expect(off.ids.length).toBe(0);
  // sampling: the same penalties plus the warpers and u (test/sample.test.ts checks the sampled pick itself)
  const sampling = createSampler({ doSample: true, temperature: 0.7, topK: 0, topP: 1, repetitionPenalty: 1, tokenizerVocabSize: 10 });
  expect(sampling.pickRequest()).toMatchObject({ doSample: true, temperature: 0.7, topK: 0, topP: 1, repetitionPenalty: 1 });
});

// generate(): the native pick against the TS path (the same Sequence without forwardPick), on the tiny checkpoint.
const DEVICES: Array<'cpu' | 'cuda'> = cuda ? ['cpu', 'cuda'] : ['cpu'];
describe.each(DEVICES)('generate() on %s: native greedy pick == TS sampler path', (device) => {
  const t = useTinyModel(device);

  // A random model rarely picks an id of its history, so penalties in [-2, 2] seldom change its greedy text; rp < 1
  // doubles the positive logits of every prompt id, which does (checked). The op tests above make every penalty count.
  test.each([
    [{ doSample: false, repetitionPenalty: 1 }, false],
    [{ doSample: false, repetitionPenalty: 1.1, logprobs: 5 }, false],
    [{ doSample: false, repetitionPenalty: 1.1, presencePenalty: 0.6, frequencyPenalty: 0.4, logprobs: 0 }, false],
    [{ doSample: true, temperature: 0, repetitionPenalty: 0.5, logprobs: 20 }, true],
    [{ doSample: false, repetitionPenalty: 1.1, presencePenalty: -0.5, frequencyPenalty: -2, logprobs: 3 }, false],
  ])('%j', async (opts, differs) => {
    const prompt = 'The capital of France is the capital of';
    const n = 24;
    const want = await expectNativeEqualsTs(t.model, prompt, { ...opts, maxNewTokens: n }, TOL);
    expect(want.usage.completionTokens).toBe(n);
    if (differs) {
      const plain = await tsPath(t.model, prompt, { doSample: false, repetitionPenalty: 1, maxNewTokens: n });
      expect(plain.tokens).not.toEqual(want.tokens);
    }
  }, 60000);

  test('picks and logits rows in the same steps (greedy native, greedy TS path and a sampled native generation)', async () => {
    const prompt = 'Hello there, general';
    const greedy = { doSample: false, repetitionPenalty: 1.1, maxNewTokens: 16 };
    const sampled = { seed: 7, temperature: 0.9, topP: 0.9, maxNewTokens: 16 };
    let mixed = 0;
    const off = t.model.onStep((s) => {
      if (s.sequences === 3 && s.decodeTokens === 3) mixed++;
    });
    // Three sequences in every step, one asking for a logits row and two for picks (greedy and sampled). The two
    // greedy ones see the same rows of the same steps, so they must agree token for token.
    const [g, s, ts] = await Promise.all([
      t.model.generate(prompt, greedy).result(),
      t.model.generate(prompt, sampled).result(),
      tsPath(t.model, prompt, greedy),
    ]);
    off();
    expect(mixed).toBeGreaterThan(10);
    expect(g.tokens).toEqual(ts.tokens);
    expect(g.text).toBe(ts.text);
    expect(s.usage.completionTokens).toBeGreaterThan(0);
  }, 60000);
});
