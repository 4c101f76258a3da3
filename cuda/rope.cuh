// rope: in place on qkv[T,3H] (H = n_heads*head_dim; rows Q | K | V): rotate-half RoPE of every q and k head over its
// first rp.rot_dims dims at positions p = pos0..pos0+T-1 (pairs i, i+rot/2; theta = fp32(p)*inv_freq[i], cos/sin
// evaluated in double and rounded to fp32), then q (all head_dim dims) *= logn(p) = ln(p+1)/ln(S) when
// S = rp.logn_base > 0 and p+1 > S (factor in fp32, product in fp32, ONE rounding to the activation type per element;
// HF in bf16 rounds the rotated q and the factor to bf16 first, which we do not copy).
#pragma once
#include <cuda_runtime.h>

#include "core/backend.h"

namespace qwen::cu {
void rope(DType act, void* qkv, int T, int pos0, int n_heads, int head_dim, const RopeParams& rp, cudaStream_t stream);
}
