/**
 * Independent float64 reference forward pass of Qwen-7B (qwen-reference.md §2, §4) for tests on small random checkpoints.
 * Deliberately shares nothing with lib/: its own config reading, tensor names and safetensors parsing, so a bug in the
 * engine's loader or weight table cannot cancel out. Slow by design (plain loops); fine for the tiny preset.
 * Semantics: the reference's math in float64 without the bf16 roundings, but with its fp32 RoPE angles, prefill-frozen
 * dynamic NTK alpha, query-only logN, and a bottom-right-aligned causal mask for every chunk (the reference's no-mask
 * quirk for multi-token chunks on a cache is NOT copied).
 */
import * as fs from 'fs';
import * as path from 'path';

// Locals: global Math lookups inside hot loops are very slow in jest's vm sandbox.
const { cos, sin, exp, sqrt, log, log2, fround, pow, ceil, max, floor } = Math;

export interface Qwen64Config {
  hidden_size: number;
  num_attention_heads: number;
  kv_channels: number;
  num_hidden_layers: number;
  intermediate_size: number;
  vocab_size: number;
  seq_length: number;
  layer_norm_epsilon: number;
  rotary_emb_base: number;
  rotary_pct: number;
  use_dynamic_ntk: boolean;
  use_logn_attn: boolean;
}

interface Layer {
  ln1: Float64Array; // [H]
  qkvW: Float64Array; // [3H, H] rows Q | K | V
  qkvB: Float64Array; // [3H]
  oW: Float64Array; // attn.c_proj [H, H]
  ln2: Float64Array; // [H]
  w1: Float64Array; // up [F, H]
  w2: Float64Array; // gate [F, H]
  downW: Float64Array; // mlp.c_proj [H, F]
}

/** Per layer, post-RoPE keys and values of every cached position: k[layer][pos] is [H] (heads concatenated). */
interface Cache {
  k: Float64Array[][];
  v: Float64Array[][];
  alpha: number; // NTK alpha, fixed by the first chunk
}

/** Minimal safetensors parse of one file straight into float64 arrays. */
function readShard(file: string, out: Map<string, { shape: number[]; data: Float64Array }>): void {
  const buf = fs.readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.toString('utf8', 8, 8 + n)) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  for (const [name, e] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const base = 8 + n + e.data_offsets[0];
    const count = e.shape.reduce((a, b) => a * b, 1);
    const data = new Float64Array(count);
    const dv = new DataView(buf.buffer, buf.byteOffset + base, e.data_offsets[1] - e.data_offsets[0]);
    if (e.dtype === 'F32') for (let i = 0; i < count; i++) data[i] = dv.getFloat32(4 * i, true);
    else if (e.dtype === 'BF16') {
      const f = new Float32Array(1);
      const u = new Uint32Array(f.buffer);
      for (let i = 0; i < count; i++) {
        u[0] = dv.getUint16(2 * i, true) << 16;
        data[i] = f[0];
      }
    } else if (e.dtype === 'F16') {
      for (let i = 0; i < count; i++) {
        const h = dv.getUint16(2 * i, true);
        const exp = (h >> 10) & 31;
        const mant = h & 1023;
        const mag = exp === 0 ? mant * 2 ** -24 : exp === 31 ? (mant ? NaN : Infinity) : (1 + mant / 1024) * 2 ** (exp - 15);
        data[i] = h & 0x8000 ? -mag : mag;
      }
    } else throw new Error(`${file}: ${name}: dtype ${e.dtype} not handled by the reference`);
    out.set(name, { shape: e.shape, data });
  }
}

export class Qwen64 {
  private readonly rot: number; // rotary dims per head
  private readonly ffn: number; // width of w1 / w2
  private readonly invFreqCache = new Map<number, Float64Array>();

  private constructor(
    readonly config: Readonly<Qwen64Config>,
    private readonly wte: Float64Array, // [V, H]
    private readonly lnF: Float64Array, // [H]
    private readonly lmHead: Float64Array, // [V, H]
    private readonly layers: Layer[],
  ) {
    this.rot = floor(config.kv_channels * config.rotary_pct);
    this.ffn = config.intermediate_size / 2;
  }

  static load(dir: string): Qwen64 {
    const raw = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
    const num = (k: string, d?: number) => (raw[k] ?? d) as number;
    const bool = (k: string, d: boolean) => (raw[k] ?? d) as boolean;
    const config: Qwen64Config = {
      hidden_size: num('hidden_size'),
      num_attention_heads: num('num_attention_heads'),
      kv_channels: num('kv_channels', raw.hidden_size / raw.num_attention_heads),
      num_hidden_layers: num('num_hidden_layers'),
      intermediate_size: num('intermediate_size'),
      vocab_size: num('vocab_size'),
      seq_length: num('seq_length'),
      layer_norm_epsilon: num('layer_norm_epsilon', 1e-6),
      rotary_emb_base: num('rotary_emb_base', 10000),
      rotary_pct: num('rotary_pct', 1),
      use_dynamic_ntk: bool('use_dynamic_ntk', true),
      use_logn_attn: bool('use_logn_attn', true),
    };
    const indexFile = path.join(dir, 'model.safetensors.index.json');
    const files = fs.existsSync(indexFile)
      ? [...new Set(Object.values(JSON.parse(fs.readFileSync(indexFile, 'utf8')).weight_map as Record<string, string>))]
      : ['model.safetensors'];
    const t = new Map<string, { shape: number[]; data: Float64Array }>();
    for (const f of files) readShard(path.join(dir, f), t);

    const { hidden_size: H, vocab_size: V } = config;
    const F = config.intermediate_size / 2;
    const get = (name: string, shape: number[]) => {
      const e = t.get(name);
      if (!e) throw new Error(`${dir}: tensor ${name} missing`);
      if (e.shape.join(',') !== shape.join(',')) throw new Error(`${dir}: ${name} has shape [${e.shape}], expected [${shape}]`);
      return e.data;
    };
    const layers: Layer[] = [];
    for (let i = 0; i < config.num_hidden_layers; i++) {
      const p = `transformer.h.${i}.`;
      layers.push({
        ln1: get(p + 'ln_1.weight', [H]),
        qkvW: get(p + 'attn.c_attn.weight', [3 * H, H]),
        qkvB: get(p + 'attn.c_attn.bias', [3 * H]),
        oW: get(p + 'attn.c_proj.weight', [H, H]),
        ln2: get(p + 'ln_2.weight', [H]),
        w1: get(p + 'mlp.w1.weight', [F, H]),
        w2: get(p + 'mlp.w2.weight', [F, H]),
        downW: get(p + 'mlp.c_proj.weight', [H, F]),
      });
    }
    return new Qwen64(config, get('transformer.wte.weight', [V, H]), get('transformer.ln_f.weight', [H]),
      get('lm_head.weight', [V, H]), layers);
  }

  /** Dynamic NTK alpha for a prefill of L tokens: max(1, 2^ceil(log2(L/S) + 1) - 1); 1 when NTK is off. */
  ntkAlpha(L: number): number {
    if (!this.config.use_dynamic_ntk) return 1;
    return max(1, 2 ** ceil(log2(L / this.config.seq_length) + 1) - 1);
  }

  /**
   * Logits of a fresh sequence at the requested positions (indices into ids; default all).
   * prefillLength: the length NTK alpha is computed from (default ids.length, i.e. the whole sequence is one prefill).
   */
  logits(ids: number[], positions?: number[], opts: { prefillLength?: number } = {}): Float64Array[] {
    const want = positions ?? ids.map((_, i) => i);
    const cache = this.newCache(opts.prefillLength ?? ids.length);
    return this.runChunk(ids, cache, want);
  }

  /** A KV cache built by consecutive chunks (alpha frozen at the first); logits of the last position of the last chunk. */
  logitsWithCache(chunks: number[][]): Float64Array {
    if (chunks.length === 0 || chunks.some((c) => c.length === 0)) throw new Error('logitsWithCache: empty chunk');
    const cache = this.newCache(chunks[0].length);
    let last: Float64Array[] = [];
    for (let c = 0; c < chunks.length; c++) {
      last = this.runChunk(chunks[c], cache, c === chunks.length - 1 ? [chunks[c].length - 1] : []);
    }
    return last[0];
  }

  private newCache(prefillLength: number): Cache {
    const n = this.config.num_hidden_layers;
    return { k: Array.from({ length: n }, () => []), v: Array.from({ length: n }, () => []), alpha: this.ntkAlpha(prefillLength) };
  }

  /** inv_freq[i] = 1 / base'^(2i/rot), computed in fp32 as the reference does; base' = base * alpha^(rot/(rot-2)). */
  private invFreq(alpha: number): Float64Array {
    let f = this.invFreqCache.get(alpha);
    if (!f) {
      const rot = this.rot;
      const base = this.config.rotary_emb_base * alpha ** (rot / (rot - 2));
      f = new Float64Array(rot / 2);
      for (let i = 0; i < rot / 2; i++) f[i] = fround(1 / fround(pow(fround(base), fround((2 * i) / rot))));
      this.invFreqCache.set(alpha, f);
    }
    return f;
  }

  /** Rotate-half RoPE in place on one head x[off .. off+head_dim) at absolute position p. */
  private rope(x: Float64Array, off: number, p: number, inv: Float64Array): void {
    const half = this.rot / 2;
    for (let i = 0; i < half; i++) {
      const th = fround(fround(p) * inv[i]); // fp32 product, as the reference
      const c = cos(th);
      const s = sin(th);
      const a = x[off + i];
      const b = x[off + i + half];
      x[off + i] = a * c - b * s;
      x[off + i + half] = b * c + a * s;
    }
  }

  /** Appends `ids` to the cache (absolute positions P..P+T-1); returns logits for chunk-relative indices `want`. */
  private runChunk(ids: number[], cache: Cache, want: number[]): Float64Array[] {
    const { hidden_size: H, num_attention_heads: nh, kv_channels: hd, seq_length: S, vocab_size: V } = this.config;
    const P = cache.k[0].length;
    const T = ids.length;
    const inv = this.invFreq(cache.alpha);
    const h: Float64Array[] = ids.map((id) => {
      if (!Number.isInteger(id) || id < 0 || id >= V) throw new Error(`token id ${id} out of range`);
      return this.wte.slice(id * H, (id + 1) * H);
    });
    for (let l = 0; l < this.layers.length; l++) {
      const L = this.layers[l];
      const qs: Float64Array[] = [];
      for (let t = 0; t < T; t++) {
        const p = P + t;
        const qkv = matvec(L.qkvW, rmsnorm(h[t], L.ln1, this.config.layer_norm_epsilon), 3 * H, H);
        for (let r = 0; r < 3 * H; r++) qkv[r] += L.qkvB[r];
        const q = qkv.slice(0, H);
        const k = qkv.slice(H, 2 * H);
        for (let hh = 0; hh < nh; hh++) {
          this.rope(q, hh * hd, p, inv);
          this.rope(k, hh * hd, p, inv);
        }
        // logN on the query only, after RoPE; the cached K is untouched.
        if (this.config.use_logn_attn && p + 1 > S) {
          const f = log(p + 1) / log(S);
          for (let i = 0; i < H; i++) q[i] *= f;
        }
        qs.push(q);
        cache.k[l].push(k);
        cache.v[l].push(qkv.slice(2 * H, 3 * H));
      }
      for (let t = 0; t < T; t++) {
        const p = P + t; // sees keys 0..p (bottom-right aligned causal mask)
        const o = new Float64Array(H);
        const sc = new Float64Array(p + 1);
        for (let hh = 0; hh < nh; hh++) {
          const off = hh * hd;
          let mx = -Infinity;
          for (let j = 0; j <= p; j++) {
            const kj = cache.k[l][j];
            let d = 0;
            for (let i = 0; i < hd; i++) d += qs[t][off + i] * kj[off + i];
            sc[j] = d / sqrt(hd);
            if (sc[j] > mx) mx = sc[j];
          }
          let sum = 0;
          for (let j = 0; j <= p; j++) sum += sc[j] = exp(sc[j] - mx);
          for (let j = 0; j <= p; j++) {
            const w = sc[j] / sum;
            const vj = cache.v[l][j];
            for (let i = 0; i < hd; i++) o[off + i] += w * vj[off + i];
          }
        }
        addInto(h[t], matvec(L.oW, o, H, H));
        // MLP: c_proj(w1(x) * silu(w2(x))), w2 is the gate.
        const x = rmsnorm(h[t], L.ln2, this.config.layer_norm_epsilon);
        const up = matvec(L.w1, x, this.ffn, H);
        const gate = matvec(L.w2, x, this.ffn, H);
        for (let i = 0; i < this.ffn; i++) up[i] *= gate[i] / (1 + exp(-gate[i]));
        addInto(h[t], matvec(L.downW, up, H, this.ffn));
      }
    }
    return want.map((t) => {
      if (!(t >= 0 && t < T)) throw new Error(`position ${t} outside the chunk of ${T}`);
      return matvec(this.lmHead, rmsnorm(h[t], this.lnF, this.config.layer_norm_epsilon), V, H);
    });
  }
}

/** y = x * rsqrt(mean(x^2) + eps) * g, all in float64. */
function rmsnorm(x: Float64Array, g: Float64Array, eps: number): Float64Array {
  let ss = 0;
  for (let i = 0; i < x.length; i++) ss += x[i] * x[i];
  const r = 1 / sqrt(ss / x.length + eps);
  const y = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) y[i] = x[i] * r * g[i];
  return y;
}

/** y[o] = sum_i W[o, i] x[i] for W [rows, cols] row-major. */
function matvec(W: Float64Array, x: Float64Array, rows: number, cols: number): Float64Array {
  const y = new Float64Array(rows);
  for (let o = 0; o < rows; o++) {
    let s = 0;
    const base = o * cols;
    for (let i = 0; i < cols; i++) s += W[base + i] * x[i];
    y[o] = s;
  }
  return y;
}

function addInto(a: Float64Array, b: Float64Array): void {
  for (let i = 0; i < a.length; i++) a[i] += b[i];
}
