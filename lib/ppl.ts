/**
 * Perplexity over a token stream with a sliding window (the method behind Qwen's long-context table): windows of up
 * to `ctx` tokens advance by `stride`; each scores only the tokens not scored by the previous window, with everything
 * before them in the window as context. Every window is a fresh sequence whose NTK alpha is that of its full length,
 * as a single prefill in the reference; it is fed in chunks so logits of at most `chunk` positions exist at once.
 */
import { badArg } from './errors';
import type { Model } from './model/model';

export interface PerplexityOptions {
  ctx: number;
  stride?: number; // default ctx (disjoint windows)
  chunk?: number; // positions per forward (memory: chunk x vocab floats), default 128
  onProgress?: (fraction: number) => void;
  signal?: AbortSignal;
}

export interface PerplexityResult {
  ppl: number;
  nll: number; // mean negative log-likelihood (nats per token)
  scored: number; // tokens scored
  windows: number;
}

/** -log softmax(row)[target], in double. */
function nllAt(logits: Float32Array, off: number, V: number, target: number): number {
  let mx = -Infinity;
  for (let i = 0; i < V; i++) if (logits[off + i] > mx) mx = logits[off + i];
  let sum = 0;
  for (let i = 0; i < V; i++) sum += Math.exp(logits[off + i] - mx);
  return Math.log(sum) + mx - logits[off + target];
}

export async function perplexity(model: Model, ids: number[], opts: PerplexityOptions): Promise<PerplexityResult> {
  const { ctx } = opts;
  const stride = opts.stride ?? ctx;
  const chunk = opts.chunk ?? 128;
  if (!Number.isInteger(ctx) || ctx < 2 || ctx > 32767) throw badArg('ctx', 'an integer in [2, 32767]', ctx);
  if (!Number.isInteger(stride) || stride < 1 || stride > ctx) throw badArg('stride', `an integer in [1, ctx = ${ctx}]`, stride);
  if (!Number.isInteger(chunk) || chunk < 1) throw badArg('chunk', 'an integer >= 1', chunk);
  if (!Array.isArray(ids) || ids.length < 2) throw badArg('ids', 'at least 2 tokens', ids);
  const V = model.config.vocab_size;
  let total = 0, scored = 0, windows = 0, prevEnd = 0;
  for (let begin = 0; prevEnd < ids.length; begin += stride) {
    const end = Math.min(begin + ctx, ids.length);
    const firstScored = Math.max(prevEnd, begin + 1); // position of the first target; it needs one token of context
    const seq = model.createSequence({ promptLength: end - begin });
    try {
      for (let c = begin; c < end; c += chunk) {
        if (opts.signal?.aborted) throw opts.signal.reason ?? new Error('aborted');
        const piece = ids.slice(c, Math.min(c + chunk, end));
        const logits = await seq.forwardAll(piece);
        // row r predicts position c + r + 1
        for (let r = 0; r < piece.length; r++) {
          const target = c + r + 1;
          if (target >= firstScored && target < end) {
            total += nllAt(logits, r * V, V, ids[target]);
            scored++;
          }
        }
      }
    } finally {
      seq.dispose();
    }
    windows++;
    prevEnd = end;
    opts.onProgress?.(end / ids.length);
  }
  const nll = total / scored;
  return { ppl: Math.exp(nll), nll, scored, windows };
}
