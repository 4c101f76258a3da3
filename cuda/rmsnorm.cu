// rmsnorm: one block per row, fp32 block reduction of the squares, second pass scales. The row is re-read from
// L1/L2 in the second pass; at H = 4096 the op is launch bound (~3 us), fusing it into the residual add is a follow-up.
#include "common.cuh"
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

template <typename T>
static void launch_rmsnorm(const T* x, const T* g, float eps, int R, int H, const int* rows, T* y,
                           cudaStream_t stream) {
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
