// Run-time choice of the CPU kernels' instruction set. The addon is compiled for x86-64-v3 (AVX2/FMA/F16C);
// AVX-512 kernels live in *_avx512.cc under `#pragma GCC target` and are used only when the CPU has them.
// QWEN_CPU_ISA=scalar|avx2|avx512 forces a lower level (tests run every level against the same reference).
#pragma once
#include <string>

namespace qwen {

enum class Isa { Scalar = 0, Avx2 = 1, Avx512 = 2 };

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false, avx512f = false, avx512bw = false, avx512vl = false,
       avx512bf16 = false, amx_bf16 = false;
};

const CpuFeatures& cpu_features();
Isa best_isa();                       // highest level this CPU supports (and this build contains)
Isa parse_isa(const std::string& s);  // "scalar" | "avx2" | "avx512"; throws on anything else
const char* isa_name(Isa isa);

}  // namespace qwen
