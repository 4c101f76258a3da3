// sample_fx's block-collective primitives (DevFxOps: the device side of core/sample_fx.h's Ops), for the kernel in
// sample_fx.cu. Every thread of the row's block calls each one with the same arguments and gets the same result
// through shared memory.
//   weigh    one pass: W[i] = the fp32 weight, and the sums / counts of the routes (block sums of integers);
//   select   the first element of (order, set) whose cumulative count / mass reaches T: radix select over the 32-bit
//            key in digits of 11, 11, 10 bits (shared-memory histograms of count and fixed mass per digit, a block scan
//            over the bins from the top), then the j-th element of the final key's group in id order (a chunked scan:
//            all elements of a group weigh the same, so j is a division);
//   find_id  the same in id order: each thread sums its contiguous chunk, a block scan finds the chunk, its thread
//            walks it;
//   hist     candidates.ts's 1024 weight bins, scanned from the top.
// Integer atomics and scans make the sums independent of the order, hence equal to the host loops
// (cpp/cpu/sample_fx.cc) bit for bit. Device code only, with no CUDA header of its own: cuda/test/sample_fx_emu.cc
// runs it on the host (1024 threads, barriers for __syncthreads and the shuffles) against that reference.
#pragma once
#include <cstdint>

#include "core/sample_fx.h"

namespace qwen::cu::sfx {

constexpr int kSampleThreads = 1024;

using u64 = unsigned long long;
constexpr int kT = kSampleThreads;
constexpr int kWarps = kT / 32;
constexpr int kRadixBins = 2048;  // digits of 11, 11 and 10 bits
constexpr int kHistBins = 1024;   // candidates.ts WEIGHT_BINS
static_assert(kWarps == 32 && kRadixBins == 2 * kT && kHistBins == kT, "bins per thread below");

struct Smem {
  u64 mass[kRadixBins];
  unsigned cnt[kRadixBins];
  u64 red[kWarps], excl[kWarps], total;
  // a primitive's result, broadcast
  int found, id, bin;
  uint32_t key;
  u64 before, incl, bin_mass;
  unsigned bin_cnt;
  // gather
  int g_n;
  uint32_t g_key[kMaxPickTop];
  int32_t g_id[kMaxPickTop];
  float g_w[kMaxPickTop];
};

__device__ __forceinline__ u64 warp_sum_u64(u64 v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
// Every thread gets the block's sum.
__device__ inline u64 block_sum_u64(u64 v, Smem& s) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum_u64(v);
  __syncthreads();  // s.red may still be read by the previous call
  if (lane == 0) s.red[warp] = v;
  __syncthreads();
  return warp_sum_u64(s.red[lane]);
}
// Exclusive prefix sum in thread order; *total = the block's sum.
__device__ inline u64 block_excl_scan_u64(u64 v, u64* total, Smem& s) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  u64 inc = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const u64 t = __shfl_up_sync(0xffffffffu, inc, o);
    if (lane >= o) inc += t;
  }
  __syncthreads();
  if (lane == 31) s.red[warp] = inc;
  __syncthreads();
  if (warp == 0) {
    const u64 w = s.red[lane];
    u64 wi = w;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const u64 t = __shfl_up_sync(0xffffffffu, wi, o);
      if (lane >= o) wi += t;
    }
    s.excl[lane] = wi - w;
    if (lane == 31) s.total = wi;
  }
  __syncthreads();
  *total = s.total;
  return s.excl[warp] + inc - v;
}

// The greedy pick's top list (pick.cu) holds the ids of non-zero fp32 weight exp(x - m); exp is monotone, so their
// keys are [top_kmin(m), key(+Infinity)] (m = +Infinity: only +Infinity weighs). The weight is exp in double rounded
// to float, not CUDA's expf: expf may be 2 ulp off, and an ulp is the whole of a subnormal result near x - m = -104,
// where it could give 0 for an id the host's expf (cpp/cpu/pick.cc, computed in double and rounded) lists, or the
// reverse. This runs ~32 times per row (a binary search over keys), so double costs nothing.
__device__ inline uint32_t top_kmin(float m) {
  if (m == INFINITY) return kFxKeyPosInf;
  return fx_min_key(kFxKeyNegInf, fx_logit_key(m), [m](float x) { return float(exp(double(x - m))) > 0.f; });
}

struct DevFxOps {
  const float* L;  // [n] penalized logits
  float* W;        // [n] weights (written by weigh)
  int n;
  const double* tab;
  Smem& s;

  __device__ FxStats weigh(const FxRowIn& in, float kth, uint32_t kmin, bool probe) {
    u64 total = 0, hw_mass = 0, tk_mass = 0, hs_mass = 0, tail = 0, hw_len = 0, tk_len = 0, hs_len = 0, far = 0;
    const double m = in.m;
    for (int i = threadIdx.x; i < n; i += kT) {
      const float x = L[i];
      const float w = pick_weight_dev(x, m, in.inv_t, tab);
      W[i] = w;
      const u64 f = fx_of(w);
      total += f;
      if (double(w) >= kPickHeadMin) {
        ++hw_len;
        hw_mass += f;
      }
      if (x == x && x >= kth) {
        ++tk_len;
        tk_mass += f;
      }
      if (!probe) continue;
      const uint32_t k = fx_logit_key(x);
      if (k >= kmin && k <= kFxKeyPosInf) {
        ++hs_len;
        hs_mass += f;
      } else {
        const double sv = __dmul_rn(__dsub_rn(m, double(x)), in.inv_t);
        if (sv < kPickTailS) tail += fx_of(tab[int(__dmul_rn(sv, double(kPickExpSteps)))]);
        else ++far;
      }
    }
    FxStats st;
    st.total = block_sum_u64(total, s);
    st.hw_mass = block_sum_u64(hw_mass, s);
    st.tk_mass = block_sum_u64(tk_mass, s);
    st.hs_mass = block_sum_u64(hs_mass, s);
    st.tail = block_sum_u64(tail, s);
    st.hw_len = int32_t(block_sum_u64(hw_len, s));
    st.tk_len = int32_t(block_sum_u64(tk_len, s));
    st.hs_len = int32_t(block_sum_u64(hs_len, s));
    st.far = int32_t(block_sum_u64(far, s));
    return st;  // the sums' __syncthreads also publish W to the block
  }

  // The j-th (1-based) element in id order of (set p, key == K in order o); -1 if there is none.
  __device__ bool in_key(FxOrder o, const FxPred& p, bool need_w, uint32_t K, int i) const {
    const float x = L[i], w = need_w ? W[i] : 0.f;
    return fx_key(o, x, w) == K && fx_pred(p, x, w, i);
  }
  __device__ int32_t nth_of_key(FxOrder o, const FxPred& p, uint32_t K, u64 j) {
    const bool need_w = fx_needs_w(o, p);
    const int C = (n + kT - 1) / kT, i0 = min(n, int(threadIdx.x) * C), i1 = min(n, i0 + C);
    u64 cnt = 0;
    for (int i = i0; i < i1; ++i) cnt += in_key(o, p, need_w, K, i) ? 1 : 0;
    u64 tot;
    const u64 ex = block_excl_scan_u64(cnt, &tot, s);
    if (threadIdx.x == 0) s.id = -1;
    __syncthreads();
    if (ex < j && j <= ex + cnt) {
      u64 c = ex;
      for (int i = i0; i < i1; ++i)
        if (in_key(o, p, need_w, K, i) && ++c == j) {
          s.id = i;
          break;
        }
    }
    __syncthreads();
    const int32_t id = s.id;
    __syncthreads();
    return id;
  }

  __device__ FxSel select(FxOrder o, const FxPred& p, uint64_t T, bool by_count, bool need_id) {
    const bool need_w = fx_needs_w(o, p) || !by_count;
    uint32_t prefix = 0, mask = 0;
    u64 above = 0, gm = 0;
    unsigned gc = 0;
    for (int pass = 0; pass < 3; ++pass) {
      const int shift = pass == 0 ? 21 : pass == 1 ? 10 : 0;
      const int nb = pass == 2 ? 1024 : 2048;
      for (int k = threadIdx.x; k < nb; k += kT) {
        s.mass[k] = 0;
        s.cnt[k] = 0;
      }
      __syncthreads();
      for (int i = threadIdx.x; i < n; i += kT) {
        const float x = L[i], w = need_w ? W[i] : 0.f;
        const uint32_t key = fx_key(o, x, w);
        if ((key & mask) != prefix || !fx_pred(p, x, w, i)) continue;
        const u64 m = by_count ? u64(1) : u64(fx_of(w));
        if (m == 0) continue;  // a group of mass 0 never crosses (T >= 1): spares the atomics of the zero weights
        const int d = int((key >> shift) & uint32_t(nb - 1));
        atomicAdd(&s.mass[d], m);
        atomicAdd(&s.cnt[d], 1u);
      }
      __syncthreads();
      // bins from the top: thread t owns the t-th run of nb / kT bins of that order
      const int per = nb / kT;
      u64 mine = 0;
      for (int j = 0; j < per; ++j) mine += s.mass[nb - 1 - (int(threadIdx.x) * per + j)];
      u64 tot;
      const u64 ex = block_excl_scan_u64(mine, &tot, s);
      if (threadIdx.x == 0) s.found = 0;
      __syncthreads();
      u64 c = above + ex;
      for (int j = 0; j < per; ++j) {
        const int bin = nb - 1 - (int(threadIdx.x) * per + j);
        const u64 mb = s.mass[bin];
        if (c < T && T <= c + mb) {  // T >= 1: exactly one bin crosses
          s.found = 1;
          s.bin = bin;
          s.before = c;
          s.bin_mass = mb;
          s.bin_cnt = s.cnt[bin];
        }
        c += mb;
      }
      __syncthreads();
      const bool found = s.found;
      const int b = s.bin;
      const u64 bb = s.before, bm = s.bin_mass;
      const unsigned bc = s.bin_cnt;
      __syncthreads();  // s is rewritten by the next pass
      if (!found) {
        FxSel r;
        r.before = r.incl = above + tot;
        return r;
      }
      above = bb;
      gm = bm;
      gc = bc;
      prefix |= uint32_t(b) << shift;
      mask |= uint32_t(nb - 1) << shift;
    }
    // the group of key `prefix`: gc elements of equal weight gm / gc; the crossing is its j-th in id order
    FxSel r;
    r.found = 1;
    r.key = prefix;
    const u64 e = gm / gc;
    const u64 j = (T - above + e - 1) / e;
    r.before = above + (j - 1) * e;
    r.incl = above + j * e;
    r.id = need_id ? nth_of_key(o, p, prefix, j) : -1;
    return r;
  }

  __device__ FxSel find_id(const FxPred& p, uint64_t T) {
    const int C = (n + kT - 1) / kT, i0 = min(n, int(threadIdx.x) * C), i1 = min(n, i0 + C);
    u64 mine = 0;
    for (int i = i0; i < i1; ++i)
      if (fx_pred(p, L[i], W[i], i)) mine += fx_of(W[i]);
    u64 tot;
    const u64 ex = block_excl_scan_u64(mine, &tot, s);
    if (threadIdx.x == 0) s.found = 0;
    __syncthreads();
    if (ex < T && T <= ex + mine) {
      u64 acc = ex;
      for (int i = i0; i < i1; ++i) {
        if (!fx_pred(p, L[i], W[i], i)) continue;
        const u64 before = acc;
        acc += fx_of(W[i]);
        if (acc >= T) {
          s.found = 1;
          s.id = i;
          s.key = fx_bits(W[i]);
          s.before = before;
          s.incl = acc;
          break;
        }
      }
    }
    __syncthreads();
    FxSel r;
    r.found = s.found;
    if (r.found) {
      r.id = s.id;
      r.key = s.key;
      r.before = s.before;
      r.incl = s.incl;
    } else {
      r.before = r.incl = tot;
    }
    __syncthreads();
    return r;
  }

  __device__ FxHist hist(uint64_t T) {
    s.mass[threadIdx.x] = 0;  // kHistBins == kT
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += kT) atomicAdd(&s.mass[fx_bits(W[i]) >> 20], u64(fx_of(W[i])));
    __syncthreads();
    const int bin = kHistBins - 1 - int(threadIdx.x);
    const u64 mine = s.mass[bin];
    u64 tot;
    const u64 ex = block_excl_scan_u64(mine, &tot, s);
    if (threadIdx.x == 0) s.found = 0;
    __syncthreads();
    if (ex < T && T <= ex + mine) {
      s.found = 1;
      s.bin = bin;
      s.before = ex;
      s.bin_mass = mine;
    }
    __syncthreads();
    FxHist h;
    if (s.found) {
      h.bin = s.bin;
      h.before = s.before;
      h.in_bin = s.bin_mass;
    } else {
      h.before = tot;
    }
    __syncthreads();
    return h;
  }

  // w[k]: the weight of ids[k] (0 when the ops have no weights, W null)
  __device__ int gather(FxOrder o, const FxPred& p, int max, int32_t* ids, float* w) {
    const bool need_w = fx_needs_w(o, p);
    if (threadIdx.x == 0) s.g_n = 0;
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += kT) {
      const float wi = need_w ? W[i] : 0.f;
      if (!fx_pred(p, L[i], wi, i)) continue;
      const int k = atomicAdd(&s.g_n, 1);
      if (k < max) {
        s.g_key[k] = fx_key(o, L[i], wi);
        s.g_id[k] = i;
        s.g_w[k] = W ? W[i] : 0.f;
      }
    }
    __syncthreads();
    const int got = min(s.g_n, max);
    if (threadIdx.x == 0)  // insertion sort (key desc, id asc) of at most kMaxPickTop
      for (int a = 1; a < got; ++a)
        for (int b = a; b > 0; --b) {
          const bool before = s.g_key[b] > s.g_key[b - 1] || (s.g_key[b] == s.g_key[b - 1] && s.g_id[b] < s.g_id[b - 1]);
          if (!before) break;
          const uint32_t tk = s.g_key[b];
          const int32_t ti = s.g_id[b];
          const float tw = s.g_w[b];
          s.g_key[b] = s.g_key[b - 1];
          s.g_id[b] = s.g_id[b - 1];
          s.g_w[b] = s.g_w[b - 1];
          s.g_key[b - 1] = tk;
          s.g_id[b - 1] = ti;
          s.g_w[b - 1] = tw;
        }
    __syncthreads();
    for (int k = 0; k < got; ++k) {
      ids[k] = s.g_id[k];
      w[k] = s.g_w[k];
    }
    __syncthreads();
    return got;
  }

  // The greedy pick's top list (pick.cu): the first `top` ids in (value desc, id asc) order (-0 ties +0) whose logit
  // key lies in [kmin, key(+Infinity)], and their logits. Reads no weights (W may be null).
  __device__ int top_logits(uint32_t kmin, int top, int32_t* ids, float* xs) {
    FxPred p;
    p.base = FxBase::HeadS;
    p.kmin = kmin;
    const FxSel c = select(FxOrder::Value, p, uint64_t(top), true, true);
    p.cut2 = fx_cut_at(FxOrder::Value, c);
    const int got = gather(FxOrder::Value, p, top, ids, xs);
    for (int k = 0; k < got; ++k) xs[k] = L[ids[k]];
    return got;
  }

  __device__ float weight(int32_t id) const { return W[id]; }
  __device__ double table(int k) const { return tab[k]; }
};

}  // namespace qwen::cu::sfx
