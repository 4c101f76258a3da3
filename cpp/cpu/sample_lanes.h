// The sampled draw's passes over a whole row (cpp/cpu/sample.cc), with their sums in lib/sampling's SUM_LANES order:
// id i goes into partial sum i & 3 (in id order within a lane) and the four merge as (a0 + a2) + (a1 + a3)
// (candidates.ts laneSum). One running sum in id order was a chain of dependent adds, one id per add latency; four
// lanes are one AVX2 vector, and the per-id work around them (weights by table + cubic, the probe's bounds) runs four
// ids at a time. Each pass has a scalar form (the definition, the build without AVX2, and the reference of
// cpp/cpu/test/sample_lanes_check.cc) and an AVX2 form that must equal it bit for bit: the same operations in the same
// order per id, each rounded on its own (contraction off, as in core/pick.h: JS never fuses a multiply-add).
//
//   weigh_lanes      candidates.ts weighRange's weighing: L[i] <- weight, returns the total
//   head_of          candidates.ts weighRange's head: ids with weight >= kPickHeadMin, their mass in id order
//   scan_bounds      topP.ts scanBounds: the probe's head ids, tail bound and far count (logits read only)
//   split_at_bin     topP.ts splitAtBin: the ids above a weight bin, then those of the bin (no sum: same list)
// A head of more than `cap` ids is never used (the sampler takes another route), so both head passes stop at its
// (cap + 1)-th id and return cap + 1: a flat row's probe fails after a quarter of the row instead of all of it.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "core/pick.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

// Contraction off for the code below (GCC: until the pop at the end; clang: for the rest of the including file, as
// cpp/cpu/sample.cc sets it anyway). test/cpu-sample-lanes.test.ts checks sample.cc's code has no FMA.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#elif defined(__clang__)
#pragma clang fp contract(off)
#endif

namespace qwen {

constexpr int kSumLanes = 4;  // candidates.ts SUM_LANES

inline double lane_sum(const double a[kSumLanes]) { return (a[0] + a[2]) + (a[1] + a[3]); }

// ---- the scalar definitions -----------------------------------------------------------------------------------

// L[n] (logits, max m, 1 / temperature inv_t) -> weights in place; returns their total in lane order.
// (i, a: where the AVX2 form hands its last ids over)
inline double weigh_lanes_ref(float* L, int n, double m, double inv_t, int i = 0, double* a = nullptr) {
  double zero[kSumLanes] = {0, 0, 0, 0};
  if (!a) a = zero;
  for (; i < n; ++i) {
    const float w = pick_weight(L[i], m, inv_t);
    L[i] = w;
    a[i & 3] += w;
  }
  return lane_sum(a);
}

// Ids of L[n] (weights) with weight >= kPickHeadMin to list, their count returned, mass <- their total in id order;
// more than cap of them: cap + 1 returned at the (cap + 1)-th, mass not set.
inline int head_of_ref(const float* L, int n, int32_t* list, int cap, double* mass, int i = 0, int len = 0,
                       double hm = 0) {
  for (; i < n; ++i)
    if (L[i] >= kPickHeadMin) {
      if (len == cap) return cap + 1;
      hm += L[i];
      list[len++] = i;
    }
  *mass = hm;
  return len;
}

// Per id, s = (m - L[i]) * inv_t: head (s < kPickHeadS, listed as head_of lists; more than cap: cap + 1 returned,
// tail and far not set), tail (s < kPickTailS: the bound e^-floor(64 s)/64 summed in lane order to *tail) or far
// (also NaN and -Infinity: counted to *far).
// (i, len, a, nfar: where the AVX2 form hands its last ids over)
inline int scan_bounds_ref(const float* L, int n, double m, double inv_t, int32_t* list, int cap, double* tail,
                           double* far, int i = 0, int len = 0, double* a = nullptr, int64_t nfar = 0) {
  double zero[kSumLanes] = {0, 0, 0, 0};
  if (!a) a = zero;
  for (; i < n; ++i) {
    const double s = (m - double(L[i])) * inv_t;
    if (s < kPickHeadS) {
      if (len == cap) return cap + 1;
      list[len++] = i;
    } else if (s < kPickTailS) {
      a[i & 3] += kPickExpTable[int(s * kPickExpSteps)];
    } else {
      ++nfar;
    }
  }
  *tail = lane_sum(a);
  *far = double(nfar);
  return len;
}

inline int weight_bin(float w) {  // candidates.ts histogram: bits >> 20 (weights are in [0, 1]: bin <= 1016)
  int32_t b;
  std::memcpy(&b, &w, sizeof b);
  return b >> 20;
}

// L[n] (weights): ids of bins > bin to list[0, len) in id order (len returned), then those of `bin` to
// list[len, len + *count) in DESCENDING id order (TS fills them from the back; the caller sorts them).
// (i, len, back: where the AVX2 form hands its last ids over)
inline int split_at_bin_ref(const float* L, int n, int bin, int32_t* list, int* count, int i = 0, int len = 0,
                            int back = -1) {
  if (back < 0) back = n;
  for (; i < n; ++i) {
    const int b = weight_bin(L[i]);
    if (b > bin) list[len++] = i;
    else if (b == bin) list[--back] = i;
  }
  if (back != len) std::copy(list + back, list + n, list + len);  // (equal: already in place)
  *count = n - back;
  return len;
}

// ---- AVX2 (same results) --------------------------------------------------------------------------------------
#if defined(__AVX2__)
namespace lanes_detail {

// Lists the ids i0 + bit of `mask` (bit order = id order) as head ids; cap + 1 at the (cap + 1)-th.
inline int list_bits(unsigned mask, int i0, int32_t* list, int cap, int len) {
  for (; mask; mask &= mask - 1) {
    if (len == cap) return cap + 1;
    list[len++] = i0 + __builtin_ctz(mask);
  }
  return len;
}

}  // namespace lanes_detail

// kPickExpTable[k[0..3]]: four scalar loads (vgatherdpd measured no faster on the Zen 3 development machine).
inline __m256d table4(__m128i k) {
  alignas(16) int32_t j[4];
  _mm_store_si128(reinterpret_cast<__m128i*>(j), k);
  return _mm256_setr_pd(kPickExpTable[j[0]], kPickExpTable[j[1]], kPickExpTable[j[2]], kPickExpTable[j[3]]);
}

// pick_weight of 4 logits (m finite): pick_exp_neg's operations on whole vectors. A lane with !(s < kPickExpMax)
// (far, NaN, -Infinity) computes on s = 0 and is then set to 0, as pick_exp_neg returns.
inline __m256d weigh4(__m128 x, __m256d m, __m256d inv_t) {
  const __m256d s = _mm256_mul_pd(_mm256_sub_pd(m, _mm256_cvtps_pd(x)), inv_t);
  const __m256d ok = _mm256_cmp_pd(s, _mm256_set1_pd(kPickExpMax), _CMP_LT_OQ);
  const __m256d t = _mm256_mul_pd(_mm256_and_pd(s, ok), _mm256_set1_pd(kPickExpSteps));
  const __m128i k = _mm256_cvttpd_epi32(t);  // t >= 0: int(t)
  const __m256d r = _mm256_mul_pd(_mm256_sub_pd(t, _mm256_cvtepi32_pd(k)), _mm256_set1_pd(1.0 / kPickExpSteps));
  const __m256d a = _mm256_sub_pd(_mm256_set1_pd(0.5), _mm256_mul_pd(r, _mm256_set1_pd(1.0 / 6)));
  const __m256d b = _mm256_sub_pd(_mm256_set1_pd(1.0), _mm256_mul_pd(r, a));
  const __m256d c = _mm256_sub_pd(_mm256_set1_pd(1.0), _mm256_mul_pd(r, b));
  const __m256d e = _mm256_mul_pd(table4(k), c);
  // float(e), back to double: the weight as stored, and as the total adds it
  return _mm256_cvtps_pd(_mm256_cvtpd_ps(_mm256_and_pd(e, ok)));
}

inline double weigh_lanes(float* L, int n, double m, double inv_t) {
  if (m == INFINITY) return weigh_lanes_ref(L, n, m, inv_t);
  const __m256d mv = _mm256_set1_pd(m), tv = _mm256_set1_pd(inv_t);
  __m256d acc = _mm256_setzero_pd();
  int i = 0;
  for (; i + 4 <= n; i += 4) {
    const __m256d w = weigh4(_mm_loadu_ps(L + i), mv, tv);
    _mm_storeu_ps(L + i, _mm256_cvtpd_ps(w));  // exact: w is a float
    acc = _mm256_add_pd(acc, w);
  }
  alignas(32) double a[kSumLanes];
  _mm256_store_pd(a, acc);
  return weigh_lanes_ref(L, n, m, inv_t, i, a);  // the last n % 4 ids
}

inline int head_of(const float* L, int n, int32_t* list, int cap, double* mass) {
  const __m256 lo = _mm256_set1_ps(float(kPickHeadMin));  // 2^-12: exact in float
  double hm = 0;
  int len = 0, i = 0;
  for (; i + 8 <= n; i += 8) {
    unsigned bits = unsigned(_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(L + i), lo, _CMP_GE_OQ)));
    for (; bits; bits &= bits - 1) {  // in id order
      const int j = i + __builtin_ctz(bits);
      if (len == cap) return cap + 1;
      hm += L[j];
      list[len++] = j;
    }
  }
  return head_of_ref(L, n, list, cap, mass, i, len, hm);  // the last n % 8 ids
}

inline int scan_bounds(const float* L, int n, double m, double inv_t, int32_t* list, int cap, double* tail,
                       double* far) {
  const __m256d mv = _mm256_set1_pd(m), tv = _mm256_set1_pd(inv_t);
  const __m256d head_s = _mm256_set1_pd(kPickHeadS), tail_s = _mm256_set1_pd(kPickTailS);
  const __m256d steps = _mm256_set1_pd(kPickExpSteps);
  __m256d acc = _mm256_setzero_pd();
  int64_t nfar = 0;
  int len = 0, i = 0;
  for (; i + 4 <= n; i += 4) {
    const __m256d s = _mm256_mul_pd(_mm256_sub_pd(mv, _mm256_cvtps_pd(_mm_loadu_ps(L + i))), tv);
    const __m256d head = _mm256_cmp_pd(s, head_s, _CMP_LT_OQ);
    const __m256d in_tail = _mm256_andnot_pd(head, _mm256_cmp_pd(s, tail_s, _CMP_LT_OQ));
    const unsigned hb = unsigned(_mm256_movemask_pd(head)), tb = unsigned(_mm256_movemask_pd(in_tail));
    nfar += 4 - __builtin_popcount(hb | tb);
    if (hb && (len = lanes_detail::list_bits(hb, i, list, cap, len)) > cap) return len;
    if (tb) {  // other lanes index 0 and add +0, which leaves a lane's sum as it is
      const __m128i k = _mm256_cvttpd_epi32(_mm256_mul_pd(_mm256_and_pd(s, in_tail), steps));
      acc = _mm256_add_pd(acc, _mm256_and_pd(table4(k), in_tail));
    }
  }
  alignas(32) double a[kSumLanes];
  _mm256_store_pd(a, acc);
  return scan_bounds_ref(L, n, m, inv_t, list, cap, tail, far, i, len, a, nfar);  // the last n % 4 ids
}

inline int split_at_bin(const float* L, int n, int bin, int32_t* list, int* count) {
  const __m256i bv = _mm256_set1_epi32(bin);
  int len = 0, back = n, i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i b = _mm256_srai_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(L + i)), 20);
    const unsigned gt = unsigned(_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(b, bv))));
    const unsigned eq = unsigned(_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(b, bv))));
    for (unsigned m = gt | eq; m; m &= m - 1) {  // usually none: the block is below the bin
      const int j = __builtin_ctz(m);
      if (gt >> j & 1) list[len++] = i + j;
      else list[--back] = i + j;
    }
  }
  return split_at_bin_ref(L, n, bin, list, count, i, len, back);  // the last n % 8 ids
}

#else  // no AVX2: the definitions
inline double weigh_lanes(float* L, int n, double m, double inv_t) { return weigh_lanes_ref(L, n, m, inv_t); }
inline int head_of(const float* L, int n, int32_t* list, int cap, double* mass) {
  return head_of_ref(L, n, list, cap, mass);
}
inline int scan_bounds(const float* L, int n, double m, double inv_t, int32_t* list, int cap, double* tail,
                       double* far) {
  return scan_bounds_ref(L, n, m, inv_t, list, cap, tail, far);
}
inline int split_at_bin(const float* L, int n, int bin, int32_t* list, int* count) {
  return split_at_bin_ref(L, n, bin, list, count);
}
#endif

}  // namespace qwen

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif
