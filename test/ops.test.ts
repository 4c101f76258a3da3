/**
 * Every CPU op (each ISA level this machine has) against a float64 loop at odd shapes. Tolerances are derived from
 * fp32 rounding: a K-term dot product computed in any order is within gamma_K * sum|w x| of the exact value
 * (Higham, Accuracy and Stability, §3.1), and each op's bound is built from that and a few extra roundings.
 */
import { addon } from '../lib/native/binding';
import type { NativeOps } from '../lib/native/types';
import { U, gamma, randArray, storeWeight, WDtype } from './helpers/weights';

const a = addon();
const isas = (['scalar', 'avx2', 'avx512'] as const).filter(
  (i) => i === 'scalar' || (i === 'avx2' ? a.cpuInfo().isa !== 'scalar' : a.cpuInfo().isa === 'avx512'),
);
const dtypes: WDtype[] = ['F32', 'F16', 'BF16'];

function expectWithin(got: Float32Array, want: Float64Array, bound: (i: number) => number, what: string) {
  expect(got.length).toBe(want.length);
  let worst = -Infinity, at = -1;
  for (let i = 0; i < want.length; i++) {
    const r = Math.abs(got[i] - want[i]) / bound(i);
    if (!(r <= 1)) throw new Error(`${what}: element ${i}: got ${got[i]}, want ${want[i]}, bound ${bound(i)}`);
    if (r > worst) { worst = r; at = i; }
  }
  return { worst, at };
}

describe.each(isas)('CPU ops, isa %s', (isa) => {
  const ops: NativeOps = new a.NativeOps({ device: 'cpu', dtype: 'auto', threads: 2, cpuIsa: isa });

  // T below and above the gemv/gemm switch (4) and the 512-token chunk; K and N not multiples of any vector width.
  const linearShapes: Array<[number, number, number]> = [
    [1, 1, 1], [1, 7, 5], [1, 100, 13], [2, 33, 129], [3, 257, 31], [4, 16, 64], [5, 100, 13], [13, 37, 50],
    [37, 64, 100], [100, 129, 27], [600, 40, 30],
  ];
  describe.each(dtypes)('linear %s', (dt) => {
    test.each(linearShapes)('T=%i K=%i N=%i (with and without bias)', (T, K, N) => {
      const x = randArray(T * K, 1 + T + K, 2);
      const W = storeWeight(randArray(N * K, 7 + N, 0.5), dt);
      const b = storeWeight(randArray(N, 3 + N, 1), dt);
      for (const withBias of [false, true]) {
        const y = ops.linear(x, T, W.bytes, W.code, N, K, withBias ? b.bytes : null, b.code);
        const want = new Float64Array(T * N), mag = new Float64Array(T * N);
        for (let t = 0; t < T; t++)
          for (let n = 0; n < N; n++) {
            let s = withBias ? b.values[n] : 0, m = withBias ? Math.abs(b.values[n]) : 0;
            for (let k = 0; k < K; k++) {
              const p = W.values[n * K + k] * x[t * K + k];
              s += p;
              m += Math.abs(p);
            }
            want[t * N + n] = s;
            mag[t * N + n] = m;
          }
        expectWithin(y, want, (i) => gamma(K + 2) * mag[i] + 1e-30, `linear ${dt} T=${T} K=${K} N=${N}`);
      }
    });
  });

  test('embedding gathers exact rows (all dtypes)', () => {
    for (const dt of dtypes) {
      const V = 11, H = 19;
      const w = storeWeight(randArray(V * H, 5, 3), dt);
      const ids = Int32Array.from([0, 10, 3, 3, 7]);
      const h = ops.embedding(w.bytes, w.code, V, H, ids);
      const want = new Float64Array(ids.length * H);
      ids.forEach((id, t) => { for (let i = 0; i < H; i++) want[t * H + i] = w.values[id * H + i]; });
      expectWithin(h, want, () => 1e-300, `embedding ${dt}`);
    }
    expect(() => ops.embedding(storeWeight(randArray(4, 1), 'F32').bytes, 0, 2, 2, Int32Array.from([2]))).toThrow(/range/);
  });

  test.each([[1, 1], [3, 7], [2, 64], [5, 4097]])('rmsnorm T=%i H=%i', (T, H) => {
    const x = randArray(T * H, 11 + H, 4);
    const g = storeWeight(randArray(H, 13, 1.5), 'BF16');
    const eps = 1e-6;
    const y = ops.rmsnorm(x, T, H, g.bytes, g.code, eps);
    const want = new Float64Array(T * H);
    for (let t = 0; t < T; t++) {
      let ss = 0;
      for (let i = 0; i < H; i++) ss += x[t * H + i] ** 2;
      const inv = 1 / Math.sqrt(ss / H + eps);
      for (let i = 0; i < H; i++) want[t * H + i] = x[t * H + i] * inv * g.values[i];
    }
    // double sum, then rsqrt, two products: a few fp32 roundings relative to the value itself.
    expectWithin(y, want, (i) => 6 * U * Math.abs(want[i]) + 1e-30, `rmsnorm T=${T} H=${H}`);
  });

  test.each([
    // T, pos0, heads, headDim, rotDims, lognBase
    [1, 0, 1, 2, 2, 0], [3, 5, 2, 16, 16, 0], [4, 30, 3, 16, 8, 32], [2, 32760, 2, 128, 128, 8192], [5, 9000, 1, 128, 128, 8192],
  ])('rope T=%i pos0=%i heads=%i d=%i rot=%i logn=%i', (T, pos0, nh, hd, rot, lognBase) => {
    const H = nh * hd;
    const qkv = randArray(T * 3 * H, 17 + T, 2);
    const invFreq = new Float32Array(rot / 2);
    for (let i = 0; i < rot / 2; i++) invFreq[i] = Math.fround(1 / Math.fround(Math.pow(Math.fround(30527.7), Math.fround((2 * i) / rot))));
    const out = ops.rope(qkv, T, pos0, nh, hd, rot, invFreq, lognBase);
    const want = Float64Array.from(qkv);
    const mag = new Float64Array(qkv.length);
    for (let t = 0; t < T; t++) {
      const p = pos0 + t;
      const scale = lognBase > 0 && p + 1 > lognBase ? Math.log(p + 1) / Math.log(lognBase) : 1;
      for (let part = 0; part < 2; part++)
        for (let h = 0; h < nh; h++) {
          const base = t * 3 * H + part * H + h * hd;
          for (let i = 0; i < rot / 2; i++) {
            const th = Math.fround(Math.fround(p) * invFreq[i]); // the reference's fp32 angle
            const c = Math.cos(th), s = Math.sin(th);
            const x0 = qkv[base + i], x1 = qkv[base + i + rot / 2];
            want[base + i] = x0 * c - x1 * s;
            want[base + i + rot / 2] = x1 * c + x0 * s;
            mag[base + i] = mag[base + i + rot / 2] = Math.abs(x0) + Math.abs(x1);
          }
          for (let i = rot; i < hd; i++) mag[base + i] = Math.abs(qkv[base + i]);
          if (part === 0) for (let i = 0; i < hd; i++) { want[base + i] *= scale; mag[base + i] *= scale; }
        }
    }
    // cos/sin rounded to fp32 (u each), two products and a sum (3u), the logN factor and its product (2u).
    expectWithin(out, want, (i) => 8 * U * (mag[i] || Math.abs(want[i])) + 1e-30, 'rope');
  });

  test.each([
    // T, P (cached), heads, headDim
    [1, 0, 1, 4], [1, 9, 2, 16], [3, 0, 2, 16], [5, 7, 3, 8], [17, 40, 2, 128], [1, 300, 1, 33],
  ])('attention T=%i P=%i heads=%i d=%i (bottom-right causal)', (T, P, nh, hd) => {
    const H = nh * hd;
    const qkv = randArray(T * 3 * H, 23 + T + P, 1.5);
    const past = randArray(P * 2 * H, 29 + P, 1.5);
    const out = ops.attention(qkv, T, past, P, nh, hd);
    const key = (j: number, h: number, i: number) => (j < P ? past[j * 2 * H + h * hd + i] : qkv[(j - P) * 3 * H + H + h * hd + i]);
    const val = (j: number, h: number, i: number) => (j < P ? past[j * 2 * H + H + h * hd + i] : qkv[(j - P) * 3 * H + 2 * H + h * hd + i]);
    const want = new Float64Array(T * H), bound = new Float64Array(T * H);
    const scale = 1 / Math.sqrt(hd);
    for (let t = 0; t < T; t++)
      for (let h = 0; h < nh; h++) {
        const n = P + t + 1;
        const s = new Float64Array(n);
        let mx = -Infinity, dsMax = 0, vMax = 0;
        for (let j = 0; j < n; j++) {
          let d = 0, m = 0;
          for (let i = 0; i < hd; i++) { d += qkv[t * 3 * H + h * hd + i] * key(j, h, i); m += Math.abs(qkv[t * 3 * H + h * hd + i] * key(j, h, i)); }
          s[j] = d * scale;
          dsMax = Math.max(dsMax, (gamma(hd) * m + U * Math.abs(d)) * scale + U * Math.abs(s[j]));
          mx = Math.max(mx, s[j]);
          for (let i = 0; i < hd; i++) vMax = Math.max(vMax, Math.abs(val(j, h, i)));
        }
        let sum = 0;
        for (let j = 0; j < n; j++) { s[j] = Math.exp(s[j] - mx); sum += s[j]; }
        for (let i = 0; i < hd; i++) {
          let o = 0;
          for (let j = 0; j < n; j++) o += (s[j] / sum) * val(j, h, i);
          want[t * H + h * hd + i] = o;
          // score errors move each weight by a factor exp(±2 ds); exp, the sum and the weighted sum add gamma_{n+8}.
          bound[t * H + h * hd + i] = (4 * dsMax + gamma(n + 8)) * vMax + 1e-30;
        }
      }
    expectWithin(out, want, (i) => bound[i], 'attention');
  });

  test('swiglu and add', () => {
    const T = 3, F = 37;
    const x = randArray(T * F, 31, 6), g = randArray(T * F, 37, 6);
    const out = ops.swiglu(x, g, T, F);
    const want = Float64Array.from(x, (v, i) => v * (g[i] / (1 + Math.exp(-g[i]))));
    expectWithin(out, want, (i) => 8 * U * Math.abs(want[i]) + 1e-30, 'swiglu');
    const sum = ops.add(x, g, T, F);
    expectWithin(sum, Float64Array.from(x, (v, i) => v + g[i]), (i) => U * Math.abs(x[i] + g[i]) + 1e-30, 'add');
  });

  test.each(dtypes)('finalLogits (ln_f + lm_head) %s on selected rows', (dt) => {
    const T = 6, H = 40, V = 53, eps = 1e-6;
    const h = randArray(T * H, 41, 3);
    const lnf = storeWeight(randArray(H, 43, 1.2), dt), head = storeWeight(randArray(V * H, 47, 0.3), dt);
    const rows = Int32Array.from([5, 0, 2]);
    const out = ops.finalLogits(h, T, H, rows, lnf.bytes, lnf.code, head.bytes, head.code, V, eps);
    const want = new Float64Array(rows.length * V), mag = new Float64Array(rows.length * V);
    rows.forEach((r, ri) => {
      let ss = 0;
      for (let i = 0; i < H; i++) ss += h[r * H + i] ** 2;
      const inv = 1 / Math.sqrt(ss / H + eps);
      for (let v = 0; v < V; v++) {
        let s = 0, m = 0;
        for (let i = 0; i < H; i++) { const p = h[r * H + i] * inv * lnf.values[i] * head.values[v * H + i]; s += p; m += Math.abs(p); }
        want[ri * V + v] = s;
        mag[ri * V + v] = m;
      }
    });
    expectWithin(out, want, (i) => gamma(H + 8) * mag[i] + 1e-30, 'finalLogits');
  });
});

test('ntkAlpha matches the reference table (qwen-reference §4.1)', () => {
  const cases: Array<[number, number, number]> = [
    [1, 8192, 1], [8192, 8192, 1], [8193, 8192, 3], [16384, 8192, 3], [16385, 8192, 7], [32767, 8192, 7],
    [2048, 2048, 1], [2049, 2048, 3], [8192, 2048, 7], [8193, 2048, 15],
  ];
  for (const [L, S, alpha] of cases) expect(a.ntkAlpha(L, S)).toBe(alpha);
});
