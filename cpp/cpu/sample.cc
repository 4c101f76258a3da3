// The sampled pick of one row on the CPU (PickSpec::do_sample): lib/sampling's warpers and draw transcribed, path for
// path, so the id equals Sampler.sample()'s for the same logits and u. The TS code takes different (equally exact)
// routes to the top-p set — a bounded probe of the head, the sorted head, a weight histogram — whose sums round
// differently, and its draw walks the kept ids in an order that depends on the route; a result equal to the bit needs
// the same routes, the same sums in the same order, and the same weights (pick_weight: V8's exp table). Comments name
// the TS function each part mirrors. Contraction is off (as in core/pick.h): JS never fuses a multiply-add.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#elif defined(__clang__)
#pragma clang fp contract(off)
#endif

#include "cpu/sample.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/pick.h"
#include "cpu/argmax.h"
#include "cpu/sample_lanes.h"

namespace qwen {
namespace {

constexpr float kInf = INFINITY;
constexpr int kWeightBins = 1024;  // candidates.ts WEIGHT_BINS

inline int32_t bits_of(float x) {
  int32_t b;
  std::memcpy(&b, &x, sizeof b);
  return b;
}
// candidates.ts sortList's key: order-preserving float bits (signed compare), then id ascending. Note -0 < +0 here.
inline int32_t ord_of(float x) {
  const int32_t b = bits_of(x);
  return b ^ ((b >> 31) & 0x7fffffff);
}

// candidates.ts Candidates, for one row: L [n] is rewritten in place (logits, then weights of the kept ids).
struct Cands {
  float* L;
  int n;
  std::vector<int32_t>& list;  // [n] scratch
  bool scanned = false, weighted = false, listed = false, sorted = false;
  double max = -INFINITY;
  int argmax = -1;
  double inv_t = 1.0;
  double total = 0.0, head_mass = 0.0;
  int head_len = 0, len = 0;

  Cands(float* l, int n_, std::vector<int32_t>& scratch) : L(l), n(n_), list(scratch) {
    if (list.size() < size_t(n)) list.resize(size_t(n));
  }

  // scan(): false where TS throws noLogit (no finite or +Infinity logit)
  bool scan() {
    float m;
    const int at = argmax_first(L, 0, n, &m);
    if (at < 0) return false;
    max = m;
    argmax = at;
    scanned = true;
    return true;
  }

  // weighAll() / weighRange()
  bool weigh_all() {
    if (!scanned && !scan()) return false;
    total = weigh_lanes(L, n, max, inv_t);
    head_len = head_of(L, n, list.data(), kPickHeadCap, &head_mass);
    weighted = true;
    return true;
  }

  // weighList()
  bool weigh_list() {
    float m = -kInf;
    for (int j = 0; j < len; ++j)
      if (L[list[size_t(j)]] > m) m = L[list[size_t(j)]];
    if (m == -kInf) return false;
    for (int j = 0; j < len; ++j) {
      float& x = L[list[size_t(j)]];
      x = pick_weight(x, m, inv_t);
    }
    weighted = true;
    return true;
  }

  bool ensure_weights() { return weighted || (listed ? weigh_list() : weigh_all()); }

  // keptMass(): in kept order
  double kept_mass() const {
    if (!listed) return total;
    double z = 0.0;
    for (int j = 0; j < len; ++j) z += L[list[size_t(j)]];
    return z;
  }

  // sortList(from, to): (value desc, id asc) by the float-bits key
  void sort_list(int from, int to) {
    std::sort(list.begin() + from, list.begin() + to, [this](int32_t a, int32_t b) {
      const int32_t oa = ord_of(L[a]), ob = ord_of(L[b]);
      return oa > ob || (oa == ob && a < b);
    });
  }
};

// topK.ts applyTopK. Its buffered pass ends with the ids whose logit is >= the k-th best (by the sort key) among the
// non-NaN ids — all of them when there are at most k — sorted; the same set is computed here by nth_element.
void top_k(Cands& c, int k) {
  if (!c.listed) {
    if (k >= c.n) return;  // HF clamps k to the vocabulary: nothing to remove
    int len = 0;
    for (int i = 0; i < c.n; ++i)
      if (c.L[i] == c.L[i]) c.list[size_t(len++)] = i;  // NaN never passes L[i] >= threshold
    c.len = len;
    c.listed = true;
    c.sorted = false;
  }
  if (k < c.len) {  // cutSorted: the first k plus every id tied with the k-th (>= by value, so -0 ties +0)
    const float* L = c.L;
    auto better = [L](int32_t a, int32_t b) {
      const int32_t oa = ord_of(L[a]), ob = ord_of(L[b]);
      return oa > ob || (oa == ob && a < b);
    };
    if (!c.sorted) std::nth_element(c.list.begin(), c.list.begin() + (k - 1), c.list.begin() + c.len, better);
    const float kth = L[c.list[size_t(k - 1)]];
    int keep = 0;
    for (int j = 0; j < c.len; ++j)
      if (L[c.list[size_t(j)]] >= kth) c.list[size_t(keep++)] = c.list[size_t(j)];
    c.len = keep;
    c.sorted = false;
  }
  if (!c.sorted) c.sort_list(0, c.len);
  c.sorted = true;
}

// topP.ts cutPrefix: list[from, len) sorted, `before` the mass of list[0, from)
void cut_prefix(Cands& c, double target, int from, double before) {
  if (!c.sorted && from == 0) {
    c.sort_list(0, c.len);
    c.sorted = true;
  }
  double acc = before;
  for (int j = from; j < c.len; ++j) {
    acc += c.L[c.list[size_t(j)]];
    if (acc >= target) {
      c.len = j + 1;
      return;
    }
  }
}

// topP.ts probe (path 1): true if it settled the kept set; false leaves the logits untouched (a scan that found no
// usable logit returns false too, and weigh_all then fails the same way).
bool probe(Cands& c, double p, std::vector<double>& head_w) {
  if (!c.scanned && !c.scan()) return false;
  const double m = c.max;
  if (m == INFINITY) return false;
  const float* L = c.L;
  double tail, far;
  const int len = scan_bounds(L, c.n, m, c.inv_t, c.list.data(), kPickHeadCap, &tail, &far);
  if (len > kPickHeadCap) return false;
  c.sort_list(0, len);
  head_w.resize(size_t(kPickHeadCap));
  double head = 0.0;
  for (int j = 0; j < len; ++j) head += head_w[size_t(j)] = pick_weight(L[c.list[size_t(j)]], m, c.inv_t);
  const double lo = p * (head + tail * kPickExpTable[1]) * (1 - kPickSlack);
  const double hi = p * (head + tail + far * kPickExpTable[kPickTailS * kPickExpSteps]) * (1 + kPickSlack);
  double acc = 0.0;
  int cut = 0;
  while (cut < len && acc < lo) acc += head_w[size_t(cut++)];
  if (acc < hi) return false;
  for (int j = 0; j < cut; ++j) c.L[c.list[size_t(j)]] = float(head_w[size_t(j)]);
  c.len = cut;
  c.listed = c.sorted = c.weighted = true;
  return true;
}

// topP.ts applyTopP; false where TS throws noLogit
bool top_p(Cands& c, double p, std::vector<double>& head_w) {
  if (!c.weighted && !c.listed && probe(c, p, head_w)) return true;
  if (!c.ensure_weights()) return false;
  if (c.listed) {
    cut_prefix(c, p * c.kept_mass(), 0, 0);
    return true;
  }
  const double target = p * c.total;
  if (c.head_len <= kPickHeadCap && c.head_mass >= target) {
    c.len = c.head_len;  // weigh_all left the head in list[0, head_len)
    c.listed = true;
    c.sort_list(0, c.len);
    c.sorted = true;
    cut_prefix(c, target, 0, 0);
    return true;
  }
  // histogram(): mass per float-bits bin (1/8 octave) of the weights, in id order (the count of the one bin needed
  // comes from split_at_bin)
  std::vector<double> mass(kWeightBins, 0.0);
  for (int i = 0; i < c.n; ++i) mass[size_t(weight_bin(c.L[i]))] += c.L[i];
  double before = 0.0;
  int bin = kWeightBins - 1;
  for (; bin >= 0; --bin) {
    if (before + mass[size_t(bin)] >= target) break;
    before += mass[size_t(bin)];
  }
  if (bin < 0) return true;  // rounding left p * total just out of reach: keep everything
  int count;
  const int len = split_at_bin(c.L, c.n, bin, c.list.data(), &count);
  c.len = len + count;
  c.listed = true;
  c.sort_list(len, c.len);
  c.sorted = len == 0;
  cut_prefix(c, target, len, before);
  return true;
}

// pick.ts walk / walkRest
int walk(const float* L, const int32_t* ids, int len, double t, double acc, int last) {
  for (int j = 0; j < len; ++j) {
    const float w = L[ids[j]];
    acc += w;
    if (acc > t) return ids[j];
    if (w > 0) last = ids[j];
  }
  return last;
}
int walk_rest(const float* L, int n, double t, double acc, double skip_from, int last) {
  for (int i = 0; i < n; ++i) {
    const float w = L[i];
    if (skip_from >= 0 && w >= skip_from) continue;
    acc += w;
    if (acc > t) return i;
    if (w > 0) last = i;
  }
  return last;
}

// pick.ts draw; -1 where TS throws noLogit
int draw(Cands& c, double u) {
  if (!c.ensure_weights()) return -1;
  const float* L = c.L;
  const int32_t* ids = c.list.data();
  if (c.listed) return walk(L, ids, c.len, u * c.kept_mass(), 0, ids[0]);
  const double t = u * c.total;
  if (c.head_len > kPickHeadCap) return walk_rest(L, c.n, t, 0, -1, c.argmax);
  double acc = 0.0;
  for (int j = 0; j < c.head_len; ++j) {
    acc += L[ids[j]];
    if (acc > t) return ids[j];
  }
  return walk_rest(L, c.n, t, acc, kPickHeadMin, c.argmax);
}

// pick.ts logprobsOf (weights in place)
void logprobs(const Cands& c, int id, int top, PickResult& out) {
  const float* L = c.L;
  const double log_z = std::log(c.kept_mass());
  out.logprob = std::log(double(L[id])) - log_z;
  if (top <= 0) return;
  std::vector<int32_t> best;
  if (c.listed && c.sorted) {
    best.assign(c.list.begin(), c.list.begin() + std::min(top, c.len));
  } else {  // topOf: (weight desc, id asc)
    auto better = [L](int32_t a, int32_t b) { return L[a] > L[b] || (L[a] == L[b] && a < b); };
    for (int j = 0, m = c.listed ? c.len : c.n; j < m; ++j) {
      const int32_t i = c.listed ? c.list[size_t(j)] : j;
      if (int(best.size()) == top && !better(i, best.back())) continue;
      auto at = std::upper_bound(best.begin(), best.end(), i, better);
      best.insert(at, i);
      if (int(best.size()) > top) best.pop_back();
    }
  }
  for (int32_t i : best) {
    if (!(L[i] > 0)) continue;
    out.top_ids[out.n_top] = i;
    out.top_logprobs[out.n_top] = std::log(double(L[i])) - log_z;
    ++out.n_top;
  }
}

}  // namespace

void sample_row(float* L, int n, const PickSpec& s, PickResult& out, SampleScratch& scratch) {
  assert(s.do_sample && pick_sample_ok(s) && n >= 1 && n <= kPickIdSpan);
  out = PickResult();
  Cands c(L, n, scratch.list);
  // index.ts PROCESSOR_CHAIN's warpers, in its order (the penalties ran in pick_rows)
  c.inv_t = pick_inv_t(s);
  if (s.top_k > 0) top_k(c, s.top_k);
  if (s.top_p < 1 && !top_p(c, s.top_p, scratch.head_w)) return;
  const int id = draw(c, s.u);
  if (id < 0) return;
  out.id = id;
  if (s.top_n >= 0) logprobs(c, id, std::min(s.top_n, kMaxPickTop), out);
}

}  // namespace qwen
