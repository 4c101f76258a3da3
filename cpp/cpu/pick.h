// The CPU backend's greedy pick (Backend::final_pick / pick_logits after the lm_head): penalties, argmax and logprobs
// of host fp32 logits, parallel over (row, chunk of ids) tasks.
#pragma once
#include "core/backend.h"
#include "cpu/thread_pool.h"

namespace qwen {

// logits[R,V] (rewritten in place: the penalized values) -> out[R]; see PickSpec / PickResult in backend.h.
void pick_rows(ThreadPool& pool, float* logits, int R, int V, const PickSpec* specs, PickResult* out);

}  // namespace qwen
