/**
 * The one table of Qwen-7B tensor names, their shapes as a function of the config, and the order in which the
 * native engine receives them (cpp/core/backend.h: ModelWeights / LayerWeights follow this order exactly).
 * Linear weights are [out, in]; y = x . W^T (+ b).
 */
import { QwenConfig, ffnWidth } from './config';

export interface TensorSpec {
  name: string; // Hugging Face name, e.g. "transformer.h.3.mlp.w2.weight"
  shape: number[];
}

/** Model-level tensors, in native order: wte, ln_f, lm_head. */
const GLOBAL = [
  ['transformer.wte.weight', (c: QwenConfig) => [c.vocab_size, c.hidden_size]],
  ['transformer.ln_f.weight', (c: QwenConfig) => [c.hidden_size]],
  ['lm_head.weight', (c: QwenConfig) => [c.vocab_size, c.hidden_size]],
] as const;

/** Per-layer tensors (suffix after "transformer.h.{i}."), in native order. */
const LAYER = [
  ['ln_1.weight', (c: QwenConfig) => [c.hidden_size]],
  ['attn.c_attn.weight', (c: QwenConfig) => [3 * c.hidden_size, c.hidden_size]], // rows Q | K | V
  ['attn.c_attn.bias', (c: QwenConfig) => [3 * c.hidden_size]], // the only bias in the model
  ['attn.c_proj.weight', (c: QwenConfig) => [c.hidden_size, c.hidden_size]],
  ['ln_2.weight', (c: QwenConfig) => [c.hidden_size]],
  ['mlp.w1.weight', (c: QwenConfig) => [ffnWidth(c), c.hidden_size]], // up
  ['mlp.w2.weight', (c: QwenConfig) => [ffnWidth(c), c.hidden_size]], // gate: silu(w2(x))
  ['mlp.c_proj.weight', (c: QwenConfig) => [c.hidden_size, ffnWidth(c)]],
] as const;

/** Every tensor of a checkpoint with this config, in the order the native engine takes them. */
export function weightTable(c: QwenConfig): TensorSpec[] {
  const out: TensorSpec[] = GLOBAL.map(([name, shape]) => ({ name, shape: shape(c) }));
  for (let i = 0; i < c.num_hidden_layers; i++) {
    for (const [suffix, shape] of LAYER) out.push({ name: `transformer.h.${i}.${suffix}`, shape: shape(c) });
  }
  return out;
}

/** Parameter count implied by the table (Qwen-7B: 7,721,324,544). */
export function parameterCount(c: QwenConfig): number {
  return weightTable(c).reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1), 0);
}
