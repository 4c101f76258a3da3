#include "core/dtype.h"

#include <cmath>

namespace qwen {

// IEEE binary16 <-> binary32 without F16C so the core stays portable; the CPU kernels use F16C directly.
float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
  if (exp == 0) {
    if (man == 0) {
      u = sign;
    } else {  // subnormal: renormalise
      int e = -1;
      do { man <<= 1; ++e; } while (!(man & 0x400));
      u = sign | uint32_t(127 - 15 - e) << 23 | (man & 0x3ff) << 13;
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | man << 13;
  } else {
    u = sign | (exp + 127 - 15) << 23 | man << 13;
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  uint16_t sign = uint16_t((u >> 16) & 0x8000);
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | 0x7e00;          // NaN
  if (a >= 0x477ff000u) return sign | 0x7c00;         // overflow (>= 65520 rounds to inf)
  if (a < 0x38800000u) {                               // subnormal or zero in f16
    float af;
    std::memcpy(&af, &a, 4);
    return sign | uint16_t(std::nearbyint(af * 16777216.0f));  // 2^24: units of the smallest subnormal
  }
  uint32_t r = a + 0xfffu + ((a >> 13) & 1u) - (112u << 23);  // rebias 127 -> 15, round to nearest even
  return sign | uint16_t(r >> 13);
}

}  // namespace qwen
