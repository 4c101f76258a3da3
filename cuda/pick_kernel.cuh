// The pick kernel (pick.cuh describes the passes), in a header so that cuda/test/pick_emu.cc can run it on the CPU
// under the SIMT emulation. One block per row: ~151k fp32 logits = 600 KB per row, read once for the argmax (4 loads
// in flight per thread) and once more from L2 for the sum when logprobs are asked; a few us per row, all rows of a
// step in parallel.
#pragma once
#include <climits>
#include <cmath>

#include "common.cuh"
#include "pick.cuh"
#include "sample_fx_ops.cuh"

namespace qwen::cu::pk {  // the kernel and its block helpers

constexpr int kUnroll = 4;
static_assert(kPickThreads == sfx::kT, "the top-n list's select (sample_fx_ops.cuh) assumes blocks of sfx::kT threads");

struct Cand {
  float x;
  int i;  // INT_MAX: none
};
__device__ __forceinline__ bool better(float a, int ia, float b, int ib) { return a > b || (a == b && ia < ib); }
__device__ __forceinline__ Cand none() { return Cand{-INFINITY, INT_MAX}; }
// The kUnroll logits this thread reads at `base` (stride kPickThreads), -Infinity past n: all loads issued first.
__device__ __forceinline__ void load_unrolled(const float* __restrict__ L, int base, int n, float (&v)[kUnroll]) {
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    const int i = base + u * kPickThreads;
    v[u] = i < n ? L[i] : -INFINITY;
  }
}

// (value desc, id asc) is a strict total order on the candidates (never NaN, ids distinct), so every lane of the
// butterfly ends with the same winner.
__device__ __forceinline__ Cand warp_best(Cand c) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float x = __shfl_xor_sync(0xffffffffu, c.x, o);
    const int i = __shfl_xor_sync(0xffffffffu, c.i, o);
    if (better(x, i, c.x, c.i)) c = Cand{x, i};
  }
  return c;
}
// Every thread of the block calls it; all get the winner.
__device__ __forceinline__ Cand block_best(Cand c, Cand* sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  c = warp_best(c);
  __syncthreads();  // sh may still be read by the previous call
  if (lane == 0) sh[warp] = c;
  __syncthreads();
  return warp_best(lane < nw ? sh[lane] : none());
}
__device__ __forceinline__ double block_sum_d(double v, double* sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  v = lane < nw ? sh[lane] : 0.0;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// grid (R), block kPickThreads.
static __global__ void __launch_bounds__(kPickThreads)
    pick_kernel(float* logits, int V, const DevPickRow* __restrict__ rows, const DevPickEntry* __restrict__ entries,
                DevPickOut* __restrict__ out) {
  __shared__ Cand sh[32];
  __shared__ double shd[32];
  __shared__ sfx::Smem fs;  // the top-n list's select
  const DevPickRow spec = rows[blockIdx.x];
  float* L = logits + size_t(blockIdx.x) * size_t(V);  // written below: plain (coherent) loads only
  const int tid = threadIdx.x, nt = blockDim.x;

  // 1. penalties (distinct ids: no two threads touch one logit)
  for (int k = tid; k < spec.ne; k += nt) {
    const DevPickEntry e = entries[spec.e0 + k];
    float x = L[e.id];
    if (spec.flags & 1)
      x = x < 0.f ? __double2float_rn(__dmul_rn(double(x), spec.repetition))
                  : __double2float_rn(__ddiv_rn(double(x), spec.repetition));
    if (e.openai) x = __double2float_rn(__dsub_rn(double(x), e.delta));
    L[e.id] = x;
  }
  __syncthreads();  // the block's global writes are visible to the whole block after this

  // 2. argmax
  const int n = spec.n;
  Cand b = none();
  for (int base = tid; base < n; base += kUnroll * kPickThreads) {
    float v[kUnroll];
    load_unrolled(L, base, n, v);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u)
      if (v[u] > b.x) b = Cand{v[u], base + u * kPickThreads};  // strict: NaN / -Infinity never, ties keep the first
  }
  const Cand best = block_best(b, sh);
  DevPickOut* o = out + blockIdx.x;
  if (best.i == INT_MAX) {  // no usable logit (uniform over the block)
    if (tid == 0) {
      o->id = -1;
      o->max = best.x;
      o->sum = 0.0;
      o->n_top = 0;
    }
    return;
  }
  const float m = best.x;

  // 3. sum of weights
  double sum = 0.0;
  if (spec.top_n >= 0) {
    double s = 0.0;
    if (m == INFINITY) {
      for (int i = tid; i < n; i += nt) s += L[i] == INFINITY ? 1.0 : 0.0;
    } else {
      for (int base = tid; base < n; base += kUnroll * kPickThreads) {
        float v[kUnroll];
        load_unrolled(L, base, n, v);
#pragma unroll
        for (int u = 0; u < kUnroll; ++u)
          if (v[u] == v[u]) s += double(expf(v[u] - m));  // -Infinity weighs 0; NaN is skipped
      }
    }
    sum = block_sum_d(s, shd);
  }

  // 4. top-n: the ids of non-zero weight form a prefix of the (value desc, id asc) order, keys >= sfx::top_kmin; the
  // first top_n of them by a radix select and a gather (sample_fx_ops.cuh)
  int n_top = 0;
  if (spec.top_n > 0) {
    sfx::DevFxOps ops{L, nullptr, n, nullptr, fs};
    int32_t ids[kMaxPickTop];
    float xs[kMaxPickTop];
    n_top = ops.top_logits(sfx::top_kmin(m), spec.top_n, ids, xs);
    if (tid == 0)
      for (int k = 0; k < n_top; ++k) {
        o->top_id[k] = ids[k];
        o->top_x[k] = xs[k];
      }
  }
  if (tid == 0) {
    o->id = best.i;
    o->max = m;
    o->sum = sum;
    o->n_top = n_top;
  }
}

}  // namespace qwen::cu::pk
