// mlp_swiglu (see mlp_swiglu.cuh). The fused GEMV is linear.cu's gemv_vec_kernel with two weight streams: a warp per
// output n, each lane keeps 2 x 4 16-byte loads (__ldcs, evict-first) in flight, fp32 sums, warp-shuffle reduction.
// On the H100 profile of a 7b decode step, w1 and w2 each took ~34 us as separate GEMVs plus ~6 us for swiglu.
#include "common.cuh"
#include "gemv_io.cuh"
#include "linear.cuh"
#include "mlp_swiglu.cuh"
#include "swiglu.cuh"

namespace qwen::cu {

constexpr int kMlpWarps = 8;  // output rows per block

// grid (ceil(F / 8)), block 256. Norm (gemv_io.cuh): x is the residual h, and the RMSNorm of gain g applies inside.
template <typename T, int NT, GemvIO IO = GemvIO::Plain>
static __global__ void __launch_bounds__(kMlpWarps * 32)
    mlp_swiglu_gemv_kernel(const T* __restrict__ x, const T* __restrict__ W1, const T* __restrict__ W2,
                           T* __restrict__ a, int F, int K, const T* __restrict__ g, float eps) {
  static_assert(IO != GemvIO::Add, "the MLP's output is not a residual");
  constexpr int VE = kVec<T>;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int n = blockIdx.x * kMlpWarps + warp;
  if (n >= F) return;  // whole warp
  const int nv = K / VE;
  const uint4* p1 = reinterpret_cast<const uint4*>(W1 + int64_t(n) * K);
  const uint4* p2 = reinterpret_cast<const uint4*>(W2 + int64_t(n) * K);
  const uint4* x4 = reinterpret_cast<const uint4*>(x);
  const uint4* g4 = reinterpret_cast<const uint4*>(g);
  float s1[NT], s2[NT], ss[NT];
#pragma unroll
  for (int t = 0; t < NT; ++t) s1[t] = s2[t] = ss[t] = 0.f;

  auto step = [&](const uint4& w1v, const uint4& w2v, int i) {
    float f1[VE], f2[VE], gf[VE];
    unpack16<T>(w1v, f1);
    unpack16<T>(w2v, f2);
    gemv_gain<T, IO>(g4, i, gf);
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      float xf[VE];
      gemv_in<T, IO>(x4, int64_t(t) * nv + i, gf, xf, ss[t]);
#pragma unroll
      for (int e = 0; e < VE; ++e) {
        s1[t] = fmaf(f1[e], xf[e], s1[t]);
        s2[t] = fmaf(f2[e], xf[e], s2[t]);
      }
    }
  };
  int i = lane;
  // First chunks before pdl_wait(), as gemv_vec_kernel (weights are never written by a step's kernels).
  uint4 w1v[4], w2v[4];
  auto load = [&](int at) {
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      w1v[u] = __ldcs(p1 + at + u * 32);
      w2v[u] = __ldcs(p2 + at + u * 32);
    }
  };
  if (i + 96 < nv) load(i);
  pdl_wait();
  pdl_launch_dependents();
  for (; i + 96 < nv; i += 128) {
    if (i != lane) load(i);
#pragma unroll
    for (int u = 0; u < 4; ++u) step(w1v[u], w2v[u], i + u * 32);
  }
  for (; i < nv; i += 32) step(__ldcs(p1 + i), __ldcs(p2 + i), i);
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    s1[t] = warp_sum(s1[t]);
    s2[t] = warp_sum(s2[t]);
    if constexpr (IO == GemvIO::Norm) {
      const float scale = gemv_scale<IO>(warp_sum(ss[t]), K, eps);
      s1[t] *= scale;
      s2[t] *= scale;
    }
  }
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    if (lane == t) {
      const float up = round_to<T>(s1[t]), z = round_to<T>(s2[t]);  // as linear() would store them
      a[int64_t(t) * F + n] = from_f32<T>(up * (z / (1.0f + expf(-z))));
    }
  }
}

template <typename T, GemvIO IO = GemvIO::Plain>
static void launch_fused(const T* x, const T* w1, const T* w2, int T_, int F, int K, T* a, cudaStream_t stream,
                         const T* g = nullptr, float eps = 0.f) {
  const dim3 grid(ceil_div(F, kMlpWarps)), block(kMlpWarps * 32);
  switch (T_) {
#define QWEN_MLP_CASE(nt) \
  case nt: launch_pdl(mlp_swiglu_gemv_kernel<T, nt, IO>, grid, block, 0, stream, x, w1, w2, a, F, K, g, eps); break;
    QWEN_MLP_CASE(1)
    QWEN_MLP_CASE(2)
    QWEN_MLP_CASE(3)
    QWEN_MLP_CASE(4)
    QWEN_MLP_CASE(5)
    QWEN_MLP_CASE(6)
    QWEN_MLP_CASE(7)
    QWEN_MLP_CASE(8)
#undef QWEN_MLP_CASE
    default: throw std::logic_error("mlp_swiglu: T out of range");
  }
  CUDA_CHECK_LAUNCH("mlp_swiglu_gemv_kernel");
}

// Whether the one-launch GEMV applies (16-bit activations checked by the caller).
static bool gemv_fits(int T, int K, int vec, const void* x, const void* w1, const void* w2) {
  return T <= kGemvMaxT && K % vec == 0 && aligned16(x) && aligned16(w1) && aligned16(w2);
}

bool mlp_swiglu_norm(DType act, const void* h, const void* g, float eps, const void* w1, const void* w2, int T, int F,
                     int K, void* a, cudaStream_t stream) {
  if (T <= 0 || F <= 0 || K <= 0 || !aligned16(g)) return false;
  bool done = false;
  dispatch_act(act, [&](auto tag) {
    using E = decltype(tag);
    if constexpr (sizeof(E) == 2) {
      if (gemv_fits(T, K, kVec<E>, h, w1, w2)) {
        launch_fused<E, GemvIO::Norm>(static_cast<const E*>(h), static_cast<const E*>(w1),
                                      static_cast<const E*>(w2), T, F, K, static_cast<E*>(a), stream,
                                      static_cast<const E*>(g), eps);
        done = true;
      }
    }
  });
  return done;
}

void mlp_swiglu(DType act, const void* x, const void* w1, const void* w2, int T, int F, int K, void* a, void* g,
                cublas::Handle cublas, void* ws, size_t ws_bytes, cudaStream_t stream) {
  if (T <= 0 || F <= 0) return;
  if (K <= 0) throw std::invalid_argument("mlp_swiglu: K must be > 0");
  bool fused = false;
  dispatch_act(act, [&](auto tag) {
    using E = decltype(tag);
    if constexpr (sizeof(E) == 2) {
      if (gemv_fits(T, K, kVec<E>, x, w1, w2)) {
        launch_fused<E>(static_cast<const E*>(x), static_cast<const E*>(w1), static_cast<const E*>(w2), T, F, K,
                        static_cast<E*>(a), stream);
        fused = true;
      }
    }
  });
  if (fused) return;
  LinearArgs l;
  l.act = act;
  l.out = act;
  l.x = x;
  l.T = T;
  l.N = F;
  l.K = K;
  l.cublas = cublas;
  l.ws = ws;
  l.ws_bytes = ws_bytes;
  l.W = w1;
  l.y = a;
  linear(l, stream);
  l.W = w2;
  l.y = g;
  linear(l, stream);
  swiglu(act, a, g, size_t(T) * size_t(F), a, stream);
}

}  // namespace qwen::cu
