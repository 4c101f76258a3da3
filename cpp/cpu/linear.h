// CPU linear layer y[T,N] = x[T,K] . W[N,K]^T (+ b[N]) over weights read in place (F32 / F16 / BF16), fp32 math.
// Two kernel shapes per instruction set:
//   gemv: T small (decode). Dot-product form straight from the (mmapped) weight rows: memory-bound, 4 rows at once.
//   gemm: T large (prefill). Each task converts a panel of MR weight rows to fp32 once, then a register-blocked
//         micro-kernel multiplies it with x^T (packed once per call, [K][Tp]) MR rows x 2 vectors of tokens at a time.
#pragma once
#include <cstdint>

#include "core/dtype.h"
#include "cpu/isa.h"

namespace qwen {

struct LinearJob {
  const float* x = nullptr;  // [T, K]
  int T = 0, K = 0, N = 0;
  const void* W = nullptr;   // [N, K] row-major, dtype wdt
  DType wdt = DType::F32;
  const void* bias = nullptr;  // [N] dtype bdt, or null
  DType bdt = DType::F32;
  float* y = nullptr;        // [T, N]
};

// Rows of W handled by one gemm task (the micro-kernel's MR) for an ISA.
int gemm_panel_rows(Isa isa);
// Tokens per x^T column block (vector width) for an ISA; Tp = round_up(T, this).
int gemm_token_block(Isa isa);

// Per-ISA kernels; each computes y[:, n0:n1].
void linear_gemv_scalar(const LinearJob& j, int n0, int n1);
void linear_gemv_avx2(const LinearJob& j, int n0, int n1);
void linear_gemv_avx512(const LinearJob& j, int n0, int n1);
// xt: [K][Tp] fp32 (x transposed, zero-padded tokens); wbuf: scratch of gemm_panel_rows * K floats.
void linear_gemm_avx2(const LinearJob& j, const float* xt, int Tp, int n0, int n1, float* wbuf);
void linear_gemm_avx512(const LinearJob& j, const float* xt, int Tp, int n0, int n1, float* wbuf);
// dtype 'bf16' prefill on AMX CPUs: BF16 weights, K % 32 == 0, rows [n0, n1) a multiple of 16.
// xp: [K/2][Tp] words of two bf16 of x (Tp multiple of 16). amx_enable() asks Linux for the tile state once.
bool amx_enable();
void linear_gemm_amx(const LinearJob& j, const uint32_t* xp, int Tp, int n0, int n1);

// Scalar element read of a weight/bias of any stored dtype.
inline float load_elem(const void* p, DType dt, int64_t i) {
  switch (dt) {
    case DType::F32: { float f; std::memcpy(&f, static_cast<const char*>(p) + 4 * i, 4); return f; }
    case DType::BF16: { uint16_t h; std::memcpy(&h, static_cast<const char*>(p) + 2 * i, 2); return bf16_to_f32(h); }
    default: { uint16_t h; std::memcpy(&h, static_cast<const char*>(p) + 2 * i, 2); return f16_to_f32(h); }
  }
}

}  // namespace qwen
