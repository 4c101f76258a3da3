// add: h[n] = round(h[n] + x[n]) (the residual add, fp32 sum rounded to the activation type).
#pragma once
#include <cuda_runtime.h>

#include <cstddef>

#include "core/dtype.h"

namespace qwen::cu {
void add(DType act, void* h, const void* x, size_t n, cudaStream_t stream);
}
