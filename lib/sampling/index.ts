/**
 * The sampler: ONE ordered chain of processors (PROCESSOR_CHAIN), then a seeded draw — or argmax when doSample is
 * false or temperature is 0. Order and switches follow HF transformers 4.32 `generate()` (reference §6.2):
 * processors (always) -> stop words (§6.3, handled in generate.ts) -> warpers (sampling only) -> softmax -> draw.
 * OpenAI's presence / frequency penalties (presenceFrequencyPenalty.ts) are processors too, right after the HF
 * repetition penalty (vLLM's order), so they also apply to greedy decoding.
 *
 * `sample(logits)` CONSUMES the Float32Array the model returns: it is rewritten in place (see candidates.ts).
 */
import { QwenError } from '../errors';
import type { NativePickRequest } from '../native/types';
import { Candidates, ID_SPAN } from './candidates';
import { type TopLogprob, draw, logprobsOf } from './pick';
import { PickPenalties } from './pickPenalties';
import { PresenceFrequencyPenalty } from './presenceFrequencyPenalty';
import { RepetitionPenalty } from './repetitionPenalty';
import { Rng, randomSeed } from './rng';
import { applyTemperature } from './temperature';
import { applyTopK } from './topK';
import { applyTopP } from './topP';

export { Rng, randomSeed } from './rng';
export { StopWords } from './stopWords';
export type { TopLogprob } from './pick';

/** What the sampler reads from a resolved GenerationConfig (generation/config.ts documents each field). */
export interface SamplerConfig {
  readonly doSample: boolean;
  readonly temperature: number; // 0 = greedy
  readonly topK: number; // 0 = off
  readonly topP: number; // 1 = off
  readonly repetitionPenalty: number; // 1 = off
  readonly presencePenalty?: number; // OpenAI's, over the generated ids; 0 (or absent) = off
  readonly frequencyPenalty?: number; // OpenAI's, over the generated ids; 0 (or absent) = off
  readonly seed?: number; // random when absent
  readonly tokenizerVocabSize: number; // ids >= this (lm_head padding rows) are never produced
  readonly logprobs?: number; // absent: no logprobs; n: the chosen id's logprob and the n most likely kept ids
}

export interface SampleResult {
  id: number;
  /** Log probability of `id` under the distribution it was drawn from (pick.ts); only when logprobs were asked. */
  logprob?: number;
  topLogprobs?: TopLogprob[];
}

interface Processor {
  readonly name: string;
  /** Warpers run only when sampling (HF `_get_logits_warper`); the others always (`_get_logits_processor`). */
  readonly warper: boolean;
  /** When HF installs it at all (its no-op values skip the work). */
  readonly enabled: (c: SamplerConfig) => boolean;
  readonly apply: (s: Candidates, c: SamplerConfig, state: PenaltyState) => void;
}

/** The per-request history the penalties read. */
interface PenaltyState {
  readonly repetition: RepetitionPenalty; // every id of the sequence, prompt included
  readonly openai: PresenceFrequencyPenalty; // generated ids only, with their counts
}

/** The ONE per-step order. */
export const PROCESSOR_CHAIN: readonly Processor[] = Object.freeze([
  {
    name: 'repetitionPenalty',
    warper: false,
    enabled: (c) => c.repetitionPenalty !== 1,
    apply: (s, _c, st) => st.repetition.apply(s),
  },
  {
    name: 'presenceFrequencyPenalty',
    warper: false,
    enabled: (c) => (c.presencePenalty ?? 0) !== 0 || (c.frequencyPenalty ?? 0) !== 0,
    apply: (s, _c, st) => st.openai.apply(s),
  },
  // (stop words sit here in HF: StopWords ends generation in generate.ts instead of forcing an eos logit)
  {
    name: 'temperature',
    warper: true,
    enabled: (c) => c.temperature !== 1,
    apply: (s, c) => applyTemperature(s, c.temperature),
  },
  { name: 'topK', warper: true, enabled: (c) => c.topK > 0, apply: (s, c) => applyTopK(s, c.topK) },
  { name: 'topP', warper: true, enabled: (c) => c.topP < 1, apply: (s, c) => applyTopP(s, c.topP) },
]);

/** The requests pickRequest() made: their penalty lists are distinct and in range by construction, so Model.checkPick
 *  skips its O(ids) check of them (the addon checks every list again before a step). */
const madeHere = new WeakMap<NativePickRequest, PenaltySource>();
export const isSamplerRequest = (r: NativePickRequest): boolean => madeHere.has(r);

/** Where a pickRequest()'s penalty list came from: its sampler's list after `events` generated ids (the scheduler
 *  then sends a sequence that keeps that list only what it lacks). */
export interface PenaltySource {
  readonly list: PickPenalties;
  readonly events: number;
  /** the request's ids / counts as made (a request given other arrays since is sent whole) */
  readonly ids: Int32Array;
  readonly counts: Int32Array;
}
/** The source of a request pickRequest() made (undefined for any other object, or when no penalty is on). */
export const penaltySourceOf = (r: NativePickRequest): PenaltySource | undefined => {
  const s = madeHere.get(r);
  return s === NO_SOURCE ? undefined : s;
};
const NO_SOURCE: PenaltySource = Object.freeze({
  list: null as unknown as PickPenalties, events: 0, ids: new Int32Array(0), counts: new Int32Array(0),
});

export class Sampler {
  readonly seed: number;
  readonly greedy: boolean;
  private readonly rng: Rng;
  private readonly penalty: PenaltyState;
  private readonly processors: readonly Processor[];
  private readonly warpers: readonly Processor[];
  private readonly c = new Candidates();
  /** pickRequest()'s penalty ids and counts, kept up to date by accept() and sample() */
  private readonly pickList: PickPenalties;

  /** contextIds: the prompt, which the repetition penalty covers too. */
  constructor(
    readonly config: SamplerConfig,
    contextIds: ArrayLike<number> = [],
  ) {
    if (!Number.isInteger(config.tokenizerVocabSize) || config.tokenizerVocabSize < 1) {
      throw new QwenError('E_BAD_ARG', `tokenizerVocabSize must be an integer >= 1 (got ${config.tokenizerVocabSize})`);
    }
    this.seed = config.seed ?? randomSeed();
    this.rng = new Rng(this.seed);
    this.greedy = !config.doSample || config.temperature === 0;
    this.penalty = {
      repetition: new RepetitionPenalty(config.repetitionPenalty, contextIds),
      openai: new PresenceFrequencyPenalty(config.presencePenalty ?? 0, config.frequencyPenalty ?? 0),
    };
    const active = PROCESSOR_CHAIN.filter((p) => p.enabled(config));
    this.processors = active.filter((p) => !p.warper);
    this.warpers = this.greedy ? [] : active.filter((p) => p.warper);
    const on = (name: string) => this.processors.some((p) => p.name === name);
    this.pickList = new PickPenalties(
      on('repetitionPenalty') ? 'all' : on('presenceFrequencyPenalty') ? 'generated' : 'none',
      config.tokenizerVocabSize,
    );
    this.pickList.addPrompt(contextIds);
  }

  /**
   * Record ids appended to the sequence after the prompt by someone else (sample() records its own pick); they count
   * as generated for the presence / frequency penalties.
   */
  accept(ids: ArrayLike<number>): void {
    this.penalty.repetition.add(ids);
    this.penalty.openai.add(ids);
    this.pickList.addGenerated(ids);
  }

  /** Whether pickRequest() makes requests (for every step of this sampler) or returns null (never does). */
  get nativePicks(): boolean {
    return this.greedy || this.config.tokenizerVocabSize <= ID_SPAN;
  }

  /**
   * The next pick inside the backend (Sequence.forwardPick): the request under which the native pick equals what
   * sample() would return on the same logits — the active penalties with the history as of now, the vocabulary
   * limit, the logprobs asked for and, when sampling, the active warpers and the draw's u. Sampling consumes one
   * rng.next() per request, as sample() does per call, so a seed gives the same ids on either path — provided every
   * step goes one way (call either this or sample() per step, not both). Record the picked id with accept([id])
   * afterwards, as sample() records its own. null (and no rng draw) where only sample() can do it: sampling over
   * more than 2^20 eligible ids (candidates.ts ID_SPAN; Qwen has 151,851), which sample() refuses or handles itself.
   */
  pickRequest(): NativePickRequest | null {
    const { config } = this;
    if (!this.nativePicks) return null;
    const n = config.tokenizerVocabSize;
    const rep = this.pickList.mode === 'all';
    const openai = this.processors.some((p) => p.name === 'presenceFrequencyPenalty');
    const { ids, counts } = this.pickList.snapshot(); // every distinct id of the sequence (PickPenalties documents it)
    const req: NativePickRequest = {
      repetitionPenalty: rep ? config.repetitionPenalty : 1,
      presencePenalty: openai ? (config.presencePenalty ?? 0) : 0,
      frequencyPenalty: openai ? (config.frequencyPenalty ?? 0) : 0,
      ids,
      counts,
      vocabLimit: n,
    };
    if (config.logprobs !== undefined) req.topLogprobs = config.logprobs;
    if (!this.greedy) {
      // Only the active warpers travel (their no-op values otherwise), as sample() runs only those.
      const on = (name: string) => this.warpers.some((p) => p.name === name);
      req.doSample = true;
      req.temperature = on('temperature') ? config.temperature : 1;
      req.topK = on('topK') ? config.topK : 0;
      req.topP = on('topP') ? config.topP : 1;
      req.u = this.rng.next(); // where sample() draws it: after the processors and warpers, once per step
    }
    madeHere.set(req, this.pickList.mode === 'none' ? NO_SOURCE : { list: this.pickList, events: this.pickList.events, ids, counts });
    return req;
  }

  /** Pick the next id from the last position's logits, which are consumed (rewritten in place). */
  sample(logits: Float32Array): SampleResult {
    const { config, c } = this;
    c.load(logits, config.tokenizerVocabSize);
    for (const p of this.processors) p.apply(c, config, this.penalty);
    let id: number;
    if (this.greedy) {
      c.scan();
      id = c.argmax; // ties -> lowest id
    } else {
      for (const p of this.warpers) p.apply(c, config, this.penalty);
      id = draw(c, this.rng.next());
    }
    this.accept([id]);
    if (config.logprobs === undefined) return { id };
    if (this.greedy) c.weighAll(); // temperature 1: nothing was drawn, report the model's (penalized) softmax
    return { id, ...logprobsOf(c, id, config.logprobs) };
  }
}

export function createSampler(config: SamplerConfig, contextIds: ArrayLike<number> = []): Sampler {
  return new Sampler(config, contextIds);
}
