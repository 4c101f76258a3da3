// The device draw's block primitives (cuda/sample_fx_ops.cuh, the code the GPU runs) executed on the host by the SIMT
// emulation of simt_emu.h, against the host reference (cpp/cpu/sample_fx.cc): the whole FxOut must be equal bit for
// bit, on rows and configs that take every route. No GPU needed; test/sample-fx-emu.test.ts builds and runs it:
//   g++ -std=c++20 -O2 -pthread -Icpp -Icuda cuda/test/sample_fx_emu.cc cpp/cpu/sample_fx.cc cpp/core/pick_tables.cc
//   ./a.out [V]     prints "N rows, M differ, routes a/b/c/d/e" and "N top lists, M differ" (pick.cu's top-n list);
//                   exit 1 if any differ or a route was not taken
#include "simt_emu.h"  // first: it defines what the device code expects

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "cpu/sample_fx.h"
#include "sample_fx_ops.cuh"

using namespace qwen;

// The kernel's body for one row (sample_fx.cu's sample_fx_kernel, less the launch).
static FxOut device_draw(const float* L, float* W, const FxRowIn& in) {
  static cu::sfx::Smem s;
  std::memset(&s, 0xcd, sizeof s);  // shared memory starts as garbage
  FxOut out;
  simt::run_block(cu::sfx::kSampleThreads, [&] {
    cu::sfx::DevFxOps ops{L, W, in.n, kPickExpTable, s};
    FxOut o;
    sample_fx(ops, in, o);
    if (threadIdx.x == 0) out = o;
  });
  return out;
}

static bool same(const FxOut& a, const FxOut& b) { return std::memcmp(&a, &b, sizeof a) == 0; }

// pick.cu's top list (DevFxOps::top_logits from sfx::top_kmin, host expf) against a plain reference: every id of
// non-zero weight expf(x - m), sorted (value desc, id asc).
static bool top_list_ok(const float* L, int n, int top) {
  float m = -INFINITY;
  for (int i = 0; i < n; ++i) m = L[i] > m ? L[i] : m;
  if (m == -INFINITY) return true;  // the kernel asks for no list then
  std::vector<int32_t> want;
  for (int i = 0; i < n; ++i)
    if (L[i] == L[i] && (m == INFINITY ? L[i] == INFINITY : std::exp(L[i] - m) > 0.f)) want.push_back(i);
  std::sort(want.begin(), want.end(), [&](int32_t a, int32_t b) { return L[a] > L[b] || (L[a] == L[b] && a < b); });
  if (int(want.size()) > top) want.resize(size_t(top));
  static cu::sfx::Smem s;
  std::memset(&s, 0xcd, sizeof s);
  int32_t ids[kMaxPickTop];
  float xs[kMaxPickTop];
  int got = -1;
  simt::run_block(cu::sfx::kSampleThreads, [&] {
    cu::sfx::DevFxOps ops{L, nullptr, n, nullptr, s};
    int32_t i[kMaxPickTop];
    float x[kMaxPickTop];
    const int g = ops.top_logits(cu::sfx::top_kmin(m), top, i, x);
    if (threadIdx.x == 0) {
      got = g;
      std::copy(i, i + g, ids);
      std::copy(x, x + g, xs);
    }
  });
  if (got != int(want.size())) return false;
  for (int k = 0; k < got; ++k)
    if (ids[k] != want[size_t(k)] || std::memcmp(&xs[k], &L[want[size_t(k)]], sizeof(float)) != 0) return false;
  return true;
}

int main(int argc, char** argv) {
  const int V = argc > 1 ? std::atoi(argv[1]) : 4096, lim = V - 85;
  std::mt19937 g(91);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::uniform_real_distribution<double> ud(0.0, 1.0);
  std::uniform_int_distribution<int> q(-80, 80), pos(0, lim - 1);
  // op_check test_sample_fx's row kinds at width V, plus exact masses with -0
  std::vector<std::vector<float>> rows;
  for (int r = 0; r < 9; ++r) {
    std::vector<float> x(static_cast<size_t>(V));
    if (r <= 1) {
      for (auto& v : x) v = 2.5f * nd(g);
      for (int k = 0; k < 4 + 8 * r; ++k) x[size_t(pos(g))] = 8.f + 6.f * float(ud(g));
    } else if (r == 2) {
      for (auto& v : x) v = 0.5f * nd(g);
    } else if (r == 3) {
      for (auto& v : x) v = float(q(g)) / 8.f;
    } else if (r == 4) {
      for (int i = 0; i < V; ++i) x[size_t(i)] = i % 7 == 0 ? NAN : i % 11 == 3 ? -INFINITY : float(q(g)) / 8.f;
      for (int i : {300, 17, 301}) x[size_t(i)] = 11.f;
    } else if (r == 5) {
      for (auto& v : x) v = float(q(g)) / 8.f;
      x[900] = x[20] = INFINITY;
    } else if (r == 6) {
      for (int i = 0; i < V; ++i) x[size_t(i)] = i == 10 ? 200.f : i == 20 || i == 30 ? 150.f : 0.f;
    } else if (r == 7) {
      for (int i = 0; i < V; ++i) x[size_t(i)] = i % 50 == 0 ? 4.f * float(ud(g)) : -20.f + nd(g);
    } else {
      std::fill(x.begin(), x.end(), -INFINITY);
      for (int i : {3, 30, 300, 600}) x[size_t(i)] = 0.f;
      x[601] = x[5] = -0.f;
    }
    rows.push_back(std::move(x));
  }
  struct Cfg {
    double temp;
    int k;
    double p;
  };
  const Cfg cfgs[] = {{1.0, 0, 1.0}, {0.7, 0, 0.8}, {1.5, 0, 0.95}, {0.7, 5, 1.0}, {1.0, 50, 0.5}, {1.0, 0, 0.1}};
  int n = 0, bad = 0, seen[5] = {0, 0, 0, 0, 0};
  std::vector<float> Wh(static_cast<size_t>(lim)), Wd(static_cast<size_t>(lim));
  for (const Cfg& c : cfgs)
    for (size_t r = 0; r < rows.size(); ++r) {
      PickSpec s;
      s.vocab_limit = lim;
      s.do_sample = true;
      s.temperature = c.temp;
      s.top_k = c.k;
      s.top_p = c.p;
      s.u = ud(g);
      s.top_n = n % 4 == 0 ? -1 : n % 4 == 1 ? 0 : n % 4 == 2 ? 5 : 20;
      const float* x = rows[r].data();
      const FxRowIn in = fx_row_in(x, lim, s);
      FxOut h;
      sample_fx_row(x, Wh.data(), in, h);
      std::fill(Wd.begin(), Wd.end(), NAN);  // the device's weights scratch starts as garbage
      const FxOut d = device_draw(x, Wd.data(), in);
      ++seen[h.route];
      ++n;
      if (!same(h, d) && bad++ < 10)
        std::printf("DIFF row %zu T=%g k=%d p=%g u=%.17g: host id %d route %d z %llu n_top %d | device id %d route %d z %llu "
                    "n_top %d\n", r, c.temp, c.k, c.p, s.u, h.id, h.route, (unsigned long long)h.z, h.n_top, d.id, d.route,
                    (unsigned long long)d.z, d.n_top);
    }
  std::printf("%d rows, %d differ, routes %d/%d/%d/%d/%d\n", n, bad, seen[0], seen[1], seen[2], seen[3], seen[4]);
  const bool all_routes = seen[0] && seen[1] && seen[2] && seen[3] && seen[4];
  if (!all_routes) std::printf("not every route was taken\n");
  int lists = 0, bad_lists = 0;
  for (size_t r = 0; r < rows.size(); ++r)
    for (const int top : {1, 5, 20}) {
      ++lists;
      if (!top_list_ok(rows[r].data(), lim, top) && bad_lists++ < 10) std::printf("DIFF top list row %zu top %d\n", r, top);
    }
  std::printf("%d top lists, %d differ\n", lists, bad_lists);
  return bad == 0 && all_routes && bad_lists == 0 ? 0 : 1;
}
