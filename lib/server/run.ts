/**
 * One generation request, streamed (SSE) or not.
 *
 * Nothing is sent before the generation yields its first chunk or fails, so a full queue, a bad option the model
 * rejects, or a prompt beyond the KV cache still get their own status code (the error is thrown to the route's
 * error handler). From the first chunk on, a stream is committed to 200: a later failure is sent as an SSE event
 * `data: {"error": {...}}` (the openai client throws it as an APIError), followed by `data: [DONE]`.
 *
 * Aborts (all through the generation's AbortSignal, so the sequence and its KV blocks are freed within one step):
 *  - the client goes away (the response closes before it was finished): nothing more is written;
 *  - requestTimeoutMs passes: 504 before the first chunk / an error event after it;
 *  - the drain deadline of a shutdown passes: 503 / an error event.
 */
import { randomBytes } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { GenerationChunk, TokenLogprob } from '../generation/generate';
import type { GenerateOptions } from '../model/generation';
import type { Model } from '../model/model';
import { ApiError, toApiError } from './errors';
import {
  ApiUsage,
  CompletionLogprobsBuilder,
  Envelope,
  FinishReason,
  TokenTexts,
  apiUsage,
  chatBody,
  chatChunk,
  chatLogprobs,
  completionBody,
  completionChunk,
  usageChunk,
} from './format';
import type { ServerMetrics } from './metrics';
import type { ParsedRequest } from './params';

export type AbortReason = 'client' | 'timeout' | 'shutdown';

/** What the per-request log line reports about a generation. */
export interface GenerationInfo {
  stream: boolean;
  promptTokens?: number;
  completionTokens?: number;
  finishReason?: string;
  ttftMs?: number;
  aborted?: AbortReason;
}

export interface Job {
  abort(reason: AbortReason): void;
}

export interface RunContext {
  model: Model;
  modelName: string;
  metrics: ServerMetrics;
  requestTimeoutMs: number;
  jobs: Set<Job>;
  onJobDone(): void;
  route: string;
  info: GenerationInfo;
}

/** SSE writer that respects backpressure and ignores writes after the client left. */
class Sse {
  constructor(private readonly res: ServerResponse) {}
  get closed(): boolean {
    return this.res.destroyed || this.res.writableEnded;
  }
  async send(data: unknown): Promise<void> {
    if (this.closed) return;
    const ok = this.res.write(`data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`);
    if (!ok && !this.closed) {
      await new Promise<void>((resolve) => {
        const done = () => {
          this.res.off('drain', done);
          this.res.off('close', done);
          resolve();
        };
        this.res.on('drain', done);
        this.res.on('close', done);
      });
    }
  }
  end(): void {
    if (!this.closed) this.res.end();
  }
}

function abortedError(reason: AbortReason, timeoutMs: number): ApiError {
  return reason === 'timeout'
    ? new ApiError(504, `the request ran past the server's request timeout (${timeoutMs} ms) and was stopped`, null, 'timeout', 'timeout_error')
    : new ApiError(503, 'the server is shutting down: the request was stopped at the drain deadline', null, 'draining');
}

export async function runGeneration(
  req: FastifyRequest,
  reply: FastifyReply,
  p: ParsedRequest & { maxNewTokens: number },
  ctx: RunContext,
): Promise<void> {
  const { model, metrics, info } = ctx;
  const res = reply.raw;
  const promptParam = p.kind === 'chat' ? 'messages' : 'prompt';
  const env: Envelope = {
    id: `${p.kind === 'chat' ? 'chatcmpl' : 'cmpl'}-${randomBytes(12).toString('hex')}`,
    created: Math.floor(Date.now() / 1000),
    model: ctx.modelName,
  };
  info.stream = p.stream;

  const ac = new AbortController();
  let aborted: AbortReason | undefined;
  const job: Job = {
    abort(reason) {
      if (aborted) return;
      aborted = info.aborted = reason;
      ac.abort(new Error(reason === 'client' ? 'the client disconnected' : reason));
    },
  };
  const onClose = () => {
    if (!res.writableFinished) job.abort('client');
  };
  res.on('close', onClose);
  const timer = ctx.requestTimeoutMs > 0 ? setTimeout(() => job.abort('timeout'), ctx.requestTimeoutMs) : undefined;
  ctx.jobs.add(job);

  // Timing and token accounting.
  let tFirst = 0;
  let tLast = 0;
  let counted = 0; // generated tokens already added to the counter
  const onChunk = (c: GenerationChunk) => {
    const now = reply.elapsedTime;
    if (!tFirst && (c.text || c.tokens.length)) {
      tFirst = now;
      info.ttftMs = Math.round(now);
      metrics.ttft.observe(now / 1000);
    }
    tLast = now;
    if (c.tokens.length) {
      metrics.generatedTokens.inc(c.tokens.length);
      counted += c.tokens.length;
    }
    if (c.usage) {
      info.promptTokens = c.usage.promptTokens;
      info.completionTokens = c.usage.completionTokens;
      metrics.promptTokens.inc(c.usage.promptTokens);
      if (c.usage.completionTokens > counted) metrics.generatedTokens.inc(c.usage.completionTokens - counted); // eos / stop words
      if (c.usage.completionTokens >= 2 && tFirst) {
        metrics.tpot.observe((tLast - tFirst) / 1000 / (c.usage.completionTokens - 1));
      }
    }
    if (c.finishReason) info.finishReason = c.finishReason;
  };

  let it: AsyncIterator<GenerationChunk> | undefined;
  let settled = false; // the iterator returned done or threw: the generation's finally (sequence disposal) has run
  try {
    const options: GenerateOptions = {
      ...p.options,
      maxNewTokens: p.maxNewTokens,
      signal: ac.signal,
      ...(p.logprobs !== undefined ? { logprobs: p.logprobs } : {}),
    };
    let iter: AsyncIterator<GenerationChunk>;
    try {
      const gen = p.kind === 'chat' ? model.chatStream(p.messages, options) : model.generate(p.promptIds, options);
      iter = it = gen[Symbol.asyncIterator]();
    } catch (e) {
      throw toApiError(e, promptParam);
    }
    // Errors after an abort are the abort's (E_ABORTED from a forward that never ran): reported as the abort.
    const next = async (): Promise<GenerationChunk | null> => {
      try {
        const r = await iter.next();
        if (r.done) {
          settled = true;
          return null;
        }
        onChunk(r.value);
        return r.value;
      } catch (e) {
        settled = true;
        if (aborted) return null;
        throw toApiError(e, promptParam);
      }
    };
    const texts = new TokenTexts(model.tokenizer);
    if (!p.stream) await whole(reply, p, env, next, texts, () => aborted, ctx);
    else await stream(reply, p, env, next, texts, () => aborted, ctx);
  } finally {
    if (it && !settled) {
      // Left before the end (an abort answered early): finish the generator so that it disposes its sequence.
      if (!ac.signal.aborted) ac.abort(new Error('the request ended'));
      try {
        await it.return?.(undefined);
      } catch {
        // it ended with an error of its own: nothing left to free
      }
    }
    if (timer) clearTimeout(timer);
    res.off('close', onClose);
    ctx.jobs.delete(job);
    ctx.onJobDone();
  }
}

type Next = () => Promise<GenerationChunk | null>;

/** Non-stream: run to the end, then one JSON body. */
async function whole(
  reply: FastifyReply,
  p: ParsedRequest,
  env: Envelope,
  next: Next,
  texts: TokenTexts,
  aborted: () => AbortReason | undefined,
  ctx: RunContext,
): Promise<void> {
  let text = '';
  const lps: TokenLogprob[] = [];
  let last: GenerationChunk | null = null;
  for (let c = await next(); c; c = await next()) {
    text += c.text;
    if (c.logprobs) lps.push(...c.logprobs);
    last = c;
  }
  const why = aborted();
  if (why === 'client') {
    reply.hijack(); // nobody to answer
    reply.raw.destroy();
    return;
  }
  if (why) throw abortedError(why, ctx.requestTimeoutMs);
  if (!last?.finishReason || !last.usage || last.finishReason === 'abort') {
    throw new ApiError(500, 'the generation ended without a result', null, 'internal_error');
  }
  const finish = last.finishReason as FinishReason;
  const usage = apiUsage(last.usage);
  const withLp = p.logprobs !== undefined;
  if (p.kind === 'chat') {
    reply.send(chatBody(env, text, finish, withLp ? chatLogprobs(texts, lps) : null, usage));
  } else {
    const lp = withLp ? new CompletionLogprobsBuilder(ctx.model.tokenizer, texts).build(lps) : null;
    reply.send(completionBody(env, text, finish, lp, usage));
  }
}

/** SSE: headers once the first chunk exists, then a chunk per generation chunk, the finish chunk, usage, [DONE]. */
async function stream(
  reply: FastifyReply,
  p: ParsedRequest,
  env: Envelope,
  next: Next,
  texts: TokenTexts,
  aborted: () => AbortReason | undefined,
  ctx: RunContext,
): Promise<void> {
  let c = await next(); // throws (-> a status code) if the generation fails before producing anything
  const why = aborted();
  if (why === 'client') {
    reply.hijack();
    reply.raw.destroy();
    return;
  }
  if (why) throw abortedError(why, ctx.requestTimeoutMs);

  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache',
    'x-accel-buffering': 'no',
    'x-request-id': String(reply.request.id),
  });
  const sse = new Sse(res);
  const withLp = p.logprobs !== undefined;
  const completionLp = withLp && p.kind === 'completion' ? new CompletionLogprobsBuilder(ctx.model.tokenizer, texts) : null;
  const content = (ch: GenerationChunk) =>
    p.kind === 'chat'
      ? chatChunk(env, { content: ch.text }, null, withLp ? chatLogprobs(texts, ch.logprobs ?? []) : null, p.includeUsage)
      : completionChunk(env, ch.text, null, completionLp ? completionLp.build(ch.logprobs ?? []) : null, p.includeUsage);
  let usage: ApiUsage | null = null;
  let finish: FinishReason | null = null;
  try {
    if (p.kind === 'chat') await sse.send(chatChunk(env, { role: 'assistant', content: '' }, null, null, p.includeUsage));
    for (; c; c = await next()) {
      if (c.text || c.tokens.length) await sse.send(content(c));
      if (c.finishReason && c.finishReason !== 'abort') finish = c.finishReason;
      if (c.usage) usage = apiUsage(c.usage);
    }
    const why2 = aborted();
    if (why2 === 'client') return;
    if (why2) throw abortedError(why2, ctx.requestTimeoutMs);
    if (!finish || !usage) throw new ApiError(500, 'the generation ended without a result', null, 'internal_error');
    await sse.send(
      p.kind === 'chat' ? chatChunk(env, {}, finish, null, p.includeUsage) : completionChunk(env, '', finish, null, p.includeUsage),
    );
    if (p.includeUsage) {
      await sse.send(usageChunk(env, p.kind === 'chat' ? 'chat.completion.chunk' : 'text_completion', usage));
    }
    await sse.send('[DONE]');
  } catch (e) {
    const err = toApiError(e, p.kind === 'chat' ? 'messages' : 'prompt');
    ctx.metrics.errors.inc({ route: ctx.route, code: err.code ?? err.type });
    reply.request.log.warn({ err: { message: err.message, code: err.code } }, 'generation failed after the stream started');
    await sse.send(err.body());
    await sse.send('[DONE]');
  } finally {
    sse.end();
  }
}
