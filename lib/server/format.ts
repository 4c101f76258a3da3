/**
 * Response bodies and stream chunks in OpenAI's shapes (completions: `text_completion`; chat: `chat.completion` and
 * `chat.completion.chunk`), and the two logprobs formats.
 *
 * Token strings: a token's bytes decoded as UTF-8 when they are valid on their own; a token holding part of a
 * character is written `bytes:\xe4\xbd` (vLLM's convention). Chat entries carry the exact `bytes` too. A logprob that
 * is -Infinity (JSON has no such number) is reported as -9999, as OpenAI does.
 */
import type { TokenLogprob, Usage } from '../generation/generate';
import type { Tokenizer } from '../tokenizer';
import type { StreamDecoder } from '../types';

export type FinishReason = 'stop' | 'length';

export interface ApiUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export function apiUsage(u: Usage): ApiUsage {
  return { prompt_tokens: u.promptTokens, completion_tokens: u.completionTokens, total_tokens: u.promptTokens + u.completionTokens };
}

const fatal = new TextDecoder('utf-8', { fatal: true });

function finite(x: number): number {
  return Number.isFinite(x) ? x : -9999;
}

/** Per-request token-string helper with a cache (top logprobs repeat the same few ids). */
export class TokenTexts {
  private readonly cache = new Map<number, { text: string; bytes: number[] }>();
  constructor(private readonly tokenizer: Tokenizer) {}

  of(id: number): { text: string; bytes: number[] } {
    let t = this.cache.get(id);
    if (!t) {
      const raw = this.tokenizer.decodeBytes([id]);
      let text: string;
      try {
        text = fatal.decode(raw);
      } catch {
        text = 'bytes:' + Array.from(raw, (b) => '\\x' + b.toString(16).padStart(2, '0')).join('');
      }
      t = { text, bytes: Array.from(raw) };
      this.cache.set(id, t);
    }
    return t;
  }
}

export interface CompletionLogprobs {
  tokens: string[];
  token_logprobs: number[];
  top_logprobs: Array<Record<string, number>>;
  text_offset: number[];
}

/**
 * /v1/completions logprobs of the tokens of a chunk. top_logprobs: the `top` most likely tokens and the chosen one
 * (so up to top + 1 entries, as OpenAI); text_offset: character offset of each token in the completion text, carried
 * from chunk to chunk by `offsets`.
 */
export class CompletionLogprobsBuilder {
  private readonly decoder: StreamDecoder;
  private offset = 0;
  constructor(
    tokenizer: Tokenizer,
    private readonly texts: TokenTexts,
  ) {
    this.decoder = tokenizer.createStreamDecoder();
  }

  build(lps: readonly TokenLogprob[]): CompletionLogprobs {
    const out: CompletionLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
    for (const lp of lps) {
      const chosen = this.texts.of(lp.id).text;
      out.tokens.push(chosen);
      out.token_logprobs.push(finite(lp.logprob));
      const top: Record<string, number> = {};
      for (const t of lp.topLogprobs ?? []) {
        const s = this.texts.of(t.id).text;
        if (!(s in top)) top[s] = finite(t.logprob);
      }
      if (!(chosen in top)) top[chosen] = finite(lp.logprob);
      out.top_logprobs.push(top);
      out.text_offset.push(this.offset);
      this.offset += this.decoder.push([lp.id]).length;
    }
    return out;
  }
}

export interface ChatLogprobEntry {
  token: string;
  logprob: number;
  bytes: number[];
  top_logprobs: Array<{ token: string; logprob: number; bytes: number[] }>;
}

export function chatLogprobs(texts: TokenTexts, lps: readonly TokenLogprob[]): { content: ChatLogprobEntry[]; refusal: null } {
  return {
    content: lps.map((lp) => {
      const t = texts.of(lp.id);
      return {
        token: t.text,
        logprob: finite(lp.logprob),
        bytes: t.bytes,
        top_logprobs: (lp.topLogprobs ?? []).map((a) => {
          const x = texts.of(a.id);
          return { token: x.text, logprob: finite(a.logprob), bytes: x.bytes };
        }),
      };
    }),
    refusal: null,
  };
}

export interface Envelope {
  id: string;
  created: number;
  model: string;
}

export function completionBody(e: Envelope, text: string, finish: FinishReason, logprobs: CompletionLogprobs | null, usage: ApiUsage) {
  return {
    id: e.id,
    object: 'text_completion' as const,
    created: e.created,
    model: e.model,
    choices: [{ index: 0, text, logprobs, finish_reason: finish }],
    usage,
  };
}

export function completionChunk(e: Envelope, text: string, finish: FinishReason | null, logprobs: CompletionLogprobs | null, withUsage: boolean) {
  return {
    id: e.id,
    object: 'text_completion' as const,
    created: e.created,
    model: e.model,
    choices: [{ index: 0, text, logprobs, finish_reason: finish }],
    ...(withUsage ? { usage: null } : {}),
  };
}

export function chatBody(e: Envelope, content: string, finish: FinishReason, logprobs: ReturnType<typeof chatLogprobs> | null, usage: ApiUsage) {
  return {
    id: e.id,
    object: 'chat.completion' as const,
    created: e.created,
    model: e.model,
    choices: [{ index: 0, message: { role: 'assistant' as const, content, refusal: null }, logprobs, finish_reason: finish }],
    usage,
  };
}

export function chatChunk(
  e: Envelope,
  delta: { role?: 'assistant'; content?: string },
  finish: FinishReason | null,
  logprobs: ReturnType<typeof chatLogprobs> | null,
  withUsage: boolean,
) {
  return {
    id: e.id,
    object: 'chat.completion.chunk' as const,
    created: e.created,
    model: e.model,
    choices: [{ index: 0, delta, logprobs, finish_reason: finish }],
    ...(withUsage ? { usage: null } : {}),
  };
}

/** The last chunk with stream_options.include_usage: no choices, the usage. */
export function usageChunk(e: Envelope, object: 'text_completion' | 'chat.completion.chunk', usage: ApiUsage) {
  return { id: e.id, object, created: e.created, model: e.model, choices: [], usage };
}
