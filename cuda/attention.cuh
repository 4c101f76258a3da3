// attention: out[T,H] = softmax(q k^T / sqrt(d) + causal) v per head. q from qkv[T,3H] (row t, cols h*d..h*d+d-1),
// keys/values 0..pos0+T-1 from one layer of the cache K, V [>= pos0+T][H]; query t sees keys 0..pos0+t (bottom-right
// aligned causal mask). Scores, softmax and the weighted sum accumulate in fp32.
// Paths: "flash" (bf16/fp16, head_dim 64 or 128, T > kFlashMinT: tensor-core tiles, online softmax, no workspace);
//        "split" (everything else, decode included: keys in chunks of 256 per block, then a combine kernel when there
//        is more than one chunk; needs attention_workspace_bytes() of fp32 scratch).
// QWEN_ATTN_FLASH=0 in the environment forces "split" (to bisect a suspected flash bug).
#pragma once
#include <cuda_runtime.h>

#include <cstddef>

#include "core/dtype.h"

namespace qwen::cu {

struct AttnArgs {
  DType act = DType::F32;
  const void* qkv = nullptr;  // [T, 3H]
  const void* K = nullptr;    // [>= pos0 + T, H]
  const void* V = nullptr;    // [>= pos0 + T, H]
  void* out = nullptr;        // [T, H]
  int T = 0, pos0 = 0, n_heads = 0, head_dim = 0;
};

constexpr int kFlashMinT = 16;  // T above this (and a supported dtype / head_dim) uses the flash kernel

// Scratch the call wants (0 = none). Any ws_bytes >= one query's share works (queries are then done in groups).
size_t attention_workspace_bytes(const AttnArgs& a);
void attention(const AttnArgs& a, void* ws, size_t ws_bytes, cudaStream_t stream);
const char* attention_path(const AttnArgs& a);  // "flash" or "split"

}  // namespace qwen::cu
