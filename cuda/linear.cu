// linear: y[T,N] = x[T,K] . W[N,K]^T (+ b). See linear.cuh for the path choice.
//
// GEMV (decode): gemv.cuh's gemv_vec_kernel, a warp per output row streaming W in 16-byte chunks (target >= 85 % of
// ~3 TB/s on H100 for the 4096/11008/12288/151936-row shapes); gemv_scalar_kernel below for odd K / alignment.
//
// WMMA GEMM (prefill without cuBLAS): block tile 64 (tokens) x 128 (outputs) x 32 (K), 8 warps as 2 x 4, each warp a
// 32 x 32 tile = 2 x 2 fragments of 16 x 16. A and B tiles go global -> shared with cp.async (16 B, zero-filled
// outside M/N/K), double buffered. Epilogue per fragment through a per-warp 16 x 16 fp32 staging tile (bias, cast,
// bounds). Expected well below cuBLAS (~30-50 % of the bf16 tensor peak); cuBLAS is the fast path for T >= 64.
//
// FMA GEMM: 64 x 64 tile, BK 16, 256 threads each computing a 4 x 4 strided sub-tile; fp32 shared tiles; any shape.
#include <mma.h>

#include <cstdlib>

#include "common.cuh"
#include "gemm_skinny.cuh"
#include "gemv.cuh"
#include "linear.cuh"

namespace qwen::cu {

// ------------------------------------------------------------------------------------------------ GEMV, T <= 8
// Any K / alignment, T <= 8 (runtime). grid (ceil(N/8)), block 256.
template <typename T, typename OutT>
static __global__ void __launch_bounds__(kGemvWarps * 32)
    gemv_scalar_kernel(const T* __restrict__ x, const T* __restrict__ W, const T* __restrict__ b,
                       OutT* __restrict__ y, int T_, int N, int K) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int n = blockIdx.x * kGemvWarps + warp;
  if (n >= N) return;
  const T* wr = W + int64_t(n) * K;
  float acc[kGemvMaxT];
#pragma unroll
  for (int t = 0; t < kGemvMaxT; ++t) acc[t] = 0.f;
  for (int k = lane; k < K; k += 32) {
    const float w = to_f32(wr[k]);
#pragma unroll
    for (int t = 0; t < kGemvMaxT; ++t)
      if (t < T_) acc[t] = fmaf(w, to_f32(x[int64_t(t) * K + k]), acc[t]);
  }
#pragma unroll
  for (int t = 0; t < kGemvMaxT; ++t) acc[t] = warp_sum(acc[t]);
  const float bias = b ? to_f32(b[n]) : 0.f;
#pragma unroll
  for (int t = 0; t < kGemvMaxT; ++t)
    if (t < T_ && lane == t) y[int64_t(t) * N + n] = from_f32<OutT>(acc[t] + bias);
}

template <typename T, typename OutT, GemvIO IO = GemvIO::Plain>
static void launch_gemv(const T* x, const T* W, const T* b, OutT* y, int T_, int N, int K, bool vec,
                        cudaStream_t stream, const T* g = nullptr, float eps = 0.f) {
  const dim3 grid(ceil_div(N, kGemvWarps)), block(kGemvWarps * 32);
  if (!vec) {
    if constexpr (IO == GemvIO::Plain) {
      gemv_scalar_kernel<T, OutT><<<grid, block, 0, stream>>>(x, W, b, y, T_, N, K);
      CUDA_CHECK_LAUNCH("gemv_scalar_kernel");
      return;
    }
    throw std::logic_error("gemv: the folded GEMVs need the 16-byte path");
  }
  switch (T_) {
#define QWEN_GEMV_CASE(nt) \
  case nt: launch_pdl(gemv_vec_kernel<T, OutT, nt, IO>, grid, block, 0, stream, x, W, b, y, N, K, g, eps); break;
    QWEN_GEMV_CASE(1)
    QWEN_GEMV_CASE(2)
    QWEN_GEMV_CASE(3)
    QWEN_GEMV_CASE(4)
    QWEN_GEMV_CASE(5)
    QWEN_GEMV_CASE(6)
    QWEN_GEMV_CASE(7)
    QWEN_GEMV_CASE(8)
#undef QWEN_GEMV_CASE
    default: throw std::logic_error("gemv: T out of range");
  }
  CUDA_CHECK_LAUNCH("gemv_vec_kernel");
}

// ------------------------------------------------------------------------------------------------ WMMA GEMM
namespace wmma = nvcuda::wmma;
constexpr int kGM = 64, kGN = 128, kGK = 32;
constexpr int kGLd = kGK + 8;  // shared row stride in elements (80 B: 16-byte aligned rows, fewer bank conflicts)

// Issues the cp.async copies of k-tile kt into buffer `buf`: A tile [64][32] of x (1 chunk of 8 per thread), B tile
// [128][32] of W (2 chunks per thread). Chunks outside M / N / K are zero-filled (src_bytes 0); K % 8 == 0, so a
// chunk is either fully inside K or fully outside.
template <typename T>
__device__ __forceinline__ void gemm_load_tile(const T* __restrict__ x, const T* __restrict__ W, int M, int N, int K,
                                               int m0, int n0, int kt, T (*As)[kGLd], T (*Bs)[kGLd]) {
  const int tid = threadIdx.x;
  const int k0 = kt * kGK;
  {
    const int row = tid >> 2, c = (tid & 3) * 8;
    const int m = m0 + row, k = k0 + c;
    const bool ok = m < M && k < K;
    cp_async16(&As[row][c], ok ? x + int64_t(m) * K + k : x, ok ? 16 : 0);
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int idx = tid + i * 256;
    const int row = idx >> 2, c = (idx & 3) * 8;
    const int n = n0 + row, k = k0 + c;
    const bool ok = n < N && k < K;
    cp_async16(&Bs[row][c], ok ? W + int64_t(n) * K + k : W, ok ? 16 : 0);
  }
}

// grid (ceil(N/128), ceil(M/64)), block 256. T is __half or __nv_bfloat16; K % 8 == 0; x, W 16-byte aligned.
template <typename T, typename OutT>
static __global__ void __launch_bounds__(256)
    gemm_wmma_kernel(const T* __restrict__ x, const T* __restrict__ W, const T* __restrict__ b, OutT* __restrict__ y,
                     int M, int N, int K) {
  __shared__ __align__(128) T As[2][kGM][kGLd];
  __shared__ __align__(128) T Bs[2][kGN][kGLd];
  __shared__ __align__(128) float Cs[8][16 * 16];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int m0 = blockIdx.y * kGM, n0 = blockIdx.x * kGN;
  const int wm = (warp >> 2) * 32, wn = (warp & 3) * 32;  // this warp's 32 x 32 sub-tile

  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.f);

  const int nk = ceil_div(K, kGK);
  gemm_load_tile<T>(x, W, M, N, K, m0, n0, 0, As[0], Bs[0]);
  cp_async_commit();
  for (int kt = 0; kt < nk; ++kt) {
    if (kt + 1 < nk) gemm_load_tile<T>(x, W, M, N, K, m0, n0, kt + 1, As[(kt + 1) & 1], Bs[(kt + 1) & 1]);
    cp_async_commit();   // possibly empty group: keeps the group count uniform
    cp_async_wait<1>();  // everything but the newest group has landed: tile kt is in buffer kt & 1
    __syncthreads();
    const int buf = kt & 1;
#pragma unroll
    for (int kk = 0; kk < kGK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(fa[i], &As[buf][wm + i * 16][kk], kGLd);
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(fb[j], &Bs[buf][wn + j * 16][kk], kGLd);
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
    }
    __syncthreads();  // buffer kt & 1 is refilled by the next iteration's load of tile kt + 2
  }

  float* cs = Cs[warp];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      wmma::store_matrix_sync(cs, acc[i][j], 16, wmma::mem_row_major);
      __syncwarp();
      for (int e = lane; e < 256; e += 32) {
        const int r = e >> 4, c = e & 15;
        const int m = m0 + wm + i * 16 + r, n = n0 + wn + j * 16 + c;
        if (m < M && n < N) y[int64_t(m) * N + n] = from_f32<OutT>(cs[e] + (b ? to_f32(b[n]) : 0.f));
      }
      __syncwarp();
    }
}

// ------------------------------------------------------------------------------------------------ FMA GEMM
// grid (ceil(N/64), ceil(M/64)), block 256 = 16 x 16; thread (tx, ty) owns rows ty + 16i and cols tx + 16j.
template <typename T, typename OutT>
static __global__ void __launch_bounds__(256)
    gemm_fma_kernel(const T* __restrict__ x, const T* __restrict__ W, const T* __restrict__ b, OutT* __restrict__ y,
                    int M, int N, int K) {
  __shared__ float As[16][64 + 4];  // As[k][m]
  __shared__ float Bs[16][64 + 4];  // Bs[k][n]
  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
  const int m0 = blockIdx.y * 64, n0 = blockIdx.x * 64;
  float acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.f;
  for (int k0 = 0; k0 < K; k0 += 16) {
    for (int e = threadIdx.x; e < 64 * 16; e += 256) {
      const int r = e >> 4, k = e & 15;
      const int gk = k0 + k;
      As[k][r] = (m0 + r < M && gk < K) ? to_f32(x[int64_t(m0 + r) * K + gk]) : 0.f;
      Bs[k][r] = (n0 + r < N && gk < K) ? to_f32(W[int64_t(n0 + r) * K + gk]) : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < 16; ++k) {
      float av[4], bv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) av[i] = As[k][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; ++j) bv[j] = Bs[k][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int m = m0 + ty + 16 * i, n = n0 + tx + 16 * j;
      if (m < M && n < N) y[int64_t(m) * N + n] = from_f32<OutT>(acc[i][j] + (b ? to_f32(b[n]) : 0.f));
    }
}

// ------------------------------------------------------------------------------------------------ cuBLAS
// y[m, n] = b[n]: the bias enters the GEMM through beta = 1 (one rounding, as a fused bias epilogue).
template <typename T, typename OutT>
static __global__ void bias_fill_kernel(const T* __restrict__ b, OutT* __restrict__ y, int M, int N) {
  const size_t total = size_t(M) * N, stride = size_t(gridDim.x) * blockDim.x;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride)
    y[i] = from_f32<OutT>(to_f32(b[i % size_t(N)]));
}

template <typename T>
constexpr cudaDataType_t cuda_type() {
  if constexpr (std::is_same_v<T, float>) return CUDA_R_32F;
  if constexpr (std::is_same_v<T, __half>) return CUDA_R_16F;
  return CUDA_R_16BF;
}

template <typename T, typename OutT>
static void run_cublas(const LinearArgs& a, cudaStream_t stream) {
  const cublas::Api& api = cublas::api();
  float alpha = 1.f, beta = 0.f;
  if (a.b) {
    const size_t blocks = ceil_div<size_t>(size_t(a.T) * a.N, 256);
    bias_fill_kernel<T, OutT><<<unsigned(blocks < 8192 ? blocks : 8192), 256, 0, stream>>>(
        static_cast<const T*>(a.b), static_cast<OutT*>(a.y), a.T, a.N);
    CUDA_CHECK_LAUNCH("bias_fill_kernel");
    beta = 1.f;
  }
  // Column-major view: y^T [N x T] (ld N) = op(W)[N x K] . x^T [K x T], W stored as K x N col-major (ld K).
  const cublas::Status st = api.gemm_ex(a.cublas, cublas::OP_T, cublas::OP_N, a.N, a.T, a.K, &alpha, a.W,
                                        cuda_type<T>(), a.K, a.x, cuda_type<T>(), a.K, &beta, a.y,
                                        cuda_type<OutT>(), a.N, cublas::COMPUTE_32F, cublas::GEMM_DEFAULT);
  if (st != 0)
    throw std::runtime_error("cublasGemmEx failed with status " + std::to_string(st) + " (T=" + std::to_string(a.T) +
                             " N=" + std::to_string(a.N) + " K=" + std::to_string(a.K) + ")");
}

// ------------------------------------------------------------------------------------------------ entry
enum class Path { Gemv, GemvScalar, Skinny, Cublas, Wmma, Fma };

// QWEN_CUBLAS_MIN_T overrides kCublasMinT (read once), to time the 9 <= T < 64 band (decode of 9-63 sequences) with
// cuBLAS instead of the WMMA GEMM: on the H100, 16 concurrent decoders took 19 ms per native step, 64 took 11 ms.
static int cublas_min_t() {
  static const int v = [] {
    const char* e = std::getenv("QWEN_CUBLAS_MIN_T");
    const int n = e ? std::atoi(e) : 0;
    return n > kGemvMaxT ? n : kCublasMinT;
  }();
  return v;
}

bool linear_takes_skinny(const LinearArgs& a) {
  return skinny_takes_rows(a.T) && a.act != DType::F32 && a.K % 8 == 0 && aligned16(a.x) && aligned16(a.W);
}

static Path choose(const LinearArgs& a) {
  const int vec = 16 / int(dtype_size(a.act));
  const bool skinny = linear_takes_skinny(a);
  if (a.T <= kGemvMaxT && !skinny)
    return (a.K % vec == 0 && aligned16(a.x) && aligned16(a.W)) ? Path::Gemv : Path::GemvScalar;
  if (skinny) return Path::Skinny;
  if (a.cublas && a.T >= cublas_min_t() && a.N >= kCublasMinNK && a.K >= kCublasMinNK && cublas::api().ok)
    return Path::Cublas;
  if (a.act != DType::F32 && a.K % 8 == 0 && aligned16(a.x) && aligned16(a.W)) return Path::Wmma;
  return Path::Fma;
}

const char* linear_path(const LinearArgs& a) {
  switch (choose(a)) {
    case Path::Gemv: return "gemv";
    case Path::GemvScalar: return "gemv_scalar";
    case Path::Skinny: return "skinny";
    case Path::Cublas: return "cublas";
    case Path::Wmma: return "wmma";
    case Path::Fma: return "fma";
  }
  return "?";
}

template <typename T, typename OutT>
static void run_linear(const LinearArgs& a, Path path, cudaStream_t stream) {
  const T* x = static_cast<const T*>(a.x);
  const T* W = static_cast<const T*>(a.W);
  const T* b = static_cast<const T*>(a.b);
  OutT* y = static_cast<OutT*>(a.y);
  switch (path) {
    case Path::Gemv:
    case Path::GemvScalar: launch_gemv<T, OutT>(x, W, b, y, a.T, a.N, a.K, path == Path::Gemv, stream); return;
    case Path::Skinny:
      gemm_skinny(a.act, a.out, a.x, a.W, a.b, a.y, a.T, a.N, a.K, a.ws, a.ws_bytes, stream);
      return;
    case Path::Cublas: run_cublas<T, OutT>(a, stream); return;
    case Path::Wmma:
      if constexpr (!std::is_same_v<T, float>) {
        const dim3 grid(ceil_div(a.N, kGN), ceil_div(a.T, kGM));
        gemm_wmma_kernel<T, OutT><<<grid, 256, 0, stream>>>(x, W, b, y, a.T, a.N, a.K);
        CUDA_CHECK_LAUNCH("gemm_wmma_kernel");
        return;
      }
      break;
    case Path::Fma: {
      const dim3 grid(ceil_div(a.N, 64), ceil_div(a.T, 64));
      gemm_fma_kernel<T, OutT><<<grid, 256, 0, stream>>>(x, W, b, y, a.T, a.N, a.K);
      CUDA_CHECK_LAUNCH("gemm_fma_kernel");
      return;
    }
  }
  throw std::logic_error("linear: no kernel for this path");
}

void linear(const LinearArgs& a, cudaStream_t stream) {
  if (a.T <= 0 || a.N <= 0) return;
  if (a.K <= 0) throw std::invalid_argument("linear: K must be > 0");
  if (a.out != a.act && a.out != DType::F32) throw std::invalid_argument("linear: output dtype must be act or F32");
  if (a.T > 65535 * kGM) throw std::invalid_argument("linear: T too large");
  const Path path = choose(a);
  dispatch_act(a.act, [&](auto tag) {
    using T = decltype(tag);
    if (a.out == a.act)
      run_linear<T, T>(a, path, stream);
    else
      run_linear<T, float>(a, path, stream);
  });
}


bool gemv_folds(const LinearArgs& a, const void* g) {
  return a.T > 0 && a.N > 0 && a.K > 0 && a.act != DType::F32 && a.out == a.act && choose(a) == Path::Gemv &&
         (!g || aligned16(g));
}

template <GemvIO IO>
static void gemv_fold(const LinearArgs& a, const void* g, float eps, cudaStream_t stream) {
  if (!gemv_folds(a, g)) throw std::logic_error("linear: the folded GEMV does not apply here (gemv_folds)");
  dispatch_act(a.act, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (sizeof(T) == 2)
      launch_gemv<T, T, IO>(static_cast<const T*>(a.x), static_cast<const T*>(a.W), static_cast<const T*>(a.b),
                            static_cast<T*>(a.y), a.T, a.N, a.K, true, stream, static_cast<const T*>(g), eps);
  });
}

void linear_norm(const LinearArgs& a, const void* g, float eps, cudaStream_t stream) {
  if (!g) throw std::invalid_argument("linear_norm: no gain");
  gemv_fold<GemvIO::Norm>(a, g, eps, stream);
}
void linear_add(const LinearArgs& a, cudaStream_t stream) { gemv_fold<GemvIO::Add>(a, nullptr, 0.f, stream); }

}  // namespace qwen::cu
