/**
 * generate()'s two paths on one tiny model, for the tests that compare them: the native pick (Sequence.forwardPick:
 * only ids and logprobs cross over) and the TypeScript sampler on returned logits (the same sequence with forwardPick
 * hidden), and the row-level comparison of a native pick with sample(). test/pick.test.ts (greedy) and
 * test/sample.test.ts (sampled) use them.
 */
import { resolve } from '../../lib/generation/config';
import { type GenerationResult, generateAll } from '../../lib/generation/generate';
import { MAX_POSITIONS } from '../../lib/model/limits';
import { loadModel, type Model, Sequence } from '../../lib/model/model';
import type { NativePick } from '../../lib/native/types';
import { QwenError } from '../../lib/errors';
import type { SampleResult } from '../../lib/sampling';
import type { SequenceLike } from '../../lib/types';
import { removeDir, tinyCheckpoint } from './fixtures';

/** A tiny bf16 checkpoint loaded on `device` for the enclosing describe block (beforeAll / afterAll); `dir` is the
 *  checkpoint's directory, for tests that load it again with other options. */
export function useTinyModel(device: 'cpu' | 'cuda'): { model: Model; dir: string } {
  const holder = {} as { model: Model; dir: string };
  beforeAll(async () => {
    holder.dir = await tinyCheckpoint('bf16');
    holder.model = await loadModel(holder.dir, { device });
  }, 120000);
  afterAll(async () => {
    await holder.model?.dispose();
    if (holder.dir) removeDir(holder.dir);
  });
  return holder;
}

/** The same sequence, seen by generate() without forwardPick: it samples on the logits in TS. */
export const tsOnly = (seq: SequenceLike): SequenceLike => ({
  forward: (ids, o) => seq.forward(ids, o),
  get length() {
    return seq.length;
  },
  dispose: () => seq.dispose(),
});

/** generate() of `prompt` with `opts` through the TS sampler. */
export function tsPath(model: Model, prompt: string, opts: Record<string, unknown>): Promise<GenerationResult> {
  const ids = model.tokenizer.encode(prompt, { allowedSpecial: 'all' });
  const config = resolve(
    model.generationConfig, { tokenizerVocabSize: model.tokenizer.vocabSize, ...opts },
    { contextLimit: MAX_POSITIONS, promptLength: ids.length },
  );
  return generateAll(tsOnly(model.createSequence()), model.tokenizer, ids, config);
}

/**
 * model.generate() of `prompt` with `opts` (the native path) equals the TS path: no logits crossed over (one
 * forwardPick for the prompt, then one forwardPickNext per later token, queued a step ahead: one more when the
 * generation stopped before maxNewTokens; no forward), same tokens, text, finish reason and usage, same logprob
 * ids, and logprobs within `tol`. Returns the TS path's result.
 */
export async function expectNativeEqualsTs(
  model: Model, prompt: string, opts: Record<string, unknown>, tol: number,
): Promise<GenerationResult> {
  const want = await tsPath(model, prompt, opts);
  const picks = jest.spyOn(Sequence.prototype, 'forwardPick');
  const nexts = jest.spyOn(Sequence.prototype, 'forwardPickNext');
  const forwards = jest.spyOn(Sequence.prototype, 'forward');
  const got = await model.generate(prompt, opts).result();
  const n = got.usage.completionTokens;
  const ahead = got.finishReason !== 'length' && n < (opts.maxNewTokens as number) ? 1 : 0;
  expect([picks.mock.calls.length, nexts.mock.calls.length, forwards.mock.calls.length]).toEqual([1, n - 1 + ahead, 0]);
  picks.mockRestore();
  nexts.mockRestore();
  forwards.mockRestore();
  expect(got.tokens).toEqual(want.tokens);
  expect(got.text).toBe(want.text);
  expect(got.finishReason).toBe(want.finishReason);
  expect(got.usage).toEqual(want.usage);
  expect(got.logprobs === undefined).toBe(want.logprobs === undefined);
  got.logprobs?.forEach((lp, i) => {
    const w = want.logprobs![i];
    expect(lp.id).toBe(w.id);
    expect(Math.abs(lp.logprob - w.logprob)).toBeLessThanOrEqual(tol);
    expect(lp.topLogprobs?.map((t) => t.id)).toEqual(w.topLogprobs?.map((t) => t.id));
    lp.topLogprobs?.forEach((t, k) => expect(Math.abs(t.logprob - w.topLogprobs![k].logprob)).toBeLessThanOrEqual(tol));
  });
  return want;
}

/**
 * How far the TS sampler's logprob `lp` may be from the exact one beyond the fp32 rounding bound that the callers'
 * `tol` derives, for a weight that is subnormal in fp32. The sampler takes log of the fp32 weight w = fround(exp(-s)),
 * and below 2^-126 fround's error is absolute, 2^-150, not relative: log w is then off by up to -ln(1 - 2^-150 / w)
 * (ln 2 at the least subnormal, 2^-149). w = exp(lp + log Z): `logZ` is the sampler's -logprob of its best listed id
 * (the argmax weighs exactly 1), or 0 where no list was asked for (Z >= 1, so that only loosens the bound). Taken no
 * lower than 2^-149, the least non-zero weight. The native picks take x - max exactly instead.
 */
export function subnormalSlack(lp: number, logZ = 0): number {
  const w = Math.exp(lp + logZ);
  if (!(w < 2 ** -126)) return 0;
  return -Math.log1p(-(2 ** -150) / Math.max(w, 2 ** -149));
}

/**
 * A native pick equals what the TS sampler's `sample()` returns for the same row: the same id (or, when the sampler
 * finds no usable logit and raises E_BACKEND, id -1 and nothing else), logprob and top-list ids, logprobs within
 * `tol`. Throws with `what` in the message (cheaper than expect() in loops over thousands of rows).
 */
export function expectPickEqualsSample(got: NativePick, sample: () => SampleResult, tol: number, what: string): void {
  let want: SampleResult;
  try {
    want = sample();
  } catch (e) {
    expect(e).toBeInstanceOf(QwenError);
    expect((e as QwenError).code).toBe('E_BACKEND');
    expect(got).toEqual({ id: -1 }); // no usable logit: the caller raises E_BACKEND
    return;
  }
  if (got.id !== want.id) throw new Error(`${what}: id ${got.id}, the sampler picked ${want.id}`);
  expect(got.logprob === undefined).toBe(want.logprob === undefined);
  const logZ = want.topLogprobs?.length ? -want.topLogprobs[0].logprob : 0;
  if (want.logprob !== undefined && !(Math.abs(got.logprob! - want.logprob) <= tol + subnormalSlack(want.logprob, logZ))) {
    throw new Error(`${what}: logprob ${got.logprob}, the sampler's ${want.logprob}`);
  }
  expect(got.top === undefined).toBe(want.topLogprobs === undefined);
  if (want.topLogprobs) {
    const ids = got.top!.map((t) => t.id), wids = want.topLogprobs.map((t) => t.id);
    if (ids.join() !== wids.join()) throw new Error(`${what}: top ids ${ids}, the sampler's ${wids}`);
    got.top!.forEach((t, k) => {
      if (!(Math.abs(t.logprob - want.topLogprobs![k].logprob) <= tol + subnormalSlack(want.topLogprobs![k].logprob, logZ))) {
        throw new Error(`${what}: top[${k}] logprob ${t.logprob}, the sampler's ${want.topLogprobs![k].logprob}`);
      }
    });
  }
}
