/**
 * The native SAMPLED pick (PickSpec::do_sample: cpp/cpu/sample.cc; CUDA: cuda/pick.cu) against the TS Sampler, the
 * reference (lib/sampling): for the same logits, config and u the id must be EQUAL and the top-logprob ids equal; the
 * logprobs agree to a few ulps (both sides take log w - log Z of the same fp32 weights and the same double sum; only
 * the libm differs: V8's fdlibm log vs the C library's, each within 1 ulp of the exact value, |log| <= 104 for a
 * non-zero fp32 weight and log Z <= log 151936, so 2 ulp(128) = 5.7e-14 bounds the difference).
 * Then generate() with doSample: native pick == TS path, token for token, on the tiny checkpoint.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { addon } from '../lib/native/binding';
import type { NativeBackendOptions, NativeOps, NativePick, NativePickRequest } from '../lib/native/types';
import { Rng, type SampleResult, createSampler } from '../lib/sampling';
import { expectNativeEqualsTs, expectPickEqualsSample, tsPath, useTinyModel } from './helpers/nativePath';
import {
  ADVERSARIAL_LIMIT, KS, LOGPROBS, PS, QWEN_LIMIT, QWEN_V, TEMPS, adversarialRows, gridRow, modelRow, sampledConfig,
} from './helpers/rows';
import { randArray, rng } from './helpers/weights';

const LOG_TOL = 2 * 2 ** -52 * 128;
const V = QWEN_V;
const LIMIT = QWEN_LIMIT;
const a = addon();
const cuda = a.cudaInfo().available;
const BACKENDS: Array<[string, NativeBackendOptions]> = [['cpu', { device: 'cpu', dtype: 'auto', threads: 2 }]];
if (cuda) BACKENDS.push(['cuda', { device: 'cuda', dtype: 'fp32' }]);

test('the native exp table and HEAD_S are V8\'s Math.exp(-k / 64) and Math.log(4096) (cpp/core/pick_tables.h)', () => {
  const src = fs.readFileSync(path.join(__dirname, '..', 'cpp', 'core', 'pick_tables.h'), 'utf8');
  const body = src.slice(src.indexOf('#define QWEN_PICK_EXP_TABLE'));
  const vals = body.replace('#define QWEN_PICK_EXP_TABLE', '').replace(/\\/g, '').split(',').map((t) => Number(t.trim()));
  expect(vals.length).toBe(64 * 104 + 1);
  vals.forEach((v, k) => {
    if (v !== Math.exp(-k / 64)) throw new Error(`table[${k}] = ${v}, Math.exp gives ${Math.exp(-k / 64)}`);
  });
  expect(Number(/#define QWEN_PICK_HEAD_S (\S+)/.exec(src)![1])).toBe(Math.log(4096));
});

interface Cfg {
  temperature: number;
  topK: number;
  topP: number;
  rp: number;
  presence: number;
  frequency: number;
  logprobs?: number;
}
interface Row {
  logits: Float32Array;
  prompt: number[];
  generated: number[];
  vocabLimit: number;
}


/** Two samplers of the same seed and history: one builds the native request, the other samples the row in TS. */
function pair(c: Cfg, row: Row, seed: number) {
  const mk = () => {
    const s = createSampler(sampledConfig(c, row.vocabLimit, seed), row.prompt);
    s.accept(row.generated);
    return s;
  };
  return { native: mk(), ts: mk() };
}

function expectSame(got: NativePick, want: () => SampleResult, what: string) {
  expectPickEqualsSample(got, want, LOG_TOL, what);
}

/** Native picks of rows (one request each, built by Sampler.pickRequest) vs sample() of the same rows. */
function compare(ops: NativeOps, c: Cfg, rows: Row[], seeds: number[], what: string) {
  const W = rows[0].logits.length;
  const all = new Float32Array(rows.length * W);
  rows.forEach((r, i) => all.set(r.logits, i * W));
  const samplers = rows.map((r, i) => pair(c, r, seeds[i]));
  const reqs = samplers.map((s) => s.native.pickRequest()!);
  reqs.forEach((r, i) => {
    expect(r.doSample).toBe(true);
    expect(r.u).toBe(new Rng(seeds[i]).next()); // the seed's first draw, as sample() takes it
  });
  const got = ops.pickLogits(all, rows.length, W, reqs);
  rows.forEach((r, i) => expectSame(got[i], () => samplers[i].ts.sample(Float32Array.from(r.logits)), `${what} row ${i} seed ${seeds[i]} ${JSON.stringify(c)}`));
  return got;
}

const PENALTIES = [
  { rp: 1, presence: 0, frequency: 0 },
  { rp: 1.1, presence: 0.4, frequency: 0.3 },
];

describe.each(BACKENDS)('%s sampled pick == TS Sampler', (_name, opts) => {
  const ops: NativeOps = new a.NativeOps(opts);
  // prompt / generated ids that hit the peaks of the rows below often enough for the penalties to matter
  const rowsOf = (base: number): Row[] => [
    { logits: modelRow(base, 12, 2), prompt: [], generated: [], vocabLimit: LIMIT },
    { logits: modelRow(base + 7, 3, 3), prompt: [1, 2, 3], generated: [4, 4], vocabLimit: LIMIT },
    { logits: randArray(V, base + 11, 0.5), prompt: [9], generated: [10], vocabLimit: LIMIT }, // flat: histogram path
    { logits: gridRow(V, base + 13, 4, 2), prompt: [5, 6], generated: [6], vocabLimit: LIMIT }, // ties everywhere
  ];

  test('real-shaped rows (151936 wide, limit 151851) over temperature x top_k x top_p x penalties x logprobs', () => {
    let n = 0, i = 0;
    for (const temperature of TEMPS)
      for (const topK of KS)
        for (const topP of PS)
          for (const pen of PENALTIES) {
            const logprobs = LOGPROBS[i++ % LOGPROBS.length];
            const rows = rowsOf(1000 + i);
            // the penalized ids include each row's best id, so the penalties decide something
            rows.forEach((r) => {
              let best = 0;
              for (let j = 1; j < r.vocabLimit; j++) if (r.logits[j] > r.logits[best]) best = j;
              r.prompt.push(best);
              r.generated.push(best);
            });
            compare(ops, { temperature, topK, topP, ...pen, logprobs }, rows, rows.map((_, j) => 31 * i + j), 'model');
            n += rows.length;
          }
    expect(n).toBe(4 * 4 * 4 * 2 * 4);
  });

  test('many seeds on one config (Qwen-7B-Chat: top_p 0.8, repetition 1.1)', () => {
    const rows = Array.from({ length: 8 }, (_, j) => ({ logits: modelRow(500 + j, 6, 2.5), prompt: [j, 2 * j], generated: [], vocabLimit: LIMIT }));
    for (let s = 0; s < 12; s++) {
      compare(ops, { temperature: 1, topK: 0, topP: 0.8, rp: 1.1, presence: 0, frequency: 0, logprobs: 3 }, rows, rows.map((_, j) => 1e6 + 97 * s + j), 'chat');
    }
  });

  /** Adversarial rows (n = 1003 wide, limit 1000), every config of the grid on each. */
  const adversarial = (): Array<[string, Row]> =>
    adversarialRows().map((r) => [r.what, { logits: r.logits, prompt: r.prompt, generated: r.generated, vocabLimit: ADVERSARIAL_LIMIT }]);

  test.each(adversarial())('%s', (_what, row) => {
    let i = 0;
    for (const temperature of TEMPS)
      for (const topK of KS)
        for (const topP of [...PS, 0.25, 0.5, 0.75])
          for (const pen of PENALTIES) {
            const logprobs = LOGPROBS[i++ % LOGPROBS.length];
            const rows = Array.from({ length: 6 }, () => ({ ...row, prompt: [...row.prompt], generated: [...row.generated] }));
            compare(ops, { temperature, topK, topP, ...pen, logprobs }, rows, rows.map((_, j) => 7 * i + j), _what);
          }
  });

  test('u at the exact boundaries of the draw (equal weights 1: the walk returns the first id whose mass exceeds u * Z)', () => {
    const n = 64;
    const x = new Float32Array(n).fill(-Infinity);
    for (const i of [3, 30, 31, 40]) x[i] = 0;
    const row: Row = { logits: x, prompt: [], generated: [], vocabLimit: n };
    const spy = jest.spyOn(Rng.prototype, 'next');
    try {
      for (const u of [0, 0.25, 0.5, 0.75, 0.9999999999999999, 0.25 - 2 ** -54])
        for (const topP of [1, 0.5, 0.75])
          for (const topK of [0, 2, 3]) {
            spy.mockReturnValue(u);
            const got = compare(ops, { temperature: 1, topK, topP, rp: 1, presence: 0, frequency: 0, logprobs: 4 }, [row], [1], `u=${u}`);
            // independent expectation: kept ids in order [3, 30, 31, 40] cut by top-k / top-p, the draw picks
            // kept[floor(u * kept)] (u * kept is exact; "exceeds" makes an exact boundary go to the next id)
            const keptK = 4; // top-k keeps every id tied with the k-th: all four
            const kept = topP < 1 ? Math.max(1, Math.ceil(topP * keptK)) : keptK; // the first mass >= topP * keptK
            expect(got[0].id).toBe([3, 30, 31, 40][Math.floor(u * kept)]);
            expect(got[0].logprob).toBeCloseTo(-Math.log(kept), 12);
          }
    } finally {
      spy.mockRestore();
    }
  });

  test('the kept mass is summed in SUM_LANES order (id i into partial i % 4, merged (a0 + a2) + (a1 + a3)): u at its last bit', () => {
    // top_p 1: the draw walks the head (weights >= 1/4096) then the other ids, each in id order, and returns the first
    // whose running mass exceeds u * Z. Logits are -k/64 down to -60, so each weight is fround(Math.exp(-k/64))
    // exactly (the table entry, no correction term), independently of the sampler's code, and they span enough
    // octaves for sums in other orders to round differently. u is set so that u * Z lands exactly on a running mass
    // (the next id wins) or just below it (this id wins): a Z one ulp off flips the id.
    const n = 1003;
    const lanes = (w: Float64Array, k: number) => {
      const a = new Array<number>(k).fill(0);
      w.forEach((x, i) => (a[i % k] += x));
      return a;
    };
    const sumOrders: Record<string, (w: Float64Array) => number> = {
      lanes: (w) => ((a) => a[0] + a[2] + (a[1] + a[3]))(lanes(w, 4)),
      'id order': (w) => w.reduce((z, x) => z + x, 0),
      'lanes merged (a0 + a1) + (a2 + a3)': (w) => ((a) => a[0] + a[1] + (a[2] + a[3]))(lanes(w, 4)),
      'eight lanes': (w) => ((a) => a[0] + a[4] + (a[2] + a[6]) + (a[1] + a[5] + (a[3] + a[7])))(lanes(w, 8)),
      'the last n % 4 ids into lane 0': (w) => {
        const a = lanes(w.subarray(0, n - (n % 4)), 4);
        for (let i = n - (n % 4); i < n; i++) a[0] += w[i];
        return a[0] + a[2] + (a[1] + a[3]);
      },
    };
    const f64 = new Float64Array(1), u64 = new BigUint64Array(f64.buffer);
    const step = (x: number, d: number) => ((f64[0] = x), (u64[0] += BigInt(d)), f64[0]); // x moved by d ulps (x > 0)
    let found = 0;
    for (let seed = 1; seed < 400 && found < 3; seed++) {
      const r = rng(seed);
      // (the last ids, past the last whole block of 4, nearer the max: their lanes weigh in the total)
      const x = Float32Array.from({ length: n }, (_, i) => (i === 0 ? 0 : -Math.floor(r() * 64 * (i < 1000 ? 60 : 30)) / 64));
      const w = Float64Array.from(x, (v) => Math.fround(Math.exp(v)));
      const ids = [...w.keys()];
      const walk = ids.filter((i) => w[i] >= 1 / 4096).concat(ids.filter((i) => w[i] < 1 / 4096));
      const drawWith = (z: number, u: number) => {
        const t = u * z;
        let acc = 0;
        for (const j of walk) if ((acc += w[j]) > t) return j;
        return -1;
      };
      const z = sumOrders.lanes(w);
      const pos = 50 + Math.floor(r() * 20); // inside the head (~140 ids)
      let acc = 0;
      for (let j = 0; j <= pos; j++) acc += w[walk[j]];
      // the smallest u with u * z === acc (the next id wins), and the one below it (u * z < acc: this id wins)
      let uOn = acc / z;
      while (uOn * z < acc) uOn = step(uOn, 1);
      while (step(uOn, -1) * z >= acc) uOn = step(uOn, -1);
      if (uOn * z !== acc) continue;
      const us: Array<[number, number]> = [[uOn, walk[pos + 1]], [step(uOn, -1), walk[pos]]];
      // the case must tell every other order from the lanes: with its Z, one of the two u's draws another id
      const blind = Object.keys(sumOrders).filter((o) => o !== 'lanes' && us.every(([u, want]) => drawWith(sumOrders[o](w), u) === want));
      if (blind.length) continue;
      const row: Row = { logits: x, prompt: [], generated: [], vocabLimit: n };
      const spy = jest.spyOn(Rng.prototype, 'next');
      try {
        for (const [u, want] of us) {
          expect(drawWith(z, u)).toBe(want);
          spy.mockReturnValue(u);
          const got = compare(ops, { temperature: 1, topK: 0, topP: 1, rp: 1, presence: 0, frequency: 0 }, [row], [1], `lanes seed ${seed} u=${u}`);
          expect(got[0].id).toBe(want); // and compare() checked that the TS sampler drew it too
        }
      } finally {
        spy.mockRestore();
      }
      found++;
    }
    expect(found).toBe(3);
  });

  test('bad sampled requests are refused by the addon', () => {
    const x = new Float32Array(10);
    const ok: NativePickRequest = { repetitionPenalty: 1, presencePenalty: 0, frequencyPenalty: 0, ids: new Int32Array(0), counts: new Int32Array(0), vocabLimit: 10, doSample: true, temperature: 1, topK: 0, topP: 1, u: 0.5 };
    expect(ops.pickLogits(x, 1, 10, [ok])[0].id).toBe(5);
    expect(() => ops.pickLogits(x, 1, 10, [{ ...ok, temperature: 0 }])).toThrow(/temperature/);
    expect(() => ops.pickLogits(x, 1, 10, [{ ...ok, topK: 1.5 }])).toThrow(/topK/);
    expect(() => ops.pickLogits(x, 1, 10, [{ ...ok, topP: 0 }])).toThrow(/topP/);
    expect(() => ops.pickLogits(x, 1, 10, [{ ...ok, u: 1 }])).toThrow(/\bu\b/);
    expect(() => ops.pickLogits(x, 1, 10, [{ ...ok, u: undefined }])).toThrow(/'u'/);
  });
});

test('Sampler.pickRequest when sampling: only the active warpers, one rng draw per request, the same stream as sample()', () => {
  const cfg = sampledConfig({ temperature: 0.7, topK: 0, topP: 0.9, rp: 1, presence: 0, frequency: 0 }, 10, 42);
  const s = createSampler(cfg);
  const r = new Rng(42);
  for (let k = 0; k < 3; k++) {
    const req = s.pickRequest()!;
    expect(req).toMatchObject({ doSample: true, temperature: 0.7, topK: 0, topP: 0.9, vocabLimit: 10 });
    expect(req.u).toBe(r.next());
    s.accept([1]);
  }
  const off = createSampler({ ...cfg, temperature: 1, topP: 1 }).pickRequest()!;
  expect(off).toMatchObject({ temperature: 1, topK: 0, topP: 1 });
  // greedy: no warpers, no draw
  const g = createSampler({ ...cfg, temperature: 0 }).pickRequest()!;
  expect(g.doSample).toBeUndefined();
  expect(g.u).toBeUndefined();
});

// generate() with doSample: the native pick against the TS path (the same Sequence without forwardPick).
const DEVICES: Array<'cpu' | 'cuda'> = cuda ? ['cpu', 'cuda'] : ['cpu'];
describe.each(DEVICES)('generate() on %s with doSample: native pick == TS sampler path', (device) => {
  const t = useTinyModel(device);

  test.each([
    [{ doSample: true, seed: 1, temperature: 1, topP: 0.8, repetitionPenalty: 1.1, logprobs: 5 }],
    [{ doSample: true, seed: 2, temperature: 0.7, topK: 50, topP: 0.95, logprobs: 0 }],
    [{ doSample: true, seed: 3, temperature: 1.5, topK: 5, topP: 1, presencePenalty: 0.5, frequencyPenalty: 0.3, logprobs: 20 }],
    [{ doSample: true, seed: 4, temperature: 0.3, topK: 0, topP: 1, repetitionPenalty: 1 }],
    [{ doSample: true, seed: 5, temperature: 1, topK: 1, topP: 0.1, repetitionPenalty: 1.1 }],
  ] as Array<[Record<string, number | boolean>]>)('%j', async (opts) => {
    const prompt = 'The capital of France is the capital of';
    const n = 24;
    const want = await expectNativeEqualsTs(t.model, prompt, { ...opts, maxNewTokens: n }, LOG_TOL);
    // a different seed draws something else: the seed (hence u) matters
    const other = await tsPath(t.model, prompt, { ...opts, seed: (opts.seed as number) + 100, maxNewTokens: n });
    if (opts.topK !== 1) expect(other.tokens).not.toEqual(want.tokens);
  }, 60000);
});
