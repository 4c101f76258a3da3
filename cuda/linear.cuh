// linear: y[T,N] = x[T,K] . W[N,K]^T (+ b[N]); x, W, b in the activation dtype, y in the activation dtype or F32
// (final logits). fp32 accumulation everywhere. Paths, chosen once per call:
//   T <= 8                      decode GEMV, warp per output row, 16-byte streaming loads of W (scalar if unaligned)
//   QWEN_GEMM_SKINNY=1, 9..64   gemm_skinny (rows from QWEN_SKINNY_MIN_T, default 9: below it replaces the GEMV)
//   T >= 64 and a cuBLAS handle cublasGemmEx (COMPUTE_32F), bias pre-filled into y with beta = 1
//   bf16/fp16, K % 8 == 0       tensor-core GEMM (WMMA m16n16k16, 64x128x32 tiles, cp.async double buffering)
//   otherwise                   FP32 FMA tiled GEMM (fp32 activations, odd K, unaligned pointers)
#pragma once
#include <cuda_runtime.h>

#include "core/dtype.h"
#include "cublas_dyn.h"

namespace qwen::cu {

struct LinearArgs {
  DType act = DType::F32;   // dtype of x, W, b
  DType out = DType::F32;   // dtype of y: act or F32
  const void* x = nullptr;  // [T, K]
  const void* W = nullptr;  // [N, K]
  const void* b = nullptr;  // [N] or null
  void* y = nullptr;        // [T, N]
  int T = 0, N = 0, K = 0;
  cublas::Handle cublas = nullptr;  // null: never use cuBLAS
  void* ws = nullptr;               // scratch for split-K partials (gemm_skinny); null or small: fewer splits
  size_t ws_bytes = 0;
};

constexpr int kGemvMaxT = 8;     // T <= this: GEMV
constexpr int kCublasMinT = 64;  // T >= this and a handle: cuBLAS ...
// ... when N and K are both >= this too. On an H100, cuBLAS 13 bf16/fp16 GEMMs of small N and K (T=100 N=16 K=128,
// T=600 N=80 K=64) exceeded the fp32-accumulation error bound of test/ops.test.ts by up to 1.3x (own kernels pass),
// and at such sizes it is no faster. Qwen's GEMMs (N, K >= 4096) are far above this.
constexpr int kCublasMinNK = 256;

void linear(const LinearArgs& a, cudaStream_t stream);
// Whether linear() gives these arguments to gemm_skinny (QWEN_GEMM_SKINNY=1, QWEN_SKINNY_MIN_T <= T <= 64, 16-bit,
// K % 8 == 0, aligned): mlp_swiglu asks too, so that its w1 / w2 take the same path as the other linears of a step.
bool linear_takes_skinny(const LinearArgs& a);
// Which path linear() takes for these arguments: "gemv", "gemv_scalar", "cublas", "wmma" or "fma".
const char* linear_path(const LinearArgs& a);

// The decode GEMV with a fold (gemv.cuh): whether it applies to these arguments (T <= kGemvMaxT, 16-bit activations,
// out == act, K % 8 == 0, x / W / gain g (nullable) 16-byte aligned); where it does not, the caller composes the ops.
//   linear_norm: y = rmsnorm(x; g, eps) . W^T (+ b)   (x is the residual h [T, K], g [K])
//   linear_add:  y += round(x . W^T (+ b))             (y is the residual h [T, N])
bool gemv_folds(const LinearArgs& a, const void* g);
void linear_norm(const LinearArgs& a, const void* g, float eps, cudaStream_t stream);
void linear_add(const LinearArgs& a, cudaStream_t stream);

}  // namespace qwen::cu
