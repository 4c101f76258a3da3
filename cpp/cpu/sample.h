// The sampled pick of one row on the CPU (PickSpec::do_sample; cpp/cpu/sample.cc mirrors lib/sampling).
#pragma once
#include <cstdint>
#include <vector>

#include "core/backend.h"

namespace qwen {

// Reused between rows of one worker: the kept-id list [n] and the probe's head weights.
struct SampleScratch {
  std::vector<int32_t> list;
  std::vector<double> head_w;
};

// L[n]: one row's PENALIZED logits over its eligible ids (rewritten in place: weights of the kept ids) -> out, as
// lib/sampling's Sampler.sample() with s's warpers and u: the same id, and the logprobs of logprobsOf (top_n >= 0).
// id -1 where the sampler throws "no usable logit".
void sample_row(float* L, int n, const PickSpec& s, PickResult& out, SampleScratch& scratch);

}  // namespace qwen
