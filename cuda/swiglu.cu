// swiglu: elementwise, grid-stride. Memory bound (3 * T*F elements); fusing it into the w1/w2 GEMV epilogue is a
// follow-up.
#include "common.cuh"
#include "swiglu.cuh"

namespace qwen::cu {

template <typename T>
static __global__ void swiglu_kernel(const T* a, const T* g, size_t n, T* out) {
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float z = to_f32(g[i]);
    out[i] = from_f32<T>(to_f32(a[i]) * (z / (1.0f + expf(-z))));
  }
}

template <typename T>
static void launch_swiglu(const T* a, const T* g, size_t n, T* out, cudaStream_t stream) {
  constexpr int kBlock = 256;
  const size_t blocks = ceil_div<size_t>(n, kBlock);
  swiglu_kernel<T><<<unsigned(blocks < 8192 ? blocks : 8192), kBlock, 0, stream>>>(a, g, n, out);
  CUDA_CHECK_LAUNCH("swiglu_kernel");
}

void swiglu(DType act, const void* a, const void* g, size_t n, void* out, cudaStream_t stream) {
  if (n == 0) return;
  dispatch_act(act, [&](auto tag) {
    using E = decltype(tag);
    launch_swiglu<E>(static_cast<const E*>(a), static_cast<const E*>(g), n, static_cast<E*>(out), stream);
  });
}

}  // namespace qwen::cu
