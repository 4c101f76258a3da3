/**
 * Generation options: HF generation_config.json (snake_case) -> camelCase options, ONE table of fields with their
 * defaults and checks, and resolve(): defaults < file < call -> a frozen, validated config (reference §6.1/§6.2).
 */
import { readFileSync } from 'node:fs';
import { QwenError, badArg, describe } from '../errors';
import { randomSeed } from '../sampling/rng';

export type ChatFormat = 'chatml' | 'raw';

export interface GenerationOptions {
  maxNewTokens: number; // tokens to generate at most (eos / stop words included)
  doSample: boolean; // false: greedy (argmax); warpers are then skipped, the repetition penalty still applies
  temperature: number; // >= 0; 0 = greedy
  topK: number; // 0 = off
  topP: number; // (0, 1]; 1 = off
  repetitionPenalty: number; // > 0; 1 = off; covers the prompt too
  presencePenalty: number; // [-2, 2], call-only (OpenAI's): logit -= p for every id already GENERATED; 0 = off
  frequencyPenalty: number; // [-2, 2], call-only (OpenAI's): logit -= f * (times the id was GENERATED); 0 = off
  stopWordsIds: number[][]; // generation ends when the sequence (prompt included) ends with one of these id sequences
  stop: string[]; // text-level stop strings: the output is cut before the first one
  eosTokenId: number | number[]; // ends generation; never emitted as text
  padTokenId: number; // batch padding (not used by a single sequence)
  seed?: number; // any safe integer; random (and reported in the resolved config) when absent
  maxWindowSize: number; // chat history budget in tokens (make_context, §7.1)
  chatFormat: ChatFormat;
  logprobs?: number; // 0..20: report the chosen id's logprob and this many top alternatives
  tokenizerVocabSize: number; // ids >= this (lm_head padding rows 151851..151935) are never produced
}

/** What a call may pass: any subset; `undefined` values count as not given. */
export type GenerationCallOptions = Partial<GenerationOptions>;

export interface ResolvedGenerationConfig {
  readonly maxNewTokens: number;
  readonly doSample: boolean;
  readonly temperature: number;
  readonly topK: number;
  readonly topP: number;
  readonly repetitionPenalty: number;
  readonly presencePenalty: number;
  readonly frequencyPenalty: number;
  readonly stopWordsIds: readonly (readonly number[])[];
  readonly stop: readonly string[];
  readonly eosTokenIds: readonly number[]; // eosTokenId as a list
  readonly padTokenId: number;
  readonly seed: number; // always set: the one used
  readonly maxWindowSize: number;
  readonly chatFormat: ChatFormat;
  readonly logprobs?: number;
  readonly tokenizerVocabSize: number;
}

export interface ResolveContext {
  contextLimit: number; // positions the model may hold (prompt + generated)
  promptLength: number;
}

type Problem = { at?: string; expected: string; got: unknown } | null;
interface Field {
  hf?: string; // key in generation_config.json; fields without one are call-only
  default?: unknown; // absent: optional field
  check: (v: unknown, vocab: number) => Problem;
}

const isInt = (v: unknown): v is number => Number.isSafeInteger(v);
const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
const need = (ok: boolean, expected: string, got: unknown): Problem => (ok ? null : { expected, got });
const tokenIdProblem = (v: unknown, vocab: number, at?: string): Problem =>
  isInt(v) && v >= 0 && v < vocab ? null : { at, expected: `a token id, an integer in [0, ${vocab - 1}]`, got: v };

function idLists(v: unknown, vocab: number): Problem {
  if (!Array.isArray(v)) return { expected: 'an array of token id arrays', got: v };
  for (let i = 0; i < v.length; i++) {
    const s: unknown = v[i];
    if (!Array.isArray(s) || s.length === 0)
      return { at: `[${i}]`, expected: 'a non-empty array of token ids', got: s };
    for (let j = 0; j < s.length; j++) {
      const p = tokenIdProblem(s[j], vocab, `[${i}][${j}]`);
      if (p) return p;
    }
  }
  return null;
}

/** THE table: every option, its generation_config.json key, its default (§6.1) and its allowed range. */
const FIELDS: Record<keyof GenerationOptions, Field> = {
  maxNewTokens: { hf: 'max_new_tokens', default: 512, check: (v) => need(isInt(v) && v >= 1, 'an integer >= 1', v) },
  doSample: { hf: 'do_sample', default: true, check: (v) => need(typeof v === 'boolean', 'a boolean', v) },
  temperature: {
    hf: 'temperature',
    default: 1,
    check: (v) => need(isNum(v) && v >= 0, 'a finite number >= 0 (0 = greedy)', v),
  },
  topK: { hf: 'top_k', default: 0, check: (v) => need(isInt(v) && v >= 0, 'an integer >= 0 (0 = off)', v) },
  topP: { hf: 'top_p', default: 0.8, check: (v) => need(isNum(v) && v > 0 && v <= 1, 'a number in (0, 1]', v) },
  repetitionPenalty: {
    hf: 'repetition_penalty',
    default: 1.0,
    check: (v) => need(isNum(v) && v > 0, 'a finite number > 0 (1 = off)', v),
  },
  // OpenAI's penalties: call-only (no generation_config.json key), over the generated ids only (sampling/).
  presencePenalty: {
    default: 0,
    check: (v) => need(isNum(v) && v >= -2 && v <= 2, 'a finite number in [-2, 2] (0 = off)', v),
  },
  frequencyPenalty: {
    default: 0,
    check: (v) => need(isNum(v) && v >= -2 && v <= 2, 'a finite number in [-2, 2] (0 = off)', v),
  },
  stopWordsIds: { hf: 'stop_words_ids', default: [[151643]], check: idLists },
  stop: {
    default: [],
    check: (v) => {
      if (!Array.isArray(v)) return { expected: 'an array of non-empty strings', got: v };
      const i = v.findIndex((s) => typeof s !== 'string' || s.length === 0);
      return i < 0 ? null : { at: `[${i}]`, expected: 'a non-empty string', got: v[i] };
    },
  },
  eosTokenId: {
    hf: 'eos_token_id',
    default: 151643,
    check: (v, vocab) => {
      if (!Array.isArray(v)) return tokenIdProblem(v, vocab);
      if (v.length === 0) return { expected: 'a token id or a non-empty array of token ids', got: v };
      for (let i = 0; i < v.length; i++) {
        const p = tokenIdProblem(v[i], vocab, `[${i}]`);
        if (p) return p;
      }
      return null;
    },
  },
  padTokenId: { hf: 'pad_token_id', default: 151643, check: (v, vocab) => tokenIdProblem(v, vocab) },
  seed: { check: (v) => need(isInt(v), 'a safe integer', v) },
  maxWindowSize: { hf: 'max_window_size', default: 6144, check: (v) => need(isInt(v) && v >= 1, 'an integer >= 1', v) },
  chatFormat: {
    hf: 'chat_format',
    default: 'chatml',
    check: (v) => need(v === 'chatml' || v === 'raw', "'chatml' or 'raw'", v),
  },
  logprobs: { check: (v) => need(isInt(v) && v >= 0 && v <= 20, 'an integer in [0, 20]', v) },
  tokenizerVocabSize: { default: 151851, check: (v) => need(isInt(v) && v >= 1, 'an integer >= 1', v) },
};
const NAMES = Object.keys(FIELDS) as (keyof GenerationOptions)[];

/**
 * Keys of the Aug-2023 Qwen-7B-Chat file that no code reads any more (and transformers' bookkeeping). Listed so that
 * nobody "adds support" for them; like any other key outside FIELDS they are dropped.
 */
export const DEAD_KEYS: readonly string[] = [
  'transformers_version',
  'decay_bound',
  'decay_factor',
  'factual_nucleus_sampling',
  'max_context_size',
  'max_generate_size',
];

/** The defaults alone (what a model without generation_config.json gets). */
export function defaults(): GenerationOptions {
  const out: Record<string, unknown> = {};
  for (const name of NAMES) if (FIELDS[name].default !== undefined) out[name] = structuredClone(FIELDS[name].default);
  return out as unknown as GenerationOptions;
}

/**
 * A parsed generation_config.json: defaults overlaid with the file's known keys. Keys outside FIELDS (DEAD_KEYS and
 * anything else) are dropped; `null` counts as absent. Bad values: E_BAD_CHECKPOINT naming the file and the key.
 */
export function fromJSON(raw: unknown, source = 'generation_config.json'): GenerationOptions {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new QwenError('E_BAD_CHECKPOINT', `${source}: expected a JSON object (got ${describe(raw)})`);
  }
  const src = raw as Record<string, unknown>;
  const out = defaults() as unknown as Record<string, unknown>;
  const vocab = FIELDS.tokenizerVocabSize.default as number;
  for (const name of NAMES) {
    const { hf, check } = FIELDS[name];
    if (hf === undefined || src[hf] === undefined || src[hf] === null) continue;
    const p = check(src[hf], vocab);
    if (p) {
      throw new QwenError(
        'E_BAD_CHECKPOINT',
        `${source}: ${hf}${p.at ?? ''} must be ${p.expected} (got ${describe(p.got)})`,
      );
    }
    out[name] = structuredClone(src[hf]);
  }
  return out as unknown as GenerationOptions;
}

/** fromJSON of a file; a missing or unparsable file is E_BAD_CHECKPOINT naming the path. */
export function fromFile(path: string): GenerationOptions {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new QwenError('E_BAD_CHECKPOINT', `${path}: cannot read (${(e as Error).message})`, { cause: e });
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new QwenError('E_BAD_CHECKPOINT', `${path}: invalid JSON (${(e as Error).message})`, { cause: e });
  }
  return fromJSON(raw, path);
}

/**
 * defaults < fileConfig < callOptions, validated (E_BAD_ARG naming the option and its allowed range) and frozen.
 * maxNewTokens must fit the context: promptLength + maxNewTokens <= contextLimit. An explicit call value that does
 * not fit is an error; a default or file value is clamped to the room left. No room at all is E_CONTEXT.
 */
export function resolve(
  fileConfig: Readonly<GenerationOptions> | undefined,
  callOptions: GenerationCallOptions | undefined,
  ctx: ResolveContext,
): ResolvedGenerationConfig {
  if (
    callOptions !== undefined &&
    (typeof callOptions !== 'object' || callOptions === null || Array.isArray(callOptions))
  ) {
    throw badArg('options', 'an object', callOptions);
  }
  if (!isInt(ctx?.contextLimit) || ctx.contextLimit < 1)
    throw badArg('contextLimit', 'an integer >= 1', ctx?.contextLimit);
  if (!isInt(ctx.promptLength) || ctx.promptLength < 0)
    throw badArg('promptLength', 'an integer >= 0', ctx.promptLength);
  const call = (callOptions ?? {}) as Record<string, unknown>;
  for (const key of Object.keys(call)) {
    if (!Object.prototype.hasOwnProperty.call(FIELDS, key)) throw unknownOption(key);
  }
  const merged: Record<string, unknown> = { ...defaults() };
  for (const layer of [fileConfig as Record<string, unknown> | undefined, call]) {
    for (const name of NAMES) if (layer?.[name] !== undefined) merged[name] = layer[name];
  }
  // tokenizerVocabSize first: the token id checks depend on it.
  const order = [
    'tokenizerVocabSize',
    ...NAMES.filter((n) => n !== 'tokenizerVocabSize'),
  ] as (keyof GenerationOptions)[];
  for (const name of order) {
    if (merged[name] === undefined) continue; // optional fields
    const p = FIELDS[name].check(merged[name], merged.tokenizerVocabSize as number);
    if (p) throw badArg(`${name}${p.at ?? ''}`, p.expected, p.got);
  }
  const room = ctx.contextLimit - ctx.promptLength;
  if (room < 1) {
    throw new QwenError(
      'E_CONTEXT',
      `the prompt has ${ctx.promptLength} tokens: no room to generate within the context limit of ${ctx.contextLimit}`,
    );
  }
  let maxNewTokens = merged.maxNewTokens as number;
  if (maxNewTokens > room) {
    if (call.maxNewTokens === undefined) maxNewTokens = room;
    else {
      throw badArg(
        'maxNewTokens',
        `an integer in [1, ${room}] (context limit ${ctx.contextLimit} - prompt ${ctx.promptLength} tokens)`,
        maxNewTokens,
      );
    }
  }
  const eos = merged.eosTokenId as number | number[];
  const resolved: ResolvedGenerationConfig = {
    maxNewTokens,
    doSample: merged.doSample as boolean,
    temperature: merged.temperature as number,
    topK: merged.topK as number,
    topP: merged.topP as number,
    repetitionPenalty: merged.repetitionPenalty as number,
    presencePenalty: merged.presencePenalty as number,
    frequencyPenalty: merged.frequencyPenalty as number,
    stopWordsIds: Object.freeze((merged.stopWordsIds as number[][]).map((s) => Object.freeze([...s]))),
    stop: Object.freeze([...(merged.stop as string[])]),
    eosTokenIds: Object.freeze(Array.isArray(eos) ? [...eos] : [eos]),
    padTokenId: merged.padTokenId as number,
    seed: (merged.seed as number | undefined) ?? randomSeed(),
    maxWindowSize: merged.maxWindowSize as number,
    chatFormat: merged.chatFormat as ChatFormat,
    ...(merged.logprobs !== undefined ? { logprobs: merged.logprobs as number } : {}),
    tokenizerVocabSize: merged.tokenizerVocabSize as number,
  };
  return Object.freeze(resolved);
}

function unknownOption(key: string): QwenError {
  const hint = suggest(key);
  return new QwenError(
    'E_BAD_ARG',
    `unknown option '${key}'` + (hint ? ` — did you mean '${hint}'?` : ` (known: ${NAMES.join(', ')})`),
  );
}

/** Same name up to case/underscores (also catches the snake_case HF keys), else the closest within ~1 edit in 3. */
function suggest(key: string): string | undefined {
  const norm = (s: string) => s.toLowerCase().replace(/[_\-\s]/g, '');
  const k = norm(key);
  let best: string | undefined;
  let bestDist = Math.max(1, Math.floor(k.length / 3)) + 1;
  for (const name of NAMES) {
    const d = name === key ? 0 : norm(name) === k ? 0 : editDistance(norm(name), k);
    if (d < bestDist) {
      best = name;
      bestDist = d;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length];
}
