// The folds of the decode GEMVs (linear.cu's gemv_vec_kernel, mlp_swiglu.cu's fused GEMV; QWEN_FOLD_NORM=1, see
// cuda_backend.cu). A decode layer otherwise spends two launches per layer on add_rmsnorm, kernels that move 16 KB
// and cost ~6 us each of pure latency on the H100 (7b profile). Folded:
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

}  // namespace qwen::cu
