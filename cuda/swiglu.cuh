// swiglu: out[T,F] = a * silu(g), silu(z) = z / (1 + exp(-z)), all in fp32 with one rounding to the activation type
// (torch rounds silu(g) to bf16 first; we do not copy that second rounding). a = w1(x), g = w2(x) (the gate).
// out may alias a or g.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>

#include "core/dtype.h"

namespace qwen::cu {
void swiglu(DType act, const void* a, const void* g, size_t n, void* out, cudaStream_t stream);
}
