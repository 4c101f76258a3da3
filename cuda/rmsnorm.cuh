// rmsnorm: y[r,H] = x[src(r)] / sqrt(mean(x^2) + eps) * g, src(r) = rows ? rows[r] : r, r < R.
// fp32 sum of squares and products, ONE rounding to the activation type at the end (the op tests bound the error by
// one unit roundoff; HF's fallback rounds x*rsqrt to the model dtype before the gain multiply, a second rounding we
// do not copy). y may equal x when rows is null.
#pragma once
#include <cuda_runtime.h>

#include "core/dtype.h"

namespace qwen::cu {
void rmsnorm(DType act, const void* x, const void* g, float eps, int R, int H, const int* rows_dev, void* y,
             cudaStream_t stream);
}
