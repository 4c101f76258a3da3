/**
 * Interfaces shared between the layers, so the tokenizer, the sampling loop and the engine can be built and tested
 * apart. The concrete classes: Tokenizer (lib/tokenizer), Sequence / Model (lib/model/model.ts).
 */
import type { NativePickRequest } from './native/types';

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

/** A next id picked greedily by the backend: what Sampler.sample reports for the same logits. */
export interface PickResult {
  id: number;
  logprob?: number;
  topLogprobs?: Array<{ id: number; logprob: number }>;
}

/** What the generation loop needs from a model sequence (one KV cache). */
export interface SequenceLike {
  /** Append ids to the sequence; resolves to the logits of the last position (length vocab_size). */
  /** An abort before the forward's step starts may reject it with E_ABORTED. */
  forward(ids: ArrayLike<number>, options?: { signal?: AbortSignal }): Promise<Float32Array>;
  /**
   * Optional: append ids and pick the next id inside the backend, greedy or sampled (Sampler.pickRequest() builds
   * `pick`), so only the id and the logprobs asked for come back. generate() uses it when present.
   */
  forwardPick?(ids: ArrayLike<number>, pick: NativePickRequest, options?: { signal?: AbortSignal }): Promise<PickResult>;
  /**
   * Optional, with forwardPick: append the id the last (pending) pick makes, then pick again with `pick`, made before
   * that id was known (it is added to the penalty list as generated). generate() queues each pick one step ahead
   * with it, so the backend's next step need not wait for the generation loop.
   */
  forwardPickNext?(pick: NativePickRequest, options?: { signal?: AbortSignal }): Promise<PickResult>;
  /** false: forwardPickNext gains nothing here (the model runs its steps in lockstep); generate() does not use it. */
  readonly overlapSteps?: boolean;
  readonly length: number;
  dispose(): void;
}
