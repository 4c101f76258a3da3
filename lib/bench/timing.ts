/**
 * Timing helpers of the microbenchmark suite (lib/bench/suite.ts): wall-clock medians with process.hrtime.bigint(),
 * nothing asserted. Kept dependency-free on purpose: the suite needs medians of a handful of samples, not a harness.
 */
import * as fs from 'fs';
import * as os from 'os';

/** Milliseconds since an arbitrary origin (monotonic). */
export function nowMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Median of the values present (StepStats.gapMs is null for a step that follows none); null when none is. */
export function medianPresent(xs: ReadonlyArray<number | null>): number | null {
  const v = xs.filter((x): x is number => x !== null);
  return v.length ? median(v) : null;
}

/** Spread of the samples as (max - min) / median, a rough noise figure for the JSON. */
export function spread(xs: readonly number[]): number {
  if (xs.length < 2) return 0;
  return (Math.max(...xs) - Math.min(...xs)) / median(xs);
}

export interface Sample {
  /** median milliseconds per call */
  ms: number;
  /** the individual samples (ms) */
  samples: number[];
}

export interface SampleOptions {
  /** untimed calls first (default 1) */
  warmup?: number;
  /** timed calls at least (default 5) */
  minReps?: number;
  /** timed calls at most (default 50) */
  maxReps?: number;
  /** keep sampling until this much time was spent in timed calls, within [minReps, maxReps] (default 200 ms) */
  budgetMs?: number;
  /** called before each call, untimed (e.g. to restore an input that the call consumes) */
  before?: (i: number) => void;
}

/** Median wall time of fn(i) over repeated calls. */
export function sample(fn: (i: number) => unknown, o: SampleOptions = {}): Sample {
  const warmup = o.warmup ?? 1, minReps = o.minReps ?? 5, maxReps = o.maxReps ?? 50, budget = o.budgetMs ?? 200;
  let i = 0;
  for (let w = 0; w < warmup; w++, i++) {
    o.before?.(i);
    fn(i);
  }
  const samples: number[] = [];
  let spent = 0;
  while (samples.length < minReps || (spent < budget && samples.length < maxReps)) {
    o.before?.(i);
    const t0 = process.hrtime.bigint();
    fn(i);
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    samples.push(ms);
    spent += ms;
    i++;
  }
  return { ms: median(samples), samples };
}

/** Same for async work (model forwards). */
export async function sampleAsync(fn: (i: number) => Promise<unknown>, o: SampleOptions = {}): Promise<Sample> {
  const warmup = o.warmup ?? 1, minReps = o.minReps ?? 5, maxReps = o.maxReps ?? 50, budget = o.budgetMs ?? 200;
  let i = 0;
  for (let w = 0; w < warmup; w++, i++) {
    o.before?.(i);
    await fn(i);
  }
  const samples: number[] = [];
  let spent = 0;
  while (samples.length < minReps || (spent < budget && samples.length < maxReps)) {
    o.before?.(i);
    const t0 = process.hrtime.bigint();
    await fn(i);
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    samples.push(ms);
    spent += ms;
    i++;
  }
  return { ms: median(samples), samples };
}

/** Deterministic xorshift32 in [0, 1). */
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

/** Standard normal values (Box-Muller) for synthetic logits. */
export function gaussian(n: number, seed: number, std = 1): Float32Array {
  const r = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const u = Math.max(r(), 1e-12), v = r();
    const m = Math.sqrt(-2 * Math.log(u)) * std;
    out[i] = m * Math.cos(2 * Math.PI * v);
    if (i + 1 < n) out[i + 1] = m * Math.sin(2 * Math.PI * v);
  }
  return out;
}

/** Uniform fp32 values in [-scale, scale). */
export function uniform(n: number, seed: number, scale = 1): Float32Array {
  const r = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (r() * 2 - 1) * scale;
  return out;
}

/**
 * `bytes` of random bf16 weights, finite and of modest magnitude (|w| in [2^-7, 2^-6) with random mantissa and sign).
 * A 1 MiB random block is repeated: the values do not matter for timing, and filling gigabytes in JS one element at a
 * time would take seconds. The pages are touched here, so no timed call pays for first-touch faults.
 */
export function bf16Pool(bytes: number, seed: number): Uint8Array {
  const blockElems = 1 << 19; // 1 MiB of bf16
  const r = rng(seed);
  const block = new Uint16Array(blockElems);
  for (let i = 0; i < blockElems; i++) {
    const x = (r() * 4294967296) >>> 0;
    block[i] = (x & 0x8000) | 0x3c00 | (x & 0x7f); // sign | exponent 2^-7 | 7 mantissa bits
  }
  const out = new Uint8Array(Math.ceil(bytes / 2) * 2);
  const src = new Uint8Array(block.buffer);
  for (let off = 0; off < out.length; off += src.length) out.set(src.subarray(0, Math.min(src.length, out.length - off)), off);
  return out;
}

/** fp32 weights as stored bytes (little-endian), e.g. rmsnorm gains of 1 +- 0.1. */
export function f32Bytes(values: Float32Array): Uint8Array {
  return new Uint8Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength));
}

/** The aggregate "cpu" line of /proc/stat (jiffies: user nice system idle iowait irq softirq steal ...), or null. */
function procStat(): number[] | null {
  try {
    const m = /^cpu\s+(.*)$/m.exec(fs.readFileSync('/proc/stat', 'utf8'));
    return m ? m[1].trim().split(/\s+/).map(Number) : null;
  } catch {
    return null;
  }
}

/**
 * CPU share used by OTHER processes over an interval: all CPUs' busy time from /proc/stat minus this process's own
 * CPU time (process.cpuUsage counts every thread, the addon's pool included), over wall time x CPUs. A noisy-neighbour
 * gauge for each section of the suite (Linux only; null elsewhere).
 */
export class LoadMeter {
  private readonly stat0 = procStat();
  private readonly self0 = process.cpuUsage();
  private readonly t0 = process.hrtime.bigint();

  /** Others' share of all CPUs since construction (0..1), or null when /proc/stat is unavailable. */
  othersBusy(): number | null {
    const s1 = procStat();
    const s0 = this.stat0;
    const wallS = Number(process.hrtime.bigint() - this.t0) / 1e9;
    if (!s0 || !s1 || wallS <= 0) return null;
    const d = s1.map((v, i) => v - (s0[i] ?? 0));
    const total = d.slice(0, 8).reduce((x, y) => x + y, 0);
    if (!(total > 0)) return null;
    const busy = total - d[3] - d[4];
    const hz = total / (wallS * os.cpus().length); // jiffies per second per CPU (USER_HZ)
    const self = process.cpuUsage(this.self0);
    const selfTicks = ((self.user + self.system) / 1e6) * hz;
    return Math.min(1, Math.max(0, (busy - selfTicks) / total));
  }
}

/** The q-quantile (0..1) of the samples, linear between order statistics (NaN when empty). */
export function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const pos = (s.length - 1) * Math.min(1, Math.max(0, q));
  const lo = Math.floor(pos), hi = Math.ceil(pos);
  return s[lo] + (s[hi] - s[lo]) * (pos - lo);
}
