// The arithmetic of a greedy pick's penalties (PickSpec in backend.h), ONE definition for every backend's host side.
// It reproduces lib/sampling/repetitionPenalty.ts and presenceFrequencyPenalty.ts bit for bit: JS computes in double
// and the Float32Array stores the result rounded once to fp32.
#pragma once
#include <cstdint>

#include "core/backend.h"

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

}  // namespace qwen
