// add_rmsnorm: the residual add fused with the RMSNorm that follows it (one read of h and x, one write of h and y):
//   h[r, :] = round(h[r, :] + x[r, :]);  y[r, :] = rmsnorm(h[r, :]) * g   (the norm reads the ROUNDED h, exactly as
// add then rmsnorm would). R rows of H; h and y must not overlap.
#pragma once
#include <cuda_runtime.h>

#include "core/dtype.h"

namespace qwen::cu {
void add_rmsnorm(DType act, void* h, const void* x, const void* g, float eps, int R, int H, void* y,
                 cudaStream_t stream);
}
