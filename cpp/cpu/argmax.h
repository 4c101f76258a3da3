// argmax_first: the first index of the largest logit of L[i0, i1), as the plain loop
//   m = -inf; at = -1; for i: if (L[i] > m) { m = L[i]; at = i; }
// gives it (NaN and -Infinity never win; -0 and +0 tie, so the first of them wins; -1 when nothing beats -Infinity).
// That loop is one dependency chain through m (max + cmov: ~4 cycles per logit, ~0.2 ms for Qwen's 151,851 ids, half
// of a sampled row's draw). Here kLanes independent (max, first index) pairs run over interleaved positions, which
// the compiler turns into compare + blend on whole vectors; merging them by (value desc, index asc) gives the same
// answer, because within a lane the strict > keeps that lane's first index of its maximum.
#pragma once
#include <cstdint>
#include <limits>

namespace qwen {

inline int argmax_first(const float* L, int i0, int i1, float* max_out = nullptr) {
  constexpr int kLanes = 32;
  float m[kLanes];
  int32_t at[kLanes];
  for (int j = 0; j < kLanes; ++j) {
    m[j] = -std::numeric_limits<float>::infinity();
    at[j] = -1;
  }
  int i = i0;
  for (; i + kLanes <= i1; i += kLanes)
    for (int j = 0; j < kLanes; ++j) {
      const float x = L[i + j];
      const bool gt = x > m[j];
      m[j] = gt ? x : m[j];
      at[j] = gt ? i + j : at[j];
    }
  for (int j = 0; i < i1; ++i, ++j)  // the tail: lane j takes position i (its indices stay increasing)
    if (L[i] > m[j]) {
      m[j] = L[i];
      at[j] = i;
    }
  float best = -std::numeric_limits<float>::infinity();
  int best_at = -1;
  for (int j = 0; j < kLanes; ++j)
    if (at[j] >= 0 && (best_at < 0 || m[j] > best || (m[j] == best && at[j] < best_at))) {
      best = m[j];
      best_at = at[j];
    }
  if (max_out) *max_out = best;  // m[j] of the chosen lane: L[best_at] itself (or -Infinity when none)
  return best_at;
}

}  // namespace qwen
