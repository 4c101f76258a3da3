/**
 * End-to-end CPU/GPU benchmark: prefill tok/s and GFLOP/s, decode tok/s and GB/s of weights streamed, next to the
 * DRAM read bandwidth measured in the same run. Figures are printed, never asserted.
 */
import { addon } from '../native/binding';
import { Model } from '../model/model';
import { median } from './timing';
import { ffnWidth } from '../model/config';

export interface E2eResult {
  machine: { cpuIsa: string; threads: number; readGBs: number | null };
  /** switches: the backend switches the run had (Model.switches), so a figure says which paths made it */
  model: { dir: string; device: string; weightBytes: number; bytesPerToken: number; switches: Record<string, boolean> };
  /** ms: the median of `samples` (one timed prefill per repeat, each on a fresh sequence) */
  prefill: { tokens: number; ms: number; tokPerS: number; gflops: number; samples: number[] };
  decode: { steps: number; msPerToken: number; tokPerS: number; gbs: number; ofReadBandwidth: number | null };
  /**
   * CUDA only, at the end of the run (cudaMemGetInfo): device memory in use (total - free: the CUDA context and
   * anything else on the card included), split into the weights (held in the activation type), the KV pool's memory
   * (whole slabs) and the rest (context, cuBLAS, workspaces, staging). Issue #4's goal: rest <= 1 GiB.
   */
  gpuMemory: { inUseGB: number; weightsGB: number; kvGB: number; otherGB: number } | null;
}

/** forwardPick's request for plain greedy decoding: no penalties; ids past the tokenizer's vocabulary never picked. */
export function greedyPickRequest(model: Model) {
  return {
    repetitionPenalty: 1, presencePenalty: 0, frequencyPenalty: 0, ids: new Int32Array(0), counts: new Int32Array(0),
    vocabLimit: model.tokenizer.vocabSize,
  };
}

/** Bytes the decoder reads per token: every weight except the embedding table, of which it gathers one row. */
function streamedBytes(model: Model): number {
  return model.weightBytes.total - model.weightBytes.embedding;
}

export async function benchE2e(
  model: Model,
  opts: {
    prompt: number; decode: number; threads: number; measureBandwidth: boolean; log?: (s: string) => void;
    /** timed prefills (default 1), each of the whole prompt on a fresh sequence; the median is reported. A single
     *  50 ms prefill on a GPU is one sample of clocks, allocator and queue state: several tell noise from a gap. */
    prefillRepeats?: number;
    /** bytes per activation on the device (bf16/fp16 2, fp32 4): weights and KV blocks are held in this type */
    actBytes?: number;
  },
): Promise<E2eResult> {
  const log = opts.log ?? (() => undefined);
  const c = model.config;
  const H = c.hidden_size, F = ffnWidth(c), L = c.num_hidden_layers;
  // Best of two probes: this VM's bandwidth varies by +-15 % between runs, and a low probe would flatter the ratio.
  const readGBs =
    opts.measureBandwidth && model.device === 'cpu'
      ? Math.max(addon().readBandwidth(1024, opts.threads), addon().readBandwidth(1024, opts.threads))
      : null;
  if (readGBs !== null) log(`read bandwidth (${opts.threads} threads, 1 GiB, best of 2): ${readGBs.toFixed(1)} GB/s`);

  const prompt = Array.from({ length: opts.prompt }, (_, i) => (i * 7919 + 13) % 151643);
  // Warm-up with the whole prompt, then a few decode steps, so the timed forwards do not pay for lazy allocations (KV
  // blocks, workspaces sized by the longest step, cuBLAS's first calls), which the disposed sequence leaves for reuse.
  const warm = model.createSequence();
  await warm.forward(prompt);
  for (let i = 0; i < 3; i++) await warm.forward([prompt[i]]);
  warm.dispose();

  const repeats = opts.prefillRepeats ?? 1;
  const samples: number[] = [];
  let seq = model.createSequence();
  let logits!: Float32Array;
  let t0 = process.hrtime.bigint();
  for (let r = 0; r < repeats; r++) {
    if (r > 0) {
      seq.dispose(); // its KV blocks go back to the pool for the next one; the last one decodes below
      seq = model.createSequence();
    }
    t0 = process.hrtime.bigint();
    logits = await seq.forward(prompt);
    samples.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  const prefillMs = median(samples);
  const T = opts.prompt;
  const flops = 2 * T * L * (3 * H * H + H * H + 3 * F * H) + 2 * T * T * H * L + 2 * H * c.vocab_size;
  log(`prefill ${T} tokens: ${prefillMs.toFixed(repeats > 1 ? 1 : 0)} ms, ${(T / prefillMs * 1e3).toFixed(1)} tok/s, ${(flops / prefillMs / 1e6).toFixed(1)} GFLOP/s` +
    (repeats > 1 ? ` (median of ${repeats}: ${samples.map((x) => x.toFixed(1)).join(', ')} ms)` : ''));

  // Greedy decode with the argmax picked inside the backend (Sequence.forwardPick, as generate() does when greedy; no
  // penalties here), so a step returns one id, not vocab_size logits.
  const vocab = model.tokenizer.vocabSize; // ids past it are lm_head padding, never produced
  let best = 0;
  for (let v = 1; v < vocab; v++) if (logits[v] > logits[best]) best = v;
  const pick = greedyPickRequest(model);
  t0 = process.hrtime.bigint();
  for (let i = 0; i < opts.decode; i++) best = (await seq.forwardPick([best], pick)).id;
  const decodeMs = Number(process.hrtime.bigint() - t0) / 1e6 / opts.decode;
  seq.dispose();
  const bytes = streamedBytes(model);
  const gbs = bytes / decodeMs / 1e6;
  log(
    `decode: ${decodeMs.toFixed(1)} ms/token, ${(1e3 / decodeMs).toFixed(2)} tok/s, ${gbs.toFixed(1)} GB/s of weights` +
      (readGBs ? ` (${((gbs / readGBs) * 100).toFixed(0)} % of the measured read bandwidth)` : ''),
  );
  let gpuMemory: E2eResult['gpuMemory'] = null;
  if (model.device === 'cuda') {
    const info = addon().cudaInfo();
    const inUse = info.totalMemory - info.freeMemory;
    const act = opts.actBytes ?? 2;
    const stored = model.weightBytes.dtypes.length === 1 && model.weightBytes.dtypes[0] === 'F32' ? 4 : 2;
    const weights = (model.weightBytes.total / stored) * act; // uploaded in the activation type
    const kv = model.stats().kvBytesAllocated;
    gpuMemory = { inUseGB: inUse / 1e9, weightsGB: weights / 1e9, kvGB: kv / 1e9, otherGB: (inUse - weights - kv) / 1e9 };
    log(`GPU memory in use: ${gpuMemory.inUseGB.toFixed(2)} GB = weights ${gpuMemory.weightsGB.toFixed(2)} + KV pool ${gpuMemory.kvGB.toFixed(2)} + other ${gpuMemory.otherGB.toFixed(2)} GB (context included)`);
  }
  return {
    gpuMemory,
    machine: { cpuIsa: addon().cpuInfo().isa, threads: opts.threads, readGBs },
    model: {
      dir: model.dir, device: model.device, weightBytes: model.weightBytes.total, bytesPerToken: bytes, switches: { ...model.switches },
    },
    prefill: { tokens: T, ms: prefillMs, tokPerS: (T / prefillMs) * 1e3, gflops: flops / prefillMs / 1e6, samples },
    decode: { steps: opts.decode, msPerToken: decodeMs, tokPerS: 1e3 / decodeMs, gbs, ofReadBandwidth: readGBs ? gbs / readGBs : null },
  };
}
