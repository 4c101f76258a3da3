/**
 * The fixed-point sampled pick (cpp/core/sample_fx.h; host reference cpp/cpu/sample_fx.cc, exported for tests as
 * addon().sampleFx) against the TS Sampler, the reference (lib/sampling): for the same logits, config and u the id
 * must be EQUAL and the top-logprob ids equal — except where a decision lay within its rounding band of the threshold
 * (result.gap <= result.band, both in units of 2^-43): there the two may legitimately differ, so such cases are not
 * asserted, only counted (none expected on the random rows). Logprobs: both sides take log w of the same fp32 weight
 * minus the log of the kept mass; the masses differ by at most `band` units, i.e. band / z relatively, plus the libm
 * difference of sample.test.ts (2 ulp(128)): tol = band / z + 2 * 2^-52 * 128.
 * No penalties here: sampleFx takes penalized logits (rp 1, presence 0, frequency 0).
 */
import { addon } from '../lib/native/binding';
import type { NativePick, NativePickRequest } from '../lib/native/types';
import { Rng, createSampler } from '../lib/sampling';
import { expectPickEqualsSample } from './helpers/nativePath';
import { KS, LOGPROBS, PS, QWEN_LIMIT, QWEN_V, TEMPS, adversarialRows, gridRow, modelRow, sampledConfig } from './helpers/rows';
import { randArray } from './helpers/weights';

const LOG_TOL = 2 * 2 ** -52 * 128;
const V = QWEN_V;
const LIMIT = QWEN_LIMIT;
const a = addon();

interface Cfg {
  temperature: number;
  topK: number;
  topP: number;
  logprobs?: number;
}
type FxResult = ReturnType<typeof a.sampleFx>;

const routes = new Map<number, number>(); // route -> how often, over the file
/** Per test: the cases in the band (what, gap) and, of those not asserted, the ones where the two did differ. */
let inBand: Array<{ what: string; gap: number }> = [];
let inBandDiffer: string[] = [];
beforeEach(() => {
  inBand = [];
  inBandDiffer = [];
});
afterEach(() => {
  if (process.env.SAMPLE_FX_STATS) console.log(`${expect.getState().currentTestName}: ${inBand.length} in band`);
});


/**
 * sampleFx of `x` (one sampler builds the request) vs sample() of a copy (its twin of the same seed). In band: counted
 * and compared, but a difference is only recorded (inBandDiffer), unless `strict`: exact arithmetic on both sides
 * (weights 1, integer masses), where the band is only a conservative bound and the two must agree.
 */
function compare(c: Cfg, x: Float32Array, vocabLimit: number, seed: number, what: string, strict = false): FxResult {
  const cfg = sampledConfig(c, vocabLimit, seed);
  const req = createSampler(cfg).pickRequest()!;
  expect(req.doSample).toBe(true);
  const res = a.sampleFx(x, req);
  routes.set(res.route, (routes.get(res.route) ?? 0) + 1);
  const { route, z, total, gap, band, ...pick } = res;
  const ts = createSampler(cfg);
  const tag = `${what} seed ${seed} u ${req.u} ${JSON.stringify(c)} route ${route} gap ${gap} band ${band}`;
  expect(z).toBeLessThanOrEqual(total);
  const tol = band / z + LOG_TOL;
  if (gap <= band) inBand.push({ what, gap });
  if (gap <= band && !strict) {
    try {
      expectPickEqualsSample(pick as NativePick, () => ts.sample(Float32Array.from(x)), tol, tag);
    } catch (e) {
      inBandDiffer.push((e as Error).message);
    }
    return res;
  }
  expectPickEqualsSample(pick as NativePick, () => ts.sample(Float32Array.from(x)), tol, tag);
  return res;
}

test('real-shaped rows (151936 wide, limit 151851) over temperature x top_k x top_p x logprobs', () => {
  // A pool of rows (sampleFx leaves its input alone; sample() gets a copy): two of each kind, taken in turn.
  const kinds: Array<[string, (b: number) => Float32Array]> = [
    ['peaks', (b) => modelRow(b, 12, 2)],
    ['few peaks', (b) => modelRow(b + 7, 3, 3)],
    ['flat', (b) => randArray(V, b + 11, 0.5)], // the histogram
    ['ties', (b) => gridRow(V, b + 13, 4, 2)], // ties everywhere
  ];
  const pool = kinds.map(([name, mk]) => [mk(1000), mk(2000)].map((x) => [name, x] as const));
  let n = 0, i = 0;
  for (const temperature of TEMPS)
    for (const topK of KS)
      for (const topP of PS)
        for (const logprobs of LOGPROBS) {
          i++;
          pool.forEach((variants, k) => {
            const [name, x] = variants[(i + k) % 2];
            compare({ temperature, topK, topP, logprobs }, x, LIMIT, 31 * i + k, `${name} (variant ${(i + k) % 2})`);
            n++;
          });
        }
  expect(n).toBe(4 * 4 * 4 * 4 * 4);
  // None of the random rows comes within the band. The ties row does, but only at gap 0 (0.8 * 1585 ids tied at the
  // max = 1268 exactly: an exact cumulative boundary of weights 1, computed exactly on both sides), and agrees.
  expect(inBand.filter((c) => !c.what.startsWith('ties'))).toEqual([]);
  expect(inBand.filter((c) => c.gap !== 0)).toEqual([]);
  expect(inBand.length).toBeLessThanOrEqual(24);
  expect(inBandDiffer).toEqual([]);
});

test('many seeds on one config (Qwen-7B-Chat: top_p 0.8, logprobs 3)', () => {
  const rows = Array.from({ length: 8 }, (_, j) => modelRow(500 + j, 6, 2.5));
  for (let s = 0; s < 16; s++)
    rows.forEach((x, j) => compare({ temperature: 1, topK: 0, topP: 0.8, logprobs: 3 }, x, LIMIT, 1e6 + 97 * s + j, `chat row ${j}`));
  expect(inBand).toEqual([]);
});

/** Adversarial rows (n = 1003 wide, limit 1000), every config of the grid on each (no penalties here). */
const adversarial = (): Array<[string, Float32Array]> => adversarialRows().map((r) => [r.what, r.logits]);
/** Rows whose weights (1 or 0) and masses are exact in both arithmetics: compared even in band. */
const EXACT = new Set(['one finite logit', 'top_k beyond the non-NaN ids (three, -Infinity among them)', 'exact masses: top_p lands on a cumulative boundary', '500 equal weights']);

test.each(adversarial())('%s', (what, x) => {
  let i = 0;
  for (const temperature of TEMPS)
    for (const topK of KS)
      for (const topP of [...PS, 0.25, 0.5, 0.75])
        for (const logprobs of LOGPROBS) {
          i++;
          for (let j = 0; j < 3; j++) compare({ temperature, topK, topP, logprobs }, x, 1000, 7 * i + j, what, EXACT.has(what));
        }
  if (!EXACT.has(what)) expect(inBand).toEqual([]); // the exact rows were compared strictly in band too
  expect(inBandDiffer).toEqual([]);
});

test('u at the exact boundaries of the draw (equal weights 1: the walk returns the first id whose mass exceeds u * Z)', () => {
  const n = 64;
  const x = new Float32Array(n).fill(-Infinity);
  for (const i of [3, 30, 31, 40]) x[i] = 0;
  const spy = jest.spyOn(Rng.prototype, 'next');
  try {
    for (const u of [0, 0.25, 0.5, 0.75, 0.9999999999999999, 0.25 - 2 ** -54])
      for (const topP of [1, 0.5, 0.75])
        for (const topK of [0, 2, 3]) {
          spy.mockReturnValue(u);
          // exact arithmetic on both sides (weights 1, u * Z exact): compared even at gap 0
          const got = compare({ temperature: 1, topK, topP, logprobs: 4 }, x, n, 1, `u=${u}`, true);
          const kept = topP < 1 ? Math.max(1, Math.ceil(topP * 4)) : 4; // top-k keeps all four (tied with the k-th)
          expect(got.id).toBe([3, 30, 31, 40][Math.floor(u * kept)]);
          expect(got.logprob).toBeCloseTo(-Math.log(kept), 12);
          expect(got.z).toBe(kept * 2 ** 43);
        }
  } finally {
    spy.mockRestore();
  }
});

/** Rows built to take a given route (sample_fx.h), each checked against the sampler like the rest. */
test.each([
  // nothing listed: head-first id-order walk
  ['all: top_k 0, top_p 1', 0, () => modelRow(7, 12, 2), { temperature: 1, topK: 0, topP: 1, logprobs: 5 }],
  // top-k list, with and without a top-p cut inside it
  ['top-k list', 1, () => modelRow(7, 12, 2), { temperature: 1, topK: 5, topP: 1, logprobs: 5 }],
  ['top-k list, top-p cut', 1, () => modelRow(7, 12, 2), { temperature: 1, topK: 50, topP: 0.5, logprobs: 5 }],
  // a few peaks far above the body: the probe settles the cut
  ['probe', 2, () => modelRow(7, 12, 2), { temperature: 0.7, topK: 0, topP: 0.8, logprobs: 5 }],
  // head weights 1, 0.5 and a tail of mass 0.111 (900 ids of e^-9 < 1/4096), top_p * total = 1.0005: the probe's
  // bounds on the total straddle the cut after the first id, so it cannot settle; the weighed head holds top_p
  ['sorted head', 3, () => {
    const x = new Float32Array(1003).fill(-Infinity);
    x[5] = 0;
    x[9] = Math.log(0.5);
    for (let i = 100; i < 1000; i++) x[i] = -9;
    return x;
  }, { temperature: 1, topK: 0, topP: 0.621, logprobs: 5 }],
  // flat: the head cannot hold top_p of the mass
  ['histogram', 4, () => randArray(V, 77, 0.5), { temperature: 1, topK: 0, topP: 0.8, logprobs: 5 }],
] as Array<[string, number, () => Float32Array, Cfg]>)('route: %s', (what, route, mk, c) => {
  const x = mk();
  const lim = x.length === V ? LIMIT : 1000;
  for (let s = 0; s < 8; s++) expect(compare(c, x, lim, 4242 + s, what).route).toBe(route);
  expect(inBand).toEqual([]);
});

test('bad requests are refused: a penalty, no doSample', () => {
  const x = new Float32Array(10);
  const ok: NativePickRequest = { repetitionPenalty: 1, presencePenalty: 0, frequencyPenalty: 0, ids: new Int32Array(0), counts: new Int32Array(0), vocabLimit: 10, doSample: true, temperature: 1, topK: 0, topP: 1, u: 0.5 };
  expect(a.sampleFx(x, ok).id).toBe(5);
  const ids = Int32Array.from([3]), counts = Int32Array.from([1]);
  expect(() => a.sampleFx(x, { ...ok, repetitionPenalty: 1.1, ids, counts })).toThrow(/penalt/);
  expect(() => a.sampleFx(x, { ...ok, presencePenalty: 0.5, ids, counts })).toThrow(/penalt/);
  expect(() => a.sampleFx(x, { ...ok, frequencyPenalty: 0.5, ids, counts })).toThrow(/penalt/);
  expect(() => a.sampleFx(x, { ...ok, doSample: false })).toThrow(/doSample/);
  const { doSample: _, ...greedy } = ok;
  expect(() => a.sampleFx(x, greedy)).toThrow(/doSample/);
});

test('deterministic, and the logits are left alone', () => {
  for (const [x, lim] of [[modelRow(9, 12, 2), LIMIT], [randArray(V, 10, 0.5), LIMIT], [gridRow(1003, 11, 2, 2), 1000]] as const) {
    const before = Float32Array.from(x);
    for (const c of [{ temperature: 1, topK: 0, topP: 0.8, logprobs: 20 }, { temperature: 0.7, topK: 50, topP: 0.95, logprobs: 5 }, { temperature: 1.5, topK: 0, topP: 1 }]) {
      const req = createSampler(sampledConfig(c, lim, 5)).pickRequest()!;
      const r1 = a.sampleFx(x, req);
      const r2 = a.sampleFx(x, req);
      expect(r2).toEqual(r1);
      expect(Buffer.from(x.buffer).equals(Buffer.from(before.buffer))).toBe(true);
    }
  }
});

test('every route (0 all, 1 top-k, 2 probe, 3 sorted head, 4 histogram) was taken over the file', () => {
  if (process.env.SAMPLE_FX_STATS) console.log(`routes: ${JSON.stringify([...routes].sort((p, q) => p[0] - q[0]))}`);
  expect([...routes.keys()].sort()).toEqual([0, 1, 2, 3, 4]);
});

/**
 * On a GPU: the device draw (QWEN_SAMPLE_FX=1, cuda/sample_fx.cu) equals this host reference BIT FOR BIT — same id,
 * same logprobs (both are log w - log z of the same FxOut), same top list — over the rows above (integer sums make
 * the order of the device's reductions irrelevant). Penalized rows are covered by op_check's test_sample_fx.
 */
const cudaDescribe = a.cudaInfo().available ? describe : describe.skip;
cudaDescribe('cuda device draw (QWEN_SAMPLE_FX=1) == sampleFx', () => {
  let ops: ReturnType<typeof mkOps>;
  // A switch of this backend only (jest's process.env is a copy that never reaches the addon's getenv).
  function mkOps() {
    return new a.NativeOps({ device: 'cuda', dtype: 'fp32', switches: { QWEN_SAMPLE_FX: '1' } });
  }
  beforeAll(() => {
    ops = mkOps();
  });

  test('real-shaped and adversarial rows, configs over every route', () => {
    const rows: Array<[Float32Array, number]> = [
      [modelRow(1000, 12, 2), LIMIT], [modelRow(1007, 3, 3), LIMIT], [randArray(V, 1011, 0.5), LIMIT],
      [gridRow(V, 1013, 4, 2), LIMIT],
    ];
    const seen = new Set<number>();
    let i = 0;
    for (const temperature of [0.7, 1, 1.5])
      for (const topK of KS)
        for (const topP of PS) {
          const logprobs = LOGPROBS[i++ % LOGPROBS.length];
          const reqs = rows.map(([, lim], j) => createSampler(sampledConfig({ temperature, topK, topP, logprobs }, lim, 17 * i + j)).pickRequest()!);
          const all = new Float32Array(rows.length * V);
          rows.forEach(([x], j) => all.set(x, j * V));
          const got = ops.pickLogits(all, rows.length, V, reqs);
          rows.forEach(([x], j) => {
            const { route, z: _z, total: _t, gap: _g, band: _b, ...want } = a.sampleFx(x, reqs[j]);
            seen.add(route);
            expect([j, temperature, topK, topP, got[j]]).toEqual([j, temperature, topK, topP, want]);
          });
        }
    expect([...seen].sort()).toEqual([0, 1, 2, 3, 4]);
  });

  test.each(adversarial())('adversarial: %s', (_what, x) => {
    let i = 0;
    for (const topK of KS)
      for (const topP of [...PS, 0.5])
        for (const logprobs of LOGPROBS) {
          const req = createSampler(sampledConfig({ temperature: 1, topK, topP, logprobs }, 1000, 5 * i++)).pickRequest()!;
          const got = ops.pickLogits(x, 1, x.length, [req])[0];
          const { route: _r, z: _z, total: _t, gap: _g, band: _b, ...want } = a.sampleFx(x, req);
          expect(got).toEqual(want);
        }
  });
});
