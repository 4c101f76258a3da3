/**
 * Top-k (HF TopKLogitsWarper): remove every id whose score is below the k-th largest score. Ties AT the k-th score
 * all stay (HF compares `scores < topk(scores, k)[-1]`), so the kept set can exceed k. k = 0 is "off" (index.ts).
 *
 * No full sort: one pass with a threshold. Ids at or above it go to a buffer; when the buffer fills, it is sorted,
 * cut to the k best (plus ties) and the threshold rises to the k-th value. After the first fill almost every id fails
 * the single comparison, so the pass costs about what finding the max does. NaN never passes (NaN >= x is false).
 */
import type { Candidates } from './candidates';

export function applyTopK(c: Candidates, k: number): void {
  if (!c.listed) {
    if (k >= c.n) return; // HF clamps k to the vocabulary: nothing to remove
    const L = c.logits;
    const ids = c.list;
    const cap = Math.min(c.n, Math.max(4 * k, 1024));
    let len = 0;
    let limit = cap;
    let threshold = -Infinity;
    for (let i = 0, n = c.n; i < n; i++) {
      if (L[i] >= threshold) {
        ids[len++] = i; // the list has room for all n ids, so a buffer swollen by ties cannot overflow
        if (len === limit) {
          c.len = len;
          c.sorted = false;
          cutSorted(c, k);
          len = c.len;
          limit = len + cap;
          threshold = L[ids[k - 1]];
        }
      }
    }
    c.len = len;
    c.listed = true;
    c.sorted = false;
  }
  cutSorted(c, k);
}

/** Sort the list (value desc, id asc) and keep its first k plus every id tied with the k-th. */
function cutSorted(c: Candidates, k: number): void {
  if (!c.sorted) c.sortList(0, c.len);
  c.sorted = true;
  if (k >= c.len) return;
  const L = c.logits;
  const kth = L[c.list[k - 1]];
  let keep = k;
  while (keep < c.len && L[c.list[keep]] >= kth) keep++;
  c.len = keep;
}
