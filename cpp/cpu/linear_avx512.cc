// AVX-512 linear kernels, compiled for AVX-512 by pragma (not by build flags) and chosen at run time only on CPUs
// that have AVX-512F/BW/VL. Everything this file includes is included before the pragma, so no shared inline code
// is compiled with AVX-512 instructions. Templates: linear_impl.h.
#include <cstring>

#include "cpu/linear.h"

#if defined(__x86_64__) && defined(__AVX2__)
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")

namespace qwen {
namespace {

struct V {
  using R = __m512;
  static constexpr int L = 16;   // fp32 lanes
  static constexpr int MR = 12;  // gemm micro-kernel: 12 rows x 2 vectors = 24 accumulators of 32 registers
  static R zero() { return _mm512_setzero_ps(); }
  static R loadu(const float* p) { return _mm512_loadu_ps(p); }
  static void storeu(float* p, R v) { _mm512_storeu_ps(p, v); }
  static R bcast(const float* p) { return _mm512_set1_ps(*p); }
  static R fmadd(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
  static void prefetch(const char* p) { _mm_prefetch(p, _MM_HINT_T0); }
  static float hsum(R v) { return _mm512_reduce_add_ps(v); }
  template <int WD>
  static R load_w(const char* base, int64_t i) {
    if constexpr (WD == 0) {
      return _mm512_loadu_ps(reinterpret_cast<const float*>(base) + i);
    } else if constexpr (WD == 1) {
      return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(base + 2 * i)));
    } else {
      __m512i u = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(base + 2 * i)));
      return _mm512_castsi512_ps(_mm512_slli_epi32(u, 16));
    }
  }
};

#include "cpu/linear_impl.h"

}  // namespace

void linear_gemv_avx512(const LinearJob& j, int n0, int n1) {
  switch (j.wdt) {
    case DType::F32: return gemv_dispatch<V, 0>(j, n0, n1);
    case DType::F16: return gemv_dispatch<V, 1>(j, n0, n1);
    case DType::BF16: return gemv_dispatch<V, 2>(j, n0, n1);
  }
}

void linear_gemm_avx512(const LinearJob& j, const float* xt, int Tp, int n0, int n1, float* wbuf) {
  switch (j.wdt) {
    case DType::F32: return gemm<V, 0>(j, xt, Tp, n0, n1, wbuf);
    case DType::F16: return gemm<V, 1>(j, xt, Tp, n0, n1, wbuf);
    case DType::BF16: return gemm<V, 2>(j, xt, Tp, n0, n1, wbuf);
  }
}

}  // namespace qwen

#pragma GCC pop_options

#else
namespace qwen {
void linear_gemv_avx512(const LinearJob& j, int n0, int n1) { linear_gemv_scalar(j, n0, n1); }
void linear_gemm_avx512(const LinearJob& j, const float*, int, int n0, int n1, float*) { linear_gemv_scalar(j, n0, n1); }
}  // namespace qwen
#endif
