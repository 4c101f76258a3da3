/**
 * Request body (already shape-checked by schemas.ts) -> what to run: prompt, generation options, stream flags. Every
 * range check happens here and fails with a 400 naming the parameter and its allowed range; a prompt that does not fit
 * the model's context is a 413. Parameters the client leaves out take the model's generation_config.json values
 * (as vLLM does), except max_tokens on /v1/completions, whose OpenAI default is 16.
 */
import { ChatMessage, makeContext, messagesToQuery } from '../chat/chatml';
import { QwenError, describe } from '../errors';
import type { GenerateOptions } from '../model/generation';
import type { Model } from '../model/model';
import { ApiError, badParam, fromQwenError } from './errors';

export const COMPLETIONS_DEFAULT_MAX_TOKENS = 16; // OpenAI's default for /v1/completions
export const MAX_STOP = 4;
export const MAX_COMPLETION_LOGPROBS = 5; // OpenAI's limit for /v1/completions `logprobs`
export const MAX_TOP_LOGPROBS = 20; // OpenAI's limit for chat `top_logprobs`

type Body = Record<string, unknown>;

interface Common {
  stream: boolean;
  includeUsage: boolean;
  /** max_tokens as given (absent: a default, clamped to the context). */
  maxTokens?: number;
  /** Sampling options for model.generate / chatStream (no maxNewTokens, signal or logprobs yet). */
  options: GenerateOptions;
  /** The model name the client asked for, if any. */
  model?: string;
}

export interface CompletionRequest extends Common {
  kind: 'completion';
  promptIds: number[];
  /** OpenAI completions `logprobs` (0..5): top alternatives per token; absent: none. */
  logprobs?: number;
}

export interface ChatRequest extends Common {
  kind: 'chat';
  messages: ChatMessage[];
  promptTokens: number;
  /** Chat `logprobs: true`, with `top_logprobs` alternatives (0..20). */
  logprobs?: number;
}

export type ParsedRequest = CompletionRequest | ChatRequest;

const given = (v: unknown): boolean => v !== undefined && v !== null;

function num(b: Body, name: string, ok: (v: number) => boolean, expected: string): number | undefined {
  const v = b[name];
  if (!given(v)) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v) || !ok(v)) throw badParam(name, expected, v);
  return v;
}

function int(b: Body, name: string, min: number, max: number, expected?: string): number | undefined {
  const v = b[name];
  if (!given(v)) return undefined;
  if (!Number.isSafeInteger(v) || (v as number) < min || (v as number) > max) {
    throw badParam(name, expected ?? `an integer in [${min}, ${max}]`, v);
  }
  return v as number;
}

function unsupported(b: Body, name: string, isDefault: (v: unknown) => boolean, expected: string): void {
  const v = b[name];
  if (given(v) && !isDefault(v)) throw badParam(name, `${expected} (the only value this server supports)`, v, 'unsupported_parameter');
}

function parseCommon(b: Body): Common {
  unsupported(b, 'n', (v) => v === 1, '1');
  unsupported(b, 'logit_bias', (v) => typeof v === 'object' && v !== null && Object.keys(v).length === 0, 'absent or {}');
  const options: GenerateOptions = {};
  const temperature = num(b, 'temperature', (v) => v >= 0 && v <= 2, 'a number in [0, 2] (0 = greedy)');
  if (temperature !== undefined) {
    options.temperature = temperature;
    options.doSample = temperature > 0; // OpenAI semantics: any temperature > 0 samples
  }
  const topP = num(b, 'top_p', (v) => v > 0 && v <= 1, 'a number in (0, 1]');
  if (topP !== undefined) options.topP = topP;
  const topK = int(b, 'top_k', -1, 1e9, 'an integer >= -1 (0 or -1 = off)');
  if (topK !== undefined) options.topK = Math.max(0, topK);
  const rp = num(b, 'repetition_penalty', (v) => v > 0 && v <= 2, 'a number in (0, 2] (1 = off)');
  if (rp !== undefined) options.repetitionPenalty = rp;
  const pp = num(b, 'presence_penalty', (v) => v >= -2 && v <= 2, 'a number in [-2, 2]');
  if (pp !== undefined) options.presencePenalty = pp;
  const fp = num(b, 'frequency_penalty', (v) => v >= -2 && v <= 2, 'a number in [-2, 2]');
  if (fp !== undefined) options.frequencyPenalty = fp;
  const seed = int(b, 'seed', Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER, 'a safe integer');
  if (seed !== undefined) options.seed = seed;
  if (given(b.stop)) {
    const stops = typeof b.stop === 'string' ? [b.stop] : (b.stop as unknown[]);
    stops.forEach((s, i) => {
      if (typeof s !== 'string' || s.length === 0) {
        throw badParam(typeof b.stop === 'string' ? 'stop' : `stop[${i}]`, 'a non-empty string', s);
      }
    });
    if (stops.length > 0) options.stop = stops as string[];
  }
  const stream = b.stream === true;
  const so = b.stream_options as { include_usage?: boolean | null } | null | undefined;
  return {
    stream,
    includeUsage: stream && so?.include_usage === true,
    options,
    ...(typeof b.model === 'string' ? { model: b.model } : {}),
  };
}

/** Token ids of a completions prompt: a string (encoded as model.generate does), ids, or a batch of one of them. */
function completionPrompt(prompt: unknown, model: Model): number[] {
  let p = prompt;
  if (Array.isArray(p) && p.length === 1 && (typeof p[0] === 'string' || Array.isArray(p[0]))) p = p[0]; // a batch of one
  if (typeof p === 'string') {
    if (p.length === 0) throw badParam('prompt', 'a non-empty string or array of token ids', p);
    return model.tokenizer.encode(p, { allowedSpecial: 'all' }); // the reference's raw format, as model.generate
  }
  if (!Array.isArray(p) || p.length === 0) throw badParam('prompt', 'a non-empty string or array of token ids', p);
  if (p.some((x) => typeof x === 'string' || Array.isArray(x))) {
    throw badParam('prompt', 'one prompt (a string or an array of token ids): batches of several prompts are not supported', p);
  }
  const vocab = Math.min(model.tokenizer.vocabSize, model.config.vocab_size);
  p.forEach((id, i) => {
    if (!Number.isInteger(id) || id < 0 || id >= vocab) throw badParam(`prompt[${i}]`, `a token id, an integer in [0, ${vocab - 1}]`, id);
  });
  return p as number[];
}

/** Prompt length + max_tokens against the model's context: 413 when they do not fit; the max_tokens to use. */
function fitContext(
  model: Model,
  promptTokens: number,
  maxTokens: number | undefined,
  defaultMax: number,
  promptParam: 'prompt' | 'messages',
): number {
  const limit = model.contextLimit;
  if (promptTokens + (maxTokens ?? 1) > limit) {
    const tooLongAlone = promptTokens + 1 > limit;
    throw new ApiError(
      413,
      `this model's context holds ${limit} tokens: the prompt has ${promptTokens}` +
        (tooLongAlone ? '' : ` and max_tokens asks for ${maxTokens} more`),
      tooLongAlone ? promptParam : 'max_tokens',
      'context_length_exceeded',
    );
  }
  return maxTokens ?? Math.min(defaultMax, limit - promptTokens);
}

export function parseCompletion(b: Body, model: Model): CompletionRequest & { maxNewTokens: number } {
  const c = parseCommon(b);
  unsupported(b, 'echo', (v) => v === false, 'false');
  unsupported(b, 'best_of', (v) => v === 1, '1');
  unsupported(b, 'suffix', (v) => v === '', 'absent');
  const maxTokens = int(b, 'max_tokens', 1, Number.MAX_SAFE_INTEGER, 'an integer >= 1');
  const logprobs = int(b, 'logprobs', 0, MAX_COMPLETION_LOGPROBS);
  const promptIds = completionPrompt(b.prompt, model);
  const maxNewTokens = fitContext(model, promptIds.length, maxTokens, COMPLETIONS_DEFAULT_MAX_TOKENS, 'prompt');
  return {
    ...c,
    kind: 'completion',
    promptIds,
    maxNewTokens,
    ...(maxTokens !== undefined ? { maxTokens } : {}),
    ...(logprobs !== undefined ? { logprobs } : {}),
  };
}

function messageContent(content: unknown, i: number): string {
  if (typeof content === 'string') return content;
  // Text parts, concatenated ([{ type: 'text', text }], as the OpenAI client sends them); nothing else.
  const parts = content as unknown[];
  return parts
    .map((p, j) => {
      const part = p as { type?: unknown; text?: unknown } | null;
      if (part === null || typeof part !== 'object' || part.type !== 'text' || typeof part.text !== 'string') {
        throw badParam(`messages[${i}].content[${j}]`, "a text part { type: 'text', text: string } (only text is supported)", part);
      }
      return part.text;
    })
    .join('');
}

export function parseChat(b: Body, model: Model): ChatRequest & { maxNewTokens: number } {
  const c = parseCommon(b);
  for (const name of ['tools', 'functions']) unsupported(b, name, (v) => Array.isArray(v) && v.length === 0, 'absent or []');
  unsupported(b, 'response_format', (v) => (v as { type?: unknown }).type === 'text', "absent or { type: 'text' }");
  if (given(b.max_tokens) && given(b.max_completion_tokens) && b.max_tokens !== b.max_completion_tokens) {
    throw badParam('max_completion_tokens', 'equal to max_tokens when both are given', b.max_completion_tokens);
  }
  const maxTokens =
    int(b, 'max_completion_tokens', 1, Number.MAX_SAFE_INTEGER, 'an integer >= 1') ??
    int(b, 'max_tokens', 1, Number.MAX_SAFE_INTEGER, 'an integer >= 1');
  let logprobs: number | undefined;
  const top = int(b, 'top_logprobs', 0, MAX_TOP_LOGPROBS);
  if (b.logprobs === true) logprobs = top ?? 0;
  else if (top !== undefined) throw badParam('top_logprobs', 'absent unless logprobs is true', top);
  if (model.generationConfig.chatFormat !== 'chatml') {
    const why = "this model's generation_config.json has chat_format 'raw' (a base model): use /v1/completions";
    throw new ApiError(400, why, 'model', 'model_not_chat');
  }
  const messages: ChatMessage[] = (b.messages as Array<{ role: ChatMessage['role']; content: unknown }>).map((m, i) => ({
    role: m.role,
    content: messageContent(m.content, i),
  }));
  let promptTokens: number;
  try {
    const { query, history, system } = messagesToQuery(messages);
    const sys = system === undefined ? {} : { system };
    const maxWindowSize = model.generationConfig.maxWindowSize;
    promptTokens = makeContext(model.tokenizer, query, { history, ...sys, maxWindowSize }).ids.length;
  } catch (e) {
    if (e instanceof QwenError) throw fromQwenError(e, 'messages');
    throw e;
  }
  const maxNewTokens = fitContext(model, promptTokens, maxTokens, model.generationConfig.maxNewTokens, 'messages');
  return {
    ...c,
    kind: 'chat',
    messages,
    promptTokens,
    maxNewTokens,
    ...(maxTokens !== undefined ? { maxTokens } : {}),
    ...(logprobs !== undefined ? { logprobs } : {}),
  };
}

/** The requested model must be this server's (when given). */
export function checkModel(requested: string | undefined, served: string): void {
  if (requested !== undefined && requested !== served) {
    const why = `the model ${describe(requested)} does not exist here: this server serves ${describe(served)}`;
    throw new ApiError(404, why, 'model', 'model_not_found');
  }
}
