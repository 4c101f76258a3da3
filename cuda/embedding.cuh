// embedding: h[T,H] = wte[ids[t], :]   (wte [V,H] and h in the activation dtype; ids on the device, already < V)
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"

namespace qwen::cu {
void embedding(DType act, const void* wte, const int32_t* ids_dev, int T, int H, void* h, cudaStream_t stream);
}
