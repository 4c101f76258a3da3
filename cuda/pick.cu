// pick: penalties, argmax, log-sum-exp and top-n of R logits rows in one launch (pick.cuh describes the passes; the
// kernel is pick_kernel.cuh's, the host side pick_host.cc's). Here: the launch.
#include "common.cuh"
#include "pick.cuh"
#include "pick_kernel.cuh"

namespace qwen::cu {

void pick(float* logits, int R, int V, const DevPickRow* rows, const DevPickEntry* entries, DevPickOut* out,
          cudaStream_t stream) {
  if (R <= 0) return;
  pk::pick_kernel<<<R, kPickThreads, 0, stream>>>(logits, V, rows, entries, out);
  CUDA_CHECK_LAUNCH("pick_kernel");
}

}  // namespace qwen::cu
