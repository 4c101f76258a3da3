import { Candidates } from '../lib/sampling/candidates';
import { RepetitionPenalty } from '../lib/sampling/repetitionPenalty';
import { applyTopP, scanBounds } from '../lib/sampling/topP';
import { PROCESSOR_CHAIN, Rng, type SamplerConfig, createSampler } from '../lib/sampling';

const BASE: SamplerConfig = {
  doSample: true,
  temperature: 1,
  topK: 0,
  topP: 1,
  repetitionPenalty: 1,
  seed: 1234,
  tokenizerVocabSize: 151851,
};

/** Deterministic pseudo-random logits for fixtures (not the sampler's RNG under test). */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296;
  };
}

/** The exact target distribution, computed naively: rp -> /T -> full sort -> top-k (ties kept) -> softmax -> top-p. */
function reference(logits: ArrayLike<number>, cfg: SamplerConfig, history: number[] = []): number[] {
  const n = Math.min(logits.length, cfg.tokenizerVocabSize);
  const l = Array.from({ length: n }, (_, i) => (Number.isNaN(logits[i]) ? -Infinity : logits[i])); // NaN: never drawn
  for (const id of new Set(history))
    if (id < n) l[id] = l[id] < 0 ? l[id] * cfg.repetitionPenalty : l[id] / cfg.repetitionPenalty;
  const s = l.map((x) => x / cfg.temperature);
  const order = [...s.keys()].sort((a, b) => s[b] - s[a] || a - b);
  let kept = order;
  if (cfg.topK > 0 && cfg.topK < n) kept = order.filter((i) => s[i] >= s[order[cfg.topK - 1]]);
  const m = s[kept[0]];
  let z = 0;
  for (const i of kept) z += Math.exp(s[i] - m);
  if (cfg.topP < 1) {
    let before = 0;
    const nucleus: number[] = [];
    for (const i of kept) {
      if (before >= cfg.topP) break;
      nucleus.push(i);
      before += Math.exp(s[i] - m) / z;
    }
    kept = nucleus;
    z = 0;
    for (const i of kept) z += Math.exp(s[i] - m);
  }
  const p = new Array<number>(n).fill(0);
  for (const i of kept) p[i] = Math.exp(s[i] - m) / z;
  return p;
}

// --- chi-square critical value, computed here: regularized lower incomplete gamma + bisection ---
function logGamma(x: number): number {
  const c = [
    76.18009172947146, -86.50532032941677, 24.01409824083091, -1.231739572450155, 0.1208650973866179e-2,
    -0.5395239384953e-5,
  ];
  let y = x;
  const t = x + 5.5 - (x + 0.5) * Math.log(x + 5.5);
  let ser = 1.000000000190015;
  for (const ci of c) ser += ci / ++y;
  return -t + Math.log((2.5066282746310005 * ser) / x);
}
function gammaP(a: number, x: number): number {
  if (x <= 0) return 0;
  if (x < a + 1) {
    let sum = 1 / a;
    let del = sum;
    for (let ap = a; Math.abs(del) > Math.abs(sum) * 1e-15;) sum += del *= x / ++ap;
    return sum * Math.exp(-x + a * Math.log(x) - logGamma(a));
  }
  let b = x + 1 - a;
  let c = 1e300;
  let d = 1 / b;
  let h = d;
  for (let i = 1; i < 1000; i++) {
    const an = -i * (i - a);
    b += 2;
    d = an * d + b;
    c = b + an / c;
    d = 1 / d;
    const del = d * c;
    h *= del;
    if (Math.abs(del - 1) < 1e-15) break;
  }
  return 1 - Math.exp(-x + a * Math.log(x) - logGamma(a)) * h;
}
function chi2Critical(df: number, alpha: number): number {
  let lo = 0;
  let hi = df + 50 * Math.sqrt(df) + 50;
  for (let i = 0; i < 200; i++) {
    const mid = (lo + hi) / 2;
    if (1 - gammaP(df / 2, mid / 2) > alpha) lo = mid;
    else hi = mid;
  }
  return (lo + hi) / 2;
}

function drawCounts(logits: Float32Array, cfg: SamplerConfig, draws: number, history: number[] = []): number[] {
  const counts = new Array<number>(logits.length).fill(0);
  const work = new Float32Array(logits.length);
  if (cfg.repetitionPenalty !== 1) {
    // Each pick joins the penalized history, so fresh samplers (one seed each) keep the target fixed.
    for (let d = 0; d < draws; d++) {
      work.set(logits);
      counts[createSampler({ ...cfg, seed: (cfg.seed ?? 0) + d }, history).sample(work).id]++;
    }
    return counts;
  }
  const sampler = createSampler(cfg, history);
  for (let d = 0; d < draws; d++) {
    work.set(logits);
    counts[sampler.sample(work).id]++;
  }
  return counts;
}

function expectChiSquareFit(counts: number[], p: number[], draws: number): { df: number; stat: number; crit: number } {
  let stat = 0;
  let df = -1;
  for (let i = 0; i < p.length; i++) {
    if (p[i] === 0) {
      expect({ id: i, count: counts[i] }).toEqual({ id: i, count: 0 }); // truncated ids are never drawn
      continue;
    }
    const e = p[i] * draws;
    expect(e).toBeGreaterThanOrEqual(5); // the chi-square approximation needs it
    stat += (counts[i] - e) ** 2 / e;
    df++;
  }
  const crit = chi2Critical(df, 0.001);
  expect(stat).toBeLessThan(crit);
  return { df, stat, crit };
}

describe('chi-square helper', () => {
  test('critical values match the tables', () => {
    expect(chi2Critical(1, 0.001)).toBeCloseTo(10.828, 2);
    expect(chi2Critical(10, 0.001)).toBeCloseTo(29.588, 2);
    expect(chi2Critical(39, 0.001)).toBeCloseTo(72.055, 1);
  });
});

describe('sampler statistics (20k seeded draws vs the exact truncated softmax)', () => {
  const DRAWS = 20000;

  test('top-p 0.8 over a 4096-token vocabulary (head path)', () => {
    const rnd = lcg(7);
    const logits = new Float32Array(4096);
    for (let i = 0; i < logits.length; i++) logits[i] = -6 + 5 * rnd(); // background far below
    for (let j = 0; j < 24; j++) logits[(j * 163) % 4096] = 4 + 2.5 * rnd(); // a nucleus spread over many bins
    logits[900] = logits[1800] = logits[2700] = 5.1; // exact ties
    const cfg = { ...BASE, topP: 0.8, tokenizerVocabSize: 4096 };
    const p = reference(logits, cfg);
    expect(p.filter((x) => x > 0).length).toBeGreaterThan(8);
    const r = expectChiSquareFit(drawCounts(logits, cfg, DRAWS), p, DRAWS);
    console.log(`top-p 0.8: df ${r.df}, chi2 ${r.stat.toFixed(1)} < ${r.crit.toFixed(1)}`);
  });

  test('top-p 0.9 crossing inside a flat tail of tied tokens (histogram path, id-ordered cut)', () => {
    // 10 plausible tokens and 5990 tail tokens just below the head threshold (weight e^-8.5 or e^-9 < 1/4096): the
    // head holds ~80% of the mass, so the nucleus ends part-way through the tail, at the lowest ids first.
    const logits = new Float32Array(6000);
    for (let i = 0; i < 6000; i++) logits[i] = i % 2 ? -8.5 : -9;
    for (let j = 0; j < 10; j++) logits[j * 599] = -0.2 * j;
    const cfg = { ...BASE, topP: 0.9, tokenizerVocabSize: 6000 };
    const p = reference(logits, cfg);
    const kept = p.filter((x) => x > 0).length;
    expect(kept).toBeGreaterThan(1000);
    expect(kept).toBeLessThan(5000);
    // Pool the tail into cells of equal probability (each id alone would expect < 5 draws).
    const counts = drawCounts(logits, cfg, DRAWS);
    const cells = new Map<string, { p: number; count: number }>();
    for (let i = 0; i < p.length; i++) {
      if (p[i] === 0) {
        expect({ id: i, count: counts[i] }).toEqual({ id: i, count: 0 });
        continue;
      }
      const key = p[i] > 1e-3 ? `id ${i}` : `level ${logits[i]}`;
      const cell = cells.get(key) ?? { p: 0, count: 0 };
      cell.p += p[i];
      cell.count += counts[i];
      cells.set(key, cell);
    }
    const keys = [...cells.keys()];
    expectChiSquareFit(
      keys.map((k) => cells.get(k)!.count),
      keys.map((k) => cells.get(k)!.p),
      DRAWS,
    );
  });

  test('temperature 0.7 and top-k 5', () => {
    const rnd = lcg(11);
    const logits = Float32Array.from({ length: 64 }, () => 3 * rnd());
    const cfg = { ...BASE, temperature: 0.7, topK: 5, tokenizerVocabSize: 64 };
    const p = reference(logits, cfg);
    expect(p.filter((x) => x > 0).length).toBe(5);
    expectChiSquareFit(drawCounts(logits, cfg, DRAWS), p, DRAWS);
  });

  test('plain softmax (top-k 0, top-p 1): every token reachable', () => {
    const rnd = lcg(3);
    const logits = Float32Array.from({ length: 40 }, () => -2 + 4 * rnd());
    const cfg = { ...BASE, tokenizerVocabSize: 40 };
    const p = reference(logits, cfg);
    expectChiSquareFit(drawCounts(logits, cfg, DRAWS), p, DRAWS);
  });

  test('whole chain: repetition penalty 1.3 with history, T 1.4, top-k 12, top-p 0.9', () => {
    const rnd = lcg(5);
    const logits = Float32Array.from({ length: 200 }, () => -3 + 6 * rnd());
    const history = [3, 3, 17, 40, 41, 199, 5000];
    const cfg = { ...BASE, temperature: 1.4, topK: 12, topP: 0.9, repetitionPenalty: 1.3, tokenizerVocabSize: 200 };
    const p = reference(logits, cfg, history);
    expectChiSquareFit(drawCounts(logits, cfg, DRAWS, history), p, DRAWS);
  });
});

describe('seeding', () => {
  const logits = Float32Array.from({ length: 50 }, (_, i) => Math.sin(i));
  const run = (seed: number) => {
    const s = createSampler({ ...BASE, seed, tokenizerVocabSize: 50 });
    return Array.from({ length: 200 }, () => s.sample(logits.slice()).id);
  };
  test('same seed, same ids; another seed, other ids', () => {
    expect(run(42)).toEqual(run(42));
    expect(run(43)).not.toEqual(run(42));
    expect(run(-42)).not.toEqual(run(42));
    expect(run(2 ** 40)).not.toEqual(run(0)); // the high bits of the seed count too
  });
  test('Rng is uniform in [0, 1) and fixed for a seed', () => {
    const r = new Rng(1);
    const xs = Array.from({ length: 10000 }, () => r.next());
    expect(Math.min(...xs)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...xs)).toBeLessThan(1);
    expect(Math.abs(xs.reduce((a, b) => a + b) / xs.length - 0.5)).toBeLessThan(0.01);
    expect(new Rng(1).nextU32()).toBe(new Rng(1).nextU32());
  });
  test('no seed: a random one, reported', () => {
    const a = createSampler({ ...BASE, seed: undefined });
    const b = createSampler({ ...BASE, seed: undefined });
    expect(Number.isSafeInteger(a.seed)).toBe(true);
    expect(a.seed).not.toBe(b.seed);
  });
});

describe('repetition penalty', () => {
  test('hand-computed: positive / rp, negative * rp, each distinct id once, prompt ids included', () => {
    const c = new Candidates();
    const logits = Float32Array.from([2, -2, 1, 0.5, -1, 3, 0]);
    c.load(logits, 7);
    const rp = new RepetitionPenalty(2, [0, 1, 1, 0, 6]); // prompt: 0 and 1 twice each
    rp.add([4, 4]);
    rp.apply(c);
    expect(Array.from(logits)).toEqual([1, -4, 1, 0.5, -2, 3, 0]);
    expect(rp.distinctIds).toEqual([0, 1, 6, 4]);
  });
  test('flips a greedy choice, for positive and for negative logits', () => {
    const greedy = { ...BASE, doSample: false, repetitionPenalty: 1.1, tokenizerVocabSize: 2 };
    expect(createSampler(greedy, [0]).sample(Float32Array.from([3, 2.9])).id).toBe(1); // 3/1.1 = 2.73
    expect(createSampler(greedy, [0]).sample(Float32Array.from([-1, -1.05])).id).toBe(1); // -1*1.1 = -1.1
    expect(createSampler(greedy, [1]).sample(Float32Array.from([3, 2.9])).id).toBe(0);
  });
  test("the sampler's own picks join the penalized history", () => {
    const s = createSampler({ ...BASE, doSample: false, repetitionPenalty: 10, tokenizerVocabSize: 3 });
    const ids = [0, 1, 2].map(() => s.sample(Float32Array.from([3, 2, 1])).id);
    expect(ids).toEqual([0, 1, 2]);
  });
});

describe('kept sets (seen through logprobs: 20)', () => {
  const kept = (logits: number[], cfg: Partial<SamplerConfig>) => {
    const r = createSampler({ ...BASE, logprobs: 20, tokenizerVocabSize: logits.length, ...cfg }).sample(
      Float32Array.from(logits),
    );
    return r.topLogprobs!.map((t) => t.id);
  };
  test('top-p: mass exactly at the threshold keeps exactly that set (ties lowest id first)', () => {
    expect(kept([0, 0, 0, 0], { topP: 0.5 })).toEqual([0, 1]);
    expect(kept([0, 0, 0, 0], { topP: 0.25 })).toEqual([0]);
    expect(kept([0, 0, 0, 0], { topP: 0.5000001 })).toEqual([0, 1, 2]);
    expect(kept([0, 0, -Infinity, 0], { topP: 0.75 })).toEqual([0, 1, 3]);
  });
  test('top-p: a single dominant token is all that is kept; top-p 1 keeps everything', () => {
    expect(kept([0, 10, 0, 0, 0], { topP: 0.8 })).toEqual([1]);
    expect(kept([0, 10, 0, 0, 0], { topP: 0.99999 })).toEqual([1, 0, 2, 3, 4]);
    expect(kept([0, 10, 0, 0, 0], { topP: 1 })).toEqual([1, 0, 2, 3, 4]);
  });
  test('top-k keeps every id tied with the k-th', () => {
    expect(kept([1, 5, 3, 3, 3, 0], { topK: 2 })).toEqual([1, 2, 3, 4]);
    expect(kept([1, 5, 3, 3, 3, 0], { topK: 1 })).toEqual([1]);
    expect(kept([1, 5, 3, 3, 3, 0], { topK: 6 })).toEqual([1, 2, 3, 4, 0, 5]);
  });
  test('logprobs are those of the renormalized kept distribution', () => {
    const r = createSampler({ ...BASE, logprobs: 2, topP: 0.5, tokenizerVocabSize: 4 }).sample(
      Float32Array.from([0, 0, 0, 0]),
    );
    expect(r.logprob).toBeCloseTo(Math.log(0.5), 6);
    expect(r.topLogprobs!.map((t) => t.logprob)).toEqual([
      expect.closeTo(Math.log(0.5), 6),
      expect.closeTo(Math.log(0.5), 6),
    ]);
    const g = createSampler({ ...BASE, doSample: false, logprobs: 0, tokenizerVocabSize: 3 }).sample(
      Float32Array.from([0, Math.log(3), 0]),
    );
    expect(g).toEqual({ id: 1, logprob: expect.closeTo(Math.log(0.6), 6) });
  });
});

describe('top-p processor on its own', () => {
  test('more than HEAD_CAP plausible ids: the histogram path keeps exactly the lowest-id half of a flat row', () => {
    const c = new Candidates();
    c.load(new Float32Array(3000), 3000); // all logits 0
    applyTopP(c, 0.5);
    expect(c.listed).toBe(true);
    expect(c.len).toBe(1500);
    expect(Array.from(c.list.subarray(0, c.len)).sort((a, b) => a - b)).toEqual(
      Array.from({ length: 1500 }, (_, i) => i),
    );
  });
  const keptBy = (logits: Float32Array, p: number, T = 1) => {
    const c = new Candidates();
    c.load(logits.slice(), logits.length);
    c.invT = 1 / T;
    applyTopP(c, p);
    if (!c.listed || c.len === logits.length) return null; // everything kept
    return Array.from(c.list.subarray(0, c.len)).sort((a, b) => a - b);
  };
  const expected = (logits: Float32Array, p: number, T = 1) => {
    const probs = reference(logits, { ...BASE, topP: p, temperature: T, tokenizerVocabSize: logits.length });
    const ids = probs.flatMap((x, i) => (x > 0 ? [i] : []));
    return ids.length === logits.length ? null : ids;
  };
  test('the probe, its fallbacks and the exact paths all give the reference set on varied rows', () => {
    const rnd = lcg(77);
    const normal = () => Math.sqrt(-2 * Math.log(Math.max(rnd(), 1e-12))) * Math.cos(2 * Math.PI * rnd());
    for (let trial = 0; trial < 60; trial++) {
      const n = [50, 3000, 20000][trial % 3];
      const sd = [0.3, 1, 2.5, 6][trial % 4];
      const logits = Float32Array.from({ length: n }, () => sd * normal());
      const peaks = trial % 5;
      for (let j = 0; j < peaks; j++) logits[Math.floor(rnd() * n)] = sd * 4 + j;
      if (trial % 7 === 0) logits[3] = -Infinity;
      if (trial % 11 === 0) logits[5] = NaN;
      if (trial % 13 === 0) logits.fill(logits[0], 10, 40); // ties
      const p = [0.1, 0.5, 0.8, 0.95, 0.999][trial % 5];
      const T = [1, 0.7, 1.5][trial % 3];
      expect({ trial, kept: keptBy(logits, p, T) }).toEqual({ trial, kept: expected(logits, p, T) });
    }
  });
  test('a cut that depends on the exact tail mass falls back to the exact total', () => {
    // Two head ids of weight 1 and 1000 tail ids of weight e^-9: the table bounds on the tail cannot tell whether
    // the target is just above or below 1, the exact total can.
    const logits = new Float32Array(1002).fill(-9);
    logits[0] = logits[1] = 0;
    let z = 2;
    for (let i = 2; i < 1002; i++) z += Math.fround(Math.exp(-9));
    expect(keptBy(logits, 1.0001 / z)).toEqual([0, 1]);
    expect(keptBy(logits, 0.9999 / z)).toEqual([0]);
  });
  // The whole-row sums (the weights' total, the probe's tail bound) are in SUM_LANES order: id i into partial i % 4,
  // merged (a0 + a2) + (a1 + a3). cpp/cpu/sample_lanes.h must use the same order to draw the same ids; its check
  // (cpp/cpu/test/sample_lanes_check.cc) spells the order out once more, test/sample.test.ts checks a draw that
  // depends on it. Here: wide rows of every length mod 4, values spanning enough octaves that orders differ.
  const laneOrder = (vals: number[], rest0 = false) => {
    const a = [0, 0, 0, 0];
    const whole = vals.length - (vals.length % 4);
    vals.forEach((v, i) => (a[rest0 && i >= whole ? 0 : i % 4] += v)); // rest0: a wrong order, the test's own check
    return a[0] + a[2] + (a[1] + a[3]);
  };
  test('weighAll: the total of the weights is summed in SUM_LANES order; the head mass in id order', () => {
    const rnd = lcg(5);
    let differs = 0;
    for (const n of [1, 2, 3, 4, 5, 1001, 1002, 1003, 1004]) {
      const logits = Float32Array.from({ length: n }, (_, i) => (i === 0 ? 0 : -Math.floor(rnd() * 64 * 60) / 64));
      const w = Array.from(logits, (x) => Math.fround(Math.exp(x))); // -k/64: the table entry exactly
      const c = new Candidates();
      c.load(logits, n);
      c.weighAll();
      expect(Array.from(c.logits)).toEqual(w);
      expect(c.total).toBe(laneOrder(w));
      const head = w.flatMap((x, i) => (x >= 1 / 4096 ? [i] : []));
      expect(c.headLen).toBe(head.length);
      expect(Array.from(c.list.subarray(0, head.length))).toEqual(head);
      expect(c.headMass).toBe(head.reduce((z, i) => z + w[i], 0));
      if (c.total !== w.reduce((z, x) => z + x, 0)) differs++;
    }
    expect(differs).toBeGreaterThan(0); // an id-order total would have failed
    // a head of more than HEAD_CAP ids is never used: its count stops at HEAD_CAP + 1, the first HEAD_CAP listed
    const c = new Candidates();
    const big = Float32Array.from({ length: 4000 }, (_, i) => (i % 3 === 1 ? -20 : 0)); // 2,667 ids of weight 1
    c.load(big.slice(), 4000); // (the sampler rewrites its array)
    c.weighAll();
    expect(c.headLen).toBe(2049);
    expect(Array.from(c.list.subarray(0, 2048))).toEqual([...big.keys()].filter((i) => i % 3 !== 1).slice(0, 2048));
    expect(c.total).toBe(laneOrder(Array.from(big, (x) => Math.fround(Math.exp(x))))); // all 4000 weighed all the same
  });
  test('scanBounds (the probe): head ids, the tail bound in SUM_LANES order, the far count', () => {
    const rnd = lcg(6);
    let differs = 0, restDiffers = 0;
    for (const n of [0, 1, 2, 3, 5, 2001, 2002, 2003, 2004, 4001, 4002, 4003, 6001, 6002, 6003]) {
      for (const T of [1, 0.7]) {
        const logits = Float32Array.from({ length: n }, () => -rnd() * 50);
        if (n > 4) logits[1] = -Infinity;
        for (let i = n - (n % 4); i < n; i++) logits[i] = -8.5 - rnd(); // past the last block of 4: large tail bounds
        if (n > 4) logits[n - 5] = NaN;
        const m = Math.max(...Array.from(logits).filter((x) => !Number.isNaN(x)), -1e9);
        const ids = new Int32Array(n);
        const out = new Float64Array(2);
        const len = scanBounds(logits, n, m, 1 / T, ids, out);
        const s = Array.from(logits, (x) => (m - x) * (1 / T));
        const head = s.flatMap((v, i) => (v < Math.log(4096) ? [i] : []));
        const bounds = s.map((v) => (v >= Math.log(4096) && v < 40 ? Math.exp(-Math.floor(v * 64) / 64) : 0));
        const tail = laneOrder(bounds);
        expect(len).toBe(head.length);
        expect(Array.from(ids.subarray(0, len))).toEqual(head);
        expect(out[0]).toBe(tail);
        expect(out[1]).toBe(s.filter((v) => !(v < 40)).length);
        const idOrder = s.reduce((z, v) => (v >= Math.log(4096) && v < 40 ? z + Math.exp(-Math.floor(v * 64) / 64) : z), 0);
        if (out[0] !== idOrder) differs++;
        if (out[0] !== laneOrder(bounds, true)) restDiffers++;
      }
    }
    expect(differs).toBeGreaterThan(0); // an id-order sum would have failed
    expect(restDiffers).toBeGreaterThan(0); // so would the last ids all into lane 0
    // more than HEAD_CAP head ids: the probe fails whatever the bounds, so the pass stops at the (HEAD_CAP + 1)-th
    for (const n of [2049, 2050, 2051, 2052, 5000]) {
      const ids = new Int32Array(n);
      expect(scanBounds(new Float32Array(n), n, 0, 1, ids, new Float64Array(2))).toBe(2049);
      expect(Array.from(ids.subarray(0, 2048))).toEqual(Array.from({ length: 2048 }, (_, i) => i));
    }
  });
  test('head path: the nucleus of a peaked row is sorted, best first', () => {
    const c = new Candidates();
    c.load(Float32Array.from([1, 3, 2, -20, 3]), 5);
    applyTopP(c, 0.9);
    expect(Array.from(c.list.subarray(0, c.len))).toEqual([1, 4, 2]);
  });
});

describe('greedy and masking', () => {
  test('argmax ties go to the lowest id (doSample false, or temperature 0)', () => {
    expect(createSampler({ ...BASE, doSample: false }).sample(Float32Array.from([1, 3, 3, 2])).id).toBe(1);
    expect(createSampler({ ...BASE, temperature: 0 }).sample(Float32Array.from([1, 3, 3, 2])).id).toBe(1);
  });
  test('padding ids >= tokenizerVocabSize are never produced, even with the highest logits', () => {
    const rnd = lcg(9);
    const logits = Float32Array.from({ length: 151936 }, (_, i) => (i >= 151851 ? 100 : rnd()));
    expect(createSampler({ ...BASE, doSample: false }).sample(logits.slice()).id).toBeLessThan(151851);
    for (const cfg of [{}, { topP: 0.8 }, { topK: 3 }, { logprobs: 20 }]) {
      const s = createSampler({ ...BASE, ...cfg });
      for (let d = 0; d < 50; d++) {
        const r = s.sample(logits.slice());
        expect(r.id).toBeLessThan(151851);
        for (const t of r.topLogprobs ?? []) expect(t.id).toBeLessThan(151851);
      }
    }
    const small = createSampler({ ...BASE, tokenizerVocabSize: 3 });
    for (let d = 0; d < 200; d++) expect(small.sample(Float32Array.from([0, 0, 0, 50, 50])).id).toBeLessThan(3);
  });
  test('NaN logits are never chosen; no usable logit is E_BACKEND', () => {
    const s = createSampler({ ...BASE, tokenizerVocabSize: 3 });
    for (let d = 0; d < 100; d++) expect(s.sample(Float32Array.from([NaN, 0, NaN])).id).toBe(1);
    expect(() => s.sample(Float32Array.from([NaN, -Infinity, NaN]))).toThrow(
      expect.objectContaining({ code: 'E_BACKEND' }),
    );
  });
  test('the chain is the HF order', () => {
    expect(PROCESSOR_CHAIN.map((p) => p.name)).toEqual([
      'repetitionPenalty',
      'presenceFrequencyPenalty',
      'temperature',
      'topK',
      'topP',
    ]);
  });
});

describe('micro-benchmark (prints, asserts nothing about time)', () => {
  test('µs per sampling step over 151,936 logits', () => {
    const rnd = lcg(2024);
    const src = new Float32Array(151936);
    for (let i = 0; i < src.length; i++) {
      // an LLM-like row: a normal bulk around 0 (sd 2.5) and a few tokens 10-20 nats above it
      const u = Math.max(rnd(), 1e-12);
      src[i] = 2.5 * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rnd());
    }
    for (let j = 0; j < 20; j++) src[(j * 7919) % 151851] = 10 + j / 2;
    const history = Array.from({ length: 500 }, (_, i) => (i * 104729) % 151851);
    const work = new Float32Array(src.length);
    const time = (steps: number, fn: () => void) => {
      for (let i = 0; i < 20; i++) fn();
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < steps; i++) fn();
      return Number(process.hrtime.bigint() - t0) / 1e3 / steps;
    };
    const copy = time(300, () => work.set(src));
    const lines = [`copying the logits: ${copy.toFixed(1)} µs (included below)`];
    const cases: [string, Partial<SamplerConfig>][] = [
      ['greedy', { doSample: false }],
      ['Qwen default: T 1, top-p 0.8', { topP: 0.8 }],
      ['Qwen-Chat: + rp 1.1 (500 ids)', { topP: 0.8, repetitionPenalty: 1.1 }],
      ['T 0.7, top-k 50, top-p 0.8', { temperature: 0.7, topK: 50, topP: 0.8 }],
      ['full softmax (top-p 1)', {}],
      ['top-p 0.8 + logprobs 5', { topP: 0.8, logprobs: 5 }],
    ];
    for (const [name, cfg] of cases) {
      const s = createSampler({ ...BASE, ...cfg }, history);
      const us = time(300, () => {
        work.set(src);
        s.sample(work);
      });
      lines.push(`${name}: ${us.toFixed(1)} µs/step`);
    }
    console.log('sampler micro-benchmark, 151,936 logits\n' + lines.join('\n'));
  });
});
