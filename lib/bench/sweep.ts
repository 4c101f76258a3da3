/**
 * End-to-end part of the microbenchmark suite (lib/bench/suite.ts): prefill tok/s against prompt length and decode
 * tok/s against context length on one loaded model, plus "batch" = N independent sequences run one after another
 * through lib/bench/e2e.ts (the engine steps one sequence at a time; there is no batched forward yet, so the
 * aggregate rate of N sequences is the single-sequence rate, and the suite says so).
 *
 * Decode: after a fresh prefill of c tokens, one untimed step, then `steps` timed steps (each a forward of 1 token,
 * greedy argmax outside the timed region); the median step is reported. Decode GB/s counts the weights streamed per
 * token (all but the embedding table) plus the KV cache read by attention at that context.
 */
import { addon } from '../native/binding';
import { loadModel, Model } from '../model/model';
import { ffnWidth } from '../model/config';
import { benchE2e, E2eResult } from './e2e';
import { median, nowMs } from './timing';

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
  points: E2ePoint[];
  batch: {
    batchSize: 1; sequences: number; prompt: number; decode: number; note: string;
    aggregatePrefillTokPerS: number; aggregateDecodeTokPerS: number; perSequence: E2eResult[];
  } | null;
}

export interface SweepOptions {
  dir: string;
  device: 'cpu' | 'cuda';
  dtype: 'fp32' | 'bf16';
  mode: string;
  threads: number;
  contexts: number[];
  decodeSteps: number;
  batchSequences: number;
  batchPrompt: number;
  batchDecode: number;
  peakGflops: number | null;
  log: (s: string) => void;
}

export function promptIds(n: number): number[] {
  return Array.from({ length: n }, (_, i) => (i * 7919 + 13) % 151643); // as lib/bench/e2e.ts
}

function argmax(logits: Float32Array): number {
  let best = 0;
  for (let v = 1; v < 151643; v++) if (logits[v] > logits[best]) best = v;
  return best;
}

/** The FLOPs of a prefill of T tokens, as lib/bench/e2e.ts counts them. */
export function prefillFlops(model: Model, T: number): number {
  const c = model.config;
  const H = c.hidden_size, F = ffnWidth(c), L = c.num_hidden_layers;
  return 2 * T * L * (3 * H * H + H * H + 3 * F * H) + 2 * T * T * H * L + 2 * H * c.vocab_size;
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
        for (let i = 0; i <= o.decodeSteps; i++) {
          const next = argmax(logits);
          t = nowMs();
          logits = await seq.forward([next]);
          if (i > 0) samples.push(nowMs() - t); // step 0 is untimed (it may grow the KV cache)
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

    let batch: E2eRun['batch'] = null;
    if (o.batchSequences > 0) {
      const per: E2eResult[] = [];
      for (let i = 0; i < o.batchSequences; i++) {
        per.push(await benchE2e(model, { prompt: o.batchPrompt, decode: o.batchDecode, threads: o.threads, measureBandwidth: false }));
      }
      const pTok = per.reduce((n, r) => n + r.prefill.tokens, 0), pMs = per.reduce((n, r) => n + r.prefill.ms, 0);
      const dTok = per.reduce((n, r) => n + r.decode.steps, 0), dMs = per.reduce((n, r) => n + r.decode.msPerToken * r.decode.steps, 0);
      batch = {
        batchSize: 1, sequences: o.batchSequences, prompt: o.batchPrompt, decode: o.batchDecode, perSequence: per,
        aggregatePrefillTokPerS: (pTok / pMs) * 1e3, aggregateDecodeTokPerS: (dTok / dMs) * 1e3,
        note: 'batch size 1 only: the engine runs one sequence per forward step, so these N independent sequences ran one after another (lib/bench/e2e.ts each)',
      };
      o.log(`  [${o.mode}] batch 1 x ${o.batchSequences} sequences in turn (prompt ${o.batchPrompt}, decode ${o.batchDecode}): ` +
        `prefill ${batch.aggregatePrefillTokPerS.toFixed(1)} tok/s, decode ${batch.aggregateDecodeTokPerS.toFixed(2)} tok/s aggregate`);
    }
    return {
      mode: o.mode, device: o.device, dtype: o.dtype, loadMs, readGBs, peakGflops: o.peakGflops, kvBytesPerElem: kvBytes,
      model: { dir: model.dir, weightBytes: model.weightBytes.total, streamedBytesPerToken: streamed, layers: L, hidden: H, ffn: ffnWidth(c), vocab: c.vocab_size },
      points, batch,
    };
  } finally {
    await model.dispose();
  }
}
