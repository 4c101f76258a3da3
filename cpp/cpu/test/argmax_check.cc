// argmax_first (cpu/argmax.h) against the plain loop it replaces, on rows built to break it: every length 0..200 at
// offsets 0..3 (all tail / one lane round / several rounds + tail), values drawn from a small set so that ties are
// common (NaN, +-Infinity, -0 and +0, repeats), rows with nothing usable, and Qwen-sized rows with the maximum at the
// first, last and a middle position, and a -0 / +0 tie in different lanes. The index and the bits of the returned
// maximum must be equal. Built by test/cpu-argmax.test.ts with the addon's flags (-O3 -mavx2 -mfma -mf16c) and at -O2.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "cpu/argmax.h"

namespace {

int naive(const float* L, int i0, int i1, float* m_out) {
  float m = -std::numeric_limits<float>::infinity();
  int at = -1;
  for (int i = i0; i < i1; ++i)
    if (L[i] > m) {
      m = L[i];
      at = i;
    }
  *m_out = m;
  return at;
}

uint32_t bits(float x) {
  uint32_t b;
  std::memcpy(&b, &x, sizeof b);
  return b;
}

}  // namespace

int main() {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  const float pool[] = {nan, -inf, inf, -0.0f, 0.0f, 1.0f, 1.0f, -1.0f, 2.5f, 2.5f, -3.0f, 1e-40f};
  const float nonpos[] = {nan, -inf, -0.0f, 0.0f, -1.0f};
  std::mt19937 g(7);
  int cases = 0, differ = 0;
  auto check = [&](const std::vector<float>& L, int i0, int i1) {
    float m1, m2;
    const int a1 = naive(L.data(), i0, i1, &m1), a2 = qwen::argmax_first(L.data(), i0, i1, &m2);
    ++cases;
    if (a1 != a2 || (a1 >= 0 && bits(m1) != bits(m2))) {
      if (++differ <= 5) std::printf("DIFF n=%d i0=%d: naive %d (%g) vs argmax_first %d (%g)\n", i1 - i0, i0, a1, m1, a2, m2);
    }
  };
  for (int n = 0; n <= 200; ++n)
    for (int i0 = 0; i0 < 4; ++i0)
      for (int mix = 0; mix < 6; ++mix) {
        std::vector<float> L(size_t(i0 + n));
        // mix 0: only NaN / -Infinity; 1: also +Infinity, -0; 2: NaN, -Infinity, -0, +0, -1 (the maximum is a -0 / +0
        // tie in most rows, across lanes once n > 32); 3-5: the whole pool
        for (auto& x : L) x = mix == 2 ? nonpos[g() % 5u] : pool[g() % unsigned(mix == 0 ? 2 : mix == 1 ? 4 : 12)];
        check(L, i0, i0 + n);
      }
  const int V = 151851;
  std::vector<float> row(V);
  std::normal_distribution<float> nd(0.f, 3.f);
  for (int at : {0, 1, 31, 32, 75000, V - 33, V - 1}) {
    for (auto& x : row) x = nd(g);
    row[size_t(at)] = 40.f;
    row[size_t(V - 1 - at)] = 40.f;  // a tie: the lower index wins
    check(row, 0, V);
    check(row, 5, V - 7);  // drops the planted maxima at 0 and 1: the Gaussian's own maximum then
  }
  for (int at : {7, 40, 1000}) {  // the only non-negative values: +0 at `at`, -0 at 3 (an earlier lane)
    for (auto& x : row) x = -1.f - std::fabs(nd(g));
    row[size_t(at)] = 0.0f;
    row[3] = -0.0f;
    check(row, 0, V);
  }
  std::printf("%d cases, %d differ\n", cases, differ);
  return differ ? 1 : 0;
}
