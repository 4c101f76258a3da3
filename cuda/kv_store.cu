// kv_store: a strided row copy, grid (T, 2): blockIdx.y 0 copies the K row, 1 the V row. Memory bound, tiny.
// Fusing it into rope (write rotated k straight to the cache) is a follow-up.
#include "common.cuh"
#include "kv_store.cuh"

namespace qwen::cu {

template <typename T, bool VEC>
static __global__ void kv_store_kernel(const T* __restrict__ qkv, int H, int pos0, T* __restrict__ K,
                                       T* __restrict__ V) {
  const int t = blockIdx.x, which = blockIdx.y;  // 0: K, 1: V
  const T* src = qkv + int64_t(t) * 3 * H + int64_t(which + 1) * H;
  T* dst = (which == 0 ? K : V) + int64_t(pos0 + t) * H;
  if constexpr (VEC) {
    const int nv = H / kVec<T>;
    const uint4* s4 = reinterpret_cast<const uint4*>(src);
    uint4* d4 = reinterpret_cast<uint4*>(dst);
    for (int i = threadIdx.x; i < nv; i += blockDim.x) d4[i] = s4[i];
  } else {
    for (int i = threadIdx.x; i < H; i += blockDim.x) dst[i] = src[i];
  }
}

template <typename T>
static void launch_kv_store(const T* qkv, int T_, int H, int pos0, T* K, T* V, cudaStream_t stream) {
  const dim3 grid(T_, 2);
  if (H % kVec<T> == 0 && aligned16(qkv) && aligned16(K) && aligned16(V))
    kv_store_kernel<T, true><<<grid, 256, 0, stream>>>(qkv, H, pos0, K, V);
  else
    kv_store_kernel<T, false><<<grid, 256, 0, stream>>>(qkv, H, pos0, K, V);
  CUDA_CHECK_LAUNCH("kv_store_kernel");
}

void kv_store(DType act, const void* qkv, int T, int H, int pos0, void* K, void* V, cudaStream_t stream) {
  if (T <= 0 || H <= 0) return;
  dispatch_act(act, [&](auto tag) {
    using E = decltype(tag);
    launch_kv_store<E>(static_cast<const E*>(qkv), T, H, pos0, static_cast<E*>(K), static_cast<E*>(V), stream);
  });
}

}  // namespace qwen::cu
