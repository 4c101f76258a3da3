// add: elementwise, grid-stride. Memory bound (3 * T*H elements); a fused add + rmsnorm is a follow-up.
#include "add.cuh"
#include "common.cuh"

namespace qwen::cu {

template <typename T>
static __global__ void add_kernel(T* h, const T* x, size_t n) {
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    h[i] = from_f32<T>(to_f32(h[i]) + to_f32(x[i]));
}

template <typename T>
static void launch_add(T* h, const T* x, size_t n, cudaStream_t stream) {
  constexpr int kBlock = 256;
  const size_t blocks = ceil_div<size_t>(n, kBlock);
  add_kernel<T><<<unsigned(blocks < 8192 ? blocks : 8192), kBlock, 0, stream>>>(h, x, n);
  CUDA_CHECK_LAUNCH("add_kernel");
}

void add(DType act, void* h, const void* x, size_t n, cudaStream_t stream) {
  if (n == 0) return;
  dispatch_act(act, [&](auto tag) {
    using E = decltype(tag);
    launch_add<E>(static_cast<E*>(h), static_cast<const E*>(x), n, stream);
  });
}

}  // namespace qwen::cu
