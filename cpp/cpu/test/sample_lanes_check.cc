// cpu/sample_lanes.h (the sampled draw's passes over a whole row) against the plain loops of lib/sampling they
// transcribe, written here once more: weights and their total, the head list and mass, the probe's head / tail bound /
// far count, the split at a weight bin. Sums follow the sampler's SUM_LANES order, spelled out below independently of
// the header (id i into partial i % 4, merged (a0 + a2) + (a1 + a3)). Every result must be equal to the bit, for the
// AVX2 form (what the addon runs) and the scalar form (the build without AVX2). Rows: every length 0..200 at pointer
// offsets 0..3, values from pools rich in NaN, +-Infinity, +-0, ties and the exact thresholds (s = 40, s = 104,
// s near ln 4096), over several temperatures, heads over a small cap (reported as their first cap ids and the count
// cap + 1); Qwen-sized rows, flat and peaked, whose head overflows the cap of 2048.
// Built by test/cpu-sample-lanes.test.ts with the addon's flags (-O3 -mavx2 -mfma -mf16c) and at -O2.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "cpu/sample_lanes.h"

namespace {

using qwen::kPickExpTable;

uint64_t bits(double x) {
  uint64_t b;
  std::memcpy(&b, &x, sizeof b);
  return b;
}
uint32_t bits(float x) {
  uint32_t b;
  std::memcpy(&b, &x, sizeof b);
  return b;
}

// ---- the plain loops (candidates.ts weighRange / expNeg, topP.ts scanBounds / splitAtBin), sums in SUM_LANES order
double spec_merge(const double a[4]) { return (a[0] + a[2]) + (a[1] + a[3]); }

double spec_weight(float x, double m, double inv_t) {  // fround(expNeg((m - x) * invT)); m = +Infinity: x === Inf
  if (m == INFINITY) return x == INFINITY ? 1.0 : 0.0;
  const double s = (m - double(x)) * inv_t;
  if (!(s < 104)) return 0.0;
  const double t = s * 64;
  const int k = int(t);
  const double r = (t - k) * (1.0 / 64);
  volatile double a = r * (1.0 / 6);  // volatile: each product rounded on its own, as JS does
  volatile double b = r * (0.5 - a);
  volatile double c = r * (1 - b);
  volatile double e = kPickExpTable[k] * (1 - c);
  return double(float(e));
}

struct Weighed {
  std::vector<float> w;
  double total = 0, mass = 0;
  std::vector<int32_t> head;  // all head ids (uncapped)
};
Weighed spec_weigh(const float* L, int n, double m, double inv_t) {
  Weighed out;
  double a[4] = {0, 0, 0, 0};
  for (int i = 0; i < n; ++i) {
    const double w = spec_weight(L[i], m, inv_t);
    out.w.push_back(float(w));
    a[i % 4] += w;
  }
  out.total = spec_merge(a);
  for (int i = 0; i < n; ++i)
    if (out.w[size_t(i)] >= 1.0 / 4096) {
      out.mass += out.w[size_t(i)];
      out.head.push_back(i);
    }
  return out;
}

struct Bounds {
  std::vector<int32_t> head;
  double tail = 0, far = 0;
};
Bounds spec_bounds(const float* L, int n, double m, double inv_t) {
  Bounds out;
  double a[4] = {0, 0, 0, 0};
  for (int i = 0; i < n; ++i) {
    const double s = (m - double(L[i])) * inv_t;
    if (s < qwen::kPickHeadS) out.head.push_back(i);
    else if (s < 40) a[i % 4] += kPickExpTable[int(s * 64)];
    else out.far += 1;
  }
  out.tail = spec_merge(a);
  return out;
}

int cases = 0, differ = 0;
void fail(const char* what, int n, int off, double m, double inv_t) {
  ++differ;
  if (differ <= 8) std::printf("DIFF %s: n=%d off=%d m=%.17g inv_t=%.17g\n", what, n, off, m, inv_t);
}

// The head as the passes report it: all of it, or (more than cap ids) its first cap and the count cap + 1.
bool same_list(const int32_t* got, int got_len, const std::vector<int32_t>& want, int cap) {
  if (got_len != std::min(int(want.size()), cap + 1)) return false;
  for (int j = 0; j < got_len && j < cap; ++j)
    if (got[j] != want[size_t(j)]) return false;
  return true;
}

// Both forms of every pass on L[0, n) (L = row + off) against the plain loops.
void check_row(const std::vector<float>& row, int off, int n, double inv_t, int cap) {
  const float* L = row.data() + off;
  float mf = -INFINITY;
  for (int i = 0; i < n; ++i)
    if (L[i] > mf) mf = L[i];
  if (n == 0) mf = 0;  // nothing to scan: any finite max
  const double m = mf;
  if (m == -INFINITY) return;  // no usable logit: the sampler stops before these passes
  ++cases;
  std::vector<int32_t> list(size_t(n) + 8), list2(size_t(n) + 8);

  if (m != INFINITY) {  // the probe returns before scanBounds when the max is +Infinity
    const Bounds want = spec_bounds(L, n, m, inv_t);
    for (int form = 0; form < 2; ++form) {
      double tail = -1, far = -1;
      const int len = form ? qwen::scan_bounds(L, n, m, inv_t, list.data(), cap, &tail, &far)
                           : qwen::scan_bounds_ref(L, n, m, inv_t, list.data(), cap, &tail, &far);
      const bool over = int(want.head.size()) > cap;  // then tail and far are not set (the probe gives up)
      if (!same_list(list.data(), len, want.head, cap) || (!over && (bits(tail) != bits(want.tail) || far != want.far)))
        fail(form ? "scan_bounds" : "scan_bounds_ref", n, off, m, inv_t);
    }
  }

  const Weighed want = spec_weigh(L, n, m, inv_t);
  for (int form = 0; form < 2; ++form) {
    std::vector<float> w(L, L + n);
    const double total = form ? qwen::weigh_lanes(w.data(), n, m, inv_t) : qwen::weigh_lanes_ref(w.data(), n, m, inv_t);
    bool ok = bits(total) == bits(want.total);
    for (int i = 0; i < n && ok; ++i) ok = bits(w[size_t(i)]) == bits(want.w[size_t(i)]);
    if (!ok) fail(form ? "weigh_lanes" : "weigh_lanes_ref", n, off, m, inv_t);
    double mass = -1;
    const int len = form ? qwen::head_of(w.data(), n, list.data(), cap, &mass)
                         : qwen::head_of_ref(w.data(), n, list.data(), cap, &mass);
    if (!same_list(list.data(), len, want.head, cap) || (int(want.head.size()) <= cap && bits(mass) != bits(want.mass)))
      fail(form ? "head_of" : "head_of_ref", n, off, m, inv_t);
  }

  // splitAtBin at a few bins of these weights: the highest, one in the middle, one below all
  std::vector<int> bins = {-1};
  for (int i = 0; i < n; i += 1 + n / 5) bins.push_back(qwen::weight_bin(want.w[size_t(i)]));
  for (int bin : bins) {
    std::vector<int32_t> above, at;
    for (int i = 0; i < n; ++i) {
      const int b = int(bits(want.w[size_t(i)]) >> 20);
      if (b > bin) above.push_back(i);
      else if (b == bin) at.push_back(i);
    }
    std::reverse(at.begin(), at.end());  // descending, as TS fills them from the back
    for (int form = 0; form < 2; ++form) {
      int count = -1;
      const int len = form ? qwen::split_at_bin(want.w.data(), n, bin, list2.data(), &count)
                           : qwen::split_at_bin_ref(want.w.data(), n, bin, list2.data(), &count);
      bool ok = len == int(above.size()) && count == int(at.size());
      for (int j = 0; ok && j < len; ++j) ok = list2[size_t(j)] == above[size_t(j)];
      for (int j = 0; ok && j < count; ++j) ok = list2[size_t(len + j)] == at[size_t(j)];
      if (!ok) fail(form ? "split_at_bin" : "split_at_bin_ref", n, off, m, bin);
    }
  }
}

}  // namespace

int main() {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  // With the max at 0 and inv_t 1: -40 is s = 40 exactly (far), -104 is s = 104 (weight 0), the two floats around
  // -ln 4096 straddle the head threshold, -103.97... is a weight just above 0.
  const float head_lo = std::nextafter(float(-qwen::kPickHeadS), 0.0f), head_hi = float(-qwen::kPickHeadS);
  const float pool[] = {nan, -inf, -0.0f, 0.0f, -1.0f, -1.0f, -2.5f, -40.0f, -104.0f, head_lo, head_hi,
                        -103.97207641601562f, -39.99f, -7.0f, -0.125f, -60.0f, inf};
  const double temps[] = {1.0, 1 / 0.7, 1 / 1.3, 1 / 0.05, 0.4};
  std::mt19937 g(11);
  for (int n = 0; n <= 200; ++n)
    for (int off = 0; off < 4; ++off)
      for (int mix = 0; mix < 4; ++mix) {
        std::vector<float> row(size_t(off + n));
        std::normal_distribution<float> d(0, mix == 3 ? 20.0f : 3.0f);
        for (auto& x : row) {
          if (mix == 0) x = pool[g() % 16u];       // specials, no +Infinity
          else if (mix == 1) x = pool[g() % 17u];  // with +Infinity (the weigh's m = +Infinity form)
          else x = d(g);
        }
        const double inv_t = temps[(n + off + mix) % 5];
        check_row(row, off, n, inv_t, mix == 2 ? 3 : 2048);  // a cap of 3 overflows in most rows of mix 2
      }
  // s exactly at a threshold, through the temperature: m = 0, x = -8 and 1 / T = ln 4096 / 8 (s = ln 4096: not
  // head), 5 (s = 40: far) or 13 (s = 104: weight 0); the other ids on both sides of it
  for (const double inv_t : {qwen::kPickHeadS / 8, 5.0, 13.0})
    for (int n = 1; n <= 24; ++n)
      for (int off = 0; off < 4; ++off) {
        std::vector<float> row(size_t(off + n));
        for (size_t i = 0; i < row.size(); ++i) row[i] = i % 3 == 0 ? -8.0f : i % 3 == 1 ? -7.99f : -8.01f;
        row[size_t(off + (n - 1) / 2)] = 0;
        check_row(row, off, n, inv_t, 2048);
      }
  // Qwen-sized rows: flat (the histogram path), peaked (the probe's), spread wide (many far ids)
  for (int r = 0; r < 6; ++r) {
    const int n = 151851;
    std::vector<float> row(size_t(n) + 3);
    std::normal_distribution<float> d(0, r % 3 == 0 ? 3.0f : r % 3 == 1 ? 2.0f : 12.0f);
    for (auto& x : row) x = d(g);
    if (r % 3 == 1)
      for (int i = 0; i < 16; ++i) row[size_t((i * 9973) % 151643)] = 14 - i * 0.5f;
    check_row(row, r % 4, n, temps[r % 5], 2048);
  }
  std::printf("%d cases, %d differ\n", cases, differ);
  return differ ? 1 : 0;
}
