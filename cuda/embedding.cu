// embedding: one block per token copies one row of wte. Pure copy, memory bound; negligible next to the GEMVs.
#include "common.cuh"
#include "embedding.cuh"

namespace qwen::cu {

// grid (T), block 256.  h[t, :] = wte[ids[t], :]
template <typename T, bool VEC>
static __global__ void embedding_kernel(const T* __restrict__ wte, const int32_t* __restrict__ ids, int H,
                                        T* __restrict__ h) {
  const int t = blockIdx.x;
  const T* src = wte + int64_t(ids[t]) * H;
  T* dst = h + int64_t(t) * H;
  if constexpr (VEC) {  // H % kVec<T> == 0 and both bases 16-byte aligned
    const int nv = H / kVec<T>;
    const uint4* s4 = reinterpret_cast<const uint4*>(src);
    uint4* d4 = reinterpret_cast<uint4*>(dst);
    for (int i = threadIdx.x; i < nv; i += blockDim.x) d4[i] = s4[i];
  } else {
    for (int i = threadIdx.x; i < H; i += blockDim.x) dst[i] = src[i];
  }
}

template <typename T>
static void launch_embedding(const T* wte, const int32_t* ids, int T_, int H, T* h, cudaStream_t stream) {
  const bool vec = H % kVec<T> == 0 && aligned16(wte) && aligned16(h);
  if (vec)
    embedding_kernel<T, true><<<T_, 256, 0, stream>>>(wte, ids, H, h);
  else
    embedding_kernel<T, false><<<T_, 256, 0, stream>>>(wte, ids, H, h);
  CUDA_CHECK_LAUNCH("embedding_kernel");
}

void embedding(DType act, const void* wte, const int32_t* ids_dev, int T, int H, void* h, cudaStream_t stream) {
  if (T <= 0 || H <= 0) return;
  dispatch_act(act, [&](auto tag) {
    using E = decltype(tag);
    launch_embedding<E>(static_cast<const E*>(wte), ids_dev, T, H, static_cast<E*>(h), stream);
  });
}

}  // namespace qwen::cu
