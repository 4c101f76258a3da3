// The pick on the CPU. Per row: the penalties (serial: O(distinct ids)). A sampled row (do_sample) is then one task of
// the pool (cpu/sample.cc: the TS sampler's serial passes, transcribed); a greedy row is split into tasks of kPickChunk
// ids: pass 1 finds each chunk's max / argmax (and its own best top_n), the caller merges the chunks in id
// order (strict >, so ties keep the lowest id); pass 2, only for rows that asked for logprobs, sums the fp32 weights
// exp(x - max) in double per chunk, added in chunk order (deterministic whatever the thread count).
#include "cpu/pick.h"

#include <algorithm>
#include <cmath>
#include <exception>
#include <limits>
#include <mutex>
#include <vector>

#include "core/pick.h"
#include "cpu/argmax.h"
#include "cpu/sample.h"

namespace qwen {
namespace {

constexpr int kPickChunk = 16384;
constexpr float kInf = std::numeric_limits<float>::infinity();

inline bool better(float a, int32_t ia, float b, int32_t ib) { return a > b || (a == b && ia < ib); }

// The best (value desc, id asc) usable logits of a chunk, at most top of them; len 0: none.
struct Chunk {
  int len = 0;
  float x[kMaxPickTop];
  int32_t id[kMaxPickTop];
  double sum = 0.0;  // pass 2: sum of weights (or count of +Infinity)
};

void scan(const float* L, int i0, int i1, int top, Chunk& c) {
  c.len = 0;
  if (top <= 1) {  // plain argmax: NaN and -Infinity never compare greater than -Infinity
    float m;
    const int at = argmax_first(L, i0, i1, &m);
    if (at >= 0) {
      c.len = 1;
      c.x[0] = m;
      c.id[0] = at;
    }
    return;
  }
  for (int i = i0; i < i1; ++i) {
    const float x = L[i];
    if (!(x > -kInf)) continue;                          // NaN, -Infinity weigh nothing
    if (c.len == top && !(x > c.x[top - 1])) continue;   // ids increase: an equal value ranks after
    int k = c.len < top ? c.len++ : top - 1;
    while (k > 0 && x > c.x[k - 1]) {
      c.x[k] = c.x[k - 1];
      c.id[k] = c.id[k - 1];
      --k;
    }
    c.x[k] = x;
    c.id[k] = i;
  }
}

double weigh(const float* L, int i0, int i1, float m) {
  double s = 0.0;
  if (m == kInf) {
    for (int i = i0; i < i1; ++i) s += L[i] == kInf ? 1.0 : 0.0;
  } else {
    for (int i = i0; i < i1; ++i) {
      const float x = L[i];
      if (x == x) s += double(std::exp(x - m));  // -Infinity weighs 0; NaN is skipped
    }
  }
  return s;
}

}  // namespace

void pick_rows(ThreadPool& pool, float* logits, int R, int V, const PickSpec* specs, PickResult* out) {
  if (R <= 0) return;
  const size_t nr = static_cast<size_t>(R);
  std::vector<int> limit(nr), chunks(nr), first(nr + 1);
  for (int r = 0; r < R; ++r) {
    const PickSpec& s = specs[r];
    float* L = logits + size_t(r) * size_t(V);
    const int n = pick_limit(s, V);
    const bool rep = pick_repetition_on(s), oa = pick_openai_on(s);
    for (int k = 0; (rep || oa) && k < s.n_ids; ++k) {
      const int32_t id = s.ids[k];
      if (id < 0 || id >= n) continue;  // never chosen: left alone, as the TS sampler does
      float x = L[id];
      if (rep) x = pick_repetition(x, s.repetition);
      if (oa && s.counts[k] > 0) x = pick_openai(x, pick_openai_delta(s, s.counts[k]));
      L[id] = x;
    }
    limit[size_t(r)] = s.do_sample ? 0 : n;  // a sampled row: one empty greedy chunk, its result replaced below
    chunks[size_t(r)] = std::max(1, (n + kPickChunk - 1) / kPickChunk);
    first[size_t(r) + 1] = first[size_t(r)] + chunks[size_t(r)];
  }
  const int tasks = first[size_t(R)];
  std::vector<int> task_row(static_cast<size_t>(tasks));
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < chunks[size_t(r)]; ++c) task_row[size_t(first[size_t(r)] + c)] = r;
  std::vector<Chunk> ch(static_cast<size_t>(tasks));
  auto span = [&](int t, int& r, int& i0, int& i1) {
    r = task_row[size_t(t)];
    const int c = t - first[size_t(r)];
    i0 = c * kPickChunk;
    i1 = std::min(limit[size_t(r)], i0 + kPickChunk);
  };
  pool.parallel_for(tasks, [&](int t, int) {
    int r, i0, i1;
    span(t, r, i0, i1);
    scan(logits + size_t(r) * size_t(V), i0, i1, std::min(kMaxPickTop, std::max(1, specs[r].top_n)), ch[size_t(t)]);
  });
  std::vector<float> mx(nr, -kInf);
  for (int r = 0; r < R; ++r) {
    PickResult& res = out[r];
    res = PickResult();
    for (int c = first[size_t(r)]; c < first[size_t(r) + 1]; ++c)
      if (ch[size_t(c)].len > 0 && (res.id < 0 || ch[size_t(c)].x[0] > mx[size_t(r)])) {
        res.id = ch[size_t(c)].id[0];
        mx[size_t(r)] = ch[size_t(c)].x[0];
      }
  }
  pool.parallel_for(tasks, [&](int t, int) {
    int r, i0, i1;
    span(t, r, i0, i1);
    if (specs[r].top_n >= 0 && out[r].id >= 0) ch[size_t(t)].sum = weigh(logits + size_t(r) * size_t(V), i0, i1, mx[size_t(r)]);
  });
  for (int r = 0; r < R; ++r) {
    PickResult& res = out[r];
    const int top = std::min(specs[r].top_n, kMaxPickTop);
    if (res.id < 0 || top < 0) continue;
    const float m = mx[size_t(r)];
    double z = 0.0;
    for (int c = first[size_t(r)]; c < first[size_t(r) + 1]; ++c) z += ch[size_t(c)].sum;
    const double log_z = std::log(z);  // z >= 1: the argmax weighs 1
    res.logprob = -log_z;
    if (top == 0) continue;
    std::vector<std::pair<float, int32_t>> cand;
    for (int c = first[size_t(r)]; c < first[size_t(r) + 1]; ++c)
      for (int k = 0; k < ch[size_t(c)].len; ++k) cand.emplace_back(ch[size_t(c)].x[k], ch[size_t(c)].id[k]);
    std::sort(cand.begin(), cand.end(),
              [](const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
                return better(a.first, a.second, b.first, b.second);
              });
    for (const auto& [x, id] : cand) {
      if (res.n_top == top) break;
      const bool weighs = m == kInf ? x == kInf : std::exp(x - m) > 0.0f;
      if (!weighs) break;  // sorted: the rest weigh 0 too
      res.top_ids[res.n_top] = id;
      res.top_logprobs[res.n_top] = m == kInf ? -log_z : (double(x) - double(m)) - log_z;
      ++res.n_top;
    }
  }
  std::vector<int> sampled;
  for (int r = 0; r < R; ++r)
    if (specs[r].do_sample) sampled.push_back(r);
  if (sampled.empty()) return;
  std::vector<SampleScratch> scratch(static_cast<size_t>(pool.size()));
  // A pool task must not throw (the pool would terminate the process): the first error is kept and rethrown here.
  std::exception_ptr err;
  std::mutex mu;
  pool.parallel_for(int(sampled.size()), [&](int t, int thread) {
    try {
      const int r = sampled[size_t(t)];
      sample_row(logits + size_t(r) * size_t(V), pick_limit(specs[r], V), specs[r], out[r], scratch[size_t(thread)]);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu);
      if (!err) err = std::current_exception();
    }
  });
  if (err) std::rethrow_exception(err);
}

}  // namespace qwen
