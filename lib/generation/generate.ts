/**
 * The generation loop, independent of the concrete Model: prefill -> [sample -> stop? -> emit text -> forward] ...
 * One `seq.forward` await per token; the sequence is disposed in a finally whatever happens. On a sequence with
 * `forwardPick` the next id is picked inside the backend instead, greedy or sampled (Sampler.pickRequest carries the
 * penalties, the warpers and the draw's u from the sampler's seeded Rng): only the id (and the logprobs asked for)
 * come back per step, not the logits, and the sampler only records the pick (sampler.accept), so its penalty history
 * and its random stream — hence every later pick — stay what the TS path would have. A SequenceLike without
 * forwardPick gets the logits and the TS sampler (lib/sampling, the reference: the tests compare both paths).
 *
 * Ends (finishReason):
 *  - 'stop':   an eos id was sampled (never emitted), the sequence ended with a stop word id sequence (its ids are
 *              not emitted; a prompt that already ends with one generates nothing, as in the reference), or the text
 *              reached a stop string (the text is cut before it);
 *  - 'length': maxNewTokens ids were sampled;
 *  - 'abort':  the AbortSignal fired — noticed before the next forward, so within one step; no throw.
 *
 * The next token's forward is submitted BEFORE its chunk is yielded: the consumer's handling of a chunk (an awaited
 * socket write, a database call) overlaps the step instead of delaying it. Submitted after the yield, a consumer that
 * awaited one event-loop turn per chunk made its sequence miss every other batched step (64 such clients: ~31
 * sequences per step instead of ~62). So when the consumer stops early (break, abort while it holds a chunk), one
 * forward may already be queued or running; it is abandoned (its result dropped) and the sequence disposed.
 *
 * Picks queued a step ahead (a Sequence with forwardPickNext on a model with overlapSteps): with the prompt's pick,
 * the pick after it is queued too, fed with the id the first one makes; then each time the loop takes pick k, pick
 * k + 2 is queued (its request made with picks up to k accepted: the backend adds pick k + 1 to its penalty list).
 * The scheduler can then launch the step of pick k + 1 before pick k reaches this loop (scheduler.ts "Overlapped
 * steps"). A generation that stops on eos or a stop string abandons the one pick queued ahead; a consumer that stops
 * while holding a chunk, up to two.
 */
import { QwenError, badArg } from '../errors';
import { type TopLogprob, StopWords, createSampler } from '../sampling';
import type { PickResult, SequenceLike, StreamDecoder, TokenizerLike } from '../types';
import type { ResolvedGenerationConfig } from './config';

export type FinishReason = 'stop' | 'length' | 'abort';

export interface TokenLogprob {
  id: number;
  logprob: number; // under the distribution it was drawn from (sampling/pick.ts)
  topLogprobs?: TopLogprob[];
}

export interface Usage {
  promptTokens: number;
  completionTokens: number; // ids sampled, including a final eos / stop word (each cost a step)
}

export interface GenerationChunk {
  /** New text since the previous chunk. Text that may start a stop string is held back until it cannot. */
  text: string;
  /** Ids whose text this chunk released (eos and stop word ids never appear). */
  tokens: number[];
  /** Only when logprobs were asked: one entry per id of `tokens`. */
  logprobs?: TokenLogprob[];
  /** Set on the last chunk only, with the usage. */
  finishReason?: FinishReason;
  usage?: Usage;
}

export interface GenerationResult {
  text: string;
  tokens: number[];
  usage: Usage;
  finishReason: FinishReason;
  logprobs?: TokenLogprob[];
}

export async function* generateTokens(
  seq: SequenceLike,
  tokenizer: TokenizerLike,
  promptIds: ArrayLike<number>,
  config: ResolvedGenerationConfig,
  signal?: AbortSignal,
): AsyncGenerator<GenerationChunk, void, undefined> {
  let disposed = false;
  const release = () => {
    if (!disposed) seq.dispose();
    disposed = true;
  };
  try {
    if (!promptIds || typeof promptIds.length !== 'number' || promptIds.length === 0) {
      throw badArg('promptIds', 'a non-empty array of token ids', promptIds);
    }
    const eos = new Set(config.eosTokenIds);
    const stopWords = new StopWords(config.stopWordsIds, config.eosTokenIds, promptIds);
    const out = new Emitter(tokenizer, config.stop, config.logprobs !== undefined);
    const generated: number[] = [];
    const logprobs: TokenLogprob[] = [];
    let released = 0; // generated[0, released) went to the text decoder
    let sampled = 0;
    let finish: FinishReason | undefined;
    if (signal?.aborted) finish = 'abort';
    else if (stopWords.matched() > 0) finish = 'stop';
    else {
      const sampler = createSampler(config, promptIds);
      const native = typeof seq.forwardPick === 'function' && sampler.nativePicks;
      // Feeds ids and returns the next pick: the backend's (native) or the sampler's on the returned logits.
      const next = async (ids: ArrayLike<number>): Promise<PickResult | null> => {
        if (!native) {
          const logits = await forwardOrAbort(seq, ids, signal);
          return logits === null || signal?.aborted ? null : sampler.sample(logits);
        }
        return settledPick(seq.forwardPick!(ids, sampler.pickRequest()!, signal ? { signal } : undefined), signal);
      };
      // The pick after the pending one, queued before that one is known (see the header). Its request is made after
      // every pick up to the pending one's was accepted: the backend adds the pending pick to its penalty list.
      const ahead = (): Promise<PickResult | null> => {
        let p: Promise<PickResult | null>;
        try {
          p = settledPick(seq.forwardPickNext!(sampler.pickRequest()!, signal ? { signal } : undefined), signal);
        } catch (e) {
          p = Promise.reject(e); // a SequenceLike that throws instead of rejecting: thrown where it is awaited
        }
        p.catch(() => undefined); // abandoned when the generation stops first; awaited (and thrown) otherwise
        return p;
      };
      // sample() (the TS path) records its own picks; a backend's pick is recorded when the loop takes it, in order
      // (so that ahead() always makes its request with every pick but the pending one accepted).
      const take = (p: PickResult | null): PickResult | null => {
        if (p !== null && native) sampler.accept([p.id]);
        return p;
      };
      let pending = next(promptIds);
      const chain = native && typeof seq.forwardPickNext === 'function' && seq.overlapSteps !== false;
      let queued = chain && config.maxNewTokens > 1 ? ahead() : null;
      let r = take(await pending);
      for (;;) {
        if (signal?.aborted || r === null) {
          finish = 'abort';
          break;
        }
        sampled++;
        if (eos.has(r.id)) {
          finish = 'stop';
          break;
        }
        generated.push(r.id);
        if (r.logprob !== undefined) {
          logprobs.push(
            r.topLogprobs
              ? { id: r.id, logprob: r.logprob, topLogprobs: r.topLogprobs }
              : { id: r.id, logprob: r.logprob },
          );
        }
        stopWords.push(r.id);
        const stopLen = stopWords.matched();
        // Release what can no longer be part of a stop word; a completed stop word's ids are dropped.
        const upTo = generated.length - Math.min(stopLen || stopWords.partial(), generated.length);
        if (upTo > released) {
          out.release(generated.slice(released, upTo), logprobs.slice(released, upTo));
          released = upTo;
        }
        if (out.stopped || stopLen > 0) {
          finish = 'stop';
          break;
        }
        if (sampled >= config.maxNewTokens) {
          finish = 'length';
          break;
        }
        // Before the yield (see the header): the pick after the one just taken, and the one after that queued ahead.
        if (queued) {
          pending = queued;
          queued = sampled + 1 < config.maxNewTokens ? ahead() : null;
        } else {
          pending = next([r.id]);
          pending.catch(() => undefined); // abandoned when the consumer stops here; awaited (and thrown) otherwise
        }
        if (!out.empty) yield out.take();
        if (signal?.aborted) {
          finish = 'abort';
          break;
        }
        r = take(await pending);
      }
    }
    // Done with the sequence: its KV blocks go back now and a pick queued ahead is dropped before a step takes it,
    // not when the consumer comes back for the last chunk (the finally below would wait for that).
    release();
    // Held-back ids are real output unless they were the start of the stop word that ended generation.
    if (stopWords.matched() === 0) out.release(generated.slice(released), logprobs.slice(released));
    out.flush();
    yield { ...out.take(), finishReason: finish, usage: { promptTokens: promptIds.length, completionTokens: sampled } };
  } finally {
    release();
  }
}

/** seq.forward, or null when the signal fired before the forward ran (e.g. while queued for admission). */
async function forwardOrAbort(seq: SequenceLike, ids: ArrayLike<number>, signal?: AbortSignal): Promise<Float32Array | null> {
  try {
    return await seq.forward(ids, signal ? { signal } : undefined);
  } catch (e) {
    if (signal?.aborted && e instanceof QwenError && e.code === 'E_ABORTED') return null;
    throw e;
  }
}

/** A backend pick, or null when the signal fired before its forward ran (or while it ran). */
async function settledPick(pick: Promise<PickResult>, signal?: AbortSignal): Promise<PickResult | null> {
  try {
    const p = await pick;
    return signal?.aborted ? null : p;
  } catch (e) {
    if (signal?.aborted && e instanceof QwenError && e.code === 'E_ABORTED') return null;
    throw e;
  }
}

/** Runs generateTokens to the end and concatenates the chunks. */
export async function generateAll(
  seq: SequenceLike,
  tokenizer: TokenizerLike,
  promptIds: ArrayLike<number>,
  config: ResolvedGenerationConfig,
  signal?: AbortSignal,
): Promise<GenerationResult> {
  return collectChunks(generateTokens(seq, tokenizer, promptIds, config, signal), config.logprobs !== undefined);
}

/** Concatenates a stream of chunks into the whole result (the last chunk carries finishReason and usage). */
export async function collectChunks(chunks: AsyncIterable<GenerationChunk>, withLogprobs: boolean): Promise<GenerationResult> {
  let text = '';
  const tokens: number[] = [];
  const logprobs: TokenLogprob[] = [];
  let last: GenerationChunk | undefined;
  for await (const chunk of chunks) {
    text += chunk.text;
    tokens.push(...chunk.tokens);
    if (chunk.logprobs) logprobs.push(...chunk.logprobs);
    last = chunk;
  }
  if (!last?.finishReason || !last.usage) throw new QwenError('E_BACKEND', 'generation ended without a final chunk');
  const result: GenerationResult = { text, tokens, usage: last.usage, finishReason: last.finishReason };
  if (withLogprobs) result.logprobs = logprobs;
  return result;
}

/**
 * Ids -> text through the tokenizer's stream decoder, then the stop strings: text that could be the start of a stop
 * string is held back (it may be split across tokens); at the first full stop string the text is cut and
 * everything after it, this chunk's and later ones', is dropped.
 */
class Emitter {
  private readonly decoder: StreamDecoder;
  private pending = ''; // decoded text held back as a possible stop string start
  private text = '';
  private tokens: number[] = [];
  private logprobs: TokenLogprob[] = [];
  stopped = false;

  constructor(
    tokenizer: TokenizerLike,
    private readonly stops: readonly string[],
    private readonly withLogprobs: boolean,
  ) {
    this.decoder = tokenizer.createStreamDecoder();
  }

  get empty(): boolean {
    return this.text === '' && this.tokens.length === 0;
  }

  release(ids: number[], logprobs: TokenLogprob[]): void {
    if (this.stopped || ids.length === 0) return;
    this.tokens.push(...ids);
    this.logprobs.push(...logprobs);
    this.addText(this.decoder.push(ids));
  }

  /** End of output: the decoder's incomplete bytes, then whatever was held back. */
  flush(): void {
    if (this.stopped) return;
    this.addText(this.decoder.flush());
    if (!this.stopped) {
      this.text += this.pending;
      this.pending = '';
    }
  }

  take(): GenerationChunk {
    const chunk: GenerationChunk = { text: this.text, tokens: this.tokens };
    if (this.withLogprobs) chunk.logprobs = this.logprobs;
    this.text = '';
    this.tokens = [];
    this.logprobs = [];
    return chunk;
  }

  private addText(piece: string): void {
    if (this.stops.length === 0) {
      this.text += piece;
      return;
    }
    const s = this.pending + piece;
    let cut = -1;
    for (const stop of this.stops) {
      const i = s.indexOf(stop);
      if (i >= 0 && (cut < 0 || i < cut)) cut = i;
    }
    if (cut >= 0) {
      this.text += s.slice(0, cut);
      this.pending = '';
      this.stopped = true;
      return;
    }
    const hold = heldSuffix(s, this.stops);
    this.text += s.slice(0, s.length - hold);
    this.pending = s.slice(s.length - hold);
  }
}

/** Length of the longest suffix of s that is a proper prefix of a stop string. */
function heldSuffix(s: string, stops: readonly string[]): number {
  let best = 0;
  for (const stop of stops) {
    for (let j = Math.min(stop.length - 1, s.length); j > best; j--) {
      if (s.endsWith(stop.slice(0, j))) {
        best = j;
        break;
      }
    }
  }
  return best;
}
