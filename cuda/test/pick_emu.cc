// The device pick (cuda/pick_kernel.cuh's pick_kernel, the code every greedy GPU step runs, with pick_host.cc's upload
// layout and results) executed on the host by the SIMT emulation of simt_cuda.h, against the CPU backend's pick
// (cpp/cpu/pick.cc, itself equal to the TS sampler: test/pick.test.ts). Rows: random, ties at the max, NaN, -Infinity,
// one and two +Infinity, all -Infinity, all NaN; requests: no logprobs, the chosen logprob, top 1 / 5 / 20; the
// repetition and presence / frequency penalties (ids past the limit included); a vocab limit below V.
//   g++ -std=c++20 -O2 -pthread -I<cuda>/include -Icpp -Icuda cuda/test/pick_emu.cc cuda/pick_host.cc
//       cpp/cpu/pick.cc cpp/cpu/thread_pool.cc cpp/core/pick_tables.cc && ./a.out
// prints "N rows, M differ" (exit 1 if any differ). Ids, list lengths and list ids must be equal; logprobs within
// (n + 2) 2^-53 + 1e-15: both sides weigh with the same host expf and sum the weights in double, in other orders.
#include "simt_cuda.h"  // first: it brings the CUDA headers and the device builtins

#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "cpu/pick.h"
#include "pick.cuh"
#include "pick_kernel.cuh"

using namespace qwen;

namespace {

constexpr int V = 4096;

struct Case {
  std::vector<float> row;
  PickSpec spec;
  std::vector<int32_t> ids, counts;
  std::string what;
};

std::vector<float> random_row(uint32_t seed, float scale) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.f, scale);
  std::vector<float> r(V);
  for (auto& x : r) x = d(g);
  return r;
}

std::vector<Case> cases() {
  std::vector<Case> cs;
  const int tops[] = {-1, 0, 1, 5, 20};
  for (int k = 0; k < 5; ++k) {
    Case c;
    c.row = random_row(100 + uint32_t(k), 3.f);
    c.spec.top_n = tops[k];
    c.what = "random top_n=" + std::to_string(tops[k]);
    cs.push_back(c);
  }
  {  // ties at the max, both below and above the limit; the top list keeps id order among equals
    Case c;
    c.row = random_row(200, 2.f);
    for (int i : {7, 300, 301, 4000}) c.row[size_t(i)] = 9.f;
    c.spec.top_n = 20;
    c.spec.vocab_limit = 3000;
    c.what = "ties at the max, vocab_limit 3000";
    cs.push_back(c);
  }
  {  // NaN and -Infinity never win; NaN at the front
    Case c;
    c.row = random_row(201, 1.f);
    c.row[0] = NAN;
    for (int i = 1; i < 200; i += 3) c.row[size_t(i)] = -INFINITY;
    c.row[50] = NAN;
    c.spec.top_n = 20;
    c.what = "NaN and -Infinity";
    cs.push_back(c);
  }
  for (int n_inf : {1, 2}) {  // +Infinity takes all the mass
    Case c;
    c.row = random_row(202, 1.f);
    c.row[123] = INFINITY;
    if (n_inf == 2) c.row[77] = INFINITY;
    c.spec.top_n = 5;
    c.what = std::to_string(n_inf) + " x +Infinity";
    cs.push_back(c);
  }
  {  // nothing usable
    Case c;
    c.row.assign(V, -INFINITY);
    c.spec.top_n = 5;
    c.what = "all -Infinity";
    cs.push_back(c);
    c.row.assign(V, NAN);
    c.what = "all NaN";
    cs.push_back(c);
  }
  {  // penalties: repetition over prompt and generated ids, presence / frequency over the generated; ids past the limit
    Case c;
    c.row = random_row(203, 3.f);
    c.ids = {5, 17, 99, 1000, 2047, 3999, 4095};
    c.counts = {0, 2, 1, 0, 5, 1, 3};
    c.row[17] = 12.f;  // the best logit, penalized below others
    c.row[1000] = -4.f;
    c.spec.repetition = 1.3;
    c.spec.presence = 0.6;
    c.spec.frequency = 0.4;
    c.spec.vocab_limit = 4000;
    c.spec.top_n = 20;
    c.what = "repetition + presence / frequency";
    cs.push_back(c);
    c.spec.repetition = 1.0;  // presence / frequency only
    c.spec.top_n = 0;
    c.what = "presence / frequency only";
    cs.push_back(c);
    c.spec.repetition = 0.7;  // repetition only (< 1: favours the seen ids)
    c.spec.presence = c.spec.frequency = 0.0;
    c.spec.top_n = 3;
    c.what = "repetition 0.7 only";
    cs.push_back(c);
  }
  return cs;
}

}  // namespace

int main() {
  std::vector<Case> cs = cases();
  const int R = int(cs.size());
  std::vector<PickSpec> specs(static_cast<size_t>(R), PickSpec{});
  std::vector<float> dev(size_t(R) * V), host(size_t(R) * V);
  for (int r = 0; r < R; ++r) {
    Case& c = cs[size_t(r)];
    c.spec.ids = c.ids.empty() ? nullptr : c.ids.data();
    c.spec.counts = c.counts.empty() ? nullptr : c.counts.data();
    c.spec.n_ids = int(c.ids.size());
    specs[size_t(r)] = c.spec;
    std::copy(c.row.begin(), c.row.end(), dev.begin() + ptrdiff_t(r) * V);
  }
  host = dev;

  // the device path: the call's upload buffer as CudaBackend fills it, the kernel over all rows, the results
  const cu::PickLayout l = cu::pick_layout(specs.data(), R, V, false);
  std::vector<char> buf(l.bytes + 16);
  char* up = buf.data() + (16 - reinterpret_cast<uintptr_t>(buf.data()) % 16) % 16;
  cu::pick_fill(up, l, nullptr, specs.data(), R, V);
  const auto* rows = reinterpret_cast<const cu::DevPickRow*>(up + l.o_specs);
  const auto* entries = reinterpret_cast<const cu::DevPickEntry*>(up + l.o_entries);
  std::vector<cu::DevPickOut> out(static_cast<size_t>(R));
  std::memset(out.data(), 0xcd, out.size() * sizeof(cu::DevPickOut));  // device memory starts as garbage
  simt::launch(R, cu::kPickThreads, [&] { cu::pk::pick_kernel(dev.data(), V, rows, entries, out.data()); });
  std::vector<PickResult> got(static_cast<size_t>(R)), want(static_cast<size_t>(R));
  cu::pick_results(out.data(), specs.data(), R, got.data());

  ThreadPool pool(2);
  pick_rows(pool, host.data(), R, V, specs.data(), want.data());

  int bad = 0;
  for (int r = 0; r < R; ++r) {
    const PickResult &g = got[size_t(r)], &w = want[size_t(r)];
    const int n = pick_limit(specs[size_t(r)], V);
    const double tol = (n + 2) * std::ldexp(1.0, -53) + 1e-15;
    bool ok = g.id == w.id && g.n_top == w.n_top;
    if (ok && w.id >= 0 && specs[size_t(r)].top_n >= 0) ok = std::fabs(g.logprob - w.logprob) <= tol;
    for (int k = 0; ok && k < w.n_top; ++k)
      ok = g.top_ids[k] == w.top_ids[k] && std::fabs(g.top_logprobs[k] - w.top_logprobs[k]) <= tol;
    // the penalized row the kernel leaves must be the CPU's, bit for bit (a sampled row's draw reads it)
    for (int i = 0; ok && i < n; ++i) {
      const float a = dev[size_t(r) * V + size_t(i)], b = host[size_t(r) * V + size_t(i)];
      ok = std::memcmp(&a, &b, sizeof a) == 0;
    }
    if (!ok) ++bad;
    std::printf("%s %-36s id %d / %d  logprob %.17g / %.17g  top %d / %d\n", ok ? "PASS" : "FAIL",
                cs[size_t(r)].what.c_str(), g.id, w.id, g.logprob, w.logprob, g.n_top, w.n_top);
  }
  std::printf("%d rows, %d differ\n", R, bad);
  return bad ? 1 : 0;
}
