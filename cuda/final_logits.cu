// final_logits: rmsnorm of the selected rows (rows indirection inside the rmsnorm kernel, no gather copy) followed by
// the lm_head linear with an fp32 output. R = 1 (decode) is the GEMV path: 151936 x 4096 bf16 = 1.24 GB streamed,
// the single largest matrix of a step (~0.45 ms at 2.8 TB/s).
#include "final_logits.cuh"
#include "linear.cuh"
#include "rmsnorm.cuh"

namespace qwen::cu {

void final_logits(const FinalLogitsArgs& a, cudaStream_t stream) {
  if (a.R <= 0) return;
  rmsnorm(a.act, a.h, a.ln_f, a.eps, a.R, a.H, a.rows, a.xn, stream);
  LinearArgs l;
  l.act = a.act;
  l.out = DType::F32;
  l.x = a.xn;
  l.W = a.lm_head;
  l.b = nullptr;
  l.y = a.logits;
  l.T = a.R;
  l.N = a.V;
  l.K = a.H;
  l.cublas = a.cublas;
  linear(l, stream);
}

}  // namespace qwen::cu
