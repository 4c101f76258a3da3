/**
 * End-to-end part of the microbenchmark suite (lib/bench/suite.ts): prefill tok/s against prompt length and decode
 * tok/s against context length on one loaded model (batch 1), then decode tok/s against batch size: B sequences at a
 * context of about `batchContext` each forward one token concurrently, which the scheduler (lib/model/scheduler.ts,
 * continuous batching) merges into one native step of B tokens.
 *
 * Decode: after a fresh prefill of c tokens, one untimed step, then `steps` timed steps (each a forward of 1 token,
 * greedy argmax outside the timed region); the median step is reported. Decode GB/s counts the weights streamed per
 * token (all but the embedding table) plus the KV cache read by attention at that context.
 *
 * Batch: max(batchSizes) sequences are prefilled together (prompts of batchContext tokens, distinct per sequence; the
 * aggregate prefill rate of that is reported too), then for each size B the first B of them run 1 untimed and
 * `batchSteps` timed steps of one token each (fixed ids: the values do not change the work). Reported: the median
 * wall time of a step (submit to the last logits), aggregate tok/s = B / that, the engine's own step time from
 * model.onStep, and the sequences each step really held (a check that the B forwards did share one step).
 */
import { addon } from '../native/binding';
import { loadModel, Model, type Sequence } from '../model/model';
import type { PickResult } from '../types';
import { ffnWidth } from '../model/config';
import type { StepStats } from '../model/scheduler';
import { clientPrompt } from './concurrency';
import type { NativePickRequest } from '../native/types';
import { Rng } from '../sampling';
import { greedyPickRequest } from './e2e';
import { median, medianPresent, nowMs } from './timing';

export interface E2ePoint {
  context: number;
  prefill: { tokens: number; ms: number; tokPerS: number; gflops: number; ofPeak: number | null };
  decode: {
    steps: number; msPerToken: number; tokPerS: number; samples: number[]; bytesPerToken: number; gbs: number;
    ofReadBandwidth: number | null;
  };
}

export interface E2eRun {
  mode: string;
  device: 'cpu' | 'cuda';
  dtype: 'fp32' | 'bf16';
  model: { dir: string; weightBytes: number; streamedBytesPerToken: number; layers: number; hidden: number; ffn: number; vocab: number };
  loadMs: number;
  /** DRAM read GB/s measured right before the decode sweep (CPU; better of two readBandwidth calls) */
  readGBs: number | null;
  /** achieved-peak proxy of this mode (from the kernel section), for prefill % */
  peakGflops: number | null;
  kvBytesPerElem: number;
  /** the backend switches of the run (Model.switches): which paths made these figures */
  switches: Record<string, boolean>;
  /** the process's QWEN_* variables (the switches read from the environment only, e.g. QWEN_CUDA_PDL) */
  env?: Record<string, string>;
  points: E2ePoint[];
  batch: BatchAxis | null;
}

export interface BatchPoint {
  batchSize: number;
  steps: number;
  /** median wall ms of a step: the B forwards submitted together until the last one resolved */
  msPerStep: number;
  /** aggregate decode tok/s = B / msPerStep */
  tokPerS: number;
  /** per sequence: 1 / msPerStep */
  perSequenceTokPerS: number;
  /** median native step time from model.onStep (the wall figure less the scheduling around it) */
  engineMsPerStep: number;
  /** median StepStats.gapMs of the timed steps: main-thread time between a step's result and the next launch */
  gapMs: number | null;
  /** mean sequences per step as the scheduler ran them (B when the forwards shared each step) */
  meanSequencesPerStep: number;
  /** mean context of the B sequences during the timed steps */
  context: number;
  samples: number[];
  /** weights once + the B sequences' KV read, per step */
  bytesPerStep: number;
  gbs: number;
  ofReadBandwidth: number | null;
  gflops: number;
  ofPeak: number | null;
  /** aggregate tok/s over the batch-1 point's */
  speedup: number;
  /**
   * With `pick`: the same B sequences chained as generate() runs them (each keeps one forwardPickNext queued, so a
   * step launches before the last one's picks are delivered: scheduler.ts "Overlapped steps"). msPerStep is the median
   * interval between two step completions; overlapped the share of those steps launched ahead of the answers.
   */
  chained: { steps: number; msPerStep: number; tokPerS: number; overlapped: number; gapMs: number | null } | null;
}

export interface BatchAxis {
  context: number;
  sequences: number;
  /** the max(batchSizes) prompts of `context` tokens prefilled together (each batch size prefills its own) */
  prefill: { tokens: number; ms: number; tokPerS: number };
  points: BatchPoint[];
}

export interface SweepOptions {
  dir: string;
  device: 'cpu' | 'cuda';
  dtype: 'fp32' | 'bf16';
  mode: string;
  threads: number;
  contexts: number[];
  decodeSteps: number;
  /** decode against batch size (empty: skipped) */
  batchSizes: number[];
  /** prompt length of each batched sequence */
  batchContext: number;
  batchSteps: number;
  /**
   * Decode steps pick the greedy id inside the backend (Sequence.forwardPick, as generate() does when greedy) instead of
   * returning vocab_size logits per sequence: what a greedy user gets, and what HF's generate() times. Default false.
   */
  pick?: boolean;
  /**
   * With `pick`: every decode step DRAWS its id inside the backend with these warpers (doSample, u from a seeded Rng):
   * what a sampling user gets. On CUDA the draw runs on the host (cpu/sample.cc) or, with QWEN_SAMPLE_FX=1, on the
   * device (cuda/sample_fx.cu); this times the difference.
   */
  sample?: { temperature: number; topK: number; topP: number };
  peakGflops: number | null;
  log: (s: string) => void;
}

/**
 * `n` picks of `seq` as generate() makes them: the first feeds `ids`, each later one is queued one step ahead
 * (forwardPickNext) before the pick it follows is taken; `take` sees every pick in order (e.g. sampler.accept), and
 * each request is made after the picks before the pending one were taken.
 */
export async function chainPicks(
  seq: Sequence, ids: number[], n: number, request: () => NativePickRequest, take?: (p: PickResult) => void,
): Promise<void> {
  let pending: Promise<PickResult> | null = seq.forwardPick(ids, request());
  let queued: Promise<PickResult> | null = n > 1 ? seq.forwardPickNext(request()) : null;
  for (let k = 0; pending; k++) {
    queued?.catch(() => undefined); // fails with `pending` when that fails: thrown there
    const p = await pending;
    take?.(p);
    pending = queued;
    queued = k + 2 < n ? seq.forwardPickNext(request()) : null;
  }
}

/** batchSteps + 1 more steps of the B sequences, each keeping one pick queued ahead (forwardPickNext). */
async function chainedSteps(
  model: Model, group: Sequence[], o: SweepOptions, greedy: NativePickRequest, rng: Rng,
): Promise<BatchPoint['chained']> {
  const B = group.length;
  const done: Array<{ t: number; overlapped: boolean; gapMs: number | null }> = [];
  const off = model.onStep((s) => {
    if (s.sequences === B && s.prefillTokens === 0) done.push({ t: nowMs(), overlapped: s.overlapped, gapMs: s.gapMs });
  });
  try {
    await Promise.all(group.map((s, j) =>
      chainPicks(s, [(o.batchContext * 17 + j) % 151643], o.batchSteps + 1, () => stepPick(greedy, o, rng))));
  } finally {
    off();
  }
  const gaps = done.slice(1).map((d, i) => d.t - done[i].t);
  if (gaps.length === 0) return null;
  const ms = median(gaps);
  return {
    steps: gaps.length, msPerStep: ms, tokPerS: (B / ms) * 1e3, overlapped: done.slice(1).filter((d) => d.overlapped).length / gaps.length,
    gapMs: medianPresent(done.slice(1).map((d) => d.gapMs)),
  };
}

/** The decode steps' pick request: `greedy`, or a sampled draw with the next u of `rng` (o.sample). */
function stepPick(greedy: NativePickRequest, o: SweepOptions, rng: Rng): NativePickRequest {
  return o.sample ? { ...greedy, doSample: true, ...o.sample, u: rng.next() } : greedy;
}

export function promptIds(n: number): number[] {
  return Array.from({ length: n }, (_, i) => (i * 7919 + 13) % 151643); // as lib/bench/e2e.ts
}

function argmax(logits: Float32Array): number {
  let best = 0;
  for (let v = 1; v < 151643; v++) if (logits[v] > logits[best]) best = v;
  return best;
}

/** The FLOPs of one decoded token at context `ctx`: every linear (lm_head once) plus attention over ctx keys. */
export function decodeFlops(model: Model, ctx: number): number {
  const c = model.config;
  const H = c.hidden_size, F = ffnWidth(c), L = c.num_hidden_layers;
  return 2 * L * (3 * H * H + H * H + 3 * F * H) + 4 * ctx * H * L + 2 * H * c.vocab_size;
}

/** The FLOPs of a prefill of T tokens, as lib/bench/e2e.ts counts them. */
export function prefillFlops(model: Model, T: number): number {
  const c = model.config;
  const H = c.hidden_size, F = ffnWidth(c), L = c.num_hidden_layers;
  return 2 * T * L * (3 * H * H + H * H + 3 * F * H) + 2 * T * T * H * L + 2 * H * c.vocab_size;
}

function qwenEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (k.startsWith('QWEN_') && v !== undefined) env[k] = v;
  return env;
}

export async function runSweep(o: SweepOptions): Promise<E2eRun> {
  const t0 = nowMs();
  const model = await loadModel(o.dir, { device: o.device, dtype: o.dtype, threads: o.threads });
  const loadMs = nowMs() - t0;
  try {
    const c = model.config;
    const H = c.hidden_size, L = c.num_hidden_layers;
    const streamed = model.weightBytes.total - model.weightBytes.embedding;
    const kvBytes = o.device === 'cpu' ? 4 : 2; // CPU KV cache fp32; CUDA keeps the activation dtype (bf16)
    // Warm-up: the first forward pages the mmapped weights in and makes the lazy allocations.
    const warm = model.createSequence();
    await warm.forward(promptIds(8));
    warm.dispose();

    const readGBs = o.device === 'cpu' ? Math.max(addon().readBandwidth(1024, o.threads), addon().readBandwidth(1024, o.threads)) : null;
    if (readGBs !== null) o.log(`  [${o.mode}] read bandwidth before the sweep: ${readGBs.toFixed(1)} GB/s`);

    const points: E2ePoint[] = [];
    for (const ctx of o.contexts) {
      const seq = model.createSequence();
      try {
        let t = nowMs();
        let logits = await seq.forward(promptIds(ctx));
        const pms = nowMs() - t;
        const flops = prefillFlops(model, ctx);
        const samples: number[] = [];
        const rng = new Rng(ctx);
        const greedy = greedyPickRequest(model);
        let next = argmax(logits);
        for (let i = 0; i <= o.decodeSteps; i++) {
          const spec = stepPick(greedy, o, rng);
          t = nowMs();
          if (o.pick) next = (await seq.forwardPick([next], spec)).id;
          else logits = await seq.forward([next]);
          if (i > 0) samples.push(nowMs() - t); // step 0 is untimed (it may grow the KV cache)
          if (!o.pick) next = argmax(logits);
        }
        const dms = median(samples);
        const bytes = streamed + L * 2 * (ctx + 1 + o.decodeSteps / 2) * H * kvBytes;
        const p: E2ePoint = {
          context: ctx,
          prefill: {
            tokens: ctx, ms: pms, tokPerS: (ctx / pms) * 1e3, gflops: flops / pms / 1e6,
            // T <= 8 runs the gemv path (weights streamed once for all tokens): memory-bound, no compute %
            ofPeak: ctx > 8 && o.peakGflops ? flops / pms / 1e6 / o.peakGflops : null,
          },
          decode: {
            steps: samples.length, msPerToken: dms, tokPerS: 1e3 / dms, samples, bytesPerToken: bytes, gbs: bytes / dms / 1e6,
            ofReadBandwidth: readGBs ? bytes / dms / 1e6 / readGBs : null,
          },
        };
        points.push(p);
        o.log(`  [${o.mode}] ctx ${String(ctx).padStart(4)}: prefill ${pms.toFixed(0)} ms = ${p.prefill.tokPerS.toFixed(1)} tok/s` +
          ` (${p.prefill.gflops.toFixed(0)} GFLOP/s); decode ${dms.toFixed(1)} ms/token = ${p.decode.tokPerS.toFixed(2)} tok/s,` +
          ` ${p.decode.gbs.toFixed(1)} GB/s${p.decode.ofReadBandwidth ? ` (${(p.decode.ofReadBandwidth * 100).toFixed(0)} %)` : ''}`);
      } finally {
        seq.dispose();
      }
    }

    const batch = o.batchSizes.length
      ? await batchAxis(model, o, { streamed, kvBytes, readGBs })
      : null;
    return {
      mode: o.mode, device: o.device, dtype: o.dtype, loadMs, readGBs, peakGflops: o.peakGflops, kvBytesPerElem: kvBytes,
      switches: { ...model.switches }, env: qwenEnv(),
      model: { dir: model.dir, weightBytes: model.weightBytes.total, streamedBytesPerToken: streamed, layers: L, hidden: H, ffn: ffnWidth(c), vocab: c.vocab_size },
      points, batch,
    };
  } finally {
    await model.dispose();
  }
}

async function batchAxis(
  model: Model, o: SweepOptions, k: { streamed: number; kvBytes: number; readGBs: number | null },
): Promise<BatchAxis> {
  const c = model.config;
  const H = c.hidden_size, L = c.num_hidden_layers;
  const sizes = [...new Set(o.batchSizes)].sort((a, b) => a - b);
  const n = sizes[sizes.length - 1];
  const rng = new Rng(n);
  const greedy = greedyPickRequest(model);
  let prefill = { tokens: 0, ms: 0, tokPerS: 0 };
  const points: BatchPoint[] = [];
  // Each batch size gets fresh sequences prefilled to batchContext, so every size decodes over the same contexts
  // whatever sizes ran before it: runs with different batch lists (the GPU check's A/B sweeps) stay comparable.
  for (const B of sizes) {
    const group = Array.from({ length: B }, () => model.createSequence());
    try {
      let t = nowMs();
      await Promise.all(group.map((s, i) => s.forward(clientPrompt(o.batchContext, i))));
      const pms = nowMs() - t;
      if (B === n) {
        prefill = { tokens: n * o.batchContext, ms: pms, tokPerS: ((n * o.batchContext) / pms) * 1e3 };
        o.log(`  [${o.mode}] batch: ${n} prompts of ${o.batchContext} tokens prefilled together in ${(pms / 1e3).toFixed(1)} s = ` +
          `${prefill.tokPerS.toFixed(1)} tok/s`);
      }
      const steps: StepStats[] = [];
      const off = model.onStep((s) => steps.push(s));
      const samples: number[] = [];
      let ctxSum = 0;
      try {
        for (let i = 0; i <= o.batchSteps; i++) {
          if (i > 0) ctxSum += group.reduce((m, s) => m + s.length, 0) / B;
          const specs = group.map(() => stepPick(greedy, o, rng));
          t = nowMs();
          const id = (j: number) => (o.batchContext * 31 + i * 7 + j) % 151643;
          if (o.pick) await Promise.all(group.map((s, j) => s.forwardPick([id(j)], specs[j])));
          else await Promise.all(group.map((s, j) => s.forward([id(j)])));
          if (i > 0) samples.push(nowMs() - t); // step 0 is untimed (it may grow the KV cache)
        }
      } finally {
        off();
      }
      const chained = o.pick ? await chainedSteps(model, group, o, greedy, rng) : null;
      const timed = steps.slice(-o.batchSteps);
      const dms = median(samples);
      const ctx = ctxSum / o.batchSteps;
      const bytes = k.streamed + B * L * 2 * (ctx + 1) * H * k.kvBytes;
      const flops = B * decodeFlops(model, ctx);
      const tokPerS = (B / dms) * 1e3;
      const p: BatchPoint = {
        batchSize: B, steps: samples.length, msPerStep: dms, tokPerS, perSequenceTokPerS: 1e3 / dms,
        engineMsPerStep: median(timed.map((s) => s.seconds * 1e3)),
        gapMs: medianPresent(timed.map((s) => s.gapMs)),
        meanSequencesPerStep: steps.length ? steps.reduce((m, s) => m + s.sequences, 0) / steps.length : 0,
        context: ctx, samples, bytesPerStep: bytes, gbs: bytes / dms / 1e6, ofReadBandwidth: k.readGBs ? bytes / dms / 1e6 / k.readGBs : null,
        gflops: flops / dms / 1e6, ofPeak: o.peakGflops ? flops / dms / 1e6 / o.peakGflops : null,
        speedup: points.length ? tokPerS / points[0].tokPerS : 1,
        chained,
      };
      points.push(p);
      o.log(`  [${o.mode}] batch ${String(B).padStart(2)} at context ~${ctx.toFixed(0)}: ${dms.toFixed(1)} ms/step ` +
        `(engine ${p.engineMsPerStep.toFixed(1)}, launch gap ${p.gapMs?.toFixed(2) ?? '—'}, ${p.meanSequencesPerStep.toFixed(1)} seq/step) = ${tokPerS.toFixed(1)} tok/s aggregate ` +
        `(x${p.speedup.toFixed(2)} vs batch ${points[0].batchSize}), ${p.gflops.toFixed(0)} GFLOP/s` +
        `${p.ofPeak !== null ? ` (${(p.ofPeak * 100).toFixed(0)} % peak)` : ''}, ${p.gbs.toFixed(1)} GB/s` +
        `${p.ofReadBandwidth !== null ? ` (${(p.ofReadBandwidth * 100).toFixed(0)} % BW)` : ''}` +
        `${chained ? `; chained ${chained.msPerStep.toFixed(1)} ms/step = ${chained.tokPerS.toFixed(1)} tok/s (${(chained.overlapped * 100).toFixed(0)} % overlapped, launch gap ${chained.gapMs?.toFixed(2) ?? '—'} ms)` : ''}`);
    } finally {
      for (const s of group) s.dispose();
    }
  }
  return { context: o.batchContext, sequences: n, prefill, points };
}
