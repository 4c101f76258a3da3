// mlp_swiglu: the MLP's input half, a[T,F] = w1(x) * silu(w2(x)) with x[T,K], w1 and w2 [F,K] (Qwen: a = w1(x),
// gate g = w2(x); reference §2). T <= kGemvMaxT with 16-byte aligned x/W and K % 8 == 0 (decode): ONE GEMV launch
// reads row n of w1 and of w2 in the same warp and applies SwiGLU in its epilogue, so the two [T,F] intermediates never
// reach memory; w1(x) and w2(x) are rounded to the activation type before SwiGLU, as the unfused ops store them.
// Otherwise: linear(w1) -> a, linear(w2) -> g (scratch [T,F]), swiglu(a, g) -> a.
#pragma once
#include <cuda_runtime.h>

#include "core/dtype.h"
#include "cublas_dyn.h"

namespace qwen::cu {
// ws / ws_bytes: scratch for the linears' split-K partials (LinearArgs::ws), may be null.
void mlp_swiglu(DType act, const void* x, const void* w1, const void* w2, int T, int F, int K, void* a, void* g,
                cublas::Handle cublas, void* ws, size_t ws_bytes, cudaStream_t stream);
// The one-launch GEMV with the RMSNorm folded in (gemv.cuh): a = mlp_swiglu(rmsnorm(h; g, eps)) for the residual
// h[T,K], where mlp_swiglu_folds says it applies (T <= kGemvMaxT, 16-bit, K % 8 == 0, 16-byte aligned).
bool mlp_swiglu_folds(DType act, const void* h, const void* g, const void* w1, const void* w2, int T, int F, int K);
void mlp_swiglu_norm(DType act, const void* h, const void* g, float eps, const void* w1, const void* w2, int T, int F,
                     int K, void* a, cudaStream_t stream);
}
