/**
 * Float64 reference loops of every backend op (cpp/core/backend.h), written independently of the native code.
 * Each returns the exact result and the magnitude its rounding-error bound scales with (sum |terms|).
 */
export interface Ref {
  want: Float64Array;
  mag: Float64Array;
}

/** y[T,N] = x[T,K] . W[N,K]^T (+ b) */
export function linearRef(x: ArrayLike<number>, T: number, K: number, W: ArrayLike<number>, N: number, b?: ArrayLike<number>): Ref {
  const want = new Float64Array(T * N), mag = new Float64Array(T * N);
  for (let t = 0; t < T; t++)
    for (let n = 0; n < N; n++) {
      let s = b ? b[n] : 0, m = b ? Math.abs(b[n]) : 0;
      for (let k = 0; k < K; k++) {
        const p = W[n * K + k] * x[t * K + k];
        s += p;
        m += Math.abs(p);
      }
      want[t * N + n] = s;
      mag[t * N + n] = m;
    }
  return { want, mag };
}

export function rmsnormRef(x: ArrayLike<number>, T: number, H: number, g: ArrayLike<number>, eps: number): Ref {
  const want = new Float64Array(T * H);
  for (let t = 0; t < T; t++) {
    let ss = 0;
    for (let i = 0; i < H; i++) ss += x[t * H + i] ** 2;
    const inv = 1 / Math.sqrt(ss / H + eps);
    for (let i = 0; i < H; i++) want[t * H + i] = x[t * H + i] * inv * g[i];
  }
  return { want, mag: want.map(Math.abs) };
}

/** Rotate-half RoPE of q and k heads in qkv[T,3H] at positions pos0.., fp32 angles as the reference; q *= logN. */
export function ropeRef(
  qkv: ArrayLike<number>, T: number, pos0: number, nh: number, hd: number, rot: number, invFreq: Float32Array, lognBase: number,
): Ref {
  const H = nh * hd;
  const want = Float64Array.from(qkv as ArrayLike<number>), mag = Float64Array.from(qkv as ArrayLike<number>, Math.abs);
  for (let t = 0; t < T; t++) {
    const p = pos0 + t;
    const scale = lognBase > 0 && p + 1 > lognBase ? Math.log(p + 1) / Math.log(lognBase) : 1;
    for (let part = 0; part < 2; part++)
      for (let h = 0; h < nh; h++) {
        const base = t * 3 * H + part * H + h * hd;
        for (let i = 0; i < rot / 2; i++) {
          const th = Math.fround(Math.fround(p) * invFreq[i]);
          const c = Math.cos(th), s = Math.sin(th);
          const x0 = qkv[base + i], x1 = qkv[base + i + rot / 2];
          want[base + i] = x0 * c - x1 * s;
          want[base + i + rot / 2] = x1 * c + x0 * s;
          mag[base + i] = mag[base + i + rot / 2] = Math.abs(x0) + Math.abs(x1);
        }
        if (part === 0) for (let i = 0; i < hd; i++) { want[base + i] *= scale; mag[base + i] *= scale; }
      }
  }
  return { want, mag };
}

/**
 * Causal attention of the T queries in qkv[T,3H] (positions P..P+T-1) over past[P][k|v] and the chunk's own keys.
 * mag: per output, max |v| of its head (the bound scales with it), scoreMag: per output, max_j scale * sum_i |q_i k_ji|.
 */
export function attentionRef(qkv: ArrayLike<number>, T: number, past: ArrayLike<number>, P: number, nh: number, hd: number) {
  const H = nh * hd;
  const key = (j: number, h: number, i: number) => (j < P ? past[j * 2 * H + h * hd + i] : qkv[(j - P) * 3 * H + H + h * hd + i]);
  const val = (j: number, h: number, i: number) => (j < P ? past[j * 2 * H + H + h * hd + i] : qkv[(j - P) * 3 * H + 2 * H + h * hd + i]);
  const want = new Float64Array(T * H), vmax = new Float64Array(T * H), scoreMag = new Float64Array(T * H), keys = new Float64Array(T * H);
  const scale = 1 / Math.sqrt(hd);
  for (let t = 0; t < T; t++)
    for (let h = 0; h < nh; h++) {
      const n = P + t + 1;
      const s = new Float64Array(n);
      let mx = -Infinity, sm = 0, vMax = 0;
      for (let j = 0; j < n; j++) {
        let d = 0, m = 0;
        for (let i = 0; i < hd; i++) { const p = qkv[t * 3 * H + h * hd + i] * key(j, h, i); d += p; m += Math.abs(p); }
        s[j] = d * scale;
        sm = Math.max(sm, m * scale);
        mx = Math.max(mx, s[j]);
        for (let i = 0; i < hd; i++) vMax = Math.max(vMax, Math.abs(val(j, h, i)));
      }
      let sum = 0;
      for (let j = 0; j < n; j++) { s[j] = Math.exp(s[j] - mx); sum += s[j]; }
      for (let i = 0; i < hd; i++) {
        let o = 0;
        for (let j = 0; j < n; j++) o += (s[j] / sum) * val(j, h, i);
        want[t * H + h * hd + i] = o;
        vmax[t * H + h * hd + i] = vMax;
        scoreMag[t * H + h * hd + i] = sm;
        keys[t * H + h * hd + i] = n;
      }
    }
  return { want, vmax, scoreMag, keys };
}

export function finalLogitsRef(
  h: ArrayLike<number>, H: number, rows: ArrayLike<number>, lnf: ArrayLike<number>, head: ArrayLike<number>, V: number, eps: number,
): Ref {
  const want = new Float64Array(rows.length * V), mag = new Float64Array(rows.length * V);
  for (let ri = 0; ri < rows.length; ri++) {
    const r = rows[ri];
    let ss = 0;
    for (let i = 0; i < H; i++) ss += h[r * H + i] ** 2;
    const inv = 1 / Math.sqrt(ss / H + eps);
    for (let v = 0; v < V; v++) {
      let s = 0, m = 0;
      for (let i = 0; i < H; i++) { const p = h[r * H + i] * inv * lnf[i] * head[v * H + i]; s += p; m += Math.abs(p); }
      want[ri * V + v] = s;
      mag[ri * V + v] = m;
    }
  }
  return { want, mag };
}
