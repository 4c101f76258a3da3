// Per-op GPU time of the CUDA backend, for finding where a step's time goes: QWEN_CUDA_PROFILE=1 brackets every
// backend op with two cudaEvents on the backend's stream; the events are read at each synchronize() (the end of a
// step) and summed per (op, shape) key. The table goes to stderr when the backend dies, next to the host wall time of
// the steps, so "GPU busy" and "launch / host gaps" can be told apart. Steps are also grouped by class (begin_step
// names it by its row count): per class, host wall time, GPU span (first op's start to last op's end) and the sum of
// op times: span - ops = gaps between kernels (launch-bound), wall - span = host work before / after the GPU ran.
// Each class's first step is reported alone and kept out of the per-op table. Off (the default), an op pays one branch.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace qwen::cu {

class OpProfiler {
 public:
  OpProfiler() {
    const char* e = std::getenv("QWEN_CUDA_PROFILE");
    on_ = e && *e && std::string(e) != "0";
  }
  ~OpProfiler() {
    if (on_) report();
    for (auto& p : pool_) {
      cudaEventDestroy(p.first);
      cudaEventDestroy(p.second);
    }
  }
  bool on() const { return on_; }

  // Bracket one op: begin() before its launches, end() after; key names the op and its shape class.
  int begin(const std::string& key, cudaStream_t s) {
    if (!on_) return -1;
    if (open_.empty()) wall0_ = std::chrono::steady_clock::now(), in_step_ = true;
    if (used_ == pool_.size()) {
      std::pair<cudaEvent_t, cudaEvent_t> p{};
      cudaEventCreate(&p.first);
      cudaEventCreate(&p.second);
      pool_.push_back(p);
    }
    const int i = int(used_++);
    cudaEventRecord(pool_[size_t(i)].first, s);
    open_.push_back(key);
    return i;
  }
  void end(int i, cudaStream_t s) {
    if (i >= 0) cudaEventRecord(pool_[size_t(i)].second, s);
  }
  // The class of the current step (e.g. "rows=1"), set once per step by begin_step.
  void step_class(std::string c) {
    if (on_) class_ = std::move(c);
  }
  // After a stream synchronize: fold the recorded pairs into the table.
  void collect() {
    if (!on_ || !in_step_) return;
    // The first step of each class pays the lazy allocations and first-use kernel loads (the first 2048-row step on
    // the H100 took 158 ms against ~50 later): it is reported on its own line and kept out of the per-op table.
    const std::string cls = class_.empty() ? std::string("(no begin_step)") : class_;
    StepRow& sr = steps_by_class_[cls];
    const bool first = sr.steps == 0 && sr.first_wall < 0;
    double step_ops = 0;
    for (size_t i = 0; i < used_; ++i) {
      float ms = 0.f;
      if (cudaEventElapsedTime(&ms, pool_[i].first, pool_[i].second) != cudaSuccess) ms = 0.f, cudaGetLastError();
      step_ops += ms;
      if (first) continue;
      Row& r = table_[open_[i]];
      r.calls += 1;
      r.ms += ms;
      gpu_ms_ += ms;
    }
    const double wall = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - wall0_).count();
    float span = 0.f;
    if (used_ > 0 && cudaEventElapsedTime(&span, pool_[0].first, pool_[used_ - 1].second) != cudaSuccess)
      span = 0.f, cudaGetLastError();
    if (first) {
      sr.first_wall = wall, sr.first_span = span;
    } else {
      wall_ms_ += wall;
      sr.steps += 1, sr.wall += wall, sr.span += span, sr.ops += step_ops;
      sr.min_wall = std::min(sr.min_wall, wall);
    }
    class_.clear();
    ++steps_;
    used_ = 0;
    open_.clear();
    in_step_ = false;
  }

 private:
  struct Row {
    long calls = 0;
    double ms = 0;
  };
  struct StepRow {
    long steps = 0;  // after the first
    double wall = 0, span = 0, ops = 0, min_wall = 1e300;
    double first_wall = -1, first_span = 0;
  };
  void report() const {
    std::vector<std::pair<std::string, Row>> rows(table_.begin(), table_.end());
    std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.ms > b.second.ms; });
    std::fprintf(stderr, "[qwen cuda profile] %ld syncs, host wall %.1f ms, GPU op time %.1f ms (%.0f %%)\n", steps_,
                 wall_ms_, gpu_ms_, wall_ms_ > 0 ? 100.0 * gpu_ms_ / wall_ms_ : 0.0);
    for (const auto& [k, r] : steps_by_class_) {
      std::fprintf(stderr, "[qwen cuda profile] steps %-16s first: host wall %9.3f ms, GPU span %9.3f ms (not in the tables)\n",
                   k.c_str(), r.first_wall, double(r.first_span));
      if (r.steps > 0)
        std::fprintf(stderr,
                     "[qwen cuda profile] steps %-16s %6ld more: per step host wall %9.3f ms (min %9.3f), GPU span %9.3f ms, "
                     "op sum %9.3f ms\n",
                     k.c_str(), r.steps, r.wall / double(r.steps), r.min_wall, r.span / double(r.steps),
                     r.ops / double(r.steps));
    }
    for (const auto& [k, r] : rows)
      std::fprintf(stderr, "[qwen cuda profile] %-44s %8ld calls %10.2f ms %9.1f us/call %5.1f %%\n", k.c_str(), r.calls,
                   r.ms, 1e3 * r.ms / double(r.calls), gpu_ms_ > 0 ? 100.0 * r.ms / gpu_ms_ : 0.0);
  }
  bool on_ = false, in_step_ = false;
  std::vector<std::pair<cudaEvent_t, cudaEvent_t>> pool_;
  size_t used_ = 0;
  std::vector<std::string> open_;
  std::map<std::string, Row> table_;
  std::map<std::string, StepRow> steps_by_class_;
  std::string class_;
  std::chrono::steady_clock::time_point wall0_;
  double wall_ms_ = 0, gpu_ms_ = 0;
  long steps_ = 0;
};

// RAII bracket: `ProfScope p(prof_, stream_, [&] { return key; });` builds the key only when profiling is on.
class ProfScope {
 public:
  template <typename KeyFn>
  ProfScope(OpProfiler& p, cudaStream_t s, KeyFn&& key) : p_(p), s_(s), i_(p.on() ? p.begin(key(), s) : -1) {}
  ~ProfScope() { p_.end(i_, s_); }
  ProfScope(const ProfScope&) = delete;
  ProfScope& operator=(const ProfScope&) = delete;

 private:
  OpProfiler& p_;
  cudaStream_t s_;
  int i_;
};

}  // namespace qwen::cu
