/**
 * Logit rows for the pick / sampler tests (test/pick.test.ts, sample.test.ts, sample-fx.test.ts): Qwen-shaped model
 * rows, grid rows (ties everywhere) and the adversarial small rows every sampled-pick comparison runs.
 */
import type { SamplerConfig } from '../../lib/sampling';
import { randArray, rng } from './weights';

export const QWEN_V = 151936;
export const QWEN_LIMIT = 151851; // the tokenizer's vocabulary: ids >= this are lm_head padding rows

/** Model-like: a Gaussian-ish body (sd `spread`) with `peaks` ids at 8..14 (the probe's usual case). */
export function modelRow(seed: number, peaks: number, spread: number): Float32Array {
  const x = randArray(QWEN_V, seed, spread);
  const r = rng(seed + 1);
  for (let j = 0; j < peaks; j++) x[Math.floor(r() * QWEN_LIMIT)] = 8 + 6 * r();
  return x;
}

/** Multiples of 1/8 in [-lo, hi]: ties everywhere. */
export function gridRow(n: number, seed: number, lo = 10, hi = 10): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => Math.round((r() * (hi + lo) - lo) * 8) / 8);
}

export interface AdversarialRow {
  what: string;
  logits: Float32Array; // 1003 wide; eligible ids [0, ADVERSARIAL_LIMIT)
  prompt: number[]; // ids for the penalties (sample.test.ts), ignored where there are none
  generated: number[];
}
export const ADVERSARIAL_LIMIT = 1000;

/** The special cases of a sampled pick, 1003 wide with a limit of 1000. */
export function adversarialRows(): AdversarialRow[] {
  const n = 1003, lim = ADVERSARIAL_LIMIT;
  const out: AdversarialRow[] = [];
  const row = (what: string, logits: Float32Array, prompt: number[] = [], generated: number[] = []) =>
    out.push({ what, logits, prompt, generated });
  row('grid ties', gridRow(n, 1, 2, 2));
  {
    const x = gridRow(n, 2);
    const r = rng(3);
    for (let i = 0; i < n; i++) {
      const u = r();
      if (u < 0.15) x[i] = NaN;
      else if (u < 0.3) x[i] = -Infinity;
    }
    for (const i of [300, 17, 301]) x[i] = 11;
    row('NaN, -Infinity, a 3-way tie at the max', x, [5], [17]);
  }
  {
    const x = gridRow(n, 4);
    for (const i of [900, 20, 40, lim + 1]) x[i] = Infinity;
    x[21] = NaN;
    row('+Infinity at three ids (and one padding row)', x, [900]);
  }
  {
    const x = new Float32Array(n).fill(-Infinity);
    for (let i = 0; i < n; i += 3) x[i] = NaN;
    x[123] = 0.5;
    row('one finite logit', x);
  }
  {
    const x = new Float32Array(n).fill(NaN);
    x[7] = 1;
    x[8] = -Infinity;
    x[9] = 1;
    row('top_k beyond the non-NaN ids (three, -Infinity among them)', x);
  }
  {
    const x = new Float32Array(n).fill(-Infinity);
    for (const i of [3, 30, 300, 600]) x[i] = 0; // four weights of exactly 1: masses 1, 2, 3, 4
    x[601] = -0; // -0 ties +0 by value, sorts after it
    row('exact masses: top_p lands on a cumulative boundary', x);
  }
  {
    const x = new Float32Array(n).fill(-Infinity);
    for (let i = 0; i < lim; i += 2) x[i] = 0; // 500 equal weights
    row('500 equal weights', x);
  }
  {
    const x = new Float32Array(n).fill(NaN);
    x[lim + 1] = 3; // only a padding row is usable
    row('no usable logit below the limit', x);
  }
  {
    const x = new Float32Array(n).fill(0);
    x[10] = 200;
    x[20] = 150;
    x[30] = 150;
    row('a wide spread: most weights are 0', x);
  }
  return out;
}

/** A sampled config of the pick tests; penalties off unless given. */
/** The one grid of warper settings the sampled-pick tests sweep (sample.test.ts, sample-fx.test.ts). */
export const TEMPS = [0.3, 0.7, 1, 1.5];
export const KS = [0, 1, 5, 50];
export const PS = [0.1, 0.8, 0.95, 1];
export const LOGPROBS = [undefined, 0, 5, 20];

export interface SampledCfg {
  temperature: number;
  topK: number;
  topP: number;
  rp?: number;
  presence?: number;
  frequency?: number;
  logprobs?: number;
}
export function sampledConfig(c: SampledCfg, vocabLimit: number, seed: number): SamplerConfig {
  return {
    doSample: true,
    temperature: c.temperature,
    topK: c.topK,
    topP: c.topP,
    repetitionPenalty: c.rp ?? 1,
    presencePenalty: c.presence ?? 0,
    frequencyPenalty: c.frequency ?? 0,
    tokenizerVocabSize: vocabLimit,
    seed,
    ...(c.logprobs !== undefined ? { logprobs: c.logprobs } : {}),
  };
}
