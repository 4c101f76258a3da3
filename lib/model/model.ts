/**
 * Model and Sequence: the public engine API over the native addon. All native work runs off the main thread and
 * resolves Promises; forwards of one model are queued so they never contend for its threads or workspace.
 */
import { QwenError, abortError, badArg } from '../errors';
import { ID_SPAN } from '../sampling/candidates';
import { isSamplerRequest } from '../sampling';
import { addon } from '../native/binding';
import { DTYPE_CODES, NativeConfig, NativeModel, NativePick, NativePickRequest, NativeSequence } from '../native/types';
import type { PickResult, SequenceLike } from '../types';
import { Checkpoint, openCheckpoint } from './checkpoint';
import { QwenConfig, ffnWidth, rotaryDims } from './config';
import { MAX_POSITIONS } from './limits';
import { Tokenizer } from '../tokenizer';
import { ChatMessage } from '../chat/chatml';
import { GenerationOptions, defaults as generationDefaults, fromJSON as generationFromJSON } from '../generation/config';
import { ChatOptions, ChatResult, GenerateOptions, Generation, chatPrompt, promptIds, runChat, startGeneration } from './generation';
import { Scheduler, SchedulerStats, SeqState, StepStats } from './scheduler';
import { KV_BLOCK_TOKENS, ServingOptions, resolveServing } from './serving';

export type Device = 'auto' | 'cpu' | 'cuda';
export type ComputeDtype = 'auto' | 'bf16' | 'fp16' | 'fp32';

export interface LoadOptions {
  /** 'auto' picks CUDA when a usable device exists, else the CPU. */
  device?: Device;
  /**
   * Compute precision. The CPU computes in fp32 over the stored weights ('auto' = 'fp32'); 'bf16' on the CPU rounds
   * matmul inputs to bf16 (the reference's bf16 activations) and uses AVX512-BF16 for prefill where present.
   */
  dtype?: ComputeDtype;
  /** CPU worker threads (default: all cores). */
  threads?: number;
  onProgress?: (fraction: number) => void;
  signal?: AbortSignal;
  /** CPU kernel level, for tests and benchmarks: '' (best), 'avx512', 'avx2', 'scalar'. */
  cpuIsa?: '' | 'scalar' | 'avx2' | 'avx512';
  /** Override config.json's use_dynamic_ntk / use_logn_attn (e.g. to measure their effect on perplexity). */
  dynamicNtk?: boolean;
  logn?: boolean;
  /**
   * Backend switches for this model, '0' or '1', taking precedence over the environment variables of the same names
   * (cuda/README.md "Environment"): e.g. `{ QWEN_FOLD_NORM: '1' }`. For benchmarks and tests of paths that are not
   * the default yet.
   */
  switches?: Partial<Record<BackendSwitch, '0' | '1'>>;
}

/** The switches a backend reads when it is made (BackendOptions::switch_on in cpp/core/backend.h). */
export const BACKEND_SWITCHES = ['QWEN_FOLD_NORM', 'QWEN_SAMPLE_FX', 'QWEN_CUDA_GRAPH', 'QWEN_CUDA_FUSED_ROPE'] as const;
export type BackendSwitch = (typeof BACKEND_SWITCHES)[number];

export type LoadModelOptions = LoadOptions & ServingOptions;

const LOAD_KEYS = new Set([
  'device', 'dtype', 'threads', 'onProgress', 'signal', 'cpuIsa', 'dynamicNtk', 'logn', 'switches',
  'kvCacheTokens', 'maxBatchTokens', 'maxBatchSequences', 'maxQueue', 'overlapSteps',
]);
export { MAX_POSITIONS };

function checkLoadOptions(o: LoadModelOptions): void {
  if (typeof o !== 'object' || o === null) throw badArg('options', 'an object', o);
  for (const k of Object.keys(o)) if (!LOAD_KEYS.has(k)) throw badArg(`options.${k}`, `one of ${[...LOAD_KEYS].join(', ')}`, k);
  if (o.device !== undefined && !['auto', 'cpu', 'cuda'].includes(o.device)) throw badArg('options.device', "'auto', 'cpu' or 'cuda'", o.device);
  if (o.dtype !== undefined && !['auto', 'bf16', 'fp16', 'fp32'].includes(o.dtype)) {
    throw badArg('options.dtype', "'auto', 'bf16', 'fp16' or 'fp32'", o.dtype);
  }
  if (o.threads !== undefined && !(Number.isInteger(o.threads) && o.threads >= 1 && o.threads <= 1024)) {
    throw badArg('options.threads', 'an integer in [1, 1024]', o.threads);
  }
  if (o.onProgress !== undefined && typeof o.onProgress !== 'function') throw badArg('options.onProgress', 'a function', o.onProgress);
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) throw badArg('options.signal', 'an AbortSignal', o.signal);
  for (const k of ['dynamicNtk', 'logn'] as const) {
    if (o[k] !== undefined && typeof o[k] !== 'boolean') throw badArg(`options.${k}`, 'a boolean', o[k]);
  }
  if (o.cpuIsa !== undefined && !['', 'scalar', 'avx2', 'avx512'].includes(o.cpuIsa)) {
    throw badArg('options.cpuIsa', "'', 'scalar', 'avx2' or 'avx512'", o.cpuIsa);
  }
  if (o.switches !== undefined) {
    if (typeof o.switches !== 'object' || o.switches === null || Array.isArray(o.switches)) {
      throw badArg('options.switches', 'an object', o.switches);
    }
    for (const [k, v] of Object.entries(o.switches)) {
      if (!(BACKEND_SWITCHES as readonly string[]).includes(k)) {
        throw badArg(`options.switches.${k}`, `one of ${BACKEND_SWITCHES.join(', ')}`, k);
      }
      if (v !== '0' && v !== '1') throw badArg(`options.switches.${k}`, "'0' or '1'", v);
    }
  }
}

function nativeConfig(c: QwenConfig): NativeConfig {
  return {
    hidden: c.hidden_size,
    nLayers: c.num_hidden_layers,
    nHeads: c.num_attention_heads,
    headDim: c.kv_channels,
    ffn: ffnWidth(c),
    vocab: c.vocab_size,
    seqLength: c.seq_length,
    rotaryDims: rotaryDims(c),
    eps: c.layer_norm_epsilon,
    ropeBase: c.rotary_emb_base,
    dynamicNtk: c.use_dynamic_ntk,
    logn: c.use_logn_attn,
  };
}

function resolveDevice(device: Device): 'cpu' | 'cuda' {
  if (device === 'cpu') return 'cpu';
  const info = addon().cudaInfo();
  if (device === 'cuda') {
    if (!info.available) throw new QwenError('E_BACKEND', `device 'cuda' is not usable: ${info.error || 'no CUDA device'}`);
    return 'cuda';
  }
  return info.available ? 'cuda' : 'cpu';
}

export class Sequence implements SequenceLike {
  private native: NativeSequence | null;
  /** @internal */
  readonly state: SeqState;
  /** @internal */
  constructor(private readonly model: Model, native: NativeSequence, state: SeqState) {
    this.native = native;
    this.state = state;
  }

  /** Tokens held in this sequence's KV cache (0 while preempted, until it is recomputed). */
  get length(): number {
    return this.native ? this.state.history.length + this.state.replay.length : 0;
  }
  /** The dynamic-NTK alpha frozen at this sequence's first forward (1 before it). */
  get ntkAlpha(): number {
    return this.native ? this.native.ntkAlpha : 1;
  }
  get disposed(): boolean {
    return this.native === null;
  }
  /** Whether a forwardPickNext lets the next step start before the pick it follows is answered (the model's
   *  overlapSteps option); generate() queues picks ahead only then. */
  get overlapSteps(): boolean {
    return this.model.overlapSteps;
  }

  /**
   * Append ids; resolves to the logits of the last position (Float32Array of vocab_size). Forwards of concurrent
   * sequences run together in shared steps; an abort before this forward's step starts rejects with E_ABORTED.
   */
  forward(ids: ArrayLike<number>, options?: { signal?: AbortSignal }): Promise<Float32Array> {
    return this.run(ids, false, options?.signal);
  }
  /** Append ids; resolves to the logits of every new position (ids.length x vocab_size, row-major). */
  forwardAll(ids: ArrayLike<number>, options?: { signal?: AbortSignal }): Promise<Float32Array> {
    return this.run(ids, true, options?.signal);
  }

  /**
   * Append ids; resolves to the next id picked inside the backend (penalties, then argmax or the warpers and a draw
   * with pick.u, and the logprobs asked for, as Sampler.sample would on the same logits; sampling/index.ts
   * Sampler.pickRequest builds `pick`). Only the id
   * (and logprobs) cross over, not the vocab_size logits. A last position with no usable logit rejects with
   * E_BACKEND.
   */
  async forwardPick(ids: ArrayLike<number>, pick: NativePickRequest, options?: { signal?: AbortSignal }): Promise<PickResult> {
    if (!this.native) throw new QwenError('E_DISPOSED', 'this Sequence was disposed');
    const arr = this.checked(() => this.model.checkIds(ids, this.state.queuedPositions));
    const req = this.checked(() => this.model.checkPick(pick));
    return pickResult(await this.model.submitPick(this.state, arr, req, options?.signal), req.vocabLimit);
  }

  /**
   * Append the id that this sequence's last forwardPick (or forwardPickNext) picks, then pick the next one with
   * `pick`, whose penalty list must not hold that id yet (it is added as generated once known). Call it while that
   * pick is still pending (or right after it was answered): it joins the step after the pick's, which can then start
   * before the pick reaches your code (overlapped steps: generate() works this way). Rejects with E_BAD_ARG when the
   * last forward of this sequence was not a pick or failed; fails with that pick when it fails or is aborted.
   */
  async forwardPickNext(pick: NativePickRequest, options?: { signal?: AbortSignal }): Promise<PickResult> {
    if (!this.native) throw new QwenError('E_DISPOSED', 'this Sequence was disposed');
    this.checked(() => this.model.checkIds([0], this.state.queuedPositions)); // E_CONTEXT: this one's id
    const req = this.checked(() => this.model.checkPick(pick));
    return pickResult(await this.model.submitPickNext(this.state, req, options?.signal), req.vocabLimit);
  }

  private run(ids: ArrayLike<number>, all: boolean, signal?: AbortSignal): Promise<Float32Array> {
    if (!this.native) return Promise.reject(new QwenError('E_DISPOSED', 'this Sequence was disposed'));
    let arr: Int32Array;
    try {
      arr = this.checked(() => this.model.checkIds(ids, this.state.queuedPositions));
    } catch (e) {
      return Promise.reject(e);
    }
    return this.model.submit(this.state, arr, all, signal);
  }

  /** A check of a forward's arguments: when it throws, the forward is refused, so forwardPickNext has no pick to
   *  follow any more (the scheduler does the same for what it refuses). */
  private checked<T>(check: () => T): T {
    try {
      return check();
    } catch (e) {
      this.state.clearTail();
      throw e;
    }
  }

  /** Frees the KV cache now (after the step in flight, if this sequence is in it). Harmless twice. */
  dispose(): void {
    if (!this.native) return;
    this.native = null;
    this.model.forget(this);
  }
}

export class Model {
  readonly config: QwenConfig;
  readonly dir: string;
  readonly device: 'cpu' | 'cuda';
  /** Raw generation_config.json of the directory (null when absent). */
  readonly generationConfigFile: Record<string, unknown> | null;
  /** Stored weight bytes: all of them, and of the embedding table (gathered, not streamed, per token). */
  readonly weightBytes: { total: number; embedding: number; dtypes: string[] };
  /** The Qwen tokenizer: the directory's qwen.tiktoken, else the bundled identical vocabulary. */
  readonly tokenizer: Tokenizer;
  /** generation_config.json as options (defaults where absent); per-call options override it. */
  readonly generationConfig: Readonly<GenerationOptions>;
  /** Load option overlapSteps (scheduler.ts "Overlapped steps"). */
  readonly overlapSteps: boolean;
  private native: NativeModel | null;
  private readonly scheduler: Scheduler;
  private readonly sequences = new Set<Sequence>();

  /** @internal */
  constructor(ckpt: Checkpoint, device: 'cpu' | 'cuda', native: NativeModel, tokenizer: Tokenizer, serving: Required<Omit<ServingOptions, 'kvCacheTokens'>>) {
    this.tokenizer = tokenizer;
    this.generationConfig = Object.freeze(
      ckpt.generationConfig ? generationFromJSON(ckpt.generationConfig, `${ckpt.dir}/generation_config.json`) : generationDefaults(),
    );
    this.config = ckpt.config;
    this.dir = ckpt.dir;
    this.device = device;
    this.generationConfigFile = ckpt.generationConfig;
    this.weightBytes = {
      total: ckpt.bytes,
      embedding: ckpt.tensors[0].nbytes, // weightTable order: transformer.wte.weight first
      dtypes: [...new Set(ckpt.tensors.map((t) => t.dtype))],
    };
    this.native = native;
    this.overlapSteps = serving.overlapSteps;
    this.scheduler = new Scheduler(native, { ...serving, vocab: ckpt.config.vocab_size });
  }

  get disposed(): boolean {
    return this.native === null;
  }

  /** Sequences of this model not yet disposed (each holds a KV cache). */
  get activeSequences(): number {
    return this.sequences.size;
  }

  /** Positions one sequence may hold: the smaller of Qwen's limit (32767) and the KV cache (options.kvCacheTokens). */
  get contextLimit(): number {
    return Math.min(MAX_POSITIONS, this.scheduler.capacity);
  }

  /** The backend switches this model runs with (options.switches, else the environment, else the defaults). */
  get switches(): Readonly<Partial<Record<BackendSwitch, boolean>>> {
    return Object.freeze(this.live().switches());
  }

  /** Batching and KV-cache figures now: running / waiting sequences, KV blocks, and totals since load. */
  stats(): SchedulerStats {
    this.live();
    return this.scheduler.stats();
  }

  /** Calls fn after every batched step (metrics); returns a function that unsubscribes. */
  onStep(fn: (s: StepStats) => void): () => void {
    if (typeof fn !== 'function') throw badArg('fn', 'a function', fn);
    return this.scheduler.onStep(fn);
  }

  /**
   * A new sequence with its own KV cache. The dynamic-NTK alpha is frozen at its first forward from that forward's
   * length (the reference's prefill); `promptLength` freezes it now instead, for a prompt fed in several chunks.
   */
  createSequence(options: { promptLength?: number } = {}): Sequence {
    const native = this.live();
    const pl = options?.promptLength;
    if (pl !== undefined && !(Number.isInteger(pl) && pl >= 1 && pl <= MAX_POSITIONS)) {
      throw badArg('options.promptLength', `an integer in [1, ${MAX_POSITIONS}]`, pl);
    }
    const ns = native.createSequence(pl ?? 0);
    const s = new Sequence(this, ns, this.scheduler.register(ns));
    this.sequences.add(s);
    return s;
  }

  /** Logits of every position of a fresh sequence `ids` (ids.length x vocab_size, row-major). */
  async logits(ids: ArrayLike<number>): Promise<Float32Array> {
    const seq = this.createSequence();
    try {
      return await seq.forwardAll(ids);
    } finally {
      seq.dispose();
    }
  }

  /**
   * Generate from a prompt (text: encoded with special tokens allowed, as the reference's raw format; or ids).
   * An AsyncIterable of { text, tokens, finishReason? } chunks; `await gen.result()` for the whole result.
   */
  generate(prompt: string | ArrayLike<number>, options?: GenerateOptions): Generation {
    this.live();
    return startGeneration(this, this.tokenizer, this.generationConfig, promptIds(this.tokenizer, prompt), options);
  }

  /** One ChatML turn (query + history, or OpenAI-style messages): { response, history, usage, finishReason }. */
  chat(input: string | ChatMessage[], options?: ChatOptions): Promise<ChatResult> {
    try {
      this.live();
      return runChat(this, this.tokenizer, this.generationConfig, input, options);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Streaming chat: chunks of the reply as they are generated (stop tokens never appear). */
  chatStream(input: string | ChatMessage[], options?: ChatOptions): Generation {
    this.live();
    const p = chatPrompt(this.tokenizer, this.generationConfig, input, options);
    return startGeneration(this, this.tokenizer, this.generationConfig, p.ids, p.call);
  }

  /** Frees the weights and every sequence of this model once the step in flight ends. Harmless twice. */
  async dispose(): Promise<void> {
    const native = this.native;
    if (!native) return;
    this.native = null; // no new work from here on
    const idle = this.scheduler.close(); // the step in flight ends before the weights go
    for (const s of [...this.sequences]) s.dispose(); // pending forwards reject with E_DISPOSED
    await idle;
    native.dispose();
    this.tokenizer.free();
  }

  /** @internal */
  checkIds(ids: ArrayLike<number>, past: number): Int32Array {
    if (ids === null || typeof ids !== 'object' || typeof ids.length !== 'number') throw badArg('ids', 'an array of token ids', ids);
    if (ids.length === 0) throw badArg('ids', 'a non-empty array of token ids', ids);
    const V = this.config.vocab_size;
    const out = new Int32Array(ids.length);
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (!Number.isInteger(id) || id < 0 || id >= V) throw badArg(`ids[${i}]`, `an integer in [0, ${V - 1}]`, id);
      out[i] = id;
    }
    if (past + ids.length > MAX_POSITIONS) {
      throw new QwenError(
        'E_CONTEXT',
        `the sequence would hold ${past + ids.length} positions; Qwen supports at most ${MAX_POSITIONS}`,
      );
    }
    return out;
  }

  /** @internal */
  submit(st: SeqState, ids: Int32Array, all: boolean, signal?: AbortSignal): Promise<Float32Array> {
    if (!this.native) return Promise.reject(new QwenError('E_DISPOSED', 'this Model was disposed'));
    return this.scheduler.submit(st, ids, all, signal);
  }

  /** @internal */
  submitPick(st: SeqState, ids: Int32Array, pick: NativePickRequest, signal?: AbortSignal): Promise<NativePick> {
    if (!this.native) return Promise.reject(new QwenError('E_DISPOSED', 'this Model was disposed'));
    return this.scheduler.submitPick(st, ids, pick, signal);
  }

  /** @internal */
  submitPickNext(st: SeqState, pick: NativePickRequest, signal?: AbortSignal): Promise<NativePick> {
    if (!this.native) return Promise.reject(new QwenError('E_DISPOSED', 'this Model was disposed'));
    return this.scheduler.submitPickNext(st, pick, signal);
  }

  /** @internal The request as the addon takes it: ids and vocabLimit within this model's vocab_size. */
  checkPick(pick: NativePickRequest): NativePickRequest {
    if (pick === null || typeof pick !== 'object') throw badArg('pick', 'a pick request (Sampler.pickRequest())', pick);
    const V = this.config.vocab_size;
    if (!Number.isInteger(pick.vocabLimit) || pick.vocabLimit < 1) throw badArg('pick.vocabLimit', 'an integer >= 1', pick.vocabLimit);
    if (!isInt32Array(pick.ids)) throw badArg('pick.ids', 'an Int32Array of distinct ids', pick.ids);
    if (!isInt32Array(pick.counts) || pick.counts.length !== pick.ids.length) {
      throw badArg('pick.counts', `an Int32Array as long as pick.ids (${pick.ids.length})`, pick.counts);
    }
    const top = pick.topLogprobs;
    if (top !== undefined && !(Number.isInteger(top) && top >= 0 && top <= 20)) {
      throw badArg('pick.topLogprobs', 'absent, or an integer in [0, 20]', top);
    }
    checkSampling(pick);
    // Here, not only in the addon (which checks again): a bad list found there would fail every forward of its step.
    // Sampler.pickRequest()'s own lists are right by construction (~10 ns per id saved, 64 sequences x their ids).
    if (!isSamplerRequest(pick)) checkPenaltyList(pick, V, pick.vocabLimit > V);
    if (pick.vocabLimit <= V) return pick;
    // A tokenizer limit beyond the model's rows: every row is eligible, as the TS sampler's min(length, limit).
    const keep = pick.ids.map((id) => +(id < V));
    const ids = pick.ids.filter((_, i) => keep[i] === 1);
    const counts = pick.counts.filter((_, i) => keep[i] === 1);
    return { ...pick, ids, counts, vocabLimit: V };
  }

  /** @internal */
  forget(s: Sequence): void {
    this.sequences.delete(s);
    this.scheduler.dispose(s.state);
  }

  private live(): NativeModel {
    if (!this.native) throw new QwenError('E_DISPOSED', 'this Model was disposed');
    return this.native;
  }
}

/** pick.ids distinct and in [0, V) — or any id >= V when those are dropped (vocabLimit > V) — and counts >= 0.
 *  O(ids) with a scratch flag per id, cleared again on every path. The scratch is a fixed module constant: held in a
 *  reassigned `let`, the loops ran ~4x slower in V8. */
const SEEN_IDS = 1 << 18; // Qwen's 151,936 rows; a larger vocabulary gets an array of its own per call
const seenScratch = new Uint8Array(SEEN_IDS);
function checkPenaltyList(pick: NativePickRequest, V: number, dropsPastV: boolean): void {
  const { ids, counts } = pick;
  const flag = V <= SEEN_IDS ? seenScratch : new Uint8Array(V);
  const n = ids.length;
  let i = 0;
  for (; i < n; i++) {
    const id = ids[i];
    if (id < 0) break;
    if (id < V) {
      if (flag[id] !== 0) break;
      flag[id] = 1;
    } else if (!dropsPastV) break;
  }
  for (let j = 0; j < i; j++) {
    const id = ids[j];
    if (id < V) flag[id] = 0;
  }
  if (i < n) {
    const id = ids[i];
    throw new QwenError('E_BAD_ARG', id >= 0 && id < V
      ? `pick.ids must be distinct (${id} repeats at index ${i})`
      : `pick.ids must be in [0, ${V}) (got ${id} at index ${i})`);
  }
  for (let j = 0; j < counts.length; j++) {
    if (counts[j] < 0) throw new QwenError('E_BAD_ARG', `pick.counts must be >= 0 (got ${counts[j]} at index ${j})`);
  }
}

/** Realm-safe (a vm context's Int32Array is not this realm's). */
const isInt32Array = (x: unknown): x is Int32Array => Object.prototype.toString.call(x) === '[object Int32Array]';

/** A sampled pick's warpers and u (cpp/core/backend.h PickSpec), checked here so the addon only asserts them. */
function checkSampling(pick: NativePickRequest): void {
  if (pick.doSample === undefined || pick.doSample === false) return;
  if (pick.doSample !== true) throw badArg('pick.doSample', 'a boolean', pick.doSample);
  const { temperature: t, topK: k, topP: p, u } = pick;
  if (typeof t !== 'number' || !(t > 0) || !Number.isFinite(t)) throw badArg('pick.temperature', 'a finite number > 0', t);
  if (!Number.isInteger(k) || k! < 0 || k! > 2 ** 31 - 1) throw badArg('pick.topK', 'an integer in [0, 2^31 - 1] (0 = off)', k);
  if (typeof p !== 'number' || !(p > 0 && p <= 1)) throw badArg('pick.topP', 'a number in (0, 1] (1 = off)', p);
  if (typeof u !== 'number' || !(u >= 0 && u < 1)) throw badArg('pick.u', 'a number in [0, 1) (Rng.next())', u);
  if (pick.vocabLimit > ID_SPAN) throw badArg('pick.vocabLimit', `at most ${ID_SPAN} when sampling`, pick.vocabLimit);
}

/** The addon's pick as the sampler reports one (SampleResult); -1 (no usable logit) is the sampler's E_BACKEND. */
function pickResult(p: NativePick, n: number): PickResult {
  if (p.id < 0) throw new QwenError('E_BACKEND', `no usable logit: all ${n} eligible logits are -Infinity or NaN`);
  const r: PickResult = { id: p.id };
  if (p.logprob !== undefined) r.logprob = p.logprob;
  if (p.top !== undefined) r.topLogprobs = p.top;
  return r;
}

/** Load a Hugging Face Qwen-7B(-Chat) directory (config.json, generation_config.json, safetensors). */
export async function loadModel(dir: string, options: LoadModelOptions = {}): Promise<Model> {
  checkLoadOptions(options);
  const { signal } = options;
  if (signal?.aborted) throw abortError('loadModel', signal);
  const ckpt = await openCheckpoint(dir);
  if (options.dynamicNtk !== undefined) ckpt.config.use_dynamic_ntk = options.dynamicNtk;
  if (options.logn !== undefined) ckpt.config.use_logn_attn = options.logn;
  if (signal?.aborted) throw abortError('loadModel', signal);
  const tokenizer = await Tokenizer.fromDirectory(ckpt.dir);
  const device = resolveDevice(options.device ?? 'auto');
  const dtype = options.dtype ?? 'auto';
  if (device === 'cpu' && dtype === 'fp16') {
    throw badArg('options.dtype', "'auto', 'fp32' or 'bf16' on the CPU backend (fp16 compute is a CUDA option)", dtype);
  }
  const serving = resolveServing(options, ckpt.config, device, dtype, ckpt.bytes);
  const { NativeModel: Ctor } = addon();
  const native = new Ctor();
  const onAbort = () => native.cancelLoad();
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    await native.load(
      {
        config: nativeConfig(ckpt.config),
        backend: { device, dtype, threads: options.threads ?? 0, cpuIsa: options.cpuIsa ?? '', switches: options.switches ?? {} },
        kvBlocks: Math.ceil(serving.kvCacheTokens / KV_BLOCK_TOKENS),
        files: ckpt.files,
        tensors: ckpt.tensors.map((t) => ({
          name: t.name,
          file: t.file,
          offset: t.offset,
          nbytes: t.nbytes,
          dtype: DTYPE_CODES[t.dtype],
          shape: t.shape,
        })),
      },
      options.onProgress,
    );
  } catch (e) {
    native.dispose();
    tokenizer.free();
    if (signal?.aborted) throw abortError('loadModel', signal);
    throw new QwenError('E_BACKEND', `loading ${ckpt.dir} failed: ${(e as Error).message}`, { cause: e });
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
  if (signal?.aborted) {
    native.dispose(); // the abort came after the last cancellation point: release the finished load
    tokenizer.free();
    throw abortError('loadModel', signal);
  }
  const { kvCacheTokens: _kv, ...batching } = serving;
  return new Model(ckpt, device, native, tokenizer, batching);
}
