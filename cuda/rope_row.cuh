// The per-row set-up shared by rope_kernel (rope.cu) and rope_kv_store_kernel (rope_kv_store.cu): the cos/sin table of
// position p (theta = fp32(p) * inv_freq[i], evaluated in double and rounded to fp32, as the CPU backend) into shared
// cs / sn [rot_dims / 2], and the logN factor of p (fp32; 1 when off). The caller syncs the block before reading cs/sn.
#pragma once
#include "step.cuh"

namespace qwen::cu {

// table: fill cs / sn (block-uniform; a block without q / k heads skips it).
__device__ __forceinline__ float rope_row_setup(const StepView& v, const DevSlice& s, int p, bool table, float* cs,
                                                float* sn) {
  if (table) {
    const float* inv_freq = v.inv_freq + s.freq;
    for (int i = threadIdx.x; i < s.rot_dims / 2; i += blockDim.x) {
      const float theta = float(p) * inv_freq[i];  // fp32 product, as the reference
      cs[i] = float(cos(double(theta)));
      sn[i] = float(sin(double(theta)));
    }
  }
  return s.logn_base > 0 && p + 1 > s.logn_base ? float(log(double(p + 1)) / log(double(s.logn_base))) : 1.f;
}

}  // namespace qwen::cu
