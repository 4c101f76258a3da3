// sample_fx: the sampled pick (PickSpec::do_sample) drawn on the device, one block per row, after pick_kernel applied
// the penalties and found the max (cpp/core/sample_fx.h: the routes and why the sums are fixed point). Only the FxOut
// of each row (~200 bytes) comes back, instead of the row's 600 KB of logits and a host draw. Its results equal the
// host reference cpp/cpu/sample_fx.cc bit for bit; op_check's --sample cases and test/sample-fx.test.ts compare them.
// Opt-in (QWEN_SAMPLE_FX=1) until it has run on a GPU.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "core/backend.h"
#include "core/sample_fx.h"
#include "pick.cuh"

namespace qwen::cu {

// One row of the call (uploaded as raw bytes); on = 0: not a sampled row (the block exits).
struct DevSampleRow {
  double inv_t, top_p, u;
  int32_t n, top_k, top_n, on;
};
static_assert(sizeof(DevSampleRow) == 40, "DevSampleRow is uploaded as raw bytes");

// Host: spec -> its device row (1 / temperature as temperature.ts computes it).
DevSampleRow sample_fx_row_of(const PickSpec& s, int V);

// logits [R, V] (penalized; read only), W [R, V] scratch (the weights), picks[R] from pick_kernel (max, argmax),
// table = kPickExpTable on the device -> out[R] (rows with on = 0 untouched).
void sample_fx(const float* logits, float* W, int R, int V, const DevSampleRow* rows, const DevPickOut* picks,
               const double* table, FxOut* out, cudaStream_t stream);

}  // namespace qwen::cu
