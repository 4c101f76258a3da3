/**
 * Interfaces shared between the layers, so the tokenizer, the sampling loop and the engine can be built and tested
 * apart. The concrete classes: Tokenizer (lib/tokenizer), Sequence / Model (lib/model/model.ts).
 */

/** What the generation loop needs from a tokenizer. */
export interface TokenizerLike {
  encode(text: string, options?: { allowedSpecial?: 'all' | 'none' | string[]; disallowedSpecial?: 'all' | string[] }): number[];
  decode(ids: ArrayLike<number>, options?: { skipSpecialTokens?: boolean; errors?: 'replace' | 'ignore' }): string;
  /** Incremental decoder: push ids, get only the text whose UTF-8 is complete; flush() returns the rest. */
  createStreamDecoder(options?: { skipSpecialTokens?: boolean }): StreamDecoder;
}

export interface StreamDecoder {
  push(ids: ArrayLike<number>): string;
  flush(): string;
}

/** What the generation loop needs from a model sequence (one KV cache). */
export interface SequenceLike {
  /** Append ids to the sequence; resolves to the logits of the last position (length vocab_size). */
  /** An abort before the forward's step starts may reject it with E_ABORTED. */
  forward(ids: ArrayLike<number>, options?: { signal?: AbortSignal }): Promise<Float32Array>;
  readonly length: number;
  dispose(): void;
}
