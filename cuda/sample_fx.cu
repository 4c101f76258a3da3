// sample_fx on the device: core/sample_fx.h's control flow over the block primitives of sample_fx_ops.cuh, one
// block of kSampleThreads per sampled row, after pick_kernel (penalties, max, argmax). Each pass reads the row (600 KB
// of logits, and the weights) from L2.
#include "common.cuh"
#include "sample_fx.cuh"
#include "sample_fx_ops.cuh"

namespace qwen::cu {

namespace {

using sfx::DevFxOps;
using sfx::kSampleThreads;
using sfx::Smem;

// grid (R), block kSampleThreads
__global__ void __launch_bounds__(kSampleThreads)
    sample_fx_kernel(const float* __restrict__ logits, float* __restrict__ W, int V, const DevSampleRow* __restrict__ rows,
                     const DevPickOut* __restrict__ picks, const double* __restrict__ table, FxOut* __restrict__ out) {
  __shared__ Smem s;
  const DevSampleRow row = rows[blockIdx.x];
  if (!row.on) return;  // uniform over the block
  FxRowIn in;
  in.n = row.n;
  in.argmax = picks[blockIdx.x].id;
  in.m = picks[blockIdx.x].max;
  in.top_k = row.top_k;
  in.inv_t = row.inv_t;
  in.top_p = row.top_p;
  in.u = row.u;
  in.top_n = row.top_n;
  DevFxOps ops{logits + size_t(blockIdx.x) * size_t(V), W + size_t(blockIdx.x) * size_t(V), row.n, table, s};
  FxOut o;
  sample_fx(ops, in, o);
  if (threadIdx.x == 0) out[blockIdx.x] = o;
}

}  // namespace

DevSampleRow sample_fx_row_of(const PickSpec& s, int V) {
  DevSampleRow r{};
  r.on = s.do_sample ? 1 : 0;
  r.n = pick_limit(s, V);
  r.inv_t = pick_inv_t(s);
  r.top_p = s.top_p;
  r.u = s.u;
  r.top_k = s.top_k;
  r.top_n = s.top_n;
  return r;
}

void sample_fx(const float* logits, float* W, int R, int V, const DevSampleRow* rows, const DevPickOut* picks,
               const double* table, FxOut* out, cudaStream_t stream) {
  if (R <= 0) return;
  sample_fx_kernel<<<R, kSampleThreads, 0, stream>>>(logits, W, V, rows, picks, table, out);
  CUDA_CHECK_LAUNCH("sample_fx_kernel");
}

}  // namespace qwen::cu
