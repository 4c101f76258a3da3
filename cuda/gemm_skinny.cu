// gemm_skinny (see gemm_skinny.cuh). Fragment layouts (flash_mma.cuh's header), g = lane / 4, c2 = 2 (lane % 4):
//   A = W tile rows n0 + 16w .. +15 (the warp's), k16 step kk: ldmatrix.x4 at row (lane & 15), col 16kk + 8(lane/16)
//   B = x rows (tokens) 16np .. +15, k16 step kk: ldmatrix.x4 at row 16np + 8(lane/16) + (lane & 7),
//       col 16kk + 8((lane/8) & 1) -> (b0, b1) of token tile 2np, (b0, b1) of token tile 2np + 1
//   C[16 x 8] of token tile j: c0, c1 = (W row g, tokens 8j + c2, +1); c2, c3 = (W row g + 8, same tokens)
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "common.cuh"
#include "gemm_skinny.cuh"
#include "mma.cuh"

namespace qwen::cu {

namespace {
constexpr int kSkBN = 64;                // W rows per CTA (4 warps x 16)
constexpr int kSkBK = 64;                // K per stage
constexpr int kSkLD = kSkBK + 8;         // smem row stride (elements): 144 B rows, conflict-free ldmatrix
constexpr int kSkStages = 4;
constexpr int kSkThreads = 128;
constexpr int kSkMinTilesPerSplit = 4;   // keep the ring's depth worth filling

template <typename T, int NT16>
struct SkCfg {
  static constexpr int TR = 16 * NT16;  // x rows held per stage (T rounded up to 16)
  static constexpr size_t kStage = size_t(kSkBN + TR) * kSkLD * sizeof(T);
  static constexpr size_t kSmem = kStage * kSkStages;  // 73,728 B at NT16 = 4, 46,080 B at 1
  static_assert((kSkBN * 8) % kSkThreads == 0 && (TR * 8) % kSkThreads == 0, "whole chunks per thread");
  static_assert(kStage % 128 == 0 && (kSkLD * sizeof(T)) % 16 == 0, "16-byte smem rows, 128-byte stages");
};

int sm_count() {
  static const int n = [] {
    int dev = 0, v = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
      cudaGetLastError();
      return 132;
    }
    return v > 0 ? v : 132;
  }();
  return n;
}

// Splits of K for N rows: aim at >= 4 CTAs per SM (bytes in flight everywhere, small tail), each split >= 4 tiles.
int want_splits(int N, int K) {
  const int nblk = ceil_div(N, kSkBN), ktiles = ceil_div(K, kSkBK);
  int s = ceil_div(4 * sm_count(), nblk);
  s = std::min(s, std::max(1, ktiles / kSkMinTilesPerSplit));
  const int per = ceil_div(ktiles, std::max(1, s));
  return ceil_div(ktiles, per);  // no empty split
}
}  // namespace

bool skinny_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("QWEN_GEMM_SKINNY");
    return e && std::strcmp(e, "1") == 0;
  }();
  return on;
}

int skinny_min_t() {
  static const int v = [] {
    const char* e = std::getenv("QWEN_SKINNY_MIN_T");
    const int n = e ? std::atoi(e) : 0;
    return n >= 1 && n <= kSkinnyMaxT ? n : 9;
  }();
  return v;
}

size_t gemm_skinny_workspace(int T, int N, int K) {
  const int s = want_splits(N, K);
  return s > 1 ? size_t(s) * size_t(T) * size_t(N) * sizeof(float) : 0;
}

// grid (ceil(N / 64), splits), block 128, dynamic smem SkCfg::kSmem. Split s covers k-tiles [s * per, (s+1) * per).
// splits == 1: y = acc (+ b) in OutT; else part[s][T][N] = acc (fp32), summed by skinny_reduce_kernel.
template <typename T, typename OutT, int NT16>
static __global__ void __launch_bounds__(kSkThreads)
    gemm_skinny_kernel(const T* __restrict__ x, const T* __restrict__ W, const T* __restrict__ b, OutT* __restrict__ y,
                       float* __restrict__ part, int T_, int N, int K, int per) {
  using C = SkCfg<T, NT16>;
  extern __shared__ __align__(128) unsigned char smem[];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int n0 = blockIdx.x * kSkBN, split = blockIdx.y;
  const int ktiles = ceil_div(K, kSkBK);
  const int kt0 = split * per, nk = min(ktiles, kt0 + per) - kt0;  // >= 1 (the host makes no empty split)
  auto Ws = [&](int s) { return reinterpret_cast<T*>(smem + size_t(s) * C::kStage); };
  auto Xs = [&](int s) { return Ws(s) + kSkBN * kSkLD; };

  // Chunks of 8 elements; outside N / T / K they are zero-filled (src-size 0, a valid address). K % 8 == 0, so a
  // chunk is wholly inside or outside K.
  auto load_w = [&](int kt, int s) {
    T* const dst = Ws(s);
    const int k0 = kt * kSkBK;
#pragma unroll
    for (int i = 0; i < kSkBN * 8 / kSkThreads; ++i) {
      const int idx = tid + i * kSkThreads, r = idx >> 3, c = (idx & 7) * 8;
      const bool ok = n0 + r < N && k0 + c < K;
      cp_async16(dst + r * kSkLD + c, ok ? W + int64_t(n0 + r) * K + k0 + c : W, ok ? 16 : 0);
    }
  };
  auto load_x = [&](int kt, int s) {
    T* const dst = Xs(s);
    const int k0 = kt * kSkBK;
#pragma unroll
    for (int i = 0; i < C::TR * 8 / kSkThreads; ++i) {
      const int idx = tid + i * kSkThreads, r = idx >> 3, c = (idx & 7) * 8;
      const bool ok = r < T_ && k0 + c < K;
      cp_async16(dst + r * kSkLD + c, ok ? x + int64_t(r) * K + k0 + c : x, ok ? 16 : 0);
    }
  };

  // Prologue: the weights of the first stages go out before pdl_wait() (no kernel of a step writes weights); x is
  // the previous kernel's output. Group s = {all W copies issued so far (s = 0 only), x of stage s}: group kt is
  // complete -> stage kt's W and x have landed.
#pragma unroll
  for (int s = 0; s < kSkStages - 1; ++s)
    if (s < nk) load_w(kt0 + s, s);
  pdl_wait();
  pdl_launch_dependents();
#pragma unroll
  for (int s = 0; s < kSkStages - 1; ++s) {
    if (s < nk) load_x(kt0 + s, s);
    cp_async_commit();
  }

  float acc[2 * NT16][4];
#pragma unroll
  for (int j = 0; j < 2 * NT16; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;

  for (int it = 0; it < nk; ++it) {
    cp_async_wait<kSkStages - 2>();  // groups 0..it done: stage it % S is in smem
    __syncthreads();                 // ... for every thread's copies; and stage (it - 1) % S is free to refill
    const int nxt = it + kSkStages - 1;
    if (nxt < nk) {
      load_w(kt0 + nxt, nxt % kSkStages);
      load_x(kt0 + nxt, nxt % kSkStages);
    }
    cp_async_commit();  // possibly empty: keeps one group per iteration
    const T* const ws = Ws(it % kSkStages);
    const T* const xs = Xs(it % kSkStages);
#pragma unroll
    for (int kk = 0; kk < kSkBK / 16; ++kk) {
      uint32_t a[4];
      ldsm_x4(a, ws + (warp * 16 + (lane & 15)) * kSkLD + kk * 16 + (lane >> 4) * 8);
#pragma unroll
      for (int np = 0; np < NT16; ++np) {
        uint32_t bf[4];
        ldsm_x4(bf, xs + (np * 16 + (lane >> 4) * 8 + (lane & 7)) * kSkLD + kk * 16 + ((lane >> 3) & 1) * 8);
        mma16816<T>(acc[2 * np], a, bf[0], bf[1]);
        mma16816<T>(acc[2 * np + 1], a, bf[2], bf[3]);
      }
    }
  }
  cp_async_wait<0>();  // only empty groups can be pending; leave none behind

  const int g = lane >> 2, c2 = (lane & 3) * 2;
  const int na = n0 + warp * 16 + g, nb = na + 8;  // the lane's two W rows (outputs)
  const bool direct = gridDim.y == 1;              // one split: y = acc (+ b) here, no partials
  const float ba = direct && b && na < N ? to_f32(b[na]) : 0.f, bb = direct && b && nb < N ? to_f32(b[nb]) : 0.f;
  float* const P = part + int64_t(split) * T_ * N;  // (unused when direct; part may be null then)
  auto store = [&](int t, int n, float v, float bias) {
    if (n >= N) return;
    if (direct)
      y[int64_t(t) * N + n] = from_f32<OutT>(v + bias);
    else
      P[int64_t(t) * N + n] = v;
  };
#pragma unroll
  for (int j = 0; j < 2 * NT16; ++j)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int t = 8 * j + c2 + e;
      if (t >= T_) continue;
      store(t, na, acc[j][e], ba);
      store(t, nb, acc[j][2 + e], bb);
    }
}

// y[i] = sum_s part[s][i] (+ b[i % N]), rounded once. grid-stride over T * N.
template <typename T, typename OutT>
static __global__ void skinny_reduce_kernel(const float* __restrict__ part, const T* __restrict__ b,
                                            OutT* __restrict__ y, int T_, int N, int splits) {
  pdl_wait();  // the partials of the GEMM just before
  pdl_launch_dependents();
  const int64_t total = int64_t(T_) * N;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    float s = 0.f;
    for (int k = 0; k < splits; ++k) s += part[k * total + i];
    if (b) s += to_f32(b[i % N]);
    y[i] = from_f32<OutT>(s);
  }
}

template <typename T, typename OutT, int NT16>
static void launch_skinny(const T* x, const T* W, const T* b, OutT* y, int T_, int N, int K, float* ws,
                          size_t ws_bytes, cudaStream_t stream) {
  using C = SkCfg<T, NT16>;
  // Once per instantiation (the attribute is per function and device; device 0 only); a thread-safe static.
  static const bool attr = [] {
    CUDA_CHECK(cudaFuncSetAttribute(gemm_skinny_kernel<T, OutT, NT16>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    int(C::kSmem)));
    return true;
  }();
  (void)attr;
  const int ktiles = ceil_div(K, kSkBK);
  int splits = want_splits(N, K);
  const size_t cap = ws ? ws_bytes / (size_t(T_) * size_t(N) * sizeof(float)) : 0;  // partials the workspace holds
  if (size_t(splits) > cap) splits = int(cap);
  if (splits < 2) splits = 1;
  const int per = ceil_div(ktiles, splits);
  splits = ceil_div(ktiles, per);  // no empty split (never more than before)
  const dim3 grid(ceil_div(N, kSkBN), splits);
  launch_pdl(gemm_skinny_kernel<T, OutT, NT16>, grid, dim3(kSkThreads), C::kSmem, stream, x, W, b, y, ws, T_, N, K,
             per);
  if (splits > 1) {
    const int64_t total = int64_t(T_) * N;
    const int blocks = int(std::min<int64_t>(ceil_div(total, int64_t(256)), int64_t(sm_count()) * 8));
    launch_pdl(skinny_reduce_kernel<T, OutT>, dim3(blocks), dim3(256), 0, stream, static_cast<const float*>(ws), b, y,
               T_, N, splits);
  }
}

void gemm_skinny(DType act, DType out, const void* x, const void* W, const void* b, void* y, int T, int N, int K,
                 void* ws, size_t ws_bytes, cudaStream_t stream) {
  if (T <= 0 || N <= 0) return;
  if (T > kSkinnyMaxT || K <= 0 || K % 8 != 0 || !aligned16(x) || !aligned16(W))
    throw std::invalid_argument("gemm_skinny: needs 1 <= T <= 64, K % 8 == 0 and 16-byte aligned x, W (T=" +
                                std::to_string(T) + " K=" + std::to_string(K) + ")");
  auto run = [&](auto tag, auto otag) {
    using E = decltype(tag);
    using O = decltype(otag);
    const E* xe = static_cast<const E*>(x);
    const E* we = static_cast<const E*>(W);
    const E* be = static_cast<const E*>(b);
    O* yo = static_cast<O*>(y);
    float* wsf = static_cast<float*>(ws);
    switch (ceil_div(T, 16)) {
      case 1: launch_skinny<E, O, 1>(xe, we, be, yo, T, N, K, wsf, ws_bytes, stream); break;
      case 2: launch_skinny<E, O, 2>(xe, we, be, yo, T, N, K, wsf, ws_bytes, stream); break;
      case 3: launch_skinny<E, O, 3>(xe, we, be, yo, T, N, K, wsf, ws_bytes, stream); break;
      default: launch_skinny<E, O, 4>(xe, we, be, yo, T, N, K, wsf, ws_bytes, stream); break;
    }
  };
  if (out != act && out != DType::F32) throw std::invalid_argument("gemm_skinny: output dtype must be act or F32");
  if (act == DType::BF16) {
    if (out == DType::F32) run(__nv_bfloat16{}, float{});
    else run(__nv_bfloat16{}, __nv_bfloat16{});
  } else if (act == DType::F16) {
    if (out == DType::F32) run(__half{}, float{});
    else run(__half{}, __half{});
  } else {
    throw std::invalid_argument("gemm_skinny: bf16 or fp16 activations only");
  }
}

}  // namespace qwen::cu
