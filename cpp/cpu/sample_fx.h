// The host reference of the fixed-point sampled pick (cpp/core/sample_fx.h explains it): what the CUDA device draw
// (cuda/sample_fx.cu) must equal bit for bit, and what test/sample-fx.test.ts compares with lib/sampling.
#pragma once
#include "core/backend.h"
#include "core/sample_fx.h"

namespace qwen {

// L[n]: one row's penalized logits; W[n]: scratch, left holding every id's weight.
void sample_fx_row(const float* L, float* W, const FxRowIn& in, FxOut& out);
// The row's inputs as the device gets them (max and argmax of L, 1 / temperature as temperature.ts computes it).
FxRowIn fx_row_in(const float* L, int n, const PickSpec& s);
// FxOut -> PickResult: logprobs log(w) - log(z * 2^-43) in double (top_n < 0: the id only).
void fx_result(const FxOut& o, int top_n, PickResult& out);

}  // namespace qwen
