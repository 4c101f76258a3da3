/**
 * The last link of the chain: a seeded draw from the kept weights (or argmax, Candidates.scan), and the log
 * probabilities reported with it.
 *
 * Logprobs are those of the distribution the id was actually drawn from: softmax over the kept ids of the tempered,
 * top-k/top-p-truncated scores, renormalized (ids cut away have probability 0 and are never listed). For greedy
 * decoding it is the plain softmax of the (repetition-penalized) logits at temperature 1, since nothing is drawn.
 */
import { type Candidates, HEAD_CAP, HEAD_MIN } from './candidates';

export interface TopLogprob {
  id: number;
  logprob: number;
}

/**
 * u uniform in [0, 1): walk the kept ids in a fixed order and return the first whose cumulative weight exceeds
 * u * (kept mass). Any fixed order gives an exact draw; the whole vocabulary is walked head first (Candidates.weighAll
 * listed it), so most draws never touch the other ~150k ids.
 */
export function draw(c: Candidates, u: number): number {
  c.ensureWeights();
  const L = c.logits;
  const ids = c.list;
  if (c.listed) return walk(L, ids, c.len, u * c.keptMass(), 0, ids[0]);
  const t = u * c.total;
  if (c.headLen > HEAD_CAP) return walkRest(L, c.n, t, 0, -1, c.argmax);
  let acc = 0;
  for (let j = 0; j < c.headLen; j++) {
    acc += L[ids[j]];
    if (acc > t) return ids[j];
  }
  return walkRest(L, c.n, t, acc, HEAD_MIN, c.argmax);
}

/** Over ids[0, len); `last` is the answer if rounding puts t at the very end of the mass. */
function walk(L: Float32Array, ids: Int32Array, len: number, t: number, acc: number, last: number): number {
  for (let j = 0; j < len; j++) {
    const w = L[ids[j]];
    acc += w;
    if (acc > t) return ids[j];
    if (w > 0) last = ids[j];
  }
  return last;
}

/** Over [0, n) in id order, skipping weights >= skipFrom (the head, already walked); skipFrom -1 skips nothing. */
function walkRest(L: Float32Array, n: number, t: number, acc: number, skipFrom: number, last: number): number {
  for (let i = 0; i < n; i++) {
    const w = L[i];
    if (skipFrom >= 0 && w >= skipFrom) continue;
    acc += w;
    if (acc > t) return i;
    if (w > 0) last = i;
  }
  return last;
}

/** logprob of `id` and the `top` most likely kept ids (weight desc, id asc). Needs weights (ensureWeights). */
export function logprobsOf(c: Candidates, id: number, top: number): { logprob: number; topLogprobs?: TopLogprob[] } {
  const L = c.logits;
  const logZ = Math.log(c.keptMass());
  const logprob = Math.log(L[id]) - logZ;
  if (top <= 0) return { logprob };
  let best: number[];
  if (c.listed && c.sorted) best = Array.from(c.list.subarray(0, Math.min(top, c.len)));
  else best = c.listed ? topOf(L, c.list.subarray(0, c.len), top) : topOf(L, null, top, c.n);
  const topLogprobs = best.filter((i) => L[i] > 0).map((i) => ({ id: i, logprob: Math.log(L[i]) - logZ }));
  return { logprob, topLogprobs };
}

/** The `top` best ids of `ids` (or of [0, n)) by (weight desc, id asc), with a small insertion buffer. */
function topOf(L: Float32Array, ids: Int32Array | null, top: number, n = ids ? ids.length : 0): number[] {
  const out: number[] = [];
  const better = (a: number, b: number) => L[a] > L[b] || (L[a] === L[b] && a < b);
  for (let j = 0; j < n; j++) {
    const i = ids ? ids[j] : j;
    if (out.length === top && !better(i, out[top - 1])) continue;
    let k = Math.min(out.length, top - 1);
    out[k] = i;
    while (k > 0 && better(out[k], out[k - 1])) {
      [out[k], out[k - 1]] = [out[k - 1], out[k]];
      k--;
    }
  }
  return out;
}
