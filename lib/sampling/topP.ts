/**
 * Top-p (HF TopPLogitsWarper): keep the SMALLEST set of most likely ids whose probability mass is >= p, including the
 * id that crosses p, and at least one id. HF sorts ascending and removes an id when the cumulative mass up to it is
 * <= 1 - p; in descending order that is "keep an id while the mass strictly before it is < p". Mass exactly equal to
 * p after j ids therefore keeps exactly j. Ties are taken lowest id first (HF's sort leaves their order unspecified).
 * p = 1 is "off" (index.ts). The mass is that of the tempered distribution after top-k, as in HF.
 *
 * Never a full sort. Three ways to the same set, cheapest first:
 *  1. probe (whole vocabulary in play): after the max, one read-only pass lists the head — ids within ln 4096
 *     tempered nats of the max — and only BOUNDS the mass of the rest from a table (no exp per id). If the cut inside
 *     the sorted head is the same for the lowest and the highest possible total, it is the exact cut: only the head
 *     is weighed. A model row has a handful of plausible tokens, so this is the usual case.
 *  2. otherwise every id is weighed (Candidates.weighAll); if the head holds mass >= p, the cut is in the sorted head;
 *  3. otherwise (a flat row) the weight histogram is walked to the bin where the mass crosses p: ids above it are kept
 *     as they are, only the ids of the crossing bin are sorted.
 */
import { type Candidates, HEAD_CAP, WEIGHT_BINS, expNeg, laneSum, SUM_LANES } from './candidates';

export function applyTopP(c: Candidates, p: number): void {
  if (!c.weighted && !c.listed && probe(c, p)) return;
  c.ensureWeights();
  if (c.listed) return cutPrefix(c, p * c.keptMass(), 0, 0);
  const target = p * c.total;
  if (c.headLen <= HEAD_CAP && c.headMass >= target) {
    c.len = c.headLen; // weighAll() left the head in list[0, headLen)
    c.listed = true;
    c.sortList(0, c.len);
    c.sorted = true;
    return cutPrefix(c, target, 0, 0);
  }
  c.histogram();
  const mass = c.binMass;
  let before = 0;
  let bin = WEIGHT_BINS - 1;
  for (; bin >= 0; bin--) {
    if (before + mass[bin] >= target) break;
    before += mass[bin];
  }
  if (bin < 0) return; // rounding left p * total just out of reach: keep everything
  const len = splitAtBin(c.bits, c.n, bin, c.list);
  c.len = len + c.binCount[bin];
  c.listed = true;
  c.sortList(len, c.len);
  c.sorted = len === 0;
  cutPrefix(c, target, len, before);
}

/** list[from, len) is sorted and `before` is the mass of list[0, from): cut after the id where the mass reaches target. */
function cutPrefix(c: Candidates, target: number, from: number, before: number): void {
  if (!c.sorted && from === 0) {
    c.sortList(0, c.len);
    c.sorted = true;
  }
  const L = c.logits;
  let acc = before;
  for (let j = from; j < c.len; j++) {
    acc += L[c.list[j]];
    if (acc >= target) {
      c.len = j + 1;
      return;
    }
  }
  // Not reached only through rounding (target is at most the mass of the whole list): keep the whole list.
}

/** ids of bins above `bin` to ids[0, len) (returned), then those of `bin` right after them. */
function splitAtBin(B: Int32Array, n: number, bin: number, ids: Int32Array): number {
  let len = 0;
  let back = n;
  for (let i = 0; i < n; i++) {
    const b = B[i] >> 20;
    if (b > bin) ids[len++] = i;
    else if (b === bin) ids[--back] = i;
  }
  ids.copyWithin(len, back, n);
  return len;
}

// --- 1. the probe ---------------------------------------------------------------------------------------------

const HEAD_S = Math.log(4096); // head: tempered distance to the max below this
const TAIL_S = 40; // past it an id is bounded by e^-40 (151,936 of them: 6e-13 of the best id's weight)
const STEPS = 64;
// e^-s lies in (BOUND[k+1], BOUND[k]] for k = floor(s * STEPS)
const BOUND = new Float64Array(TAIL_S * STEPS + 1).map((_, k) => Math.exp(-k / STEPS));
const SLACK = 1e-6; // widens the bounds past every rounding of the exact path (float32 weights: 6e-8)
const INF = Infinity; // globals cached for the hot loop (see candidates.ts)
const fround = Math.fround;
const CAP = HEAD_CAP; // a local: an imported binding is a property load on the module object in CommonJS output
const headWeights = new Float64Array(HEAD_CAP);
const sums = new Float64Array(2);
const lanes = new Float64Array(SUM_LANES); // scanBounds's partial tail sums

/** Path 1: true if it settled the kept set (list, weights of the kept ids); false leaves the logits untouched. */
function probe(c: Candidates, p: number): boolean {
  if (!c.scanned) c.scan();
  const m = c.max;
  if (m === INF) return false;
  const L = c.logits;
  const ids = c.list;
  const len = scanBounds(L, c.n, m, c.invT, ids, sums);
  if (len > HEAD_CAP) return false;
  const tail = sums[0];
  const far = sums[1];
  c.sortList(0, len); // by logit, the same order as by weight
  let head = 0;
  for (let j = 0; j < len; j++) head += headWeights[j] = fround(expNeg((m - L[ids[j]]) * c.invT));
  // The exact total lies in [lo, hi] / p. The first cumulative mass >= the target only moves right as the target
  // grows, so it is the same for every possible total iff the one reaching lo also reaches hi.
  const lo = p * (head + tail * BOUND[1]) * (1 - SLACK);
  const hi = p * (head + tail + far * BOUND[TAIL_S * STEPS]) * (1 + SLACK);
  let acc = 0;
  let cut = 0;
  while (cut < len && acc < lo) acc += headWeights[cut++];
  if (acc < hi) return false; // the cut depends on the exact total, or lies beyond the head
  for (let j = 0; j < cut; j++) L[ids[j]] = headWeights[j];
  c.len = cut;
  c.listed = c.sorted = c.weighted = true;
  return true;
}

/**
 * One read-only pass: head ids to ids (their count returned); out <- [tail mass upper bound, far count]. More than
 * HEAD_CAP head ids and the probe fails whatever the bounds: the pass stops at the (HEAD_CAP + 1)-th (out not set).
 * Exported for tests.
 */
export function scanBounds(L: Float32Array, n: number, m: number, invT: number, ids: Int32Array, out: Float64Array): number {
  // The tail bound sums in SUM_LANES order, id i into a(i & 3), unrolled by hand as candidates.ts weighRange. Per id:
  // head (listed), tail (bounded from the table) or far (also NaN and -Infinity: bounded by e^-40, weigh 0).
  let a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  let far = 0;
  let len = 0;
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const s0 = (m - L[i]) * invT;
    const s1 = (m - L[i + 1]) * invT;
    const s2 = (m - L[i + 2]) * invT;
    const s3 = (m - L[i + 3]) * invT;
    if (s0 < HEAD_S) {
      if ((len = listHead(ids, len, i)) > CAP) return len;
    } else if (s0 < TAIL_S) a0 += BOUND[(s0 * STEPS) | 0];
    else far++;
    if (s1 < HEAD_S) {
      if ((len = listHead(ids, len, i + 1)) > CAP) return len;
    } else if (s1 < TAIL_S) a1 += BOUND[(s1 * STEPS) | 0];
    else far++;
    if (s2 < HEAD_S) {
      if ((len = listHead(ids, len, i + 2)) > CAP) return len;
    } else if (s2 < TAIL_S) a2 += BOUND[(s2 * STEPS) | 0];
    else far++;
    if (s3 < HEAD_S) {
      if ((len = listHead(ids, len, i + 3)) > CAP) return len;
    } else if (s3 < TAIL_S) a3 += BOUND[(s3 * STEPS) | 0];
    else far++;
  }
  const tail = lanes;
  tail[0] = a0;
  tail[1] = a1;
  tail[2] = a2;
  tail[3] = a3;
  for (; i < n; i++) {
    const s = (m - L[i]) * invT;
    if (s < HEAD_S) {
      if ((len = listHead(ids, len, i)) > CAP) return len;
    } else if (s < TAIL_S) tail[i & 3] += BOUND[(s * STEPS) | 0];
    else far++;
  }
  out[0] = laneSum(tail);
  out[1] = far;
  return len;
}

/** Lists head id i as the len-th; returns the new count (CAP + 1: one too many, not listed). */
function listHead(ids: Int32Array, len: number, i: number): number {
  if (len < CAP) ids[len] = i;
  return len + 1;
}
