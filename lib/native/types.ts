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

/** One sequence's part of a batched step (cpp/core/engine.h StepItem). */
export interface NativeStepItem {
  seq: NativeSequence;
  ids: Int32Array;
  /** Logits rows wanted: 0 none, 1 the last new position, 2 every new position. */
  logits: 0 | 1 | 2;
  /** > 0: freeze the NTK alpha as for a prompt of this length (a prompt fed in chunks). */
  promptLength: number;
}

export interface NativeModel {
  load(req: NativeLoadRequest, onProgress?: (fraction: number) => void): Promise<void>;
  cancelLoad(): void;
  /** promptLength > 0 freezes the NTK alpha now, as for a prefill of that many tokens. */
  createSequence(promptLength?: number): NativeSequence;
  /** One batched step; resolves to the rows asked for, item after item ([rows][vocab]). Rejects with a message
   *  starting "E_KV_FULL:" when the KV pool lacks blocks (nothing changed). */
  step(items: NativeStepItem[]): Promise<Float32Array>;
  kvStats(): { blockTokens: number; maxBlocks: number; usedBlocks: number };
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
  finalLogits(
    h: Float32Array, T: number, H: number, rows: Int32Array, lnf: Uint8Array, lnfDtype: number,
    head: Uint8Array, headDtype: number, V: number, eps: number,
  ): Float32Array;
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
  /** DRAM read bandwidth in GB/s streaming `megabytes` with `threads` threads (benchmarks only; synchronous). */
  readBandwidth(megabytes: number, threads: number): number;
  maxPositions: number;
}
