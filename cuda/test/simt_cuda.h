// The SIMT emulation of simt_emu.h for kernels written against the CUDA headers and common.cuh (cuda/test/gemv_emu.cc
// runs gemv.cuh's kernels with it): the host compiler gets cuda_runtime.h / cuda_bf16.h / cuda_fp16.h (their host
// conversions are the device's, round to nearest even), and this header supplies the device builtins those kernels
// use. A grid runs one block after another, so `__shared__` can be a function-local static (one copy, shared by the
// block's threads). Not emulated: cp.async, mma, the memory model. Include it before any other header.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#define QWEN_SIMT_CUDA_HEADERS 1
#include "simt_emu.h"

#undef __shared__
#define __shared__ static
#define __launch_bounds__(...)

inline thread_local SimtDim blockIdx, blockDim, gridDim;

inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
inline unsigned __cvta_generic_to_shared(const void*) { return 0; }  // cp.async is not emulated
template <class T>
T __ldg(const T* p) {
  return *p;
}
template <class T>
T __ldcs(const T* p) {
  return *p;
}

namespace simt {
// body() as a kernel over `grid` blocks of `block` threads (blockIdx.x, blockDim.x, gridDim.x set), block by block.
template <class F>
void launch(int grid, int block, F&& body) {
  for (int b = 0; b < grid; ++b)
    run_block(block, [&] {
      blockIdx.x = unsigned(b);
      blockDim.x = unsigned(block);
      gridDim.x = unsigned(grid);
      body();
    });
}
}  // namespace simt
