// gemm_skinny: y[T,N] = x[T,K] . W[N,K]^T (+ b[N]) for 9 <= T <= kSkinnyMaxT rows (batched decode of 9-64
// sequences, short prefill chunks), bf16/fp16, K % 8 == 0, x and W 16-byte aligned. At these T the GEMM is bound by
// streaming W from HBM (T FLOP per weight byte, far below the tensor cores' ~300), so the kernel is built to keep
// W's bytes in flight on every SM, with tensor cores doing the little math:
//   - CTA = 4 warps = 64 rows of W (warp w: rows 16w..16w+15) x all T rows of x (padded to 16s); a CTA per 64 rows
//     and, when that gives under ~4 CTAs per SM, split-K over CTAs (fp32 partials in the caller's workspace, summed
//     by a second kernel that adds the bias and rounds once). Splits are reduced to fit the workspace, down to 1.
//   - K in tiles of 64 through a 4-stage cp.async ring: W [64][64] and x [16*NT16][64] per stage (x is re-read from
//     L2 by every CTA: x traffic = W traffic at T = 64).
//   - mma.sync m16n8k16 (fp32 accumulate): A = W rows by ldmatrix.x4, B = x rows (already "col" layout for
//     W . x^T) by ldmatrix.x4, exactly flash_mma.cuh's Q K^T fragment scheme.
// On the H100, cuBLAS at T = 64 ran the four Qwen-7B GEMMs of a layer at 1.85 TB/s of weights (218 us); the target
// here is ~2.8 TB/s. Opt-in (QWEN_GEMM_SKINNY=1) until timed; op_check passed it on an H100 (2026-11-27).
#pragma once
#include <cuda_runtime.h>

#include <cstddef>

#include "core/dtype.h"

namespace qwen::cu {

constexpr int kSkinnyMaxT = 64;

// QWEN_GEMM_SKINNY=1: linear() takes this path for skinny_min_t() <= T <= 64 (read once per process).
bool skinny_enabled();
// QWEN_SKINNY_MIN_T (1..64, default 9): the fewest rows linear() and mlp_swiglu() give to this kernel under
// QWEN_GEMM_SKINNY=1; below 9 it replaces the decode GEMV (and the fused MLP GEMV, and the folds). On the H100,
// final_pick of 8 rows took 702 us against 452 us for 1 (the lm_head GEMV: 1.77 vs 2.75 TB/s; it re-reads the T rows
// of x for every weight chunk), so one padded 16-row tensor-core tile may win for 2-8 rows: an A/B, not a default.
int skinny_min_t();
// Whether those switches give a pass of T rows to this kernel (linear_takes_skinny adds the dtype / alignment checks).
inline bool skinny_takes_rows(int T) { return skinny_enabled() && T >= skinny_min_t() && T <= kSkinnyMaxT; }

// The workspace bytes the call would use for its split-K partials with an unbounded workspace (0: no split).
size_t gemm_skinny_workspace(int T, int N, int K);

// act: bf16 or fp16 (x, W, b); out: act or F32 (y). ws may be null (then no split-K).
void gemm_skinny(DType act, DType out, const void* x, const void* W, const void* b, void* y, int T, int N, int K,
                 void* ws, size_t ws_bytes, cudaStream_t stream);

}  // namespace qwen::cu
