// mlp_swiglu (see mlp_swiglu.cuh). The fused GEMV is gemv.cuh's mlp_swiglu_gemv_kernel: a warp per output n, each
// lane keeps 2 x 4 16-byte loads (__ldcs, evict-first) in flight, fp32 sums, warp-shuffle reduction.
// On the H100 profile of a 7b decode step, w1 and w2 each took ~34 us as separate GEMVs plus ~6 us for swiglu.
#include "common.cuh"
#include "gemv.cuh"
#include "linear.cuh"
#include "mlp_swiglu.cuh"
#include "swiglu.cuh"

namespace qwen::cu {

template <typename T, GemvIO IO = GemvIO::Plain>
static void launch_fused(const T* x, const T* w1, const T* w2, int T_, int F, int K, T* a, cudaStream_t stream,
                         const T* g = nullptr, float eps = 0.f) {
  const dim3 grid(ceil_div(F, kGemvWarps)), block(kGemvWarps * 32);
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

// The linear x[T,K] . W^T for W = w1 or w2 [F,K], output [T,F] in the activation type.
static LinearArgs mlp_args(DType act, const void* x, const void* W, int T, int F, int K) {
  LinearArgs l;
  l.act = act;
  l.out = act;
  l.x = x;
  l.W = W;
  l.T = T;
  l.N = F;
  l.K = K;
  return l;
}

// Whether the one-launch GEMV applies: 16-bit activations, T <= 8, aligned, and linear() would not give these rows
// to gemm_skinny (QWEN_SKINNY_MIN_T below 9: then w1 and w2 run as skinny GEMMs like the step's other linears).
static bool gemv_fits(DType act, int T, int F, int K, const void* x, const void* w1, const void* w2) {
  if (act == DType::F32 || T > kGemvMaxT || K % (16 / int(dtype_size(act))) != 0 || !aligned16(x) ||
      !aligned16(w1) || !aligned16(w2))
    return false;
  return !linear_takes_skinny(mlp_args(act, x, w1, T, F, K));
}

bool mlp_swiglu_folds(DType act, const void* h, const void* g, const void* w1, const void* w2, int T, int F, int K) {
  return T > 0 && F > 0 && K > 0 && aligned16(g) && gemv_fits(act, T, F, K, h, w1, w2);
}

void mlp_swiglu_norm(DType act, const void* h, const void* g, float eps, const void* w1, const void* w2, int T, int F,
                     int K, void* a, cudaStream_t stream) {
  if (!mlp_swiglu_folds(act, h, g, w1, w2, T, F, K))
    throw std::logic_error("mlp_swiglu_norm: the folded GEMV does not apply here (mlp_swiglu_folds)");
  dispatch_act(act, [&](auto tag) {
    using E = decltype(tag);
    if constexpr (sizeof(E) == 2)
      launch_fused<E, GemvIO::Norm>(static_cast<const E*>(h), static_cast<const E*>(w1), static_cast<const E*>(w2), T,
                                    F, K, static_cast<E*>(a), stream, static_cast<const E*>(g), eps);
  });
}

void mlp_swiglu(DType act, const void* x, const void* w1, const void* w2, int T, int F, int K, void* a, void* g,
                cublas::Handle cublas, void* ws, size_t ws_bytes, cudaStream_t stream) {
  if (T <= 0 || F <= 0) return;
  if (K <= 0) throw std::invalid_argument("mlp_swiglu: K must be > 0");
  bool fused = false;
  dispatch_act(act, [&](auto tag) {
    using E = decltype(tag);
    if constexpr (sizeof(E) == 2) {
      if (gemv_fits(act, T, F, K, x, w1, w2)) {
        launch_fused<E>(static_cast<const E*>(x), static_cast<const E*>(w1), static_cast<const E*>(w2), T, F, K,
                        static_cast<E*>(a), stream);
        fused = true;
      }
    }
  });
  if (fused) return;
  LinearArgs l = mlp_args(act, x, w1, T, F, K);
  l.cublas = cublas;
  l.ws = ws;
  l.ws_bytes = ws_bytes;
  l.y = a;
  linear(l, stream);
  l.W = w2;
  l.y = g;
  linear(l, stream);
  swiglu(act, a, g, size_t(T) * size_t(F), a, stream);
}

}  // namespace qwen::cu
