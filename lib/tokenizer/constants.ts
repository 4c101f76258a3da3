/**
 * Fixed facts of the Qwen(1.0) tokenizer (reference: tokenization_qwen.py, see shared/docs/qwen-reference.md §5).
 */

/** cl100k_base's pattern with `\p{N}{1,3}` → `\p{N}` (every digit is its own piece). Run by tiktoken's Rust core. */
export const PAT_STR =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/** Number of BPE ranks in qwen.tiktoken (ids 0..151642). */
export const NUM_RANKS = 151643;
export const SPECIAL_START_ID = NUM_RANKS;
export const ENDOFTEXT_ID = 151643;
export const IM_START_ID = 151644;
export const IM_END_ID = 151645;
/** len(tokenizer): 151,643 ranks + 208 specials. Embedding rows 151851..151935 are padding without a token. */
export const VOCAB_SIZE = 151851;
/** Rows of the embedding / lm_head (padded to a multiple of 128). */
export const PADDED_VOCAB_SIZE = 151936;

/** Special surface forms in id order: 151643 <|endoftext|>, <|im_start|>, <|im_end|>, <|extra_0|>..<|extra_204|>. */
export const SPECIAL_TOKENS: readonly string[] = Object.freeze([
  '<|endoftext|>',
  '<|im_start|>',
  '<|im_end|>',
  ...Array.from({ length: 205 }, (_, i) => `<|extra_${i}|>`),
]);

export const SPECIAL_IDS: ReadonlyMap<string, number> = new Map(SPECIAL_TOKENS.map((s, i) => [s, SPECIAL_START_ID + i]));

/** The longest special surface form ("<|extra_204|>"), used to bound look-behind when checking chunk boundaries. */
export const MAX_SPECIAL_LEN = Math.max(...SPECIAL_TOKENS.map((s) => s.length));

/** The special surface form starting at text[k], if any (bounded look-ahead: no scan to the end of a long text). */
export function specialAt(text: string, k: number): string | undefined {
  if (text.charCodeAt(k) !== 0x3c || text.charCodeAt(k + 1) !== 0x7c) return undefined; // "<|"
  const w = text.slice(k, k + MAX_SPECIAL_LEN);
  const close = w.indexOf('|>', 2);
  const s = close < 0 ? '' : w.slice(0, close + 2);
  return SPECIAL_IDS.has(s) ? s : undefined;
}
