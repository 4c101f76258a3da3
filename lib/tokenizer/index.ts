export { Tokenizer } from './tokenizer';
export type { EncodeOptions, EncodeAsyncOptions, DecodeOptions } from './tokenizer';
export {
  PAT_STR,
  NUM_RANKS,
  SPECIAL_START_ID,
  ENDOFTEXT_ID,
  IM_START_ID,
  IM_END_ID,
  VOCAB_SIZE,
  PADDED_VOCAB_SIZE,
  SPECIAL_TOKENS,
  SPECIAL_IDS,
} from './constants';
export { clearVocabCache } from './vocab';
