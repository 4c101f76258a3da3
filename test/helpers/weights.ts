/** Test helpers: seeded values, stored-weight encodings and their exact decoded values. */
import { bf16ToF32, encodeF32, f16ToF32 } from '../../lib/model/safetensors';
import { DTYPE_CODES } from '../../lib/native/types';

export type WDtype = 'F32' | 'F16' | 'BF16';
export const U = 2 ** -24; // unit roundoff of fp32
export const gamma = (n: number) => (n * U) / (1 - n * U); // Higham's gamma_n: bound of an n-term fp32 dot

export function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
}

/** Deterministic PRNG (mulberry32) for the tokenizer's random cases, so a failing case can be reproduced. */
export function mulberry32(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function randArray(n: number, seed: number, scale = 1): Float32Array {
  const r = rng(seed);
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (r() * 2 - 1) * scale;
  return a;
}

/** A weight as stored bytes plus the exact values the kernel sees after decoding. */
export interface StoredWeight {
  bytes: Uint8Array;
  code: number;
  values: Float64Array;
}

export function storeWeight(src: Float32Array, dtype: WDtype): StoredWeight {
  const bytes = new Uint8Array(src.length * (dtype === 'F32' ? 4 : 2));
  encodeF32(src, dtype, bytes);
  const values = new Float64Array(src.length);
  if (dtype === 'F32') values.set(src);
  else {
    const u16 = new Uint16Array(bytes.buffer, bytes.byteOffset, src.length);
    for (let i = 0; i < src.length; i++) values[i] = dtype === 'BF16' ? bf16ToF32(u16[i]) : f16ToF32(u16[i]);
  }
  return { bytes, code: DTYPE_CODES[dtype], values };
}

/** Round to the activation type a backend stores (fp32 values in, fp64 out). */
export function roundTo(act: 'fp32' | 'bf16' | 'fp16', v: ArrayLike<number>): Float64Array {
  const f = Float32Array.from(v as ArrayLike<number>);
  if (act === 'fp32') return Float64Array.from(f);
  const dt = act === 'bf16' ? 'BF16' : 'F16';
  return storeWeight(f, dt).values;
}

/** Unit roundoff of an activation type (0 for fp32: its roundings are counted in each op's fp32 bound). */
export const unitRoundoff = (act: 'fp32' | 'bf16' | 'fp16') => (act === 'bf16' ? 2 ** -8 : act === 'fp16' ? 2 ** -11 : 0);
