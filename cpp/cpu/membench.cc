// DRAM read bandwidth as the decode kernels see it: each thread streams its share of a buffer far larger than the
// last-level cache with vector loads. Used by the CPU benchmark to put decode GB/s next to the machine's limit.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#if defined(__x86_64__) && defined(__AVX2__)
#include <immintrin.h>
#endif

namespace qwen {

double read_bandwidth_gbs(size_t bytes, int threads) {
  if (threads < 1) threads = 1;
  bytes = bytes / (64 * size_t(threads)) * 64 * size_t(threads);
  char* buf = static_cast<char*>(std::aligned_alloc(64, bytes));
  if (!buf) return 0.0;
  std::memset(buf, 1, bytes);
  const size_t share = bytes / size_t(threads);
  std::vector<float> sinks(static_cast<size_t>(threads));
  double best = 0.0;
  for (int rep = 0; rep < 3; ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t) {
      ts.emplace_back([&, t] {
        const char* p = buf + size_t(t) * share;
#if defined(__x86_64__) && defined(__AVX2__)
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (size_t i = 0; i < share; i += 128) {
          a0 = _mm256_add_ps(a0, _mm256_load_ps(reinterpret_cast<const float*>(p + i)));
          a1 = _mm256_add_ps(a1, _mm256_load_ps(reinterpret_cast<const float*>(p + i + 32)));
          a2 = _mm256_add_ps(a2, _mm256_load_ps(reinterpret_cast<const float*>(p + i + 64)));
          a3 = _mm256_add_ps(a3, _mm256_load_ps(reinterpret_cast<const float*>(p + i + 96)));
        }
        __m256 s = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
        float out[8];
        _mm256_storeu_ps(out, s);
        sinks[size_t(t)] = out[0];
#else
        float s = 0;
        for (size_t i = 0; i < share; i += 64) s += float(p[i]);
        sinks[size_t(t)] = s;
#endif
      });
    }
    for (auto& th : ts) th.join();
    std::chrono::duration<double> dt = std::chrono::steady_clock::now() - t0;
    best = std::max(best, double(bytes) / dt.count() / 1e9);
  }
  std::free(buf);
  volatile float keep = sinks[0];
  (void)keep;
  return best;
}

}  // namespace qwen
