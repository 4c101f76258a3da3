// Runs block-collective CUDA device code on the host, for checks without a GPU (cuda/test/sample_fx_emu.cc): one
// std::thread per CUDA thread of ONE block, a std::barrier for __syncthreads, one per warp for the shuffles (every lane
// of a warp must call them together, as full-mask shuffles require on the device), and host atomics. Only the builtins
// that code uses are defined. What it cannot show: the device memory model, real lockstep execution, the _rn
// intrinsics' rounding (here: host double arithmetic with contraction off, the same IEEE operations).
// Include it before any header with device code.
#pragma once
#define QWEN_SIMT_EMU 1
#ifndef QWEN_SIMT_CUDA_HEADERS  // simt_cuda.h included the CUDA headers, which define these for host compilers
#define __device__
#define __host__
#define __forceinline__ inline
#endif

#include <algorithm>
#include <barrier>
#include <cstring>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#endif

struct SimtDim {
  unsigned x = 0, y = 0, z = 0;
};
inline thread_local SimtDim threadIdx;

namespace simt {
struct Block {
  std::barrier<>* all = nullptr;
  std::vector<std::unique_ptr<std::barrier<>>> warp;
  std::vector<uint64_t> lanes;  // [warps][32] shuffle exchange
};
inline Block* g_block = nullptr;

template <class T>
T shuffle(T v, int (*src)(int lane, int arg), int arg) {
  static_assert(sizeof(T) <= sizeof(uint64_t), "shuffled values fit 64 bits");
  const int lane = int(threadIdx.x & 31), w = int(threadIdx.x >> 5);
  uint64_t* x = g_block->lanes.data() + size_t(w) * 32;
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof v);
  x[lane] = bits;
  g_block->warp[size_t(w)]->arrive_and_wait();
  const int from = src(lane, arg);
  T r = v;
  if (from >= 0) std::memcpy(&r, &x[from], sizeof r);
  g_block->warp[size_t(w)]->arrive_and_wait();  // nobody overwrites x before every lane read it
  return r;
}

// body() on `threads` host threads (a multiple of 32) as one block: threadIdx.x = 0 .. threads - 1.
inline void run_block(int threads, const std::function<void()>& body) {
  Block b;
  std::barrier<> all(threads);
  b.all = &all;
  for (int w = 0; w < threads / 32; ++w) b.warp.emplace_back(new std::barrier<>(32));
  b.lanes.assign(size_t(threads), 0);
  g_block = &b;
  std::vector<std::thread> th;
  th.reserve(size_t(threads));
  for (int t = 0; t < threads; ++t)
    th.emplace_back([t, &body] {
      threadIdx.x = unsigned(t);
      body();
    });
  for (auto& t : th) t.join();
  g_block = nullptr;
}
}  // namespace simt

inline void __syncthreads() { simt::g_block->all->arrive_and_wait(); }
template <class T>
T __shfl_xor_sync(unsigned, T v, int o) {
  return simt::shuffle(v, [](int lane, int arg) { return lane ^ arg; }, o);
}
template <class T>
T __shfl_up_sync(unsigned, T v, int o) {
  return simt::shuffle(v, [](int lane, int arg) { return lane >= arg ? lane - arg : -1; }, o);
}
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}
inline unsigned atomicAdd(unsigned* p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline int atomicAdd(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline float __double2float_rn(double a) { return float(a); }
using std::min;
