// kv_store: for every row of the step (step.cuh), K and V of qkv[row, H:2H] and qkv[row, 2H:3H] -> the row's slice's
// KV block holding position p = pos0 + (row - row0), layer `layer`, row p % 32 ([layer][k|v][row][H] per block). One
// launch for all sequences. The caller checked that every slice has a CUDA cache with blocks for pos0 + T positions.
#pragma once
#include <cuda_runtime.h>

#include "core/dtype.h"
#include "step.cuh"

namespace qwen::cu {
void kv_store(DType act, const void* qkv, const StepView& step, int H, int layer, cudaStream_t stream);
}
