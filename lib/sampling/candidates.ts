/**
 * The per-step working set the processors of index.ts act on, reused from step to step (no allocation per token).
 *
 * The sampler CONSUMES the model's Float32Array: processors rewrite it in place, first as (penalized) logits, then —
 * once `weigh*()` ran — as unnormalized probabilities w = exp((logit - max) / T) of the ids still in play. Its contents
 * are garbage for the caller afterwards.
 *
 * Ids >= n (the lm_head padding rows 151851..151935, whose logits are untrained) are never read: every loop runs over
 * [0, n) only, which masks them at no cost.
 *
 * The kept set is all of [0, n) until top-k / top-p narrow it to `list[0, len)`; it is always a prefix of the order
 * (value desc, id asc), which is how HF's sorts resolve it up to their unspecified tie order.
 *
 * Special values: a NaN logit weighs 0 and never compares greater, so it is never chosen; if a +Infinity logit is
 * present, the +Infinity ids share all the mass; no finite or +Infinity logit at all is E_BACKEND.
 */
import { QwenError } from '../errors';

// Module-local consts, exported below: TS's CommonJS output would turn uses of an `export const` into
// `exports.X` property loads, which deoptimize the hot loops.
/** Histogram bins over the float32 bits of a weight in [0, 1]: bits >> 20 = exponent + 3 mantissa bits (1/8 octave). */
const WEIGHT_BINS = 1024;
/** The head (see weighAll): ids within ln(4096) = 8.3 nats (tempered) of the best one, at most HEAD_CAP of them. */
const HEAD_MIN = 1 / 4096;
const HEAD_CAP = 2048;
export { HEAD_CAP, HEAD_MIN, ID_SPAN, WEIGHT_BINS };

// exp(-s) by table + cubic correction: ~3x cheaper than Math.exp in V8, relative error < 3e-9 (finer than float32).
const EXP_STEPS = 64;
const EXP_MAX = 104; // e^-104 < 2^-149, the smallest float32: past it a weight is exactly 0 anyway
const EXP_TABLE = new Float64Array(EXP_STEPS * EXP_MAX + 1).map((_, k) => Math.exp(-k / EXP_STEPS));

/** e^-s for s >= 0; 0 for s >= 104 or NaN. */
export function expNeg(s: number): number {
  if (!(s < EXP_MAX)) return 0;
  const t = s * EXP_STEPS;
  const k = t | 0;
  const r = (t - k) * (1 / EXP_STEPS);
  return EXP_TABLE[k] * (1 - r * (1 - r * (0.5 - r * (1 / 6))));
}

const ID_SPAN = 1 << 20; // sortList packs ids in 20 bits

/**
 * The order of the two sums that run over every id of a row, the weights' total (weighRange) and the probe's tail
 * bound (topP.ts scanBounds): id i goes into partial sum i & 3, and the four are merged by laneSum,
 * (a0 + a2) + (a1 + a3). One running sum in id order is a chain of dependent adds, which held the native draw
 * (cpp/cpu/sample.cc, also the CUDA backend's host draw) to one id per add latency; four interleaved sums are one AVX2
 * vector there, and unrolled by hand they made these loops faster in V8 too. Any fixed order is as exact as another;
 * the native draw must use this one to equal this sampler to the bit (cpp/cpu/sample_lanes.h). The other sums stay
 * in id or list order: the head's mass, the kept masses, the histogram's per-bin masses (a scatter) and the draw's
 * running sum (it stops at the first id past u * Z).
 */
export const SUM_LANES = 4;
export function laneSum(a: Float64Array): number {
  return a[0] + a[2] + (a[1] + a[3]);
}
const lanes = new Float64Array(SUM_LANES); // weighRange's partial sums
// Globals read in hot loops are cached: inside a vm context (jest) each global read goes through an interceptor,
// which made the weighing loop ~30x slower there.
const fround = Math.fround;
const INF = Infinity;
const EMPTY = new Float32Array(0);

export class Candidates {
  logits: Float32Array = EMPTY; // the model's array, rewritten in place (see above)
  bits: Int32Array = new Int32Array(0); // the same memory as int32: order keys / histogram bins without conversion
  n = 0; // ids [0, n) are eligible
  scanned = false;
  max = -Infinity; // after scan(): the largest eligible logit
  argmax = -1; // after scan(): the lowest id holding it
  invT = 1; // 1 / temperature, folded into the weights (saves a pass over the vocabulary)
  weighted = false; // logits[id] holds weights for the kept ids
  total = 0; // after weighAll(): sum of all weights (in the SUM_LANES order)
  headLen = 0; // after weighAll(): ids with weight >= HEAD_MIN (counted up to HEAD_CAP + 1); list[0, headLen) holds them
  headMass = 0; // their total weight (headLen <= HEAD_CAP only)
  listed = false; // kept set is list[0, len) rather than all of [0, n)
  sorted = false; // list is in (value desc, id asc) order
  list: Int32Array = new Int32Array(0);
  len = 0;
  readonly binCount = new Int32Array(WEIGHT_BINS);
  readonly binMass = new Float64Array(WEIGHT_BINS);
  private keys = new Float64Array(64); // sortList's scratch
  private readonly sums = new Float64Array(2); // weighRange's second and third results

  load(logits: Float32Array, eligible: number): void {
    if (logits !== this.logits) {
      this.logits = logits;
      this.bits = new Int32Array(logits.buffer, logits.byteOffset, logits.length);
    }
    this.n = Math.min(logits.length, eligible);
    if (this.n > ID_SPAN)
      throw new QwenError('E_BAD_ARG', `the sampler supports at most ${ID_SPAN} token ids (got ${this.n})`);
    if (this.list.length < this.n) this.list = new Int32Array(this.n);
    this.scanned = this.weighted = this.listed = this.sorted = false;
    this.max = -Infinity;
    this.argmax = -1;
    this.invT = 1;
    this.total = this.headMass = 0;
    this.len = this.headLen = 0;
  }

  /** max and argmax (ties -> lowest id): greedy decoding's one pass, and the reference point of weighAll(). */
  scan(): void {
    const at = argmaxOf(this.logits, this.n);
    if (at < 0) throw noLogit(this.n);
    this.max = this.logits[at];
    this.argmax = at;
    this.scanned = true;
  }

  /**
   * Weights of every eligible id and their total, in one pass. It also lists the "head": the ids of weight >= HEAD_MIN
   * (few: a model row has a handful of plausible tokens), which is where top-p almost always ends. Bookkeeping per
   * id is a single comparison; the full histogram is built only when the head does not hold enough mass.
   */
  weighAll(): void {
    if (!this.scanned) this.scan();
    this.headLen = weighRange(this.logits, this.n, this.max, this.invT, this.list, this.sums);
    this.total = this.sums[0];
    this.headMass = this.sums[1];
    this.weighted = true;
  }

  /** Weights of the listed ids only (after top-k: k + ties of them, not the whole vocabulary). */
  weighList(): void {
    const L = this.logits;
    const ids = this.list;
    let m = -Infinity;
    for (let j = 0; j < this.len; j++) if (L[ids[j]] > m) m = L[ids[j]];
    if (m === -Infinity) throw noLogit(this.n);
    for (let j = 0; j < this.len; j++) {
      const x = L[ids[j]];
      L[ids[j]] = m === INF ? +(x === INF) : fround(expNeg((m - x) * this.invT));
    }
    this.weighted = true;
  }

  ensureWeights(): void {
    if (this.weighted) return;
    if (this.listed) this.weighList();
    else this.weighAll();
  }

  /** Count and mass of the weights per float-bits bin (1/8 octave): top-p's fallback when the head is not enough. */
  histogram(): void {
    histogramOf(this.bits, this.logits, this.n, this.binCount.fill(0), this.binMass.fill(0));
  }

  /** Sum of the kept weights, in kept order (the order draw() accumulates in, so a draw cannot fall off the end). */
  keptMass(): number {
    if (!this.listed) return this.total;
    const L = this.logits;
    let z = 0;
    for (let j = 0; j < this.len; j++) z += L[this.list[j]];
    return z;
  }

  /**
   * Sort list[from, to) by (value desc, id asc); values are logits or weights, both order the same way. Each entry is
   * packed into one exact double — order-preserving float bits (32) above the inverted id (20) — so the engine's
   * native numeric sort does the work instead of a JS comparator call per comparison (~10x faster).
   */
  sortList(from: number, to: number): void {
    const m = to - from;
    if (m < 2) return;
    if (this.keys.length < m) this.keys = new Float64Array(Math.max(m, 2 * this.keys.length));
    const keys = this.keys;
    const ids = this.list;
    const B = this.bits;
    for (let j = 0; j < m; j++) {
      const id = ids[from + j];
      const b = B[id];
      const ord = (b ^ ((b >> 31) & 0x7fffffff)) + 2147483648; // 0 .. 2^32-1, ordered like the float
      keys[j] = -(ord * ID_SPAN + (ID_SPAN - 1 - id)); // negated: the ascending sort puts the best first
    }
    keys.subarray(0, m).sort();
    for (let j = 0; j < m; j++) ids[from + j] = ID_SPAN - 1 - (-keys[j] % ID_SPAN);
  }
}

// The hot loops are free functions of typed arrays and numbers, called once per step: V8 optimizes them as whole
// functions. Written as methods, their loops got on-stack-replaced code that deoptimized on every call after the loop.

function argmaxOf(L: Float32Array, n: number): number {
  let m = -INF;
  let at = -1;
  for (let i = 0; i < n; i++) {
    const x = L[i];
    if (x > m) {
      m = x;
      at = i;
    }
  }
  return at;
}

/** L[i] <- weight; returns the head length (at most HEAD_CAP + 1); sums <- [total (SUM_LANES order), head mass (id order)]. */
function weighRange(L: Float32Array, n: number, m: number, invT: number, ids: Int32Array, sums: Float64Array): number {
  const acc = lanes.fill(0);
  let i = 0;
  if (m === INF) {
    for (; i < n; i++) acc[i & 3] += L[i] = +(L[i] === INF); // the +Infinity ids share the mass
  } else {
    // Unrolled by hand into four locals: `acc[i & 3] += w` or a switch on i & 3 cost V8 ~1 ns per id.
    let a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    for (; i + 4 <= n; i += 4) {
      const w0 = fround(expNeg((m - L[i]) * invT)); // NaN weighs 0
      const w1 = fround(expNeg((m - L[i + 1]) * invT));
      const w2 = fround(expNeg((m - L[i + 2]) * invT));
      const w3 = fround(expNeg((m - L[i + 3]) * invT));
      L[i] = w0;
      L[i + 1] = w1;
      L[i + 2] = w2;
      L[i + 3] = w3;
      a0 += w0;
      a1 += w1;
      a2 += w2;
      a3 += w3;
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
    for (; i < n; i++) acc[i & 3] += L[i] = fround(expNeg((m - L[i]) * invT));
  }
  sums[0] = laneSum(acc);
  // The head: a head of more than HEAD_CAP ids is never used (draw and top-p take other routes), so the pass stops
  // at its (HEAD_CAP + 1)-th id.
  let mass = 0;
  let len = 0;
  for (let j = 0; j < n; j++) {
    const w = L[j];
    if (w >= HEAD_MIN) {
      if (len === HEAD_CAP) return HEAD_CAP + 1; // (sums[1] not set)
      mass += w;
      ids[len++] = j;
    }
  }
  sums[1] = mass;
  return len;
}

function histogramOf(B: Int32Array, L: Float32Array, n: number, count: Int32Array, mass: Float64Array): void {
  for (let i = 0; i < n; i++) {
    const bin = B[i] >> 20; // weights are in [0, 1]: sign bit 0, bin <= 1016
    count[bin] = (count[bin] + 1) | 0;
    mass[bin] += L[i];
  }
}

function noLogit(n: number): QwenError {
  return new QwenError('E_BACKEND', `no usable logit: all ${n} eligible logits are -Infinity or NaN`);
}
