// rmsnorm: y[r,H] = round(round(x[src(r)] * rsqrt(mean(x^2) + eps)) * g), src(r) = rows ? rows[r] : r, r < R.
// fp32 sum of squares; the two roundings to the activation type emulate the reference (normalise in fp32, cast to
// model dtype, multiply by the gain in model dtype); both are no-ops in fp32. y may equal x when rows is null.
#pragma once
#include <cuda_runtime.h>

#include "core/dtype.h"

namespace qwen::cu {
void rmsnorm(DType act, const void* x, const void* g, float eps, int R, int H, const int* rows_dev, void* y,
             cudaStream_t stream);
}
