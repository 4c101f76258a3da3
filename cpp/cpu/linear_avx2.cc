// AVX2/FMA/F16C linear kernels (the build's baseline ISA, x86-64-v3). Templates: linear_impl.h.
#include <cstring>

#include "cpu/linear.h"

#if defined(__x86_64__) && defined(__AVX2__)
#include <immintrin.h>

namespace qwen {
namespace {

struct V {
  using R = __m256;
  static constexpr int L = 8;   // fp32 lanes
  static constexpr int MR = 6;  // gemm micro-kernel: 6 rows x 2 vectors = 12 accumulators of 16 registers
  static R zero() { return _mm256_setzero_ps(); }
  static R loadu(const float* p) { return _mm256_loadu_ps(p); }
  static void storeu(float* p, R v) { _mm256_storeu_ps(p, v); }
  static R bcast(const float* p) { return _mm256_broadcast_ss(p); }
  static R fmadd(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
  static void prefetch(const char* p) { _mm_prefetch(p, _MM_HINT_T0); }
  static float hsum(R v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  template <int WD>
  static R load_w(const char* base, int64_t i) {
    if constexpr (WD == 0) {
      return _mm256_loadu_ps(reinterpret_cast<const float*>(base) + i);
    } else if constexpr (WD == 1) {
      return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(base + 2 * i)));
    } else {  // bf16: widen to 32 bits and shift into the high half
      __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(base + 2 * i)));
      return _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
    }
  }
};

#include "cpu/linear_impl.h"

}  // namespace

void linear_gemv_avx2(const LinearJob& j, int n0, int n1) {
  switch (j.wdt) {
    case DType::F32: return gemv_dispatch<V, 0>(j, n0, n1);
    case DType::F16: return gemv_dispatch<V, 1>(j, n0, n1);
    case DType::BF16: return gemv_dispatch<V, 2>(j, n0, n1);
  }
}

void linear_gemm_avx2(const LinearJob& j, const float* xt, int Tp, int n0, int n1, float* wbuf) {
  switch (j.wdt) {
    case DType::F32: return gemm<V, 0>(j, xt, Tp, n0, n1, wbuf);
    case DType::F16: return gemm<V, 1>(j, xt, Tp, n0, n1, wbuf);
    case DType::BF16: return gemm<V, 2>(j, xt, Tp, n0, n1, wbuf);
  }
}

}  // namespace qwen

#else  // not x86-64 with AVX2: never selected by best_isa()
namespace qwen {
void linear_gemv_avx2(const LinearJob& j, int n0, int n1) { linear_gemv_scalar(j, n0, n1); }
void linear_gemm_avx2(const LinearJob& j, const float*, int, int n0, int n1, float*) { linear_gemv_scalar(j, n0, n1); }
}  // namespace qwen
#endif
