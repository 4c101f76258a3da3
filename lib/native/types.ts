/** Exact TypeScript shape of the addon's exports (cpp/addon). lib/native/binding.ts is the only loader. */

export const DTYPE_CODES = { F32: 0, F16: 1, BF16: 2 } as const;

export interface NativeConfig {
  hidden: number;
  nLayers: number;
  nHeads: number;
  headDim: number;
  ffn: number;
  vocab: number;
  seqLength: number;
  rotaryDims: number;
  eps: number;
  ropeBase: number;
  dynamicNtk: boolean;
  logn: boolean;
}

export interface NativeBackendOptions {
  device: 'cpu' | 'cuda';
  dtype: 'auto' | 'bf16' | 'fp16' | 'fp32';
  threads?: number;
  cpuIsa?: '' | 'scalar' | 'avx2' | 'avx512';
  /** Backend switches for this backend only, over the environment (LoadOptions.switches). */
  switches?: Partial<Record<string, '0' | '1'>>;
}

export interface NativeTensorDesc {
  name: string;
  file: number;
  offset: number;
  nbytes: number;
  dtype: number;
  shape: number[];
}

export interface NativeLoadRequest {
  config: NativeConfig;
  backend: NativeBackendOptions;
  files: string[];
  tensors: NativeTensorDesc[];
  /** KV pool cap in blocks of `blockTokens` (32) positions; storage is made on first use. */
  kvBlocks: number;
}

export interface NativeSequence {
  readonly length: number;
  readonly ntkAlpha: number;
  /** KV blocks held. */
  readonly kvBlocks: number;
  /** Preemption: returns every KV block and empties the cache; the NTK alpha stays. Only between steps. */
  releaseKv(): void;
  dispose(): void;
}

/**
 * The pick of the next id inside the backend (cpp/core/backend.h PickSpec): the penalties exactly as lib/sampling
 * applies them, then either the argmax over ids < vocabLimit (ties -> lowest id; NaN never wins) and, when
 * topLogprobs is given, logprobs of the softmax at temperature 1 of the penalized logits; or, with doSample, the
 * sampler's warpers (temperature, topK, topP) and its draw with the uniform `u`, logprobs being those of the kept,
 * tempered distribution (lib/sampling/pick.ts). Sampler.pickRequest() builds it.
 */
export interface NativePickRequest {
  repetitionPenalty: number; // HF's, over every id in `ids`; 1 = off
  presencePenalty: number; // OpenAI's, over the ids with counts > 0; 0 = off
  frequencyPenalty: number; // OpenAI's: times the count; 0 = off
  /** DISTINCT ids of the sequence (prompt + generated), each in [0, vocab). */
  ids: Int32Array;
  /** Per id: how often it was generated (0 = a prompt-only id: only the repetition penalty applies). */
  counts: Int32Array;
  /** Ids >= this (the lm_head padding rows) are never picked. */
  vocabLimit: number;
  /** Absent: no logprobs; 0: the chosen id's logprob; 1..20: also that many top alternatives. */
  topLogprobs?: number;
  /** Absent or false: greedy. true: sample with the four fields below (all required then). */
  doSample?: boolean;
  temperature?: number; // > 0 (finite)
  topK?: number; // integer >= 0; 0 = off
  topP?: number; // (0, 1]; 1 = off
  /** The draw's uniform number in [0, 1): the sampler's Rng.next() for this step. */
  u?: number;
}

export interface NativePick {
  /** The picked id; -1 when the row had no usable logit (all NaN / -Infinity). */
  id: number;
  logprob?: number;
  /** (logprob desc, id asc); only ids of non-zero fp32 probability, so possibly fewer than asked. */
  top?: Array<{ id: number; logprob: number }>;
}

/**
 * A batched step as the addon takes it (cpp/addon/model_wrap.cc Step): typed arrays, not an object per item, so the
 * main thread does not pay N-API property reads per sequence. lib/native/stepPack.ts packStep() makes it from
 * NativeStepItems; the addon checks every length and range.
 */
export interface NativeStepBatch {
  seqs: NativeSequence[];
  /** [items][4]: T, logits (0 | 1 | 2), promptLength, the pick's penalty id count (-1: no pick) */
  items: Int32Array;
  /** the items' ids, concatenated */
  ids: Int32Array;
  /** [picks][11], in item order: PICK_FIELDS of stepPack.ts (cpp/addon/convert.h PickField) */
  picks: Float64Array;
  /** the picks' penalty entries, concatenated: each pick's list, or (list mode 'add') the entries to add to the list
   *  its sequence keeps */
  penaltyIds: Int32Array;
  penaltyCounts: Int32Array;
}

/** What a step resolves to: the logits rows of the items without a pick, item after item ([rows][vocab]), and per
 *  item with a pick (item order) its id (-1: no usable logit), logprob and top list; stepPack.ts unpackPick(). */
export interface NativeStepResult {
  logits: Float32Array;
  ids: Int32Array;
  logprobs: Float64Array;
  nTop: Int32Array;
  /** [picks][20] (kMaxPickTop), the first nTop of each row used */
  topIds: Int32Array;
  topLogprobs: Float64Array;
}

export interface NativeModel {
  load(req: NativeLoadRequest, onProgress?: (fraction: number) => void): Promise<void>;
  cancelLoad(): void;
  /** promptLength > 0 freezes the NTK alpha now, as for a prefill of that many tokens. */
  createSequence(promptLength?: number): NativeSequence;
  /** One batched step; resolves to the logits rows asked for and the picks. Rejects with a message starting
   *  "E_KV_FULL:" when the KV pool lacks blocks (nothing changed). */
  step(batch: NativeStepBatch): Promise<NativeStepResult>;
  /** madeBlocks: blocks given storage so far (kept for reuse); storageBytes: the memory the pool holds for them
   *  (CUDA allocates slabs of several blocks, so it can exceed madeBlocks' worth). */
  kvStats(): { blockTokens: number; maxBlocks: number; usedBlocks: number; madeBlocks: number; storageBytes: number };
  /** The switches the backend runs with (BackendOptions::switch_on names). */
  switches(): Record<string, boolean>;
  dispose(): void;
}

export interface NativeOps {
  embedding(wte: Uint8Array, dtype: number, V: number, H: number, ids: Int32Array): Float32Array;
  rmsnorm(x: Float32Array, T: number, H: number, g: Uint8Array, dtype: number, eps: number): Float32Array;
  linear(
    x: Float32Array, T: number, W: Uint8Array, dtype: number, N: number, K: number,
    bias: Uint8Array | null, biasDtype: number,
  ): Float32Array;
  timeLinear(
    x: Float32Array, T: number, W: Uint8Array, dtype: number, N: number, K: number,
    bias: null, biasDtype: number, reps: number,
  ): number;
  /** slices: [T, pos0] per sequence (rows consecutive); invFreq: [slices][rotDims / 2]. */
  rope(
    qkv: Float32Array, slices: Int32Array, nHeads: number, headDim: number, rotDims: number,
    invFreq: Float32Array, lognBase: number,
  ): Float32Array;
  /** slices: [T, P] per sequence; past: each sequence's P cached rows of k | v ([sum P][2H]). */
  attention(qkv: Float32Array, slices: Int32Array, past: Float32Array, nHeads: number, headDim: number): Float32Array;
  swiglu(a: Float32Array, g: Float32Array, T: number, F: number): Float32Array;
  add(h: Float32Array, x: Float32Array, T: number, H: number): Float32Array;
  /** Fused residual add + RMSNorm: h + x and rmsnorm(h + x) * g. */
  addRmsnorm(h: Float32Array, x: Float32Array, T: number, H: number, g: Uint8Array, dtype: number, eps: number): { h: Float32Array; y: Float32Array };
  /** Fused MLP input half: w1(x) * silu(w2(x)), w1 and w2 [F,K] of one dtype. */
  mlpSwiglu(x: Float32Array, T: number, w1: Uint8Array, w2: Uint8Array, dtype: number, F: number, K: number): Float32Array;
  /** The folded layer's ops (backend.h; QWEN_FOLD_NORM): rmsnorm(h; g) . W^T (+ b) for h [T,K], W [N,K], g [K]. */
  normLinear(
    h: Float32Array, T: number, g: Uint8Array, gDtype: number, eps: number, W: Uint8Array, dtype: number, N: number,
    K: number, bias: Uint8Array | null, biasDtype: number,
  ): Float32Array;
  /** h [T,N] + x [T,K] . W^T, W [N,K]. */
  linearAdd(x: Float32Array, T: number, W: Uint8Array, dtype: number, N: number, K: number, h: Float32Array): Float32Array;
  /** mlpSwiglu of rmsnorm(h; g) for h [T,K]. */
  normMlpSwiglu(
    h: Float32Array, T: number, g: Uint8Array, gDtype: number, eps: number, w1: Uint8Array, w2: Uint8Array,
    dtype: number, F: number, K: number,
  ): Float32Array;
  finalLogits(
    h: Float32Array, T: number, H: number, rows: Int32Array, lnf: Uint8Array, lnfDtype: number,
    head: Uint8Array, headDtype: number, V: number, eps: number,
  ): Float32Array;
  /** finalLogits' rows picked inside the backend: one request and one result per row. */
  finalPick(
    h: Float32Array, T: number, H: number, rows: Int32Array, lnf: Uint8Array, lnfDtype: number,
    head: Uint8Array, headDtype: number, V: number, eps: number, picks: NativePickRequest[],
  ): NativePick[];
  /** The backend's pick on given logits [R][V] (the same code as finalPick after the lm_head). */
  pickLogits(logits: Float32Array, R: number, V: number, picks: NativePickRequest[]): NativePick[];
}

export interface CpuInfo {
  isa: 'scalar' | 'avx2' | 'avx512';
  features: Record<'avx2' | 'fma' | 'f16c' | 'avx512f' | 'avx512bw' | 'avx512vl' | 'avx512bf16' | 'amxBf16', boolean>;
  threads: number;
}

export interface CudaInfo {
  compiled: boolean;
  available: boolean;
  deviceCount: number;
  runtimeVersion: number;
  driverVersion: number;
  name: string;
  computeCapability: string | null; // null without a device
  totalMemory: number;
  freeMemory: number;
  error: string;
  cublas: boolean;
  cublasError: string;
}

export interface Addon {
  NativeModel: new () => NativeModel;
  NativeOps: new (backend: NativeBackendOptions) => NativeOps;
  cpuInfo(): CpuInfo;
  cudaInfo(): CudaInfo;
  ntkAlpha(L: number, S: number): number;
  /** Test only: the host fixed-point sampled pick (cpp/core/sample_fx.h); z / total / gap / band in 2^-43 units. */
  sampleFx(
    logits: Float32Array, pick: NativePickRequest,
  ): NativePick & { route: number; z: number; total: number; gap: number; band: number };
  /** DRAM read bandwidth in GB/s streaming `megabytes` with `threads` threads (benchmarks only; synchronous). */
  readBandwidth(megabytes: number, threads: number): number;
  maxPositions: number;
}
