// bf16 x bf16 -> fp32 GEMM on AMX (Sapphire Rapids and later) for CPU prefill in dtype 'bf16'.
// Computes y^T tiles: C[16 weight rows][16 tokens] += W[16 rows][32 k] . X^T[32 k][16 tokens], where the A tile is
// loaded straight from the row-major (mmapped) BF16 weights with a row stride of K*2 bytes and the B tile from x
// packed once per call in AMX's pair layout xp[k/2][t] = (x[t][k], x[t][k+1]). 2 x 2 C tiles (32 rows x 32 tokens)
// share each A and B load. Requires K % 32 == 0 and N % 16 == 0 (the caller checks; every Qwen shape qualifies).
#include <cstring>

#include "cpu/linear.h"

#if defined(__x86_64__) && defined(__AVX2__) && defined(__linux__)
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace qwen {

bool amx_enable() {
  // Linux hands out the AMX tile state only on request (ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18).
  static const bool ok = syscall(SYS_arch_prctl, 0x1023, 18) == 0;
  return ok;
}

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,amx-tile,amx-bf16")

namespace {

struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

}  // namespace

void linear_gemm_amx(const LinearJob& j, const uint32_t* xp, int Tp, int n0, int n1) {
  const int K = j.K, N = j.N, T = j.T, Kp = K / 2;
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) { cfg.rows[t] = 16; cfg.colsb[t] = 64; }  // every tile 16 x 64 bytes
  _tile_loadconfig(&cfg);
  const char* W = static_cast<const char*>(j.W);
  const size_t wstride = size_t(K) * 2, xstride = size_t(Tp) * 4;
  alignas(64) float c[4][16 * 16];
  for (int r0 = n0; r0 < n1; r0 += 32) {
    const bool two_rows = r0 + 32 <= n1;  // n1 - n0 is a multiple of 16
    for (int t0 = 0; t0 < Tp; t0 += 32) {
      const bool two_toks = t0 + 32 <= Tp;  // Tp is a multiple of 16
      _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
      for (int k = 0; k < K; k += 32) {
        const char* a = W + size_t(r0) * wstride + size_t(k) * 2;
        const char* b = reinterpret_cast<const char*>(xp + size_t(k / 2) * Tp + t0);
        _tile_loadd(4, a, wstride);
        _tile_loadd(6, b, xstride);
        _tile_dpbf16ps(0, 4, 6);
        if (two_toks) { _tile_loadd(7, b + 64, xstride); _tile_dpbf16ps(1, 4, 7); }
        if (two_rows) {
          _tile_loadd(5, a + 16 * wstride, wstride);
          _tile_dpbf16ps(2, 5, 6);
          if (two_toks) _tile_dpbf16ps(3, 5, 7);
        }
      }
      _tile_stored(0, c[0], 64); _tile_stored(1, c[1], 64); _tile_stored(2, c[2], 64); _tile_stored(3, c[3], 64);
      for (int q = 0; q < 4; ++q) {
        const int rb = r0 + (q >> 1) * 16, tb = t0 + (q & 1) * 16;
        if ((q >> 1) && !two_rows) continue;
        if ((q & 1) && !two_toks) continue;
        for (int r = 0; r < 16; ++r) {
          const float bias = j.bias ? load_elem(j.bias, j.bdt, rb + r) : 0.0f;
          for (int t = 0; t < 16 && tb + t < T; ++t) j.y[size_t(tb + t) * N + rb + r] = c[q][r * 16 + t] + bias;
        }
      }
    }
  }
  _tile_release();
  (void)Kp;
}

#pragma GCC pop_options

}  // namespace qwen

#else
namespace qwen {
bool amx_enable() { return false; }
void linear_gemm_amx(const LinearJob& j, const uint32_t*, int, int n0, int n1) { linear_gemv_scalar(j, n0, n1); }
}  // namespace qwen
#endif
