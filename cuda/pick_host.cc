// The host side of the device pick (pick.cuh): the upload layout of a call, its filling, and the results with
// logprobs in double. Plain C++ (no device code), so cuda/test/pick_emu.cc links it as the GPU build does.
#include <cmath>
#include <cstring>

#include "core/pick.h"
#include "pick.cuh"

namespace qwen::cu {

namespace {

size_t align16(size_t n) { return (n + 15) & ~size_t(15); }

// Does id (eligible) get a penalty entry, and with the presence / frequency amount?
bool entry_of(const PickSpec& s, int k, int n, bool& openai) {
  const int32_t id = s.ids[k];
  if (id < 0 || id >= n) return false;
  openai = pick_openai_on(s) && s.counts[k] > 0;
  return pick_repetition_on(s) || openai;
}

}  // namespace

PickLayout pick_layout(const PickSpec* specs, int R, int V, bool with_rows) {
  PickLayout l;
  for (int r = 0; r < R; ++r) {
    const int n = pick_limit(specs[r], V);
    for (int k = 0; k < specs[r].n_ids; ++k) {
      bool oa = false;
      if (entry_of(specs[r], k, n, oa)) ++l.entries;
    }
  }
  l.o_rows = 0;
  l.o_specs = align16(with_rows ? size_t(R) * sizeof(int32_t) : 0);
  l.o_entries = align16(l.o_specs + size_t(R) * sizeof(DevPickRow));
  l.bytes = align16(l.o_entries + size_t(l.entries) * sizeof(DevPickEntry));
  return l;
}

void pick_fill(char* host, const PickLayout& l, const int* rows, const PickSpec* specs, int R, int V) {
  if (rows && l.o_specs >= size_t(R) * sizeof(int32_t)) std::memcpy(host + l.o_rows, rows, size_t(R) * sizeof(int32_t));
  auto* dr = reinterpret_cast<DevPickRow*>(host + l.o_specs);
  auto* de = reinterpret_cast<DevPickEntry*>(host + l.o_entries);
  int e = 0;
  for (int r = 0; r < R; ++r) {
    const PickSpec& s = specs[r];
    DevPickRow d{};
    d.repetition = s.repetition;
    d.flags = pick_repetition_on(s) ? 1 : 0;
    d.n = pick_limit(s, V);
    // a sampled row's logprobs come from its draw (host or sample_fx): the pick only penalizes it and finds its max
    d.top_n = s.do_sample ? -1 : s.top_n < kMaxPickTop ? s.top_n : kMaxPickTop;
    d.e0 = e;
    for (int k = 0; k < s.n_ids; ++k) {
      bool oa = false;
      if (!entry_of(s, k, d.n, oa)) continue;
      DevPickEntry x{};
      x.id = s.ids[k];
      x.openai = oa ? 1 : 0;
      x.delta = oa ? pick_openai_delta(s, s.counts[k]) : 0.0;
      std::memcpy(de + e, &x, sizeof(x));
      ++e;
    }
    d.ne = e - d.e0;
    std::memcpy(dr + r, &d, sizeof(d));
  }
}

void pick_results(const DevPickOut* dev, const PickSpec* specs, int R, PickResult* out) {
  for (int r = 0; r < R; ++r) {
    const DevPickOut& d = dev[r];
    PickResult& p = out[r];
    p = PickResult();
    p.id = d.id;
    if (d.id < 0 || specs[r].top_n < 0) continue;
    const double log_z = std::log(d.sum);  // >= log 1: the argmax weighs 1
    const bool inf = std::isinf(d.max);
    p.logprob = -log_z;
    p.n_top = d.n_top < kMaxPickTop ? d.n_top : kMaxPickTop;
    for (int k = 0; k < p.n_top; ++k) {
      p.top_ids[k] = d.top_id[k];
      p.top_logprobs[k] = inf ? -log_z : (double(d.top_x[k]) - double(d.max)) - log_z;
    }
  }
}

}  // namespace qwen::cu
