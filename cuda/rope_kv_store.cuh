// rope_kv_store: the QKV bias add, RoPE, the logN query scale and the write of K and V into the paged cache in ONE
// launch for every row of the step (step.cuh). For row r of slice s at position p = pos0 + (r - row0):
//   x = qkv[r, :] + bias (fp32 sum of the stored activation and the bias; no bias: x = qkv[r, :])
//   q heads: rotate-half over the slice's rot_dims (cos/sin as rope.cuh), times logn(p); written back to qkv[r, 0:H]
//   k heads: the same rotation, no scale; written to the cache (block blocks[p / 32], row p % 32, layer `layer`)
//   v heads: x as is; written to the cache
// Each output is rounded to the activation type once. qkv[r, H:3H] is left as it was (attention reads K and V from
// the cache only). Without a bias this equals rope followed by kv_store (same fp32 expressions); with one it differs
// from linear-with-bias + rope by one extra rounding of the GEMM output before the bias add (the GEMM writes
// x.W^T without bias: cuBLAS with beta = 0, no bias pre-fill pass).
#pragma once
#include <cuda_runtime.h>

#include "core/dtype.h"
#include "step.cuh"

namespace qwen::cu {
// The caller checked every slice's rot_dims (even, <= head_dim, <= 256), that every slice has a cache with blocks for
// pos0 + T positions, and that bias (nullable) holds 3 * n_heads * head_dim elements of the activation type.
void rope_kv_store(DType act, void* qkv, const void* bias, const StepView& step, int n_heads, int head_dim, int layer,
                   cudaStream_t stream);
}
