// rmsnorm: one block per row, fp32 block reduction of the squares, then the scaled row. 16-bit rows of H <= 8192
// (Qwen: 4096) stay in registers between the two (rmsnorm_vec_kernel); others re-read the row from L1/L2.
#include "common.cuh"
#include "rmsnorm_row.cuh"
#include "rmsnorm.cuh"

namespace qwen::cu {

// grid (R), block 256 (multiple of 32).  y[r, :] = rmsnorm(x[src(r), :]) * g
template <typename T>
static __global__ void rmsnorm_kernel(const T* x, const T* __restrict__ g, const int* __restrict__ rows, float eps,
                                      int H, T* y) {
  const int r = blockIdx.x;
  const int src = rows ? rows[r] : r;
  const T* xr = x + int64_t(src) * H;
  T* yr = y + int64_t(r) * H;
  float ss = 0.f;
  for (int i = threadIdx.x; i < H; i += blockDim.x) {
    const float v = to_f32(xr[i]);
    ss = fmaf(v, v, ss);
  }
  ss = block_sum(ss);  // contains __syncthreads: every read of xr above happens before any write below
  const float inv = 1.0f / sqrtf(ss / float(H) + eps);
  for (int i = threadIdx.x; i < H; i += blockDim.x)
    yr[i] = from_f32<T>(to_f32(xr[i]) * inv * to_f32(g[i]));
}

// grid (R), block 256, 16-bit T, H % 8 == 0, H <= 256 * 8 * NV, 16-byte aligned rows: the row is read ONCE into
// registers (NV uint4 per thread), reduced, scaled and written. One decode row of H = 4096 took 8.9 us per call with
// the two-pass kernel on an H100 (profile of a 7b decode step), a latency-bound chain of strided 2-byte loads.
template <typename T, int NV>
static __global__ void __launch_bounds__(kRowThreads)
    rmsnorm_vec_kernel(const T* x, const T* __restrict__ g, const int* __restrict__ rows, float eps, int H, T* y) {
  const int r = blockIdx.x;
  const int src = rows ? rows[r] : r;
  const uint4* xr = reinterpret_cast<const uint4*>(x + int64_t(src) * H);
  const uint4* g4 = reinterpret_cast<const uint4*>(g);
  uint4* yr = reinterpret_cast<uint4*>(y + int64_t(r) * H);
  const int nv = H / 8;
  float v[NV][8];
  float ss = 0.f;
#pragma unroll
  for (int k = 0; k < NV; ++k) {
    const int i = threadIdx.x + k * kRowThreads;
    if (i < nv) {
      unpack16<T>(xr[i], v[k]);
#pragma unroll
      for (int e = 0; e < 8; ++e) ss = fmaf(v[k][e], v[k][e], ss);
    }
  }
  ss = block_sum(ss);  // contains __syncthreads: in-place (y == x) is safe, every read happened above
  const float inv = 1.0f / sqrtf(ss / float(H) + eps);
  rms_scale_store<T, NV>(v, inv, g4, yr, nv);
}

template <typename T>
static void launch_rmsnorm(const T* x, const T* g, float eps, int R, int H, const int* rows, T* y,
                           cudaStream_t stream) {
  if constexpr (sizeof(T) == 2) {
    if (row_fits(H) && aligned16(x) && aligned16(g) && aligned16(y)) {
      dispatch_row_nv(H, [&](auto nv) {
        rmsnorm_vec_kernel<T, decltype(nv)::value><<<R, kRowThreads, 0, stream>>>(x, g, rows, eps, H, y);
      });
      CUDA_CHECK_LAUNCH("rmsnorm_vec_kernel");
      return;
    }
  }
  const int block = H >= 2048 ? 512 : H >= 512 ? 256 : 128;
  rmsnorm_kernel<T><<<R, block, 0, stream>>>(x, g, rows, eps, H, y);
  CUDA_CHECK_LAUNCH("rmsnorm_kernel");
}

void rmsnorm(DType act, const void* x, const void* g, float eps, int R, int H, const int* rows_dev, void* y,
             cudaStream_t stream) {
  if (R <= 0 || H <= 0) return;
  dispatch_act(act, [&](auto tag) {
    using E = decltype(tag);
    launch_rmsnorm<E>(static_cast<const E*>(x), static_cast<const E*>(g), eps, R, H, rows_dev, static_cast<E*>(y),
                      stream);
  });
}

}  // namespace qwen::cu
