// bf16 x bf16 -> fp32 GEMM for CPU prefill in dtype 'bf16' (AVX512-BF16, `vdpbf16ps`): twice the multiply rate of the
// fp32 kernels. Orientation as linear_impl.h's gemm, but nothing is converted: each weight-row pair of bf16 values
// W[n][2p..2p+1] is broadcast as one 32-bit word straight from the (mmapped) row-major weights, and x is packed once
// per call as bf16 pairs xp[p][t] = (x[t][2p], x[t][2p+1]) (rounded to nearest even), so one vdpbf16ps accumulates
// two k-steps for 16 tokens. Products of bf16 values are exact in fp32; accumulation is fp32.
#include <cstring>

#include "cpu/linear.h"

#if defined(__x86_64__) && defined(__AVX2__)
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")

namespace qwen {
namespace {

constexpr int MR = 12;    // weight rows per micro-tile
constexpr int L = 16;     // tokens per vector
constexpr int kKp = 128;  // k-pairs per block: 12 rows x 512 B of weights stay in L1 across token blocks

template <int NV>
inline void micro_bf16(const uint32_t* w, int Kp, const uint32_t* xp, int Tp, int t0, int kp, bool first, float* tile) {
  __m512 acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(tile + (r * NV + v) * L);
  for (int p = 0; p < kp; ++p) {
    __m512bh xv[NV];
    for (int v = 0; v < NV; ++v) xv[v] = (__m512bh)_mm512_loadu_si512(xp + size_t(p) * Tp + t0 + v * L);
    for (int r = 0; r < MR; ++r) {
      const __m512bh wv = (__m512bh)_mm512_set1_epi32(int(w[size_t(r) * Kp + p]));
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], wv, xv[v]);
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(tile + (r * NV + v) * L, acc[r][v]);
}

}  // namespace

void linear_gemm_avx512bf16(const LinearJob& j, const uint32_t* xp, int Tp, int n0, int n1, uint32_t* zrows) {
  const int K = j.K, N = j.N, T = j.T, Kp = K / 2;  // K even (checked by the caller)
  const uint32_t* W = static_cast<const uint32_t*>(j.W);  // [N][Kp] words of two bf16
  float tiles[MR * 2 * L * 64];  // Tp <= 2048 tokens of partial sums
  for (int p0 = n0; p0 < n1; p0 += MR) {
    const int rows = n1 - p0 < MR ? n1 - p0 : MR;
    // A partial panel reads its missing rows from zeroed scratch so the micro-kernel stays branch-free.
    const uint32_t* w = W + size_t(p0) * Kp;
    if (rows < MR) {
      std::memset(zrows, 0, sizeof(uint32_t) * size_t(MR) * Kp);
      std::memcpy(zrows, w, sizeof(uint32_t) * size_t(rows) * Kp);
      w = zrows;
    }
    for (int k0 = 0; k0 < Kp; k0 += kKp) {
      const int kp = Kp - k0 < kKp ? Kp - k0 : kKp;
      for (int t0 = 0; t0 < Tp; t0 += 2 * L) {
        float* tile = tiles + (t0 / (2 * L)) * (MR * 2 * L);
        if (t0 + 2 * L <= Tp) micro_bf16<2>(w + k0, Kp, xp + size_t(k0) * Tp, Tp, t0, kp, k0 == 0, tile);
        else micro_bf16<1>(w + k0, Kp, xp + size_t(k0) * Tp, Tp, t0, kp, k0 == 0, tile);
      }
    }
    for (int t0 = 0; t0 < Tp; t0 += 2 * L) {
      const float* tile = tiles + (t0 / (2 * L)) * (MR * 2 * L);
      const int nv = t0 + 2 * L <= Tp ? 2 : 1;
      for (int r = 0; r < rows; ++r) {
        const float b = j.bias ? load_elem(j.bias, j.bdt, p0 + r) : 0.0f;
        for (int i = 0; i < nv * L && t0 + i < T; ++i) j.y[size_t(t0 + i) * N + p0 + r] = tile[r * nv * L + i] + b;
      }
    }
  }
}

}  // namespace qwen

#pragma GCC pop_options

#else
namespace qwen {
void linear_gemm_avx512bf16(const LinearJob& j, const uint32_t*, int, int n0, int n1, uint32_t*) {
  linear_gemv_scalar(j, n0, n1);
}
}  // namespace qwen
#endif
