// convert: dst[n] = src[n] between any two of F32 / F16 / BF16 on the device (round to nearest even, as torch .to()).
#pragma once
#include <cuda_runtime.h>

#include <cstddef>

#include "core/dtype.h"

namespace qwen::cu {
void convert(DType src_dt, const void* src, DType dst_dt, void* dst, size_t n, cudaStream_t stream);
}
