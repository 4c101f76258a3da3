/**
 * Every backend op — the CPU at each ISA level this machine has, and CUDA in bf16/fp16/fp32 where a GPU is usable —
 * against float64 loops (test/helpers/refops.ts) at odd shapes. Tolerances are derived, not guessed: a K-term fp32
 * dot product in any order is within gamma_K * sum|terms| of the exact value (Higham, Accuracy and Stability §3.1);
 * a backend storing activations in a 16-bit type is compared on the inputs as it stores them (rounded), plus one
 * rounding of its outputs and intermediates (unit roundoff ua, 0 for fp32).
 */
import { addon } from '../lib/native/binding';
import type { NativeBackendOptions, NativeOps } from '../lib/native/types';
import { attentionRef, finalLogitsRef, linearRef, ropeRef, rmsnormRef } from './helpers/refops';
import { U, gamma, randArray, roundTo, storeWeight, unitRoundoff, WDtype } from './helpers/weights';

type Act = 'fp32' | 'bf16' | 'fp16';
const a = addon();
const cpuIsa = a.cpuInfo().isa;
const BACKENDS: Array<[string, NativeBackendOptions, Act]> = [
  ['cpu scalar', { device: 'cpu', dtype: 'auto', threads: 2, cpuIsa: 'scalar' }, 'fp32'],
];
if (cpuIsa !== 'scalar') BACKENDS.push(['cpu avx2', { device: 'cpu', dtype: 'auto', threads: 2, cpuIsa: 'avx2' }, 'fp32']);
if (cpuIsa === 'avx512') BACKENDS.push(['cpu avx512', { device: 'cpu', dtype: 'auto', threads: 2, cpuIsa: 'avx512' }, 'fp32']);
// dtype 'bf16' on the CPU: fp32 activations, matmul inputs rounded to bf16 (AVX512-BF16 prefill kernel where present).
BACKENDS.push(['cpu bf16-matmul', { device: 'cpu', dtype: 'bf16', threads: 2 }, 'fp32']);
if (a.cudaInfo().available) {
  for (const act of ['bf16', 'fp16', 'fp32'] as const) BACKENDS.push([`cuda ${act}`, { device: 'cuda', dtype: act }, act]);
}
const dtypes: WDtype[] = ['F32', 'F16', 'BF16'];

function expectWithin(got: Float32Array, want: Float64Array, bound: (i: number) => number, what: string) {
  expect(got.length).toBe(want.length);
  for (let i = 0; i < want.length; i++) {
    if (!(Math.abs(got[i] - want[i]) <= bound(i))) {
      throw new Error(`${what}: element ${i}: got ${got[i]}, want ${want[i]}, |diff| ${Math.abs(got[i] - want[i])} > bound ${bound(i)}`);
    }
  }
}

describe.each(BACKENDS)('%s ops', (_name, opts, act) => {
  const ops: NativeOps = new a.NativeOps(opts);
  const ua = unitRoundoff(act);
  // An output stored in fp16 below 2^-14 is subnormal: its rounding error is up to half the subnormal spacing 2^-24,
  // not ua relative (bf16 shares fp32's exponent range, so its subnormals sit far below these values).
  const uaAbs = act === 'fp16' ? 2 ** -25 : 1e-30;
  const seen = (v: ArrayLike<number>) => roundTo(act, v); // inputs as the backend stores them
  // Matmul inputs as the backend feeds them to the multiplier: bf16 in dtype 'bf16', else as stored.
  const mmIn = (v: ArrayLike<number>) => (opts.dtype === 'bf16' ? roundTo('bf16', v) : seen(v));
  const uaMm = opts.dtype === 'bf16' ? 2 ** -8 : ua;
  const w = (src: Float32Array, dt: WDtype) => {
    const s = storeWeight(src, dt);
    return { ...s, values: seen(s.values) }; // a 16-bit backend converts weights to its own type on upload
  };

  // T below and above the CPU's gemv/gemm switch (24; CUDA's is 8) and the 512-token chunk; K and N not multiples of
  // any vector width.
  const linearShapes: Array<[number, number, number]> = [
    [1, 1, 1], [1, 7, 5], [1, 100, 13], [2, 33, 129], [3, 257, 31], [4, 16, 64], [9, 100, 13], [13, 37, 50],
    [24, 33, 20], [25, 40, 17], [37, 64, 100], [100, 129, 27], [600, 40, 30],
    // K % 32 == 0 and N % 16 == 0: the AMX tiles in dtype 'bf16' from 4 tokens (partial 16-row / 16-token tiles
    // included); 3 tokens stay on the GEMV
    [3, 64, 32], [4, 64, 48], [9, 64, 48], [37, 96, 32], [100, 128, 16], [600, 64, 80],
    // T >= 64 with N, K >= 256: cuBLAS on CUDA (cuda/linear.cuh), also at a longer K
    [70, 320, 264], [64, 1024, 256],
  ];
  describe.each(dtypes)('linear %s', (dt) => {
    test.each(linearShapes)('T=%i K=%i N=%i (with and without bias)', (T, K, N) => {
      const x = randArray(T * K, 1 + T + K, 2);
      const W = w(randArray(N * K, 7 + N, 0.5), dt);
      const b = w(randArray(N, 3 + N, 1), dt);
      for (const withBias of [false, true]) {
        const y = ops.linear(x, T, W.bytes, W.code, N, K, withBias ? b.bytes : null, b.code);
        const r = linearRef(mmIn(x), T, K, W.values, N, withBias ? b.values : undefined);
        expectWithin(y, r.want, (i) => gamma(K + 2) * r.mag[i] + ua * Math.abs(r.want[i]) + uaAbs, `linear ${dt} T=${T} K=${K} N=${N}`);
      }
    });
  });

  test('embedding gathers exact rows (all dtypes); ids out of range are refused', () => {
    for (const dt of dtypes) {
      const V = 11, H = 19;
      const wte = w(randArray(V * H, 5, 3), dt);
      const ids = Int32Array.from([0, 10, 3, 3, 7]);
      const h = ops.embedding(wte.bytes, wte.code, V, H, ids);
      const want = new Float64Array(ids.length * H);
      ids.forEach((id, t) => { for (let i = 0; i < H; i++) want[t * H + i] = wte.values[id * H + i]; });
      expectWithin(h, want, () => 1e-300, `embedding ${dt}`);
    }
    expect(() => ops.embedding(storeWeight(randArray(4, 1), 'F32').bytes, 0, 2, 2, Int32Array.from([2]))).toThrow(/range/);
  });

  test.each([[1, 1], [3, 7], [2, 64], [5, 4097]])('rmsnorm T=%i H=%i', (T, H) => {
    const x = randArray(T * H, 11 + H, 4);
    const g = w(randArray(H, 13, 1.5), 'BF16');
    const y = ops.rmsnorm(x, T, H, g.bytes, g.code, 1e-6);
    const r = rmsnormRef(seen(x), T, H, g.values, 1e-6);
    // a double (or fp32 tree) sum of squares, rsqrt, two products: a few roundings relative to the value itself.
    expectWithin(y, r.want, (i) => (6 * U + gamma(H) + ua) * r.mag[i] + uaAbs, `rmsnorm T=${T} H=${H}`);
  });

  test.each([
    // T, pos0, heads, headDim, rotDims, lognBase
    [1, 0, 1, 2, 2, 0], [3, 5, 2, 16, 16, 0], [4, 30, 3, 16, 8, 32], [2, 32760, 2, 128, 128, 8192], [5, 9000, 1, 128, 128, 8192],
  ])('rope T=%i pos0=%i heads=%i d=%i rot=%i logn=%i', (T, pos0, nh, hd, rot, lognBase) => {
    const qkv = randArray(T * 3 * nh * hd, 17 + T, 2);
    const invFreq = new Float32Array(rot / 2);
    for (let i = 0; i < rot / 2; i++) invFreq[i] = Math.fround(1 / Math.fround(Math.pow(Math.fround(30527.7), Math.fround((2 * i) / rot))));
    const out = ops.rope(qkv, Int32Array.of(T, pos0), nh, hd, rot, invFreq, lognBase);
    const r = ropeRef(seen(qkv), T, pos0, nh, hd, rot, invFreq, lognBase);
    // cos/sin rounded to fp32 (u each), two products and a sum (3u), the logN factor and its product (2u).
    expectWithin(out, r.want, (i) => (8 * U + ua) * r.mag[i] + uaAbs, 'rope');
  });

  test('rope over a batch of sequences, each with its own NTK inv_freq and positions', () => {
    const nh = 3, hd = 16, rot = 16, H = nh * hd, lognBase = 40;
    const slices = [[1, 77], [4, 0], [1, 39], [6, 35]]; // [T, pos0]: decode, prompt, decode past logN, a chunk across it
    const bases = [10000, 30527.7, 71000, 10000];
    const Ttot = slices.reduce((n, [T]) => n + T, 0);
    const qkv = randArray(Ttot * 3 * H, 91, 2);
    const inv = new Float32Array(slices.length * (rot / 2));
    bases.forEach((b, k) => {
      for (let i = 0; i < rot / 2; i++) inv[k * (rot / 2) + i] = Math.fround(1 / Math.fround(Math.pow(Math.fround(b), Math.fround((2 * i) / rot))));
    });
    const out = ops.rope(qkv, Int32Array.from(slices.flat()), nh, hd, rot, inv, lognBase);
    let row = 0;
    slices.forEach(([T, pos0], k) => {
      const span = [row * 3 * H, (row + T) * 3 * H];
      const r = ropeRef(seen(qkv.subarray(span[0], span[1])), T, pos0, nh, hd, rot, inv.subarray(k * (rot / 2), (k + 1) * (rot / 2)), lognBase);
      expectWithin(out.subarray(span[0], span[1]), r.want, (i) => (8 * U + ua) * r.mag[i] + uaAbs, `rope slice ${k}`);
      row += T;
    });
  });

  test.each([
    // T, P (cached), heads, headDim
    [1, 0, 1, 4], [1, 9, 2, 16], [3, 0, 2, 16], [5, 7, 3, 8], [17, 40, 2, 128], [1, 300, 1, 33], [70, 0, 2, 64],
  ])('attention T=%i P=%i heads=%i d=%i (bottom-right causal)', (T, P, nh, hd) => {
    const qkv = randArray(T * 3 * nh * hd, 23 + T + P, 1.5);
    const past = randArray(P * 2 * nh * hd, 29 + P, 1.5);
    const out = ops.attention(qkv, Int32Array.of(T, P), past, nh, hd);
    expectAttention(out, qkv, past, [[T, P]], nh, hd);
  });

  test.each([
    // [T, P] per sequence, heads, headDim: decoders at many lengths with a prompt and a chunk continuation
    [[[1, 70], [1, 33], [40, 0], [9, 100], [1, 0]], 2, 16],
    [[[1, 31], [1, 32], [1, 64], [20, 45], [3, 5]], 3, 64],
    [[[1, 300], [33, 0], [1, 1]], 1, 33],
  ])('attention over a batch of sequences %j heads=%i d=%i (paged, non-contiguous blocks)', (slices, nh, hd) => {
    const H = nh * hd;
    const Ttot = slices.reduce((n, [T]) => n + T, 0), Ptot = slices.reduce((n, [, P]) => n + P, 0);
    const qkv = randArray(Ttot * 3 * H, 53 + Ttot, 1.5);
    const past = randArray(Ptot * 2 * H, 59 + Ptot, 1.5);
    const out = ops.attention(qkv, Int32Array.from(slices.flat()), past, nh, hd);
    expectAttention(out, qkv, past, slices, nh, hd);
  });

  /** Each slice against attentionRef on its own rows. A score error ds moves each softmax weight by a factor
   *  exp(+-2 ds); exp, the sums and the weighted sum add gamma_{n+8}; a 16-bit backend also rounds probabilities or
   *  outputs (ua each). */
  function expectAttention(out: Float32Array, qkv: Float32Array, past: Float32Array, slices: number[][], nh: number, hd: number) {
    const H = nh * hd;
    let row = 0, prow = 0;
    slices.forEach(([T, P], k) => {
      const r = attentionRef(seen(qkv.subarray(row * 3 * H, (row + T) * 3 * H)), T, seen(past.subarray(prow * 2 * H, (prow + P) * 2 * H)), P, nh, hd);
      const bound = (i: number) => {
        const ds = (gamma(hd) + 2 * U + ua) * r.scoreMag[i];
        return (4 * ds + gamma(r.keys[i] + 8) + 3 * ua) * r.vmax[i] + 1e-30;
      };
      expectWithin(out.subarray(row * H, (row + T) * H), r.want, bound, `attention slice ${k} (T=${T}, P=${P})`);
      row += T;
      prow += P;
    });
  }

  test('swiglu and add', () => {
    const T = 3, F = 37;
    const x = randArray(T * F, 31, 6), g = randArray(T * F, 37, 6);
    const xs = seen(x), gs = seen(g);
    const want = Float64Array.from(xs, (v, i) => v * (gs[i] / (1 + Math.exp(-gs[i]))));
    expectWithin(ops.swiglu(x, g, T, F), want, (i) => (8 * U + ua) * Math.abs(want[i]) + uaAbs, 'swiglu');
    const sum = Float64Array.from(xs, (v, i) => v + gs[i]);
    expectWithin(ops.add(x, g, T, F), sum, (i) => (U + ua) * Math.abs(sum[i]) + uaAbs, 'add');
  });

  test.each([[1, 64], [5, 4096], [3, 100]])('addRmsnorm T=%i H=%i equals add then rmsnorm', (T, H) => {
    const h = randArray(T * H, 61 + H, 3), x = randArray(T * H, 67 + H, 3);
    const g = w(randArray(H, 71, 1.5), 'BF16');
    const got = ops.addRmsnorm(h, x, T, H, g.bytes, g.code, 1e-6);
    const hs = seen(h), xs = seen(x);
    const sum = Float64Array.from(hs, (v, i) => v + xs[i]);
    expectWithin(got.h, sum, (i) => (U + ua) * Math.abs(sum[i]) + uaAbs, `addRmsnorm h T=${T} H=${H}`);
    // The norm reads the stored (rounded) sum, which was just checked on its own.
    const r = rmsnormRef(got.h, T, H, g.values, 1e-6);
    expectWithin(got.y, r.want, (i) => (6 * U + gamma(H) + ua) * r.mag[i] + uaAbs, `addRmsnorm y T=${T} H=${H}`);
  });

  // T <= 8 with K % 8 == 0 is one fused GEMV on CUDA; T = 9 and odd K take linear, linear, swiglu.
  test.each([[1, 64, 40], [4, 128, 33], [9, 64, 40], [2, 37, 21]])('mlpSwiglu T=%i K=%i F=%i = w1(x) * silu(w2(x))', (T, K, F) => {
    const x = randArray(T * K, 73 + K, 2);
    const w1 = w(randArray(F * K, 79 + F, 0.4), 'BF16'), w2 = w(randArray(F * K, 83 + F, 0.4), 'BF16');
    const got = ops.mlpSwiglu(x, T, w1.bytes, w2.bytes, w1.code, F, K);
    const up = linearRef(mmIn(x), T, K, w1.values, F), gate = linearRef(mmIn(x), T, K, w2.values, F);
    const silu = (z: number) => z / (1 + Math.exp(-z));
    const want = Float64Array.from(up.want, (a, i) => a * silu(gate.want[i]));
    // w1(x), w2(x): gamma_{K+2} * sum|terms| plus one rounding each (ua) when stored; SwiGLU (|silu'| <= 1.1) and its
    // own fp32 math (8U) and rounding (ua).
    const bound = (i: number) => {
      const da = gamma(K + 2) * up.mag[i] + ua * Math.abs(up.want[i]);
      const dg = gamma(K + 2) * gate.mag[i] + ua * Math.abs(gate.want[i]);
      return Math.abs(silu(gate.want[i])) * da + 1.1 * (Math.abs(up.want[i]) + da) * dg + (8 * U + ua) * Math.abs(want[i]) + uaAbs;
    };
    expectWithin(got, want, bound, `mlpSwiglu T=${T} K=${K} F=${F}`);
  });

  // The folded layer's ops (QWEN_FOLD_NORM): on CUDA one GEMV each for T <= 8 with K % 8 == 0 (the RMSNorm inside,
  // the residual add in the epilogue); T = 9 and odd K take the compositions. The normalized rows are exact (float64)
  // in the reference: a backend that stores them first rounds each (uaMm per term of the dot product), the folded GEMV
  // does not; both sum K products in fp32 after the norm's own sum of K squares (gamma_{2K+8} covers both sums and the
  // few products, square root and division around them, as finalLogits' bound).
  const normShapes: Array<[number, number, number]> = [[1, 64, 40], [4, 128, 33], [8, 4096, 24], [9, 64, 40], [2, 37, 21]];
  test.each(normShapes)('normLinear T=%i K=%i N=%i = rmsnorm then linear (with and without bias)', (T, K, N) => {
    const h = randArray(T * K, 101 + K, 3);
    const g = w(randArray(K, 103, 1.5), 'BF16'), W = w(randArray(N * K, 107 + N, 0.4), 'BF16');
    const b = w(randArray(N, 109, 1), 'BF16');
    const xn = rmsnormRef(seen(h), T, K, g.values, 1e-6).want;
    for (const withBias of [false, true]) {
      const y = ops.normLinear(h, T, g.bytes, g.code, 1e-6, W.bytes, W.code, N, K, withBias ? b.bytes : null, b.code);
      const r = linearRef(xn, T, K, W.values, N, withBias ? b.values : undefined);
      expectWithin(y, r.want, (i) => (gamma(2 * K + 8) + uaMm) * r.mag[i] + ua * Math.abs(r.want[i]) + uaAbs, `normLinear T=${T} K=${K} N=${N}`);
    }
  });

  test.each(normShapes)('linearAdd T=%i K=%i N=%i = h + linear', (T, K, N) => {
    const x = randArray(T * K, 113 + K, 2), h = randArray(T * N, 127 + N, 3);
    const W = w(randArray(N * K, 131 + N, 0.4), 'BF16');
    const got = ops.linearAdd(x, T, W.bytes, W.code, N, K, h);
    const r = linearRef(mmIn(x), T, K, W.values, N);
    const hs = seen(h);
    const want = Float64Array.from(r.want, (v, i) => hs[i] + v);
    // the product as linear stores it (gamma_{K+2} * sum|terms| and its rounding ua), then the sum's fp32 math and
    // rounding (U + ua); fp16 subnormals at both roundings.
    expectWithin(got, want, (i) => (gamma(K + 2) + ua) * r.mag[i] + (U + ua) * Math.abs(want[i]) + 2 * uaAbs, `linearAdd T=${T} K=${K} N=${N}`);
  });

  test.each(normShapes)('normMlpSwiglu T=%i K=%i F=%i = mlpSwiglu of rmsnorm', (T, K, F) => {
    const h = randArray(T * K, 137 + K, 3);
    const g = w(randArray(K, 139, 1.5), 'BF16');
    const w1 = w(randArray(F * K, 149 + F, 0.4), 'BF16'), w2 = w(randArray(F * K, 151 + F, 0.4), 'BF16');
    const got = ops.normMlpSwiglu(h, T, g.bytes, g.code, 1e-6, w1.bytes, w2.bytes, w1.code, F, K);
    const xn = rmsnormRef(seen(h), T, K, g.values, 1e-6).want;
    const up = linearRef(xn, T, K, w1.values, F), gate = linearRef(xn, T, K, w2.values, F);
    const silu = (z: number) => z / (1 + Math.exp(-z));
    const want = Float64Array.from(up.want, (a, i) => a * silu(gate.want[i]));
    // mlpSwiglu's bound with normLinear's error of each product
    const bound = (i: number) => {
      const da = (gamma(2 * K + 8) + uaMm) * up.mag[i] + ua * Math.abs(up.want[i]);
      const dg = (gamma(2 * K + 8) + uaMm) * gate.mag[i] + ua * Math.abs(gate.want[i]);
      return Math.abs(silu(gate.want[i])) * da + 1.1 * (Math.abs(up.want[i]) + da) * dg + (8 * U + ua) * Math.abs(want[i]) + uaAbs;
    };
    expectWithin(got, want, bound, `normMlpSwiglu T=${T} K=${K} F=${F}`);
  });

  test.each(dtypes)('finalLogits (ln_f + lm_head) %s on selected rows', (dt) => {
    const T = 6, H = 40, V = 53;
    const h = randArray(T * H, 41, 3);
    const lnf = w(randArray(H, 43, 1.2), dt), head = w(randArray(V * H, 47, 0.3), dt);
    const rows = Int32Array.from([5, 0, 2]);
    const out = ops.finalLogits(h, T, H, rows, lnf.bytes, lnf.code, head.bytes, head.code, V, 1e-6);
    const r = finalLogitsRef(seen(h), H, rows, lnf.values, head.values, V, 1e-6);
    // the normalised row may be stored in the activation type before the lm_head (ua per term).
    expectWithin(out, r.want, (i) => (gamma(2 * H + 8) + uaMm) * r.mag[i] + 1e-30, 'finalLogits');
  });
});

test('ntkAlpha matches the reference table (qwen-reference §4.1)', () => {
  const cases: Array<[number, number, number]> = [
    [1, 8192, 1], [8192, 8192, 1], [8193, 8192, 3], [16384, 8192, 3], [16385, 8192, 7], [32767, 8192, 7],
    [2048, 2048, 1], [2049, 2048, 3], [8192, 2048, 7], [8193, 2048, 15],
  ];
  for (const [L, S, alpha] of cases) expect(a.ntkAlpha(L, S)).toBe(alpha);
});
