// Shared helpers of the CUDA backend: error checks, activation-type conversions, 16-byte vector packing, warp/block
// reductions, cp.async, ceil_div and the DType -> C++ type dispatch used by every op entry.
// Activation types: float (F32), __half (F16), __nv_bfloat16 (BF16). All arithmetic is done in fp32.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "core/dtype.h"

// Throws std::runtime_error naming the error, the call and the place. Clears the (non-sticky) error state first so
// that the process can go on after e.g. an out-of-memory.
#define CUDA_CHECK(call) ::qwen::cu::check_cuda((call), #call, __FILE__, __LINE__)
// After a kernel launch: catches bad launch configurations (grid 0, too much shared memory, no kernel image ...).
#define CUDA_CHECK_LAUNCH(what) ::qwen::cu::check_cuda(cudaGetLastError(), what, __FILE__, __LINE__)

namespace qwen::cu {

inline void check_cuda(cudaError_t e, const char* call, const char* file, int line) {
  if (e == cudaSuccess) return;
  cudaGetLastError();
  const char* base = file;
  for (const char* p = file; *p; ++p)
    if (*p == '/') base = p + 1;
  throw std::runtime_error(std::string("CUDA error ") + std::to_string(int(e)) + " (" + cudaGetErrorName(e) +
                           "): " + cudaGetErrorString(e) + " in " + call + " at " + base + ":" + std::to_string(line));
}

template <typename A, typename B>
__host__ __device__ constexpr A ceil_div(A a, B b) {
  return (a + A(b) - 1) / A(b);
}

// ---- scalar conversions (device) ----
__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// x rounded to T and back: emulates the reference's intermediate roundings in model dtype (identity for float).
template <typename T>
__device__ __forceinline__ float round_to(float x) {
  return to_f32(from_f32<T>(x));
}

// ---- 16-byte vectors: kVec<T> elements of T in one uint4 ----
template <typename T>
constexpr int kVec = 16 / int(sizeof(T));

template <typename T>
__device__ __forceinline__ void unpack16(const uint4& v, float* f) {
  if constexpr (std::is_same_v<T, float>) {
    f[0] = __uint_as_float(v.x);
    f[1] = __uint_as_float(v.y);
    f[2] = __uint_as_float(v.z);
    f[3] = __uint_as_float(v.w);
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {  // element 2i is the low half (little endian)
      f[2 * i] = __uint_as_float(w[i] << 16);
      f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
  } else {
    static_assert(std::is_same_v<T, __half>, "unsupported activation type");
    const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      f[2 * i] = __half2float(__ushort_as_half(static_cast<unsigned short>(w[i] & 0xffffu)));
      f[2 * i + 1] = __half2float(__ushort_as_half(static_cast<unsigned short>(w[i] >> 16)));
    }
  }
}

template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return uint32_t(__bfloat16_as_ushort(__float2bfloat16_rn(lo))) |
           (uint32_t(__bfloat16_as_ushort(__float2bfloat16_rn(hi))) << 16);
  } else {
    static_assert(std::is_same_v<T, __half>, "pack2 is for 16-bit types");
    return uint32_t(__half_as_ushort(__float2half_rn(lo))) | (uint32_t(__half_as_ushort(__float2half_rn(hi))) << 16);
  }
}

// ---- reductions (all lanes / all threads get the result) ----
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
// blockDim.x must be a multiple of 32 (<= 1024) and every thread of the block must call it.
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float sh[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // sh may still be being read by a previous call
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  v = lane < nw ? sh[lane] : 0.f;
  return warp_sum(v);
}
__device__ __forceinline__ float block_max(float v) {
  __shared__ float sh[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  v = lane < nw ? sh[lane] : -INFINITY;
  return warp_max(v);
}

// ---- cp.async (sm_80+): 16 bytes global -> shared; src_bytes 0 writes zeros ----
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, int src_bytes) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// ---- programmatic dependent launch (PDL, sm_90+) ----
// A kernel launched by launch_pdl() may start while the previous kernel of the stream is still finishing (its CTAs
// fill the SMs the tail of the previous grid leaves idle). Its contract: it calls pdl_wait() before it reads anything
// an earlier kernel wrote and before it writes anything an earlier kernel reads; only loads of data no kernel of the
// step writes (the weights) may go before. pdl_wait() returns once the previous grid has completed and its memory
// is visible; since every PDL kernel waits, completion is transitive along the stream. pdl_launch_dependents() lets
// the NEXT kernel be scheduled early (it still waits for this one's completion before touching our outputs). Both are
// no-ops below sm_90 and when the kernel was launched without the attribute.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// ---- host helpers ----
inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// PDL for the decode-path kernels: QWEN_CUDA_PDL=1 and a device of compute capability >= 9.0 (read once per process,
// device 0, which is the backend's). Off by default until timed on a GPU (issue #4).
bool pdl_enabled();

// Launches kernel<<<grid, block, smem, stream>>>(args...) with programmatic stream serialization when pdl_enabled();
// the kernel must honour the pdl_wait() contract above.
template <typename... KArgs, typename... Args>
void launch_pdl(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, Args&&... args) {
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cfg.attrs = attr;
  cfg.numAttrs = pdl_enabled() ? 1 : 0;
  CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, static_cast<KArgs>(args)...));
}

// Calls f(T{}) with T the C++ type of activation dtype dt.
template <typename F>
void dispatch_act(DType dt, F&& f) {
  switch (dt) {
    case DType::F32: f(float{}); return;
    case DType::F16: f(__half{}); return;
    case DType::BF16: f(__nv_bfloat16{}); return;
  }
  throw std::invalid_argument("CUDA backend: unknown dtype code " + std::to_string(int(dt)));
}

}  // namespace qwen::cu
