/**
 * QWenConfig (config.json of a Hugging Face Qwen-7B directory): parse, accept the Aug-2023 v1 key names, validate.
 * Field meanings and the reference defaults follow ../shared/docs/qwen-reference.md §1 and §3.
 */
import { QwenError } from '../errors';

export interface QwenConfig {
  hidden_size: number; // H (4096)
  num_attention_heads: number; // 32, plain MHA
  kv_channels: number; // head_dim (128)
  num_hidden_layers: number; // 32
  intermediate_size: number; // 22016 = 2 x the width of w1 / w2
  vocab_size: number; // 151936 rows of wte / lm_head
  seq_length: number; // NTK / logN threshold (8192; 2048 for the Aug-2023 v1 checkpoints)
  layer_norm_epsilon: number; // 1e-6
  rotary_emb_base: number; // 10000
  rotary_pct: number; // 1.0
  use_dynamic_ntk: boolean;
  use_logn_attn: boolean;
  bf16: boolean;
  fp16: boolean;
  fp32: boolean;
  max_position_embeddings?: number; // present in v1.1 files; never read by the reference code
}

/** Defaults of QWenConfig (configuration_qwen.py) for keys a file may omit. Shape keys have no default. */
export const CONFIG_DEFAULTS = {
  layer_norm_epsilon: 1e-6,
  rotary_emb_base: 10000,
  rotary_pct: 1.0,
  use_dynamic_ntk: true,
  use_logn_attn: true,
  bf16: false,
  fp16: false,
  fp32: false,
} as const satisfies Partial<QwenConfig>;
const DEFAULTS: Partial<QwenConfig> = CONFIG_DEFAULTS;

/** Aug-2023 v1 config.json used Megatron-style names; map them to the v1.1 names. */
const LEGACY_KEYS: Record<string, keyof QwenConfig> = {
  n_embd: 'hidden_size',
  n_head: 'num_attention_heads',
  n_layer: 'num_hidden_layers',
  ffn_hidden_size: 'intermediate_size',
};

const INT_KEYS = [
  'hidden_size',
  'num_attention_heads',
  'kv_channels',
  'num_hidden_layers',
  'intermediate_size',
  'vocab_size',
  'seq_length',
] as const;

export function parseConfig(raw: unknown, file = 'config.json'): QwenConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new QwenError('E_BAD_CHECKPOINT', `${file}: expected a JSON object`);
  }
  const src = { ...(raw as Record<string, unknown>) };
  for (const [legacy, key] of Object.entries(LEGACY_KEYS)) {
    if (src[key] === undefined && src[legacy] !== undefined) src[key] = src[legacy];
  }
  const bad = (key: string, expected: string) =>
    new QwenError('E_BAD_CHECKPOINT', `${file}: "${key}" must be ${expected} (got ${JSON.stringify(src[key])})`);
  const cfg: Record<string, unknown> = { ...DEFAULTS };
  for (const key of INT_KEYS) {
    const v = src[key];
    if (v === undefined && key === 'kv_channels' && Number.isInteger(src.hidden_size) && Number.isInteger(src.num_attention_heads)) {
      cfg[key] = (src.hidden_size as number) / (src.num_attention_heads as number);
      continue;
    }
    if (!Number.isSafeInteger(v) || (v as number) <= 0) throw bad(key, 'a positive integer');
    cfg[key] = v;
  }
  for (const key of ['layer_norm_epsilon', 'rotary_emb_base', 'rotary_pct'] as const) {
    const v = src[key] ?? DEFAULTS[key];
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw bad(key, 'a positive finite number');
    cfg[key] = v;
  }
  for (const key of ['use_dynamic_ntk', 'use_logn_attn', 'bf16', 'fp16', 'fp32'] as const) {
    const v = src[key] ?? DEFAULTS[key];
    if (typeof v !== 'boolean') throw bad(key, 'a boolean');
    cfg[key] = v;
  }
  if (src.max_position_embeddings !== undefined) cfg.max_position_embeddings = src.max_position_embeddings;
  const c = cfg as unknown as QwenConfig;

  // Consistency: the reference asserts or silently breaks on these.
  const fail = (msg: string) => new QwenError('E_BAD_CHECKPOINT', `${file}: ${msg}`);
  if (c.hidden_size % c.num_attention_heads !== 0) {
    throw fail(`num_attention_heads (${c.num_attention_heads}) must divide hidden_size (${c.hidden_size})`);
  }
  if (c.kv_channels * c.num_attention_heads !== c.hidden_size) {
    throw fail(
      `kv_channels (${c.kv_channels}) x num_attention_heads (${c.num_attention_heads}) must equal hidden_size (${c.hidden_size})`,
    );
  }
  if (c.intermediate_size % 2 !== 0) throw fail(`intermediate_size (${c.intermediate_size}) must be even (w1, w2 are half each)`);
  if (c.rotary_pct > 1) throw fail(`rotary_pct (${c.rotary_pct}) must be in (0, 1]`);
  const rot = rotaryDims(c);
  if (rot < 2 || rot % 2 !== 0 || rot > 256) {
    throw fail(`kv_channels x rotary_pct (${c.kv_channels * c.rotary_pct}) must be an even integer in [2, 256]`);
  }
  if (c.kv_channels > 256) throw fail(`kv_channels (${c.kv_channels}) above 256 is not supported`);
  if ([c.bf16, c.fp16, c.fp32].filter(Boolean).length > 1) throw fail('at most one of bf16, fp16, fp32 may be true');
  return c;
}

/** Leading dims of each head that rotate (reference: int(kv_channels * rotary_pct)). */
export function rotaryDims(c: QwenConfig): number {
  return Math.floor(c.kv_channels * c.rotary_pct);
}

/** Width of w1 and w2 (the reference builds them with intermediate_size // 2). */
export function ffnWidth(c: QwenConfig): number {
  return c.intermediate_size / 2;
}
