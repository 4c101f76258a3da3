#include "cpu/isa.h"

#include <cstdlib>
#include <stdexcept>

namespace qwen {

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = [] {
    CpuFeatures c;
#if defined(__x86_64__)
    __builtin_cpu_init();
    c.avx2 = __builtin_cpu_supports("avx2");
    c.fma = __builtin_cpu_supports("fma");
    c.avx512f = __builtin_cpu_supports("avx512f");
    c.avx512bw = __builtin_cpu_supports("avx512bw");
    c.avx512vl = __builtin_cpu_supports("avx512vl");
    c.avx512bf16 = __builtin_cpu_supports("avx512bf16");
    unsigned a, b, cx, d;
    __asm__("cpuid" : "=a"(a), "=b"(b), "=c"(cx), "=d"(d) : "a"(1), "c"(0));
    c.f16c = (cx >> 29) & 1;
    __asm__("cpuid" : "=a"(a), "=b"(b), "=c"(cx), "=d"(d) : "a"(7), "c"(0));
    c.amx_bf16 = (d >> 22) & 1;
#endif
    return c;
  }();
  return f;
}

static Isa detected() {
  const CpuFeatures& f = cpu_features();
#if defined(__x86_64__) && defined(__AVX2__)
  if (f.avx512f && f.avx512bw && f.avx512vl && f.f16c) return Isa::Avx512;
  if (f.avx2 && f.fma && f.f16c) return Isa::Avx2;
#endif
  (void)f;
  return Isa::Scalar;
}

Isa best_isa() {
  static const Isa isa = [] {
    Isa d = detected();
    if (const char* env = std::getenv("QWEN_CPU_ISA")) {
      Isa want = parse_isa(env);
      if (int(want) < int(d)) d = want;
    }
    return d;
  }();
  return isa;
}

Isa parse_isa(const std::string& s) {
  if (s == "scalar") return Isa::Scalar;
  if (s == "avx2") return Isa::Avx2;
  if (s == "avx512") return Isa::Avx512;
  throw std::runtime_error("unknown CPU ISA '" + s + "' (expected scalar, avx2 or avx512)");
}

const char* isa_name(Isa isa) {
  return isa == Isa::Avx512 ? "avx512" : isa == Isa::Avx2 ? "avx2" : "scalar";
}

}  // namespace qwen
