// The register-resident RMSNorm row shared by rmsnorm_vec_kernel (rmsnorm.cu) and add_rmsnorm_vec_kernel
// (add_rmsnorm.cu): one block of kRowThreads per row, each thread holding NV uint4 (8 elements each) of a 16-bit row.
#pragma once
#include <type_traits>

#include "common.cuh"

namespace qwen::cu {

constexpr int kRowThreads = 256;
constexpr int kRowMaxNV = 4;  // rows of up to kRowThreads * 8 * 4 = 8192 elements

// Whether a 16-bit row of H elements at these 16-byte-aligned bases fits the register path.
inline bool row_fits(int H) { return H % 8 == 0 && H <= kRowThreads * 8 * kRowMaxNV; }

// f(std::integral_constant<int, NV>{}) with NV = uint4 per thread for H (1, 2 or 4), for launching the kernel.
template <typename F>
inline void dispatch_row_nv(int H, F&& f) {
  const int nv = ceil_div(H / 8, kRowThreads);
  if (nv == 1) f(std::integral_constant<int, 1>{});
  else if (nv == 2) f(std::integral_constant<int, 2>{});
  else f(std::integral_constant<int, 4>{});
}

// y4[i] = round(v * inv * g) for this thread's uint4 i = threadIdx.x + k * kRowThreads (< nv) of the row.
template <typename T, int NV>
__device__ __forceinline__ void rms_scale_store(const float (&v)[NV][8], float inv, const uint4* g4, uint4* y4,
                                                int nv) {
#pragma unroll
  for (int k = 0; k < NV; ++k) {
    const int i = threadIdx.x + k * kRowThreads;
    if (i < nv) {
      float gf[8];
      unpack16<T>(g4[i], gf);
      uint4 o;
      o.x = pack2<T>(v[k][0] * inv * gf[0], v[k][1] * inv * gf[1]);
      o.y = pack2<T>(v[k][2] * inv * gf[2], v[k][3] * inv * gf[3]);
      o.z = pack2<T>(v[k][4] * inv * gf[4], v[k][5] * inv * gf[5]);
      o.w = pack2<T>(v[k][6] * inv * gf[6], v[k][7] * inv * gf[7]);
      y4[i] = o;
    }
  }
}

}  // namespace qwen::cu
