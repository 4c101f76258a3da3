// pick: the greedy pick of final_pick / pick_logits on the device (PickSpec / PickResult in cpp/core/backend.h).
// logits [R, V] device fp32 (penalized in place); ONE launch over all R rows, one block of kPickThreads per row:
//   1. the row's penalty entries (ids < n with the repetition and / or presence-frequency penalty to apply): x in
//      double, rounded once to fp32 (the TS sampler's arithmetic; the presence / frequency amount comes from the host,
//      cpp/core/pick.h);
//   2. argmax over ids [0, n): (value desc, id asc), NaN and -Infinity never taken;
//   3. top_n >= 0: sum of the fp32 weights expf(x - max) over the row, accumulated in double (count of +Infinity when
//      the max is +Infinity);
//   4. top_n > 0: the first top_n ids in (value desc, id asc) order among those of non-zero fp32 weight (a key range,
//      sample_fx_ops.cuh top_kmin): a radix select for the top_n-th and a gather (the primitives of sample_fx_ops.cuh), ~5 reads
//      of the row from L2 instead of top_n block rounds over per-thread lists.
// The device writes max, the sum and the (id, logit) lists; the host turns them into logprobs in double
// (pick_results), so only R x 184 bytes come back. A sampled row (PickSpec::do_sample) goes through the same launch
// for its penalties only: CudaBackend copies its penalized row back and draws on the host (cpp/cpu/sample.cc), so its
// id equals the TS sampler's exactly (cuda/README.md: the device draw and its tolerance are a follow-up).
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "core/backend.h"

namespace qwen::cu {

constexpr int kPickThreads = 1024;

// One row of the call (uploaded as raw bytes).
struct DevPickRow {
  double repetition;  // applied to every entry of the row when flags & 1
  int e0, ne;         // its penalty entries [e0, e0 + ne) of the call's DevPickEntry array
  int n;              // eligible ids [0, n)
  int top_n;          // -1: nothing but the id; 0: + the sum; n > 0: + the top-n list
  int flags;          // 1: repetition penalty on
  int pad;
};
static_assert(sizeof(DevPickRow) == 32, "DevPickRow is uploaded as raw bytes");

struct DevPickEntry {
  double delta;    // frequency * count + presence (when openai)
  int32_t id;      // < the row's n
  int32_t openai;  // 1: x -= delta after the repetition penalty
};
static_assert(sizeof(DevPickEntry) == 16, "DevPickEntry is uploaded as raw bytes");

struct DevPickOut {
  double sum;     // sum of fp32 weights expf(x - max) in double; count of +Infinity when max is +Infinity
  float max;      // the argmax's (penalized) logit
  int32_t id;     // argmax; -1: no usable logit (all NaN / -Infinity)
  int32_t n_top;  // entries of top_id / top_x
  int32_t pad;
  int32_t top_id[kMaxPickTop];
  float top_x[kMaxPickTop];  // penalized logits, (value desc, id asc)
};

// The host -> device upload of one call, one buffer: int32 rows [R] (final_pick only) | DevPickRow [R] |
// DevPickEntry [entries] (sections 16-byte aligned).
struct PickLayout {
  size_t o_rows = 0, o_specs = 0, o_entries = 0, bytes = 0;
  int entries = 0;
};
PickLayout pick_layout(const PickSpec* specs, int R, int V, bool with_rows);
void pick_fill(char* host, const PickLayout& l, const int* rows, const PickSpec* specs, int R, int V);

// Launch over rows [0, R) of logits [R, V] with their DevPickRow rows[R] (entry offsets into `entries`) -> out[R].
void pick(float* logits, int R, int V, const DevPickRow* rows, const DevPickEntry* entries, DevPickOut* out,
          cudaStream_t stream);

// Host: the device results (copied back) -> PickResult[R] with logprobs in double.
void pick_results(const DevPickOut* dev, const PickSpec* specs, int R, PickResult* out);

}  // namespace qwen::cu
