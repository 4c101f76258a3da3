// The arithmetic of a pick's penalties and of a sampled pick's weights (PickSpec in backend.h), ONE definition for
// every backend's host side (pick_exp_neg also for the CUDA device). It reproduces lib/sampling/repetitionPenalty.ts,
// presenceFrequencyPenalty.ts and candidates.ts expNeg bit for bit: JS computes in double and the Float32Array
// stores the result rounded once to fp32.
#pragma once
#include <cmath>
#include <cstdint>

#include "core/backend.h"
#include "core/pick_tables.h"

#ifdef __CUDACC__
#define QWEN_PICK_HD __host__ __device__
#else
#define QWEN_PICK_HD
#endif

namespace qwen {

inline bool pick_repetition_on(const PickSpec& s) { return s.repetition != 1.0; }
inline bool pick_openai_on(const PickSpec& s) { return s.presence != 0.0 || s.frequency != 0.0; }
// Eligible ids [0, limit) of a row of V logits.
inline int pick_limit(const PickSpec& s, int V) { return s.vocab_limit > 0 && s.vocab_limit < V ? s.vocab_limit : V; }

// HF: torch.where(score < 0, score * rp, score / rp); TS: L[id] = x < 0 ? x * rp : x / rp (double, stored as fp32).
inline float pick_repetition(float x, double rp) { return x < 0 ? float(double(x) * rp) : float(double(x) / rp); }

// TS: L[id] -= frequency * n + presence. The product is rounded before the sum (no fused multiply-add: the volatile
// keeps the compiler from contracting it), then x - delta in double, rounded to fp32.
inline double pick_openai_delta(const PickSpec& s, int32_t count) {
  volatile double fn = s.frequency * double(count);
  return fn + s.presence;
}
inline float pick_openai(float x, double delta) { return float(double(x) - delta); }

// ---- sampling (PickSpec::do_sample): lib/sampling/candidates.ts and topP.ts constants ----
constexpr int kPickExpSteps = QWEN_PICK_EXP_STEPS;  // expNeg's table: 64 steps per unit of s
constexpr int kPickExpMax = QWEN_PICK_EXP_MAX;      // e^-104 < 2^-149: past it a weight is exactly 0
constexpr double kPickHeadMin = 1.0 / 4096;         // HEAD_MIN: the head of a weighed row (weights >= this)
constexpr int kPickHeadCap = 2048;                  // HEAD_CAP: ids of the head listed at most
constexpr double kPickHeadS = QWEN_PICK_HEAD_S;     // topP.ts HEAD_S = Math.log(4096) as V8 computes it
constexpr int kPickTailS = 40;                      // topP.ts TAIL_S
constexpr double kPickSlack = 1e-6;                 // topP.ts SLACK
constexpr int kPickIdSpan = 1 << 20;                // the sampler's limit on token ids (candidates.ts ID_SPAN)
extern const double kPickExpTable[kPickExpSteps * kPickExpMax + 1];  // e^(-k/64): V8's Math.exp values

// candidates.ts expNeg: e^-s for s >= 0 by table + cubic correction; 0 for s >= 104 or NaN. Every product is rounded
// on its own, as JS evaluates it: the host code is compiled with contraction off (the pragmas below; callers in
// cpp/cpu/sample.cc too, so it inlines), the device code uses the _rn intrinsics, which nvcc never fuses.
// (QWEN_SIMT_EMU: cuda/test/simt_emu.h runs device code on the host and supplies __device__ and the _rn intrinsics.)
#if defined(__CUDACC__) || defined(QWEN_SIMT_EMU)
__device__ __forceinline__ double pick_exp_neg_dev(double s, const double* table) {
  if (!(s < kPickExpMax)) return 0.0;
  const double t = __dmul_rn(s, double(kPickExpSteps));
  const int k = int(t);  // t >= 0: JS's t | 0
  const double r = __dmul_rn(__dsub_rn(t, double(k)), 1.0 / kPickExpSteps);
  const double a = __dsub_rn(0.5, __dmul_rn(r, 1.0 / 6));
  const double b = __dsub_rn(1.0, __dmul_rn(r, a));
  return __dmul_rn(table[k], __dsub_rn(1.0, __dmul_rn(r, b)));
}
// pick_weight (below) on the device.
__device__ __forceinline__ float pick_weight_dev(float x, double m, double inv_t, const double* table) {
  if (m == INFINITY) return x == INFINITY ? 1.0f : 0.0f;
  return __double2float_rn(pick_exp_neg_dev(__dmul_rn(__dsub_rn(m, double(x)), inv_t), table));
}
#endif
#ifndef __CUDACC__
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#endif
inline double pick_exp_neg(double s) {
  if (!(s < kPickExpMax)) return 0.0;
  const double t = s * kPickExpSteps;
  const int k = int(t);  // t >= 0: JS's t | 0
  const double r = (t - k) * (1.0 / kPickExpSteps);
  return kPickExpTable[k] * (1 - r * (1 - r * (0.5 - r * (1.0 / 6))));
}

// The sampled weight of logit x for max m and 1 / temperature: candidates.ts fround(expNeg((m - x) * invT)); with
// m = +Infinity the +Infinity ids weigh 1, all others 0. NaN weighs 0.
inline float pick_weight(float x, double m, double inv_t) {
  if (m == INFINITY) return x == INFINITY ? 1.0f : 0.0f;
  return float(pick_exp_neg((m - double(x)) * inv_t));
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif
#endif

// temperature.ts: the weights take 1 / temperature (exactly 1 when the temperature is 1).
inline double pick_inv_t(const PickSpec& s) { return s.temperature != 1 ? 1 / s.temperature : 1.0; }

// What the boundary (lib/model checkPick, the addon) guarantees of a sampled spec; asserted again where it is used.
inline bool pick_sample_ok(const PickSpec& s) {
  return !s.do_sample || (s.temperature > 0 && std::isfinite(s.temperature) && s.top_k >= 0 && s.top_p > 0 &&
                          s.top_p <= 1 && s.u >= 0 && s.u < 1);
}

}  // namespace qwen
