// The host reference of sample_fx (cpp/core/sample_fx.h): its primitives as plain loops and sorts over the row, written
// independently of the CUDA block's radix selects (cuda/sample_fx.cu) so that the two check each other. Integer sums
// make the order of a loop irrelevant: both must give the same FxOut bit for bit.
#include "cpu/sample_fx.h"

#include <algorithm>
#include <cassert>
#include <utility>
#include <vector>

#include "core/sample_fx.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#elif defined(__clang__)
#pragma clang fp contract(off)
#endif

namespace qwen {
namespace {

struct HostFxOps {
  const float* L;
  float* W;
  int n;

  FxStats weigh(const FxRowIn& in, float kth, uint32_t kmin, bool probe) {
    FxStats st;
    const double m = in.m;
    for (int i = 0; i < n; ++i) {
      const float x = L[i];
      const float w = pick_weight(x, m, in.inv_t);
      W[i] = w;
      const uint64_t f = fx_of(w);
      st.total += f;
      if (double(w) >= kPickHeadMin) {
        ++st.hw_len;
        st.hw_mass += f;
      }
      if (x == x && x >= kth) {
        ++st.tk_len;
        st.tk_mass += f;
      }
      if (!probe) continue;
      const uint32_t k = fx_logit_key(x);
      if (k >= kmin && k <= kFxKeyPosInf) {
        ++st.hs_len;
        st.hs_mass += f;
      } else {
        const double s = (m - double(x)) * in.inv_t;
        if (s < kPickTailS) st.tail += fx_of(kPickExpTable[int(s * kPickExpSteps)]);
        else ++st.far;
      }
    }
    return st;
  }

  // the set's elements as (key, id), sorted (key desc, id asc)
  std::vector<std::pair<uint32_t, int32_t>> sorted(FxOrder o, const FxPred& p) const {
    std::vector<std::pair<uint32_t, int32_t>> v;
    const bool need_w = fx_needs_w(o, p);
    for (int i = 0; i < n; ++i) {
      const float w = need_w ? W[i] : 0.f;
      if (fx_pred(p, L[i], w, i)) v.emplace_back(fx_key(o, L[i], w), i);
    }
    std::sort(v.begin(), v.end(), [](const std::pair<uint32_t, int32_t>& a, const std::pair<uint32_t, int32_t>& b) {
      return a.first > b.first || (a.first == b.first && a.second < b.second);
    });
    return v;
  }

  FxSel select(FxOrder o, const FxPred& p, uint64_t T, bool by_count, bool /*need_id*/) const {
    assert(T >= 1);
    FxSel s;
    uint64_t acc = 0;
    for (const auto& e : sorted(o, p)) {
      const uint64_t before = acc;
      acc += by_count ? 1 : fx_of(W[e.second]);
      if (acc >= T) {
        s.found = 1;
        s.key = e.first;
        s.id = e.second;
        s.before = before;
        s.incl = acc;
        return s;
      }
    }
    s.before = s.incl = acc;
    return s;
  }

  FxSel find_id(const FxPred& p, uint64_t T) const {
    FxSel s;
    uint64_t acc = 0;
    for (int i = 0; i < n; ++i) {
      if (!fx_pred(p, L[i], W[i], i)) continue;
      const uint64_t before = acc;
      acc += fx_of(W[i]);
      if (acc >= T) {
        s.found = 1;
        s.key = fx_bits(W[i]);
        s.id = i;
        s.before = before;
        s.incl = acc;
        return s;
      }
    }
    s.before = s.incl = acc;
    return s;
  }

  FxHist hist(uint64_t T) const {
    std::vector<uint64_t> mass(1024, 0);
    for (int i = 0; i < n; ++i) mass[fx_bits(W[i]) >> 20] += fx_of(W[i]);
    FxHist h;
    uint64_t before = 0;
    for (int b = 1023; b >= 0; --b) {
      if (before + mass[size_t(b)] >= T) {
        h.bin = b;
        h.before = before;
        h.in_bin = mass[size_t(b)];
        return h;
      }
      before += mass[size_t(b)];
    }
    h.before = before;
    return h;
  }

  int gather(FxOrder o, const FxPred& p, int max, int32_t* ids, float* w) const {
    const auto v = sorted(o, p);
    const int got = std::min(max, int(v.size()));
    for (int k = 0; k < got; ++k) {
      ids[k] = v[size_t(k)].second;
      w[k] = W ? W[v[size_t(k)].second] : 0.f;
    }
    return got;
  }

  float weight(int32_t id) const { return W[id]; }
  double table(int k) const { return kPickExpTable[k]; }
};

}  // namespace

void sample_fx_row(const float* L, float* W, const FxRowIn& in, FxOut& out) {
  HostFxOps ops{L, W, in.n};
  sample_fx(ops, in, out);
}

FxRowIn fx_row_in(const float* L, int n, const PickSpec& s) {
  FxRowIn in;
  in.n = n;
  float m = -INFINITY;
  for (int i = 0; i < n; ++i)
    if (L[i] > m) {
      m = L[i];
      in.argmax = i;
    }
  in.m = m;
  in.top_k = s.top_k;
  in.inv_t = pick_inv_t(s);
  in.top_p = s.top_p;
  in.u = s.u;
  in.top_n = s.top_n;
  return in;
}

void fx_result(const FxOut& o, int top_n, PickResult& out) {
  out = PickResult();
  out.id = o.id;
  if (o.id < 0 || top_n < 0) return;
  const double log_z = std::log(fx_dbl(o.z) / kFxOne);
  out.logprob = std::log(double(o.w)) - log_z;
  out.n_top = o.n_top;
  for (int k = 0; k < o.n_top; ++k) {
    out.top_ids[k] = o.top_id[k];
    out.top_logprobs[k] = std::log(double(o.top_w[k])) - log_z;
  }
}

}  // namespace qwen
