// Portable scalar linear kernel (the reference level of the run-time dispatch) and per-ISA blocking constants.
#include "cpu/linear.h"

namespace qwen {

int gemm_panel_rows(Isa isa) { return isa == Isa::Avx512 ? 12 : 6; }
int gemm_token_block(Isa isa) { return isa == Isa::Avx512 ? 16 : 8; }

void linear_gemv_scalar(const LinearJob& j, int n0, int n1) {
  for (int n = n0; n < n1; ++n) {
    const float b = j.bias ? load_elem(j.bias, j.bdt, n) : 0.0f;
    for (int t = 0; t < j.T; ++t) {
      const float* x = j.x + size_t(t) * j.K;
      float s = 0.0f;
      for (int k = 0; k < j.K; ++k) s += load_elem(j.W, j.wdt, int64_t(n) * j.K + k) * x[k];
      j.y[size_t(t) * j.N + n] = s + b;
    }
  }
}

}  // namespace qwen
