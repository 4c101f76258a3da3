// kv_store: a strided row copy into the paged cache, grid (rows, 2): blockIdx.y 0 copies the K row, 1 the V row.
// Memory bound, tiny. Fusing it into rope (write rotated k straight to the cache) is a follow-up.
#include "common.cuh"
#include "kv_store.cuh"

namespace qwen::cu {

template <typename T, bool VEC>
static __global__ void kv_store_kernel(const T* __restrict__ qkv, StepView v, int H, int layer) {
  const int row = blockIdx.x, which = blockIdx.y;  // 0: K, 1: V
  const int si = v.row_slice[row];
  if (si < 0) return;
  const DevSlice s = v.slices[si];
  const int p = s.pos0 + (row - s.row0);
  const T* src = qkv + int64_t(row) * 3 * H + int64_t(which + 1) * H;
  T* dst = kv_rows<T>(v, s, p / kKvBlockTokens, layer, which, H) + int64_t(p % kKvBlockTokens) * H;
  if constexpr (VEC) {
    const int nv = H / kVec<T>;
    const uint4* s4 = reinterpret_cast<const uint4*>(src);
    uint4* d4 = reinterpret_cast<uint4*>(dst);
    for (int i = threadIdx.x; i < nv; i += blockDim.x) d4[i] = s4[i];
  } else {
    for (int i = threadIdx.x; i < H; i += blockDim.x) dst[i] = src[i];
  }
}

void kv_store(DType act, const void* qkv, const StepView& step, int H, int layer, cudaStream_t stream) {
  if (step.rows <= 0 || H <= 0) return;
  dispatch_act(act, [&](auto tag) {
    using E = decltype(tag);
    const E* q = static_cast<const E*>(qkv);
    const dim3 grid(step.rows, 2);
    // Rows of qkv and of a block start every H elements; block bases are 256-byte aligned (CudaKVPool).
    if (H % kVec<E> == 0 && aligned16(qkv))
      kv_store_kernel<E, true><<<grid, 256, 0, stream>>>(q, step, H, layer);
    else
      kv_store_kernel<E, false><<<grid, 256, 0, stream>>>(q, step, H, layer);
    CUDA_CHECK_LAUNCH("kv_store_kernel");
  });
}

}  // namespace qwen::cu
