/**
 * Seeded PRNG for sampling: xoshiro128** (Blackman & Vigna), 32-bit words so every step stays in V8 small-int math.
 * The same seed gives the same stream on every run, platform and Node version (only Math.imul and shifts are used).
 */
import { randomInt } from 'node:crypto';

/** murmur3's fmix32: a bijection on 32-bit words, so distinct seeds give distinct states. */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  /** seed: any safe integer (negative ones too); its full 53 bits select the stream. */
  constructor(seed: number) {
    const lo = seed >>> 0; // seed mod 2^32
    const hi = Math.floor(seed / 4294967296) >>> 0;
    // (a, b) is an injective image of (lo, hi); a and c cannot both be 0 (that needs lo = -C and lo = C'), so the
    // state is never all-zero, the one state xoshiro must avoid.
    this.a = fmix32((lo + 0x9e3779b9) >>> 0);
    this.b = fmix32((hi + 0x7f4a7c15) >>> 0);
    this.c = fmix32((lo ^ 0x3c6ef372) >>> 0);
    this.d = fmix32((hi ^ 0xa54ff53a) >>> 0);
    for (let i = 0; i < 8; i++) this.nextU32(); // decorrelate nearby seeds
  }

  nextU32(): number {
    const result = Math.imul(rotl(Math.imul(this.b, 5), 7), 9) >>> 0;
    const t = this.b << 9;
    this.c ^= this.a;
    this.d ^= this.b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c ^= t;
    this.d = rotl(this.d, 11);
    return result;
  }

  /** Uniform double in [0, 1) with 53 random bits (32 bits alone would make p < 2^-32 tokens unreachable). */
  next(): number {
    const hi = this.nextU32() >>> 5; // 27 bits
    const lo = this.nextU32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** A fresh random seed (48 bits, a safe integer) for calls that give none; reported back so a run can be replayed. */
export function randomSeed(): number {
  return randomInt(0, 2 ** 48 - 1);
}
