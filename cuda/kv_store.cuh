// kv_store: K[pos0+t, :] = qkv[t, H:2H], V[pos0+t, :] = qkv[t, 2H:3H] for t < T (K, V: one layer of the cache,
// [capacity][H] in the activation dtype; the caller checks pos0+T <= capacity).
#pragma once
#include <cuda_runtime.h>

#include "core/dtype.h"

namespace qwen::cu {
void kv_store(DType act, const void* qkv, int T, int H, int pos0, void* K, void* V, cudaStream_t stream);
}
