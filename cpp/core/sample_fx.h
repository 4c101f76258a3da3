// sample_fx: the sampled pick (PickSpec::do_sample) in a form a GPU block can compute in parallel and still give the
// same id on every run, on every backend that implements it: lib/sampling's routes (top-k list, top-p probe, head,
// weight histogram, the draw's walk order — cpp/cpu/sample.cc names them) with every SUM taken in fixed point.
//
// Why fixed point: the TS sampler sums fp32 weights in double in fixed orders (id or list order; four interleaved
// partial sums for a row's total and tail bound), which a parallel reduction of another shape does not reproduce.
// Here each weight w (fp32, exact: V8's exp table, cpp/core/pick.h) becomes the integer fx(w) = trunc(w * 2^43), and
// integer sums do not depend on their order. So one control flow (sample_fx below) runs over primitives ("Ops") that a
// host loop (cpp/cpu/sample_fx.cc, the reference) and a CUDA block (cuda/sample_fx.cu, radix selects) implement in any
// order they like, with bit-identical results.
//
// How far from the TS sampler: the ids are the same except where a compared sum lies within its rounding band of the
// threshold. A fixed sum of m weights is below the exact sum by at most m units of 2^-43; TS's double sum of m terms
// is within gamma_m * S of the exact one (S the sum, gamma_m ~ m * 2^-53; four lanes of m / 4 terms and their merge
// are within gamma_(m/4 + 2) * S, no more). Every decision records its
// distance from the threshold (FxOut::gap, in units of 2^-43); a decision can differ from TS's only when
// gap <= fx_band(n, S): test/sample-fx.test.ts skips exactly those cases (none in its random rows). For Qwen's 151,851
// ids and S >= 1 that band is below 1e-8 of the mass: about one draw in 1e8.
//
// Logprobs come from the same fixed kept mass: log(w) - log(Z * 2^-43) differs from TS's by <= the band / Z.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "core/pick.h"

#if !defined(__CUDACC__)
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#endif
#endif

namespace qwen {

constexpr double kFxOne = 8796093022208.0;  // 2^43: n <= 2^20 weights <= 1 sum below 2^63
constexpr uint64_t kFxMax = ~uint64_t(0);

// Double arithmetic rounded per operation on both sides (no fused multiply-add: the host is compiled with contraction
// off above, the device uses the _rn intrinsics).
QWEN_PICK_HD inline double fx_mul(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
QWEN_PICK_HD inline double fx_add(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}
QWEN_PICK_HD inline double fx_sub(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dsub_rn(a, b);
#else
  return a - b;
#endif
}

QWEN_PICK_HD inline uint32_t fx_bits(float x) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(x);
#else
  uint32_t b;
  std::memcpy(&b, &x, sizeof b);
  return b;
#endif
}
QWEN_PICK_HD inline float fx_float(uint32_t b) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(b);
#else
  float x;
  std::memcpy(&x, &b, sizeof x);
  return x;
#endif
}
// Order-preserving key of a logit as an unsigned integer (candidates.ts sortList's signed key with the sign bit
// flipped): -0 sorts below +0, NaNs land outside [key(-Infinity), key(+Infinity)].
QWEN_PICK_HD inline uint32_t fx_logit_key(float x) {
  const uint32_t b = fx_bits(x);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
QWEN_PICK_HD inline float fx_key_logit(uint32_t k) { return fx_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k); }
constexpr uint32_t kFxKeyPosInf = 0xff800000u;  // fx_logit_key(+Infinity)
constexpr uint32_t kFxKeyNegInf = 0x007fffffu;  // fx_logit_key(-Infinity)

// A weight (>= +0) as fixed point, truncated; its key is its bits; its histogram bin (candidates.ts) bits >> 20.
QWEN_PICK_HD inline uint64_t fx_of(double w) { return uint64_t(fx_mul(w, kFxOne)); }
QWEN_PICK_HD inline double fx_dbl(uint64_t v) { return double(v); }
// The smallest integer >= x (x in fixed units), clamped to [0, 2^64 - 1].
QWEN_PICK_HD inline uint64_t fx_ceil(double x) {
  if (!(x > 0)) return 0;
  if (x >= 18446744073709551615.0) return kFxMax;
  return uint64_t(ceil(x));
}

// The derived band (module comment): a comparison of a sum of at most n weights with total mass s_fx (fixed units)
// against a threshold may differ from TS's when the distance is at most this.
inline double fx_band(int n, double s_fx) { return 2.0 * n + 2.0 * (n * 0x1p-53) * s_fx + 4.0; }

// ---- what the primitives act on ----
// (key desc, id asc). Logit: fx_logit_key (the sampler's sortList: -0 below +0); Weight: fx_bits(w); Value: the logit
// by float comparison, -0 tying +0 (the greedy pick's top list, pick.cu).
enum class FxOrder : int32_t { Logit = 0, Weight = 1, Value = 2 };
enum class FxBase : int32_t {
  All = 0,
  NotNan,    // the top-k list's candidates
  TopK,      // not NaN and x >= kth (topK.ts keeps every id tied with the k-th)
  HeadS,     // the probe's head: (m - x) / T < HEAD_S, i.e. fx_logit_key(x) in [kmin, key(+Infinity)]
  HeadW,     // weighAll's head: w >= HEAD_MIN
  NotHeadW,  // the rest
  BinEq,     // weight bin == bin
  BinGt,     // weight bin > bin
  HistKept,  // the histogram route's kept set: bin > bin, or bin == bin and within `cut`
};
// "At or before (key, id) in `order`"; on = 0: no cut.
struct FxCut {
  int32_t on = 0;
  FxOrder order = FxOrder::Logit;
  uint32_t key = 0;
  int32_t id = 0;
};
struct FxPred {
  FxBase base = FxBase::All;
  float kth = 0;      // TopK
  uint32_t kmin = 0;  // HeadS
  int32_t bin = 0;    // BinEq / BinGt / HistKept
  FxCut cut;          // route's cut (for HistKept: applies to bin == bin only)
  FxCut cut2;         // a second cut (the top-n list)
};

QWEN_PICK_HD inline uint32_t fx_key(FxOrder o, float x, float w) {
  return o == FxOrder::Logit ? fx_logit_key(x) : o == FxOrder::Value ? fx_logit_key(x == 0.f ? 0.f : x) : fx_bits(w);
}
QWEN_PICK_HD inline bool fx_within(const FxCut& c, float x, float w, int32_t id) {
  if (!c.on) return true;
  const uint32_t k = fx_key(c.order, x, w);
  return k > c.key || (k == c.key && id <= c.id);
}
// Does element id (logit x, weight w) belong to the set p describes?
QWEN_PICK_HD inline bool fx_pred(const FxPred& p, float x, float w, int32_t id) {
  bool ok;
  const int32_t bin = int32_t(fx_bits(w) >> 20);
  switch (p.base) {
    case FxBase::All: ok = true; break;
    case FxBase::NotNan: ok = x == x; break;
    case FxBase::TopK: ok = x == x && x >= p.kth; break;
    case FxBase::HeadS: {
      const uint32_t k = fx_logit_key(x);
      ok = k >= p.kmin && k <= kFxKeyPosInf;
      break;
    }
    case FxBase::HeadW: ok = double(w) >= kPickHeadMin; break;
    case FxBase::NotHeadW: ok = !(double(w) >= kPickHeadMin); break;
    case FxBase::BinEq: ok = bin == p.bin; break;
    case FxBase::BinGt: ok = bin > p.bin; break;
    case FxBase::HistKept: return (bin > p.bin || (bin == p.bin && fx_within(p.cut, x, w, id))) && fx_within(p.cut2, x, w, id);
    default: ok = false;
  }
  return ok && fx_within(p.cut, x, w, id) && fx_within(p.cut2, x, w, id);
}

// Does the set (or its order's key) read the weight? Not before weigh() wrote them (the top-k select runs first).
QWEN_PICK_HD inline bool fx_needs_w(FxOrder o, const FxPred& p) {
  const bool base = p.base == FxBase::HeadW || p.base == FxBase::NotHeadW || p.base == FxBase::BinEq ||
                    p.base == FxBase::BinGt || p.base == FxBase::HistKept;
  return o == FxOrder::Weight || base || (p.cut.on && p.cut.order == FxOrder::Weight) ||
         (p.cut2.on && p.cut2.order == FxOrder::Weight);
}

// The probe's head as a key range: the smallest logit key whose s = (m - x) * inv_t is below HEAD_S. s falls as x
// grows (each rounding is monotone) and s(m) = 0, so {x : s < HEAD_S} = {key >= kmin}. m finite.
QWEN_PICK_HD inline bool fx_in_head(float x, double m, double inv_t) {
  return fx_mul(fx_sub(m, double(x)), inv_t) < kPickHeadS;
}
// The smallest logit key in (lo, hi] whose logit satisfies `in`, for a predicate that holds from some key on (it
// must fail at lo and hold at hi).
#ifdef __CUDACC__
#pragma nv_exec_check_disable
#endif
template <class In>
QWEN_PICK_HD uint32_t fx_min_key(uint32_t lo, uint32_t hi, In in) {
  while (hi - lo > 1) {
    const uint32_t mid = lo + (hi - lo) / 2;
    if (in(fx_key_logit(mid))) hi = mid;
    else lo = mid;
  }
  return hi;
}
QWEN_PICK_HD inline uint32_t fx_head_kmin(float m, double inv_t) {  // s(-Infinity) = +Infinity, s(m) = 0
  return fx_min_key(kFxKeyNegInf, fx_logit_key(m), [m, inv_t](float x) { return fx_in_head(x, double(m), inv_t); });
}

// ---- one row ----
struct FxRowIn {
  int32_t n = 0;       // eligible ids [0, n)
  int32_t argmax = -1; // of the penalized logits (lowest id of the max); -1: no usable logit
  float m = 0;         // the max
  int32_t top_k = 0;
  double inv_t = 1, top_p = 1, u = 0;
  int32_t top_n = -1;
};
struct FxStats {  // weigh()'s sums (fixed) and counts over [0, n)
  uint64_t total = 0;    // all weights
  uint64_t hw_mass = 0;  // HeadW
  uint64_t tk_mass = 0;  // TopK (kth given)
  uint64_t hs_mass = 0;  // HeadS (probe only)
  uint64_t tail = 0;     // probe: table[(int)(s * 64)] for HEAD_S <= s < TAIL_S, in fixed units
  int32_t hw_len = 0, tk_len = 0, hs_len = 0, far = 0;  // far: s >= TAIL_S, NaN, -Infinity (probe only)
};
// The first element of (order, pred), counting `by_count` ? 1 : fx(w) each, whose inclusive cumulative reaches T.
// found = 0: the whole set stays below T (before = incl = its total).
struct FxSel {
  int32_t found = 0;
  uint32_t key = 0;
  int32_t id = -1;
  uint64_t before = 0, incl = 0;
};
struct FxHist {  // candidates.ts histogram(): bins from the top until the mass reaches T
  int32_t bin = -1;      // -1: never (rounding): keep everything
  uint64_t before = 0;   // mass of the bins above it
  uint64_t in_bin = 0;   // its own mass
};
enum FxRoute : int32_t { kFxAll = 0, kFxTopK = 1, kFxProbe = 2, kFxHead = 3, kFxHist = 4 };
struct FxOut {
  int32_t id = -1;  // -1: no usable logit
  int32_t route = kFxAll;
  float w = 0;      // weight of id
  int32_t n_top = 0;
  uint64_t z = 0;   // kept mass (fixed)
  uint64_t total = 0;  // mass of all eligible ids (fixed): bounds every sum compared (fx_band)
  double gap = 0;   // smallest distance of a decision from its threshold (fixed units); +Infinity: none taken
  int32_t top_id[kMaxPickTop] = {};
  float top_w[kMaxPickTop] = {};
};
static_assert(sizeof(FxOut) == 200, "FxOut is copied from the device as raw bytes");

// Ops (block-collective on the device: every thread calls each with the same arguments and gets the same result):
//   FxStats weigh(const FxRowIn&, float kth, uint32_t kmin, bool probe)   weights W[i] = pick_weight, sums, counts
//   FxSel select(FxOrder, const FxPred&, uint64_t T, bool by_count, bool need_id)      T >= 1 (every call site)
//   FxSel find_id(const FxPred&, uint64_t T)                              the same in id order, by mass
//   FxHist hist(uint64_t T)
//   int gather(FxOrder, const FxPred&, int max, int32_t* ids, float* w)   <= max elements, sorted by the order
//   float weight(int32_t id)
//   double table(int k)                                                   kPickExpTable[k]

QWEN_PICK_HD inline void fx_gap(FxOut& o, double a, double b) {
  const double d = a > b ? a - b : b - a;
  if (d < o.gap) o.gap = d;
}
// The crossing of a select / find against the (fixed-unit) threshold x it was asked for: both neighbours.
QWEN_PICK_HD inline void fx_gap_sel(FxOut& o, const FxSel& s, double x) {
  fx_gap(o, fx_dbl(s.before), x);
  if (s.found) fx_gap(o, fx_dbl(s.incl), x);
}
QWEN_PICK_HD inline FxCut fx_cut_at(FxOrder o, const FxSel& s) {
  FxCut c;
  c.on = s.found;
  c.order = o;
  c.key = s.key;
  c.id = s.id;
  return c;
}

// sample_row's routes (cpp/cpu/sample.cc) with fixed sums.
#ifdef __CUDACC__
#pragma nv_exec_check_disable
#endif
template <class Ops>
QWEN_PICK_HD void sample_fx(Ops& ops, const FxRowIn& in, FxOut& out) {
  out.id = -1;
  out.route = kFxAll;
  out.n_top = 0;
  out.z = 0;
  out.w = 0;
  out.total = 0;
  out.gap = INFINITY;
  if (in.argmax < 0) return;
  const double p = in.top_p;

  // topK.ts: 0 < k < n lists the non-NaN ids and keeps those >= the k-th best (all of them when there are <= k)
  const bool top_k = in.top_k > 0 && in.top_k < in.n;
  float kth = -INFINITY;
  if (top_k) {
    FxPred nn;
    nn.base = FxBase::NotNan;
    const FxSel s = ops.select(FxOrder::Logit, nn, uint64_t(in.top_k), true, false);
    if (s.found) kth = fx_key_logit(s.key);
  }
  const bool probe = !top_k && p < 1 && in.m != INFINITY;
  const uint32_t kmin = probe ? fx_head_kmin(in.m, in.inv_t) : 0;
  const FxStats st = ops.weigh(in, kth, kmin, probe);
  out.total = st.total;
  if (st.total == 0) {  // 1 / temperature overflowed to +Infinity (temperature < ~5.6e-309): 0 * inf weighs the max 0
    out.id = in.argmax;
    return;
  }

  int32_t route = kFxAll;
  FxPred kept;  // the kept set and the draw's order (route)
  FxOrder order = FxOrder::Weight;
  uint64_t z = st.total;
  FxHist hist;
  if (top_k) {
    route = kFxTopK;
    kept.base = FxBase::TopK;
    kept.kth = kth;
    order = FxOrder::Logit;
    z = st.tk_mass;
  }
  if (p < 1) {
    bool settled = false;
    if (probe && st.hs_len <= kPickHeadCap) {  // topP.ts probe
      const double head = fx_dbl(st.hs_mass), tail = fx_dbl(st.tail);
      const double lo = fx_mul(fx_mul(p, fx_add(head, fx_mul(tail, ops.table(1)))), 1 - kPickSlack);
      const double far = fx_mul(double(st.far), fx_mul(ops.table(kPickTailS * kPickExpSteps), kFxOne));
      const double hi = fx_mul(fx_mul(p, fx_add(fx_add(head, tail), far)), 1 + kPickSlack);
      FxPred hs;
      hs.base = FxBase::HeadS;
      hs.kmin = kmin;
      const FxSel c = ops.select(FxOrder::Logit, hs, fx_ceil(lo), false, true);
      fx_gap_sel(out, c, lo);
      const uint64_t acc = c.found ? c.incl : st.hs_mass;
      fx_gap(out, fx_dbl(acc), hi);
      if (acc >= fx_ceil(hi)) {
        settled = true;
        route = kFxProbe;
        kept = hs;
        kept.cut = fx_cut_at(FxOrder::Logit, c);
        order = FxOrder::Logit;
        z = acc;
      }
    }
    if (!settled && top_k) {  // cutPrefix of the sorted top-k list
      const double target = fx_mul(p, fx_dbl(st.tk_mass));
      const FxSel c = ops.select(FxOrder::Logit, kept, fx_ceil(target), false, true);
      fx_gap_sel(out, c, target);
      if (c.found) {
        kept.cut = fx_cut_at(FxOrder::Logit, c);
        z = c.incl;
      }
    } else if (!settled) {
      const double target = fx_mul(p, fx_dbl(st.total));
      const uint64_t T = fx_ceil(target);
      if (st.hw_len <= kPickHeadCap) fx_gap(out, fx_dbl(st.hw_mass), target);
      if (st.hw_len <= kPickHeadCap && st.hw_mass >= T) {  // the sorted head
        route = kFxHead;
        kept.base = FxBase::HeadW;
        const FxSel c = ops.select(FxOrder::Weight, kept, T, false, true);
        fx_gap_sel(out, c, target);
        kept.cut = fx_cut_at(FxOrder::Weight, c);
        order = FxOrder::Weight;
        z = c.found ? c.incl : st.hw_mass;
      } else {  // histogram, then the sorted bin holding the cut
        hist = ops.hist(T);
        if (hist.bin >= 0) {
          fx_gap(out, fx_dbl(hist.before), target);
          fx_gap(out, fx_dbl(hist.before + hist.in_bin), target);
          route = kFxHist;
          FxPred eq;
          eq.base = FxBase::BinEq;
          eq.bin = hist.bin;
          const FxSel c = ops.select(FxOrder::Weight, eq, T - hist.before, false, true);
          fx_gap_sel(out, c, fx_sub(target, fx_dbl(hist.before)));
          kept.base = FxBase::HistKept;
          kept.bin = hist.bin;
          kept.cut = fx_cut_at(FxOrder::Weight, c);
          order = FxOrder::Weight;
          z = hist.before + (c.found ? c.incl : hist.in_bin);
        }
      }
    }
  }
  out.route = route;
  out.z = z;
  if (z == 0) {  // cannot happen (the argmax weighs 1 and is always kept); TS would walk to its fallback
    out.id = in.argmax;
    out.w = ops.weight(in.argmax);
    return;
  }

  // pick.ts draw: the first id whose cumulative weight exceeds t = u * z, in the route's walk order
  const double t = fx_mul(in.u, fx_dbl(z));
  uint64_t T = uint64_t(t) + 1;  // acc > t  <=>  acc >= floor(t) + 1
  if (T > z) T = z;
  FxSel d;
  if (route == kFxAll) {
    FxPred a;
    if (st.hw_len > kPickHeadCap) {
      d = ops.find_id(a, T);
    } else if (T <= st.hw_mass) {  // the head in id order, then the rest
      fx_gap(out, fx_dbl(st.hw_mass), t);
      a.base = FxBase::HeadW;
      d = ops.find_id(a, T);
    } else {
      fx_gap(out, fx_dbl(st.hw_mass), t);
      a.base = FxBase::NotHeadW;
      d = ops.find_id(a, T - st.hw_mass);
      d.before += st.hw_mass;
      d.incl += st.hw_mass;
    }
  } else if (route == kFxHist && T <= hist.before) {  // bins above the cut's, in id order
    fx_gap(out, fx_dbl(hist.before), t);
    FxPred gt;
    gt.base = FxBase::BinGt;
    gt.bin = hist.bin;
    d = ops.find_id(gt, T);
  } else if (route == kFxHist) {  // then the cut's bin, sorted
    fx_gap(out, fx_dbl(hist.before), t);
    FxPred eq = kept;
    eq.base = FxBase::BinEq;
    d = ops.select(FxOrder::Weight, eq, T - hist.before, false, true);
    d.before += hist.before;
    d.incl += hist.before;
  } else {
    d = ops.select(order, kept, T, false, true);
  }
  fx_gap_sel(out, d, t);
  out.id = d.found ? d.id : in.argmax;
  out.w = ops.weight(out.id);

  // pick.ts logprobsOf's top list: the first top_n of the sorted list (top-k, probe: logit order; head: weight order),
  // else the best by (weight desc, id asc) — the same as weight order over the kept set
  if (in.top_n > 0) {
    const int top = in.top_n < kMaxPickTop ? in.top_n : kMaxPickTop;
    const FxOrder to = (route == kFxTopK || route == kFxProbe) ? FxOrder::Logit : FxOrder::Weight;
    const FxSel s = ops.select(to, kept, uint64_t(top), true, true);
    FxPred first = kept;
    first.cut2 = fx_cut_at(to, s);
    float tw[kMaxPickTop];
    int32_t ti[kMaxPickTop];
    const int got = ops.gather(to, first, top, ti, tw);
    for (int k = 0; k < got; ++k)
      if (tw[k] > 0) {
        out.top_id[out.n_top] = ti[k];
        out.top_w[out.n_top] = tw[k];
        ++out.n_top;
      }
  }
}

}  // namespace qwen

#if !defined(__CUDACC__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif
