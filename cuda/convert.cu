// convert: elementwise dtype conversion on the device, used by upload() (host weight dtype -> activation dtype),
// to_device() (fp32 -> act) and to_host() (act -> fp32). Memory bound; a grid-stride loop is plenty.
#include "common.cuh"
#include "convert.cuh"

namespace qwen::cu {

// dst[i] = D(S(src[i]))  for i < n
template <typename S, typename D>
static __global__ void convert_kernel(const S* __restrict__ src, D* __restrict__ dst, size_t n) {
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) dst[i] = from_f32<D>(to_f32(src[i]));
}

template <typename S, typename D>
static void launch_convert(const S* src, D* dst, size_t n, cudaStream_t stream) {
  constexpr int kBlock = 256;
  const unsigned grid = unsigned(ceil_div<size_t>(n, kBlock) < 8192 ? ceil_div<size_t>(n, kBlock) : 8192);
  convert_kernel<S, D><<<grid, kBlock, 0, stream>>>(src, dst, n);
  CUDA_CHECK_LAUNCH("convert_kernel");
}

void convert(DType src_dt, const void* src, DType dst_dt, void* dst, size_t n, cudaStream_t stream) {
  if (n == 0) return;
  if (src_dt == dst_dt) {
    CUDA_CHECK(cudaMemcpyAsync(dst, src, n * dtype_size(src_dt), cudaMemcpyDeviceToDevice, stream));
    return;
  }
  dispatch_act(src_dt, [&](auto s) {
    using S = decltype(s);
    dispatch_act(dst_dt, [&](auto d) {
      using D = decltype(d);
      launch_convert<S, D>(static_cast<const S*>(src), static_cast<D*>(dst), n, stream);
    });
  });
}

}  // namespace qwen::cu
