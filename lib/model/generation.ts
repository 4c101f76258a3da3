/**
 * model.generate / model.chat: the policy layer over Sequence. Prompts become ids (raw: encode with specials allowed,
 * as the reference; chat: make_context, injection-safe), options are resolved against generation_config.json, and
 * lib/generation/generate.ts runs the step loop. Nothing here touches native code directly.
 */
import { QwenError, badArg } from '../errors';
import { ChatMessage, extractReply, makeContext, messagesToQuery, pyStrip } from '../chat/chatml';
import { GenerationCallOptions, GenerationOptions, resolve } from '../generation/config';
import { GenerationChunk, GenerationResult, collectChunks, generateTokens } from '../generation/generate';
import type { Tokenizer } from '../tokenizer';
import type { Model } from './model';
import { MAX_POSITIONS } from './limits';

export interface GenerateOptions extends GenerationCallOptions {
  signal?: AbortSignal;
}

export type ChatHistory = Array<[string, string]>;

export interface ChatOptions extends GenerateOptions {
  history?: ChatHistory;
  system?: string;
}

export interface ChatResult extends GenerationResult {
  response: string;
  history: ChatHistory;
}

/** A running generation: iterate its chunks, or await result() — one or the other. */
export class Generation implements AsyncIterable<GenerationChunk> {
  private used = false;
  /** @internal */
  constructor(
    private readonly source: () => AsyncGenerator<GenerationChunk, void, undefined>,
    private readonly withLogprobs: boolean,
  ) {}

  [Symbol.asyncIterator](): AsyncIterator<GenerationChunk> {
    if (this.used) throw new QwenError('E_BAD_ARG', 'a Generation can be consumed once (iterate it or await result())');
    this.used = true;
    return this.source();
  }

  /** Runs to the end: text, tokens, usage and finishReason. */
  result(): Promise<GenerationResult> {
    return collectChunks(this, this.withLogprobs);
  }
}

function splitSignal<T extends GenerateOptions>(options: T | undefined): [Omit<T, 'signal'>, AbortSignal | undefined] {
  if (options !== undefined && (typeof options !== 'object' || options === null)) throw badArg('options', 'an object', options);
  const { signal, ...rest } = options ?? ({} as T);
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw badArg('options.signal', 'an AbortSignal', signal);
  return [rest, signal];
}

export function startGeneration(
  model: Model,
  tokenizer: Tokenizer,
  fileConfig: GenerationOptions,
  promptIds: number[],
  options: GenerateOptions | undefined,
): Generation {
  const [call, signal] = splitSignal(options);
  model.checkIds(promptIds, 0); // validates ids and the context limit before anything runs
  const config = resolve(fileConfig, { tokenizerVocabSize: tokenizer.vocabSize, ...call }, {
    contextLimit: MAX_POSITIONS,
    promptLength: promptIds.length,
  });
  return new Generation(() => generateTokens(model.createSequence(), tokenizer, promptIds, config, signal), config.logprobs !== undefined);
}

export function promptIds(tokenizer: Tokenizer, prompt: string | ArrayLike<number>): number[] {
  if (typeof prompt === 'string') {
    if (prompt.length === 0) throw badArg('prompt', 'a non-empty string or array of token ids', prompt);
    return tokenizer.encode(prompt, { allowedSpecial: 'all' }); // the reference's raw format
  }
  if (prompt === null || typeof prompt !== 'object' || typeof prompt.length !== 'number') {
    throw badArg('prompt', 'a string or an array of token ids', prompt);
  }
  return Array.from(prompt);
}

interface ChatPrompt {
  ids: number[];
  query: string;
  history: ChatHistory;
  call: GenerateOptions;
}

/** query + options (or OpenAI-style messages) -> ChatML ids, with im_end / im_start added to the stop words. */
export function chatPrompt(
  tokenizer: Tokenizer,
  fileConfig: GenerationOptions,
  input: string | ChatMessage[],
  options: ChatOptions | undefined,
): ChatPrompt {
  if (options !== undefined && (typeof options !== 'object' || options === null)) throw badArg('options', 'an object', options);
  const { history: h, system: s, ...call } = options ?? {};
  let query: string, history: ChatHistory, system: string | undefined;
  if (Array.isArray(input)) {
    if (h !== undefined || s !== undefined) throw badArg('options.history', 'absent when messages are given', h ?? s);
    ({ query, history, system } = messagesToQuery(input));
  } else {
    if (typeof input !== 'string') throw badArg('query', 'a string or an array of messages', input);
    query = input;
    history = h ?? [];
    system = s;
  }
  if ((call.chatFormat ?? fileConfig.chatFormat) !== 'chatml') {
    throw new QwenError('E_BAD_ARG', "chat needs chatFormat 'chatml' (this model's generation_config says 'raw': use generate())");
  }
  const { ids } = makeContext(tokenizer, query, {
    history,
    system,
    maxWindowSize: call.maxWindowSize ?? fileConfig.maxWindowSize,
  });
  const { imEnd, imStart } = tokenizer.specialIds;
  const stopWordsIds = [...(call.stopWordsIds ?? fileConfig.stopWordsIds ?? []), [imEnd], [imStart]];
  return { ids, query, history, call: { ...call, stopWordsIds } };
}

export async function runChat(model: Model, tokenizer: Tokenizer, fileConfig: GenerationOptions, input: string | ChatMessage[], options?: ChatOptions): Promise<ChatResult> {
  const p = chatPrompt(tokenizer, fileConfig, input, options);
  const r = await startGeneration(model, tokenizer, fileConfig, p.ids, p.call).result();
  // Stop words and eos are never part of r.tokens; extractReply cuts at any special left and strips like Python.
  const response = r.tokens.length ? extractReply(tokenizer, r.tokens) : pyStrip(r.text);
  return { ...r, response, history: [...p.history.map((t) => [t[0], t[1]] as [string, string]), [p.query, response]] };
}
