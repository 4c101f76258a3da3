// The decode GEMV kernels (T <= 8 rows; linear.cu's paths, mlp_swiglu.cu's fused MLP input half) and their folds.
// In a header so that cuda/test/gemv_emu.cc can run these very kernels on the CPU (SIMT emulation).
//
// gemv_vec_kernel: one warp per output row n, 8 warps (rows) per block. Each lane streams 16-byte chunks of W's row
// with __ldcs (evict-first: the weights are read once per token and must not push x out of L1/L2) four at a time,
// reads the matching chunks of the T rows of x through the read-only cache, accumulates T fp32 sums, then a
// warp-shuffle reduction; lane t writes y[t, n]. W is the only large stream, so this runs at the HBM limit when
// enough warps are resident. mlp_swiglu_gemv_kernel: the same with two weight streams (w1, w2) and SwiGLU in the
// epilogue.
//
// The folds (GemvIO; QWEN_FOLD_NORM=1, see cuda_backend.cu). A decode layer otherwise spends two launches on
// add_rmsnorm, kernels that move 16 KB and cost ~6 us each of pure latency on the H100 (7b profile). Folded:
//   Norm  the GEMV's input x is the residual h, and the RMSNorm that would have produced its input is applied inside:
//         each warp reads all of row t of h anyway, so it sums h^2 beside its dot product with h * g (the gain) and
//         multiplies the reduced dot by 1 / rms at the end. Same math as rmsnorm -> linear, minus the rounding of the
//         normalized row to the activation type (so it is at least as accurate).
//   Add   the GEMV's output is added into the residual h in its epilogue: h = round(h + round(y)), bit for bit what
//         linear -> add() stores.
#pragma once
#include "common.cuh"

namespace qwen::cu {

enum class GemvIO { Plain, Norm, Add };

// The gain's 16-byte chunk i as floats (Norm), once per chunk for all T rows.
template <typename T, GemvIO IO>
__device__ __forceinline__ void gemv_gain(const uint4* __restrict__ g4, int i, float (&gf)[kVec<T>]) {
  if constexpr (IO == GemvIO::Norm) unpack16<T>(__ldg(g4 + i), gf);
}

// Chunk `at` of the input (row t's chunk i: at = t * nv + i) as floats; Norm: h * g, and ss += h^2.
template <typename T, GemvIO IO>
__device__ __forceinline__ void gemv_in(const uint4* __restrict__ x4, int64_t at, const float (&gf)[kVec<T>],
                                        float (&xf)[kVec<T>], float& ss) {
  unpack16<T>(__ldg(x4 + at), xf);
  if constexpr (IO == GemvIO::Norm) {
#pragma unroll
    for (int e = 0; e < kVec<T>; ++e) {
      ss = fmaf(xf[e], xf[e], ss);
      xf[e] *= gf[e];
    }
  }
}

// The factor of a row's reduced sums: 1 / rms from its full sum of squares (Norm; the formula of rmsnorm.cu), else 1.
template <GemvIO IO>
__device__ __forceinline__ float gemv_scale(float ss_warp_summed, int K, float eps) {
  if constexpr (IO == GemvIO::Norm) return 1.0f / sqrtf(ss_warp_summed / float(K) + eps);
  return 1.f;
}

// Stores output y of row t at dst: Add adds it (rounded to T first, as linear stores it) into the residual there.
template <typename T, typename OutT, GemvIO IO>
__device__ __forceinline__ void gemv_out(OutT* dst, float y) {
  if constexpr (IO == GemvIO::Add) {
    static_assert(std::is_same_v<T, OutT>, "the residual has the activation type");
    *dst = from_f32<T>(to_f32(*dst) + round_to<T>(y));
  } else {
    *dst = from_f32<OutT>(y);
  }
}

constexpr int kGemvWarps = 8;  // output rows per block

// grid (ceil(N/8)), block 256. K % kVec<T> == 0, x and W 16-byte aligned. IO (gemv.cuh): Norm reads the residual
// as x and applies the RMSNorm of gain g inside; Add adds the output into y (the residual).
template <typename T, typename OutT, int NT, GemvIO IO = GemvIO::Plain>
static __global__ void __launch_bounds__(kGemvWarps * 32)
    gemv_vec_kernel(const T* __restrict__ x, const T* __restrict__ W, const T* __restrict__ b, OutT* __restrict__ y,
                    int N, int K, const T* __restrict__ g, float eps) {
  constexpr int VE = kVec<T>;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int n = blockIdx.x * kGemvWarps + warp;
  if (n >= N) return;  // whole warp leaves together; no block-level sync below
  const int nv = K / VE;  // 16-byte chunks per row
  const uint4* w4 = reinterpret_cast<const uint4*>(W + int64_t(n) * K);
  const uint4* x4 = reinterpret_cast<const uint4*>(x);  // row t starts at x4 + t * nv
  const uint4* g4 = reinterpret_cast<const uint4*>(g);
  float acc[NT], ss[NT];
#pragma unroll
  for (int t = 0; t < NT; ++t) acc[t] = ss[t] = 0.f;
  auto chunk = [&](const uint4& wv, int c) {  // chunk c of W's row against chunk c of every x row
    float wf[VE], gf[VE];
    unpack16<T>(wv, wf);
    gemv_gain<T, IO>(g4, c, gf);
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      float xf[VE];
      gemv_in<T, IO>(x4, int64_t(t) * nv + c, gf, xf, ss[t]);
#pragma unroll
      for (int e = 0; e < VE; ++e) acc[t] = fmaf(wf[e], xf[e], acc[t]);
    }
  };

  int i = lane;
  // The first four weight chunks are requested before pdl_wait(): under PDL they stream in while the previous kernel
  // (which wrote x) finishes. Weights are never written by a step's kernels.
  uint4 w[4];
  if (i + 96 < nv) {
#pragma unroll
    for (int u = 0; u < 4; ++u) w[u] = __ldcs(w4 + i + u * 32);
  }
  pdl_wait();
  pdl_launch_dependents();
  for (; i + 96 < nv; i += 128) {  // chunks i, i+32, i+64, i+96 are all < nv
    if (i != lane) {
#pragma unroll
      for (int u = 0; u < 4; ++u) w[u] = __ldcs(w4 + i + u * 32);
    }
#pragma unroll
    for (int u = 0; u < 4; ++u) chunk(w[u], i + u * 32);
  }
  for (; i < nv; i += 32) chunk(__ldcs(w4 + i), i);
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    acc[t] = warp_sum(acc[t]);
    if constexpr (IO == GemvIO::Norm) acc[t] *= gemv_scale<IO>(warp_sum(ss[t]), K, eps);
  }
  const float bias = b ? to_f32(b[n]) : 0.f;
#pragma unroll
  for (int t = 0; t < NT; ++t)
    if (lane == t) gemv_out<T, OutT, IO>(y + int64_t(t) * N + n, acc[t] + bias);
}

// grid (ceil(F / 8)), block 256. Norm (gemv.cuh): x is the residual h, and the RMSNorm of gain g applies inside.
template <typename T, int NT, GemvIO IO = GemvIO::Plain>
static __global__ void __launch_bounds__(kGemvWarps * 32)
    mlp_swiglu_gemv_kernel(const T* __restrict__ x, const T* __restrict__ W1, const T* __restrict__ W2,
                           T* __restrict__ a, int F, int K, const T* __restrict__ g, float eps) {
  static_assert(IO != GemvIO::Add, "the MLP's output is not a residual");
  constexpr int VE = kVec<T>;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int n = blockIdx.x * kGemvWarps + warp;
  if (n >= F) return;  // whole warp
  const int nv = K / VE;
  const uint4* p1 = reinterpret_cast<const uint4*>(W1 + int64_t(n) * K);
  const uint4* p2 = reinterpret_cast<const uint4*>(W2 + int64_t(n) * K);
  const uint4* x4 = reinterpret_cast<const uint4*>(x);
  const uint4* g4 = reinterpret_cast<const uint4*>(g);
  float s1[NT], s2[NT], ss[NT];
#pragma unroll
  for (int t = 0; t < NT; ++t) s1[t] = s2[t] = ss[t] = 0.f;

  auto step = [&](const uint4& w1v, const uint4& w2v, int i) {
    float f1[VE], f2[VE], gf[VE];
    unpack16<T>(w1v, f1);
    unpack16<T>(w2v, f2);
    gemv_gain<T, IO>(g4, i, gf);
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      float xf[VE];
      gemv_in<T, IO>(x4, int64_t(t) * nv + i, gf, xf, ss[t]);
#pragma unroll
      for (int e = 0; e < VE; ++e) {
        s1[t] = fmaf(f1[e], xf[e], s1[t]);
        s2[t] = fmaf(f2[e], xf[e], s2[t]);
      }
    }
  };
  int i = lane;
  // First chunks before pdl_wait(), as gemv_vec_kernel (weights are never written by a step's kernels).
  uint4 w1v[4], w2v[4];
  auto load = [&](int at) {
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      w1v[u] = __ldcs(p1 + at + u * 32);
      w2v[u] = __ldcs(p2 + at + u * 32);
    }
  };
  if (i + 96 < nv) load(i);
  pdl_wait();
  pdl_launch_dependents();
  for (; i + 96 < nv; i += 128) {
    if (i != lane) load(i);
#pragma unroll
    for (int u = 0; u < 4; ++u) step(w1v[u], w2v[u], i + u * 32);
  }
  for (; i < nv; i += 32) step(__ldcs(p1 + i), __ldcs(p2 + i), i);
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    s1[t] = warp_sum(s1[t]);
    s2[t] = warp_sum(s2[t]);
    if constexpr (IO == GemvIO::Norm) {
      const float scale = gemv_scale<IO>(warp_sum(ss[t]), K, eps);
      s1[t] *= scale;
      s2[t] *= scale;
    }
  }
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    if (lane == t) {
      const float up = round_to<T>(s1[t]), z = round_to<T>(s2[t]);  // as linear() would store them
      a[int64_t(t) * F + n] = from_f32<T>(up * (z / (1.0f + expf(-z))));
    }
  }
}

}  // namespace qwen::cu
