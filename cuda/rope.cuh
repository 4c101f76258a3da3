// rope: in place on qkv[rows,3H] (H = n_heads*head_dim; rows Q | K | V) for every row of the step (step.cuh): the row's
// slice gives its position p = pos0 + (row - row0), its inv_freq and its logN base. Rotate-half RoPE of every q and k
// head over the slice's first rot_dims dims (pairs i, i+rot/2; theta = fp32(p)*inv_freq[i], cos/sin evaluated in
// double and rounded to fp32, as the CPU backend), then q (all head_dim dims) *= logn(p) = ln(p+1)/ln(S) when
// S = logn_base > 0 and p+1 > S (factor in fp32, product in fp32, ONE rounding to the activation type per element;
// HF in bf16 rounds the rotated q and the factor to bf16 first, which we do not copy). One launch per call, whatever
// the mix of sequences: per-sequence NTK alpha only changes the inv_freq table the row reads.
#pragma once
#include <cuda_runtime.h>

#include "core/dtype.h"
#include "step.cuh"

namespace qwen::cu {
// The caller checked every slice's rot_dims (even, <= head_dim, <= 256).
void rope(DType act, void* qkv, const StepView& step, int n_heads, int head_dim, cudaStream_t stream);
}
