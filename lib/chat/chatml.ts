/**
 * Qwen-7B-Chat prompt construction and reply extraction (qwen_generation_utils.py: make_context, _decode_chatml;
 * shared/docs/qwen-reference.md §7).
 */
import { QwenError, describe } from '../errors';
import { ENDOFTEXT_ID, IM_END_ID, IM_START_ID } from '../tokenizer/constants';
import type { TokenizerLike } from '../types';

export const DEFAULT_SYSTEM = 'You are a helpful assistant.';
export const DEFAULT_MAX_WINDOW_SIZE = 6144;

/** Earlier turns as [query, response] pairs, oldest first (the reference's `history`). */
export type ChatHistory = ReadonlyArray<readonly [string, string]>;

export interface MakeContextOptions {
  history?: ChatHistory;
  /** Default "You are a helpful assistant." (chat()'s default; make_context's own is ""). */
  system?: string;
  /** Token budget for system + kept history (strict <); the current query is never counted or truncated. */
  maxWindowSize?: number;
  /** 'raw' (base model): the prompt is encode(query) with specials parsed; history and system are ignored. */
  chatFormat?: 'chatml' | 'raw';
}

export interface ChatContext {
  /** The rendered prompt (un-normalized strings, as the reference's raw_text). */
  rawText: string;
  ids: number[];
}

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

/**
 * The ChatML prompt. Segments (role, "\n", content) are encoded separately with specials off — a content starting with
 * "\n" must not merge with the role's newline into 271, and "<|im_start|>" typed by a user stays plain text.
 */
export function makeContext(tokenizer: TokenizerLike, query: string, options: MakeContextOptions = {}): ChatContext {
  const { history = [], system = DEFAULT_SYSTEM, maxWindowSize = DEFAULT_MAX_WINDOW_SIZE, chatFormat = 'chatml' } = options ?? {};
  checkString(query, 'query');
  if (chatFormat === 'raw') return { rawText: query, ids: tokenizer.encode(query) };
  if (chatFormat !== 'chatml') throw new QwenError('E_BAD_ARG', `chatFormat must be 'chatml' or 'raw' (got ${describe(chatFormat)})`);
  checkString(system, 'system');
  if (typeof maxWindowSize !== 'number' || Number.isNaN(maxWindowSize) || maxWindowSize < 0) {
    throw new QwenError('E_BAD_ARG', `maxWindowSize must be a non-negative number (got ${describe(maxWindowSize)})`);
  }
  if (!Array.isArray(history)) throw new QwenError('E_BAD_ARG', `history must be an array of [query, response] pairs (got ${describe(history)})`);
  history.forEach((turn, i) => {
    if (!Array.isArray(turn) || turn.length !== 2 || typeof turn[0] !== 'string' || typeof turn[1] !== 'string') {
      throw new QwenError('E_BAD_ARG', `history[${i}] must be a [query, response] pair of strings (got ${describe(turn)})`);
    }
  });

  const enc = (s: string) => tokenizer.encode(s, { allowedSpecial: 'none' });
  const NL = enc('\n');
  const seg = (role: string, content: string) => [...enc(role), ...NL, ...enc(content)];
  const block = (role: string, content: string) => [IM_START_ID, ...seg(role, content), IM_END_ID];
  const render = (role: string, content: string) => `<|im_start|>${role}\n${content}<|im_end|>`;

  const sysIds = block('system', system);
  const kept: number[][] = []; // newest first
  let keptLen = 0;
  let ctxText = '';
  for (let i = history.length - 1; i >= 0; i--) {
    const [q, r] = history[i];
    const turn = [...NL, ...block('user', q), ...NL, ...block('assistant', r)];
    // Strict <: a turn that makes the total exactly maxWindowSize is dropped, and so is every older turn.
    if (sysIds.length + turn.length + keptLen >= maxWindowSize) break;
    kept.push(turn);
    keptLen += turn.length;
    ctxText = `\n${render('user', q)}\n${render('assistant', r)}` + ctxText;
  }
  const ids = sysIds.concat(...kept.reverse(), NL, block('user', query), NL, [IM_START_ID], enc('assistant'), NL);
  const rawText = render('system', system) + ctxText + `\n${render('user', query)}\n<|im_start|>assistant\n`;
  return { rawText, ids };
}

/**
 * OpenAI-style messages → make_context arguments: an optional leading system message, then user/assistant
 * alternating, starting and ending with user (the last user message is the query).
 */
export function messagesToQuery(messages: readonly ChatMessage[]): { system?: string; history: Array<[string, string]>; query: string } {
  if (!Array.isArray(messages) || messages.length === 0) {
    throw new QwenError('E_BAD_ARG', `messages must be a non-empty array (got ${describe(messages)})`);
  }
  messages.forEach((m, i) => {
    if (m == null || typeof m !== 'object') throw new QwenError('E_BAD_ARG', `messages[${i}] must be an object {role, content} (got ${describe(m)})`);
    if (m.role !== 'system' && m.role !== 'user' && m.role !== 'assistant') {
      throw new QwenError('E_BAD_ARG', `messages[${i}].role must be 'system', 'user' or 'assistant' (got ${describe(m.role)})`);
    }
    checkString(m.content, `messages[${i}].content`);
  });
  const first = messages[0].role === 'system' ? 1 : 0;
  for (let i = first; i < messages.length; i++) {
    const expected = (i - first) % 2 === 0 ? 'user' : 'assistant';
    if (messages[i].role !== expected) {
      const why = messages[i].role === 'system' ? 'only one system message, first, is supported' : 'user and assistant must alternate, starting with user';
      throw new QwenError('E_BAD_ARG', `messages[${i}].role must be '${expected}' (got '${messages[i].role}'): ${why}`);
    }
  }
  const last = messages.length - 1;
  if (messages[last].role !== 'user') {
    throw new QwenError('E_BAD_ARG', `messages[${last}].role must be 'user': the last message is the query to answer (got '${messages[last].role}')`);
  }
  const history: Array<[string, string]> = [];
  for (let i = first; i + 1 < last; i += 2) history.push([messages[i].content, messages[i + 1].content]);
  return { ...(first === 1 ? { system: messages[0].content } : {}), history, query: messages[last].content };
}

export interface ExtractReplyOptions {
  /**
   * Reproduce _decode_chatml's off-by-one exactly: when no <|im_start|>/<|im_end|> was generated, the last generated
   * token is dropped — even a real one when max_new_tokens was hit. Default false: cut at the first
   * <|im_start|>, <|im_end|> or <|endoftext|> and keep everything else (same result whenever generation ended on a
   * stop or eos token, which is how the off-by-one was meant to drop the trailing <|endoftext|>).
   */
  referenceQuirks?: boolean;
}

/**
 * The reply text from the generated ids only (prompt excluded): text before the first <|im_start|>/<|im_end|>,
 * decoded with errors 'replace', other specials kept as text, then Python's str.strip(). The reference decodes
 * prompt+reply and drops len(raw_text) characters, which eats the reply's start when NFC shortened the prompt; decoding
 * only the generated ids avoids that quirk and is otherwise identical.
 */
export function extractReply(tokenizer: TokenizerLike, generatedIds: ArrayLike<number>, options: ExtractReplyOptions = {}): string {
  const quirks = options?.referenceQuirks ?? false;
  if (generatedIds == null || typeof generatedIds !== 'object' || typeof generatedIds.length !== 'number') {
    throw new QwenError('E_BAD_ARG', `generatedIds must be an array of token ids (got ${describe(generatedIds)})`);
  }
  const ids = Array.from(generatedIds);
  let cut = ids.findIndex((id) => id === IM_START_ID || id === IM_END_ID || (!quirks && id === ENDOFTEXT_ID));
  if (cut < 0) cut = quirks ? Math.max(ids.length - 1, 0) : ids.length;
  return pyStrip(tokenizer.decode(ids.slice(0, cut), { errors: 'replace' }));
}

/** Python's str.isspace() characters (JS trim() differs: it strips U+FEFF but not \x1c-\x1f or \x85). */
const PY_SPACE = new Set([
  0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x85, 0xa0, 0x1680, 0x2000, 0x2001, 0x2002, 0x2003, 0x2004,
  0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000,
]);

/** Python's str.strip() with no argument. */
export function pyStrip(s: string): string {
  let a = 0;
  let b = s.length;
  while (a < b && PY_SPACE.has(s.charCodeAt(a))) a++;
  while (b > a && PY_SPACE.has(s.charCodeAt(b - 1))) b--;
  return s.slice(a, b);
}

function checkString(v: unknown, name: string): void {
  if (typeof v !== 'string') throw new QwenError('E_BAD_ARG', `${name} must be a string (got ${describe(v)})`);
}
