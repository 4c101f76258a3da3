// final_logits: logits[R,V] (device fp32) = lm_head( rmsnorm(h[rows[r]], ln_f) ) for r < R.
// h [T,H], ln_f [H], lm_head [V,H] in the activation dtype; rows on the device; xn [R,H] activation-dtype scratch.
// The logits are written in fp32 straight from the fp32 accumulators (no rounding to the activation type).
#pragma once
#include <cuda_runtime.h>

#include "core/dtype.h"
#include "cublas_dyn.h"

namespace qwen::cu {

struct FinalLogitsArgs {
  DType act = DType::F32;
  const void* h = nullptr;      // [T, H]
  const int* rows = nullptr;    // [R] device
  int R = 0, H = 0, V = 0;
  const void* ln_f = nullptr;   // [H]
  const void* lm_head = nullptr;  // [V, H]
  float eps = 1e-6f;
  void* xn = nullptr;           // [R, H] scratch
  float* logits = nullptr;      // [R, V] device
  cublas::Handle cublas = nullptr;
};

void final_logits(const FinalLogitsArgs& a, cudaStream_t stream);

}  // namespace qwen::cu
