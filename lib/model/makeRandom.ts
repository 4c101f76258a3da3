/**
 * Seeded random Qwen checkpoints in the exact Hugging Face layout (config.json, generation_config.json, qwen.tiktoken,
 * sharded safetensors + index), so every loader and test can run without the real 15 GB of weights.
 * Values are a pure function of (tensor name, element index, seed): the bytes do not depend on sharding, chunking or the
 * number of worker threads, and any chunk can be generated independently (that is what makes the workers possible).
 */
import { promises as fsp } from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Worker } from 'worker_threads';
import { QwenError, abortError, badArg } from '../errors';
import { CONFIG_DEFAULTS, QwenConfig, ffnWidth, parseConfig } from './config';
import { weightTable } from './weights';
import { DTYPE_BYTES, StDType, StWriteTensor, encodeF32, f32BitsToF16, writeSafetensors } from './safetensors';

export type PresetName = 'tiny' | 'small' | '7b';
export type RandomDType = 'bf16' | 'fp16' | 'fp32';

const COMMON = { ...CONFIG_DEFAULTS, max_position_embeddings: 32768 } as const; // eps 1e-6, base 10000, NTK + logN on

/** The one table of presets. 7b = Qwen-7B v1.1 config.json exactly (7,721,324,544 params). */
export const PRESETS: Readonly<Record<PresetName, Readonly<QwenConfig>>> = {
  '7b': { hidden_size: 4096, num_attention_heads: 32, kv_channels: 128, num_hidden_layers: 32, intermediate_size: 22016,
    vocab_size: 151936, seq_length: 8192, ...COMMON },
  // ~0.92 B params, real head_dim 128: big enough for realistic kernel shapes and timings, 1.8 GB in bf16.
  small: { hidden_size: 1536, num_attention_heads: 12, kv_channels: 128, num_hidden_layers: 16, intermediate_size: 8192,
    vocab_size: 151936, seq_length: 8192, ...COMMON },
  // Real vocabulary (the real tokenizer works); seq_length 64 so NTK / logN switch on in short tests.
  tiny: { hidden_size: 64, num_attention_heads: 4, kv_channels: 16, num_hidden_layers: 2, intermediate_size: 192,
    vocab_size: 151936, seq_length: 64, ...COMMON },
};

const ST_DTYPE: Record<RandomDType, StDType> = { bf16: 'BF16', fp16: 'F16', fp32: 'F32' };
const TORCH_DTYPE: Record<RandomDType, string> = { bf16: 'bfloat16', fp16: 'float16', fp32: 'float32' };

/** Qwen-7B-Chat v1.1 generation defaults (reference §6.1). */
const GENERATION_CONFIG = {
  chat_format: 'chatml',
  eos_token_id: 151643,
  pad_token_id: 151643,
  stop_words_ids: [[151643]],
  max_new_tokens: 512,
  max_window_size: 6144,
  do_sample: true,
  top_k: 0,
  top_p: 0.8,
  repetition_penalty: 1.1,
};

export interface MakeRandomOptions {
  preset: PresetName;
  dtype: RandomDType;
  seed: number;
  out: string;
  tiktoken?: string | null; // path to copy; null = omit; undefined = look for it (QWEN_TIKTOKEN, ../shared/qwen)
  overrides?: Partial<QwenConfig>;
  shardBytes?: number; // shard size target in bytes of tensor data (default 2e9, like HF's "2GB")
  onProgress?: (fraction: number) => void;
  signal?: AbortSignal;
  workers?: number; // generator threads; default: 0 for tiny checkpoints or < 4 cores, else min(cores, 16)
}

/**
 * Init of one tensor as a uniform distribution center ± half (std = half / sqrt(3)). Scales keep a random deep net
 * sane: unit-variance activations through every linear, gains near 1, a visible c_attn bias, logits spread ~3.
 */
export function initSpec(name: string, c: QwenConfig): { center: number; half: number } {
  const u = (std: number) => ({ center: 0, half: std * Math.sqrt(3) });
  if (name === 'transformer.wte.weight') return u(1);
  if (name === 'lm_head.weight') return u(3 / Math.sqrt(c.hidden_size));
  if (/\.ln_[12f]\.weight$|^transformer\.ln_f\.weight$/.test(name)) return { center: 1, half: 0.1 };
  if (name.endsWith('.attn.c_attn.bias')) return u(0.1);
  if (name.endsWith('.mlp.c_proj.weight')) return u(1 / Math.sqrt(ffnWidth(c)));
  if (/\.(attn\.c_attn|attn\.c_proj|mlp\.w1|mlp\.w2)\.weight$/.test(name)) return u(1 / Math.sqrt(c.hidden_size));
  throw new QwenError('E_BAD_ARG', `no random init rule for tensor "${name}"`);
}

/**
 * out[j] = value of element start+j: a counter-based hash (two murmur3 finalizer rounds keyed by k1, k2) mapped to
 * [center-half, center+half). Self-contained: its source text runs in the worker threads too.
 */
export function fillUniform(k1: number, k2: number, center: number, half: number, start: number, count: number,
  out: Float32Array): void {
  const imul = Math.imul; // a local: a global Math lookup per element is ~100x slower inside jest's vm sandbox
  const s = (2 * half) / 4294967296;
  const lo = center - half;
  for (let j = 0; j < count; j++) {
    let z = (k1 + imul((start + j) | 0, 0x9e3779b9)) | 0; // Weyl step: a bijection of the index
    z = imul(z ^ (z >>> 16), 0x85ebca6b);
    z = imul(z ^ (z >>> 13), 0xc2b2ae35);
    z = (z ^ (z >>> 16)) ^ k2;
    z = imul(z ^ (z >>> 16), 0x7feb352d);
    z = imul(z ^ (z >>> 15), 0x846ca68b);
    z ^= z >>> 16;
    out[j] = lo + (z >>> 0) * s;
  }
}

/** Two 32-bit keys per (seed, tensor name): FNV-1a of the string, then a murmur3 finalizer. */
function tensorKeys(seed: number, name: string): [number, number] {
  const h = (str: string) => {
    let x = 0x811c9dc5;
    for (let i = 0; i < str.length; i++) x = Math.imul(x ^ str.charCodeAt(i), 0x01000193);
    x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
    x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
    return (x ^ (x >>> 16)) | 0;
  };
  return [h(`${seed}/${name}`), h(`${name}#${seed}`)];
}

interface Job { k1: number; k2: number; center: number; half: number; start: number; count: number; dtype: StDType }

/** Worker threads that fill + encode chunks; the source is built from the same functions the main thread uses. */
class GeneratorPool {
  private idle: Worker[] = [];
  private queue: Array<{ job: Job; resolve: (b: Uint8Array) => void; reject: (e: unknown) => void }> = [];
  private busy = new Map<Worker, { resolve: (b: Uint8Array) => void; reject: (e: unknown) => void }>();
  private failed: unknown = null;
  private closing = false;
  private all: Worker[] = [];

  constructor(n: number) {
    const src = `const { parentPort } = require('worker_threads');
${fillUniform.toString()}
${f32BitsToF16.toString()}
${encodeF32.toString()}
let scratch = new Float32Array(0); // reused: a fresh 16 MB array per chunk costs page faults
parentPort.on('message', (j) => {
  if (scratch.length < j.count) scratch = new Float32Array(j.count);
  const f = scratch.subarray(0, j.count);
  fillUniform(j.k1, j.k2, j.center, j.half, j.start, j.count, f);
  const out = new Uint8Array(j.count * (j.dtype === 'F32' ? 4 : 2));
  encodeF32(f, j.dtype, out);
  parentPort.postMessage(out.buffer, [out.buffer]);
});`;
    for (let i = 0; i < n; i++) {
      const w = new Worker(src, { eval: true });
      w.on('message', (buf: ArrayBuffer) => {
        const p = this.busy.get(w)!;
        this.busy.delete(w);
        p.resolve(new Uint8Array(buf));
        this.next(w);
      });
      w.on('error', (e) => this.fail(e));
      w.on('exit', (code) => {
        if (!this.closing) this.fail(new Error(`exited with code ${code}`)); // e.g. killed: never leave jobs hanging
      });
      this.all.push(w);
      this.idle.push(w);
    }
  }

  run(job: Job): Promise<Uint8Array> {
    return new Promise((resolve, reject) => {
      if (this.failed) return reject(this.failed);
      this.queue.push({ job, resolve, reject });
      const w = this.idle.pop();
      if (w) this.next(w);
    });
  }

  private next(w: Worker): void {
    const item = this.queue.shift();
    if (!item) return void this.idle.push(w);
    this.busy.set(w, item);
    w.postMessage(item.job);
  }

  private fail(e: unknown): void {
    if (this.failed) return;
    this.failed = new QwenError('E_BACKEND', `random weight generator thread failed: ${(e as Error)?.message ?? e}`, { cause: e });
    for (const p of [...this.busy.values(), ...this.queue]) p.reject(this.failed);
    this.busy.clear();
    this.queue = [];
  }

  async close(): Promise<void> {
    this.closing = true;
    await Promise.all(this.all.map((w) => w.terminate()));
  }
}

/** Merge overrides over the preset and validate; an invalid override is the caller's argument error. */
function buildConfig(preset: PresetName, overrides: Partial<QwenConfig> | undefined): QwenConfig {
  try {
    return parseConfig({ ...PRESETS[preset], ...(overrides ?? {}) }, `preset ${preset} with overrides`);
  } catch (e) {
    throw new QwenError('E_BAD_ARG', (e as Error).message, { cause: e });
  }
}

async function exists(p: string): Promise<boolean> {
  return fsp.access(p).then(() => true, () => false);
}

/** An existing out dir may be replaced only if empty or a previous random checkpoint (never real weights). */
async function checkReplaceable(dir: string): Promise<'absent' | 'empty' | 'random'> {
  let names: string[];
  try {
    names = await fsp.readdir(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return 'absent';
    throw badArg('out', 'a directory path', dir);
  }
  if (names.length === 0) return 'empty';
  try {
    const cfg = JSON.parse(await fsp.readFile(path.join(dir, 'config.json'), 'utf8'));
    if (cfg && typeof cfg.qwen_node_random === 'object') return 'random';
  } catch {
    /* not ours */
  }
  throw new QwenError('E_BAD_ARG', `out: ${dir} exists and is not empty nor a random checkpoint; refusing to overwrite it`);
}

async function findTiktoken(opt: string | null | undefined): Promise<string | null> {
  if (opt === null) return null;
  if (opt !== undefined) {
    if (!(await exists(opt))) throw new QwenError('E_BAD_ARG', `tiktoken: ${opt} not found`);
    return opt;
  }
  const env = process.env.QWEN_TIKTOKEN;
  if (env) {
    if (!(await exists(env))) throw new QwenError('E_BAD_ARG', `QWEN_TIKTOKEN: ${env} not found`);
    return env;
  }
  // lib/model (ts) and dist/model (js) are both two levels below the package root.
  for (const base of [process.cwd(), path.resolve(__dirname, '..', '..')]) {
    const p = path.resolve(base, '..', 'shared', 'qwen', 'qwen.tiktoken');
    if (await exists(p)) return p;
  }
  return null;
}

export async function makeRandomCheckpoint(
  opts: MakeRandomOptions,
): Promise<{ dir: string; config: QwenConfig; bytes: number }> {
  if (!opts || !Object.prototype.hasOwnProperty.call(PRESETS, opts.preset)) throw badArg('preset', 'tiny | small | 7b', opts?.preset);
  if (!Object.prototype.hasOwnProperty.call(ST_DTYPE, opts.dtype)) throw badArg('dtype', 'bf16 | fp16 | fp32', opts.dtype);
  if (!Number.isSafeInteger(opts.seed)) throw badArg('seed', 'a safe integer', opts.seed);
  if (typeof opts.out !== 'string' || opts.out === '') throw badArg('out', 'a directory path', opts.out);
  const shardBytes = opts.shardBytes ?? 2e9;
  if (!(shardBytes > 0)) throw badArg('shardBytes', 'a positive number', shardBytes);
  if (opts.workers !== undefined && !(Number.isInteger(opts.workers) && opts.workers >= 0)) {
    throw badArg('workers', 'a non-negative integer', opts.workers);
  }
  const { signal } = opts;
  if (signal?.aborted) throw abortError('makeRandomCheckpoint', signal);

  const config = buildConfig(opts.preset, opts.overrides);
  const dtype = ST_DTYPE[opts.dtype];
  const dir = path.resolve(opts.out);
  await checkReplaceable(dir);
  const tiktoken = await findTiktoken(opts.tiktoken);

  // Shards: tensors in weightTable order, never split; start a new shard when the next tensor would pass the target.
  const table = weightTable(config);
  const shards: Array<typeof table> = [];
  let cur = 0;
  for (const t of table) {
    const nb = t.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[dtype];
    if (shards.length === 0 || (cur > 0 && cur + nb > shardBytes)) {
      shards.push([]);
      cur = 0;
    }
    shards[shards.length - 1].push(t);
    cur += nb;
  }
  const totalElems = table.reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1), 0);
  const total = totalElems * DTYPE_BYTES[dtype];
  // Workers pay off with real cores; on 2 vCPUs they measured no faster than generating in the main thread.
  const cores = os.availableParallelism();
  const nWorkers = opts.workers ?? (totalElems < 64 << 20 || cores < 4 ? 0 : Math.min(cores, 16));

  const tmp = `${dir}.partial-${process.pid}-${Date.now().toString(36)}`;
  await fsp.mkdir(tmp, { recursive: true });
  const pool = nWorkers > 0 ? new GeneratorPool(nWorkers) : null;
  try {
    const fileName = (i: number) =>
      `model-${String(i + 1).padStart(5, '0')}-of-${String(shards.length).padStart(5, '0')}.safetensors`;
    const weightMap: Record<string, string> = {};
    let done = 0;
    let bytes = 0;
    for (let i = 0; i < shards.length; i++) {
      const tensors: StWriteTensor[] = shards[i].map(({ name, shape }) => {
        const [k1, k2] = tensorKeys(opts.seed, name);
        const { center, half } = initSpec(name, config);
        weightMap[name] = fileName(i);
        return pool
          ? { name, dtype, shape, encoded: (start, count) => pool.run({ k1, k2, center, half, start, count, dtype }) }
          : { name, dtype, shape, fill: (start, count, out) => fillUniform(k1, k2, center, half, start, count, out) };
      });
      bytes += await writeSafetensors(path.join(tmp, fileName(i)), tensors, { format: 'pt' }, {
        signal,
        prefetch: pool ? 2 * nWorkers : 1,
        onBytes: (n) => opts.onProgress?.((done + n) / total),
      });
      done += shards[i].reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[dtype], 0);
    }
    const sorted = Object.fromEntries(Object.entries(weightMap).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
    const index = { metadata: { total_size: total }, weight_map: sorted };
    await fsp.writeFile(path.join(tmp, 'model.safetensors.index.json'), JSON.stringify(index, null, 2) + '\n');
    const configJson = {
      architectures: ['QWenLMHeadModel'],
      model_type: 'qwen',
      ...config,
      max_position_embeddings: config.max_position_embeddings ?? 32768,
      no_bias: true,
      tie_word_embeddings: false,
      tokenizer_class: 'QWenTokenizer',
      torch_dtype: TORCH_DTYPE[opts.dtype],
      qwen_node_random: { preset: opts.preset, seed: opts.seed, dtype: opts.dtype },
    };
    await fsp.writeFile(path.join(tmp, 'config.json'), JSON.stringify(configJson, null, 2) + '\n');
    await fsp.writeFile(path.join(tmp, 'generation_config.json'), JSON.stringify(GENERATION_CONFIG, null, 2) + '\n');
    if (tiktoken) await fsp.copyFile(tiktoken, path.join(tmp, 'qwen.tiktoken'));
    if (signal?.aborted) throw abortError('makeRandomCheckpoint', signal);

    // Publish: the complete directory appears under its final name in one rename.
    const state = await checkReplaceable(dir);
    if (state === 'empty') await fsp.rmdir(dir);
    const old = `${dir}.old-${process.pid}-${Date.now().toString(36)}`;
    if (state === 'random') await fsp.rename(dir, old);
    await fsp.rename(tmp, dir);
    if (state === 'random') await fsp.rm(old, { recursive: true, force: true });
    opts.onProgress?.(1);
    return { dir, config, bytes };
  } catch (e) {
    await fsp.rm(tmp, { recursive: true, force: true });
    if (signal?.aborted && !(e instanceof QwenError && e.code === 'E_ABORTED')) throw abortError('makeRandomCheckpoint', signal);
    throw e;
  } finally {
    await pool?.close();
  }
}
