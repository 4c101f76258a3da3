// The decode GEMV kernels of cuda/gemv.cuh (the code the GPU runs), executed on the host by the SIMT emulation of
// simt_cuda.h, against float64 references: gemv_vec_kernel for T = 1..8 rows in each fold (Plain, Norm: the RMSNorm
// inside, Add: the residual add in the epilogue), bf16 and fp16, bias or none, fp32 output (final logits); and
// mlp_swiglu_gemv_kernel, Plain and Norm. K = 64 (8 chunks of 16 bytes) takes only the tail loop; K = 1544 (193
// chunks) one round of the 4-chunk main loop and a tail of 65 chunks (lane 0 takes 3); K = 2840 (355 chunks) two
// rounds, a third for lanes 0-2 only, and their tails; N = 10 leaves whole warps idle in the last block. No GPU needed; test/kernels-emu.test.ts builds and runs it:
//   g++ -std=c++20 -O2 -pthread -I<cuda>/include -Icpp -Icuda cuda/test/gemv_emu.cc && ./a.out
// prints "N cases, M differ" (exit 1 if any differ) and the worst error of each case against its bound.
//
// Bounds (u = 2^-24 fp32, v = unit roundoff of the 16-bit type): each output sums K fp32 products (gamma_K = K u of
// sum|terms|); Norm adds the product h * g (u), the sum of squares and 1/rms (~(K/2 + 4) u relative to the value) and
// the scale (u); the bias add is one more u; the store rounds once (v). Add rounds y (v) and the sum (v). The MLP's
// up and gate are rounded (v each) before SwiGLU (|silu'| <= 1.1, its own fp32 math ~8u, its rounding v).
#include "simt_cuda.h"  // first: it brings the CUDA headers and the device builtins

#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "gemv.cuh"

using namespace qwen::cu;

namespace {

constexpr double kU = 1.0 / (1 << 24);
int g_cases = 0, g_bad = 0;

template <typename T>
constexpr double roundoff() {
  return std::is_same_v<T, __half> ? 1.0 / 2048 : 1.0 / 256;  // 2^-11 fp16, 2^-8 bf16
}
template <typename T>
float to_host(T v) {
  if constexpr (std::is_same_v<T, float>) return v;
  else if constexpr (std::is_same_v<T, __half>) return __half2float(v);
  else return __bfloat162float(v);
}
template <typename T>
T from_host(float f) {
  if constexpr (std::is_same_v<T, __half>) return __float2half_rn(f);
  else return __float2bfloat16_rn(f);
}
template <typename T>
std::vector<T> rnd(size_t n, float scale, uint32_t seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<T> v(n);
  for (auto& x : v) x = from_host<T>(u(g));
  return v;
}

void report(const std::string& name, double worst_ratio) {
  ++g_cases;
  const bool ok = worst_ratio <= 1.0;  // NaN fails
  if (!ok) ++g_bad;
  std::printf("%s %-44s worst |err| / bound = %.3g\n", ok ? "PASS" : "FAIL", name.c_str(), worst_ratio);
}

// The exact normalized input of row t (Norm), or the input as stored.
template <typename T>
std::vector<double> input_rows(const std::vector<T>& x, const std::vector<T>& g, int T_, int K, bool norm,
                               float eps, std::vector<double>& inv) {
  std::vector<double> out(size_t(T_) * K);
  inv.assign(size_t(T_), 1.0);
  for (int t = 0; t < T_; ++t) {
    double ss = 0;
    for (int k = 0; k < K; ++k) ss += double(to_host(x[size_t(t) * K + k])) * to_host(x[size_t(t) * K + k]);
    if (norm) inv[size_t(t)] = 1.0 / std::sqrt(ss / K + eps);
    for (int k = 0; k < K; ++k)
      out[size_t(t) * K + k] = to_host(x[size_t(t) * K + k]) * (norm ? inv[size_t(t)] * to_host(g[size_t(k)]) : 1.0);
  }
  return out;
}

// y = W . xin (+ b) in float64, with mag = sum |terms|.
template <typename T>
void dot_ref(const std::vector<T>& W, const std::vector<double>& xin, const T* b, int T_, int N, int K,
             std::vector<double>& y, std::vector<double>& mag) {
  y.assign(size_t(T_) * N, 0.0);
  mag.assign(y.size(), 0.0);
  for (int t = 0; t < T_; ++t)
    for (int n = 0; n < N; ++n) {
      double s = b ? to_host(b[n]) : 0.0, m = b ? std::fabs(to_host(b[n])) : 0.0;
      for (int k = 0; k < K; ++k) {
        const double p = double(to_host(W[size_t(n) * K + k])) * xin[size_t(t) * K + k];
        s += p;
        m += std::fabs(p);
      }
      y[size_t(t) * N + n] = s;
      mag[size_t(t) * N + n] = m;
    }
}

template <typename T, typename OutT, int NT, GemvIO IO>
void run_gemv(const T* x, const T* W, const T* b, OutT* y, int N, int K, const T* g, float eps) {
  simt::launch((N + kGemvWarps - 1) / kGemvWarps, kGemvWarps * 32,
               [&] { gemv_vec_kernel<T, OutT, NT, IO>(x, W, b, y, N, K, g, eps); });
}

template <typename T, typename OutT, int NT, GemvIO IO>
void case_gemv(int N, int K, bool bias) {
  const float eps = 1e-6f;
  const auto x = rnd<T>(size_t(NT) * K, IO == GemvIO::Norm ? 3.f : 1.f, 11 + NT + K);
  const auto W = rnd<T>(size_t(N) * K, 0.1f, 13 + N);
  const auto bv = rnd<T>(size_t(N), 1.f, 17);
  const auto g = rnd<T>(size_t(K), 1.5f, 19);
  const auto h0 = rnd<T>(size_t(NT) * N, 3.f, 23);  // Add: the residual before
  std::vector<OutT> y(static_cast<size_t>(NT) * N);
  if constexpr (IO == GemvIO::Add) y = h0;
  run_gemv<T, OutT, NT, IO>(x.data(), W.data(), bias ? bv.data() : nullptr, y.data(), N, K, g.data(), eps);

  std::vector<double> inv, ref, mag;
  const auto xin = input_rows(x, g, NT, K, IO == GemvIO::Norm, eps, inv);
  dot_ref(W, xin, bias ? bv.data() : nullptr, NT, N, K, ref, mag);
  const double v = std::is_same_v<OutT, float> ? 0.0 : roundoff<T>();
  double worst = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    double want = ref[i], bound = (K + 4) * kU * mag[i] + v * std::fabs(want) + 1e-30;
    if (IO == GemvIO::Norm) bound += (K / 2.0 + 8) * kU * mag[i];
    if constexpr (IO == GemvIO::Add) {
      want += to_host(h0[i]);
      bound += v * (std::fabs(ref[i]) + std::fabs(want));
    }
    const double e = std::fabs(double(to_host(y[i])) - want) / bound;
    worst = e > worst || e != e ? e : worst;
  }
  const char* io = IO == GemvIO::Plain ? "plain" : IO == GemvIO::Norm ? "norm" : "add";
  const char* ty = std::is_same_v<T, __half> ? "fp16" : "bf16";
  report(std::string("gemv ") + io + " " + ty + (std::is_same_v<OutT, float> ? "->f32" : "") + " T=" +
             std::to_string(NT) + " N=" + std::to_string(N) + " K=" + std::to_string(K) + (bias ? " +b" : ""),
         worst);
}

template <typename T, int NT, GemvIO IO>
void case_mlp(int F, int K) {
  const float eps = 1e-6f;
  const auto x = rnd<T>(size_t(NT) * K, IO == GemvIO::Norm ? 3.f : 1.f, 29 + NT + K);
  const auto W1 = rnd<T>(size_t(F) * K, 0.1f, 31 + F), W2 = rnd<T>(size_t(F) * K, 0.1f, 37 + F);
  const auto g = rnd<T>(size_t(K), 1.5f, 41);
  std::vector<T> a(static_cast<size_t>(NT) * F);
  simt::launch((F + kGemvWarps - 1) / kGemvWarps, kGemvWarps * 32, [&] {
    mlp_swiglu_gemv_kernel<T, NT, IO>(x.data(), W1.data(), W2.data(), a.data(), F, K, g.data(), eps);
  });
  std::vector<double> inv, up, upm, gate, gatem;
  const auto xin = input_rows(x, g, NT, K, IO == GemvIO::Norm, eps, inv);
  dot_ref(W1, xin, static_cast<const T*>(nullptr), NT, F, K, up, upm);
  dot_ref(W2, xin, static_cast<const T*>(nullptr), NT, F, K, gate, gatem);
  const double v = roundoff<T>(), acc = (K + 4 + (IO == GemvIO::Norm ? K / 2.0 + 8 : 0)) * kU;
  double worst = 0;
  for (size_t i = 0; i < up.size(); ++i) {
    const double z = gate[i], s = z / (1 + std::exp(-z)), want = up[i] * s;
    const double da = acc * upm[i] + v * std::fabs(up[i]), dz = acc * gatem[i] + v * std::fabs(z);
    const double bound = std::fabs(s) * da + 1.1 * (std::fabs(up[i]) + da) * dz + (8 * kU + v) * std::fabs(want) + 1e-30;
    const double e = std::fabs(double(to_host(a[i])) - want) / bound;
    worst = e > worst || e != e ? e : worst;
  }
  report(std::string("mlp ") + (IO == GemvIO::Norm ? "norm" : "plain") + " bf16 T=" + std::to_string(NT) +
             " F=" + std::to_string(F) + " K=" + std::to_string(K),
         worst);
}

template <int NT>
void all_for_t() {
  using bf = __nv_bfloat16;
  for (const int K : {64, 1544, 2840}) {
    case_gemv<bf, bf, NT, GemvIO::Plain>(10, K, NT % 2 == 0);
    case_gemv<bf, bf, NT, GemvIO::Norm>(10, K, NT % 2 == 1);
    case_gemv<bf, bf, NT, GemvIO::Add>(10, K, false);
    case_mlp<bf, NT, GemvIO::Plain>(10, K);
    case_mlp<bf, NT, GemvIO::Norm>(10, K);
  }
  if constexpr (NT == 1 || NT == 8) {  // the other types: fp16 folds, fp32 logits (final_logits' lm_head)
    case_gemv<__half, __half, NT, GemvIO::Norm>(9, 2840, true);
    case_gemv<__half, __half, NT, GemvIO::Add>(9, 2840, false);
    case_gemv<bf, float, NT, GemvIO::Plain>(9, 2840, false);
  }
}

}  // namespace

int main() {
  all_for_t<1>();
  all_for_t<2>();
  all_for_t<3>();
  all_for_t<4>();
  all_for_t<5>();
  all_for_t<6>();
  all_for_t<7>();
  all_for_t<8>();
  std::printf("%d cases, %d differ\n", g_cases, g_bad);
  return g_bad ? 1 : 0;
}
