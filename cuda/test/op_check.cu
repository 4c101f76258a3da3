// Stand-alone check of the CUDA backend for the GPU machine (no Node needed): every Backend op at odd and Qwen
// shapes, for bf16 / fp16 / fp32 activations, against float64 loops on inputs pre-rounded to the activation type;
// every kernel path (GEMV vec/scalar, cuBLAS, WMMA, FMA GEMM; split/flash attention; KV growth); OOM survival;
// then (with --perf) bandwidth / FLOP/s of the hot kernels. Build: cuda/test/build_op_check.sh. Exit code 1 on any
// failure. Not part of the addon (cuda/test/ is not globbed by CMakeLists.txt).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "../attention.cuh"
#include "../cuda_backend.h"
#include "../cuda_backend_impl.cuh"
#include "../linear.cuh"
#include "core/backend.h"
#include "core/dtype.h"

using namespace qwen;
using vecd = std::vector<double>;
using vecf = std::vector<float>;

static int g_pass = 0, g_fail = 0;

static float quant(float x, DType dt) {
  if (dt == DType::BF16) return bf16_to_f32(f32_to_bf16(x));
  if (dt == DType::F16) return f16_to_f32(f32_to_f16(x));
  return x;
}
static vecf rnd(size_t n, float scale, DType dt, uint32_t seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(-scale, scale);
  vecf v(n);
  for (auto& x : v) x = quant(u(g), dt);
  return v;
}
static double tol_for(DType dt) { return dt == DType::BF16 ? 2e-2 : dt == DType::F16 ? 4e-3 : 1e-4; }
static const char* dt_name(DType dt) { return dt == DType::BF16 ? "bf16" : dt == DType::F16 ? "fp16" : "fp32"; }

static void check(const std::string& name, DType dt, const vecf& got, const vecd& ref, double tol_scale = 1.0) {
  double maxref = 0, maxerr = 0, se = 0, sr = 0;
  size_t worst = 0;
  bool finite = got.size() == ref.size();
  for (size_t i = 0; i < got.size() && i < ref.size(); ++i) {
    if (!std::isfinite(got[i])) {
      finite = false;
      worst = i;
      break;
    }
    const double e = std::fabs(double(got[i]) - ref[i]);
    maxref = std::max(maxref, std::fabs(ref[i]));
    if (e > maxerr) {
      maxerr = e;
      worst = i;
    }
    se += e * e;
    sr += ref[i] * ref[i];
  }
  const double rel = maxerr / std::max(maxref, 1e-30);
  const double nmse = se / std::max(sr, 1e-300);
  const bool ok = finite && rel <= tol_for(dt) * tol_scale;
  (ok ? g_pass : g_fail)++;
  std::printf("%s %-58s %s max_rel=%.3g nmse=%.3g", ok ? "PASS" : "FAIL", name.c_str(), dt_name(dt), rel, nmse);
  if (!ok && worst < got.size() && worst < ref.size())
    std::printf("  [worst i=%zu got=%g ref=%g%s]", worst, got[worst], ref[worst], finite ? "" : " NON-FINITE");
  std::printf("\n");
}
static void expect(bool ok, const std::string& what) {
  (ok ? g_pass : g_fail)++;
  std::printf("%s %s\n", ok ? "PASS" : "FAIL", what.c_str());
}

// RAII device buffer of the backend.
struct DB {
  Backend& be;
  Buf p;
  size_t n;
  DB(Backend& b, size_t elems) : be(b), p(b.alloc(elems)), n(elems) {}
  DB(Backend& b, const vecf& v) : DB(b, v.size()) { be.to_device(p, v.data(), n); }
  ~DB() { be.free(p); }
  vecf get() {
    vecf o(n);
    be.to_host(o.data(), p, n);
    return o;
  }
};
struct DW {
  Backend& be;
  Weight w;
  DW(Backend& b, const vecf& v, int64_t rows, int64_t cols) : be(b) {
    Weight h;
    h.data = v.data();
    h.dtype = DType::F32;
    h.rows = rows;
    h.cols = cols;
    w = be.upload(h);
  }
  DW(Backend& b, const void* data, DType dt, int64_t rows, int64_t cols) : be(b) {
    Weight h;
    h.data = data;
    h.dtype = dt;
    h.rows = rows;
    h.cols = cols;
    w = be.upload(h);
  }
  ~DW() { be.release(w); }
};

static std::unique_ptr<Backend> make(const char* dtype) {
  BackendOptions o;
  o.device = "cuda";
  o.dtype = dtype;
  return make_cuda_backend(o);
}

// ------------------------------------------------------------------------------------------------ references
static vecd ref_linear(const vecf& x, const vecf& W, const vecf* b, int T, int N, int K) {
  vecd y(size_t(T) * N);
  for (int t = 0; t < T; ++t)
    for (int n = 0; n < N; ++n) {
      double s = b ? (*b)[n] : 0.0;
      for (int k = 0; k < K; ++k) s += double(x[size_t(t) * K + k]) * W[size_t(n) * K + k];
      y[size_t(t) * N + n] = s;
    }
  return y;
}
static vecd ref_rmsnorm_rows(const vecf& x, const vecf& g, const std::vector<int>& rows, int H, float eps) {
  vecd y(rows.size() * size_t(H));
  for (size_t r = 0; r < rows.size(); ++r) {
    const float* xr = &x[size_t(rows[r]) * H];
    double ss = 0;
    for (int i = 0; i < H; ++i) ss += double(xr[i]) * xr[i];
    const double inv = 1.0 / std::sqrt(ss / H + eps);
    for (int i = 0; i < H; ++i) y[r * H + i] = xr[i] * inv * g[i];
  }
  return y;
}

// ------------------------------------------------------------------------------------------------ tests
static void test_embedding_upload(Backend& be, DType dt) {
  const int V = 37;
  for (int H : {100, 128}) {
    vecf w = rnd(size_t(V) * H, 1.f, DType::BF16, 1);  // bf16-representable: exact in every dtype
    const std::vector<int32_t> ids = {5, 0, 36};
    // upload from each host dtype
    std::vector<uint16_t> wb(w.size()), wh(w.size());
    for (size_t i = 0; i < w.size(); ++i) {
      wb[i] = f32_to_bf16(w[i]);
      wh[i] = f32_to_f16(w[i]);
    }
    vecd ref(ids.size() * size_t(H));
    for (size_t t = 0; t < ids.size(); ++t)
      for (int i = 0; i < H; ++i) ref[t * H + i] = w[size_t(ids[t]) * H + i];
    const std::pair<const void*, DType> srcs[] = {{w.data(), DType::F32}, {wb.data(), DType::BF16}, {wh.data(), DType::F16}};
    for (auto [data, hdt] : srcs) {
      DW wte(be, data, hdt, V, H);
      DB h(be, ids.size() * size_t(H));
      be.embedding(wte.w, ids.data(), int(ids.size()), h.p);
      check("embedding H=" + std::to_string(H) + " from host " + dtype_name(hdt), dt, h.get(), ref, 0.01);
    }
  }
}

static void test_rmsnorm(Backend& be, DType dt) {
  for (int T : {1, 3, 17})
    for (int H : {100, 4096}) {
      vecf x = rnd(size_t(T) * H, 2.f, dt, 2 + T), g = rnd(H, 1.f, dt, 3);
      DB xb(be, x), yb(be, x.size());
      DW gw(be, g, 1, H);
      be.rmsnorm(xb.p, gw.w, 1e-6f, T, H, yb.p);
      std::vector<int> rows(T);
      for (int t = 0; t < T; ++t) rows[t] = t;
      check("rmsnorm T=" + std::to_string(T) + " H=" + std::to_string(H), dt, yb.get(),
            ref_rmsnorm_rows(x, g, rows, H, 1e-6f));
      be.rmsnorm(xb.p, gw.w, 1e-6f, T, H, xb.p);  // in place
      check("rmsnorm in place T=" + std::to_string(T) + " H=" + std::to_string(H), dt, xb.get(),
            ref_rmsnorm_rows(x, g, rows, H, 1e-6f));
    }
}

static void test_linear(Backend& be, DType dt, const char* tag) {
  // label only: the backend picks the path itself (cuBLAS when it holds a handle and T >= 64)
  const cublas::Handle h =
      static_cast<cu::CudaBackend&>(be).cublas_in_use() ? reinterpret_cast<cublas::Handle>(uintptr_t(1)) : nullptr;
  struct S {
    int T, N, K;
  };
  const S shapes[] = {{1, 17, 64},   {3, 100, 40},  {5, 33, 17},    {8, 257, 4096}, {1, 4096, 4096},
                      {2, 300, 11008}, {9, 130, 24}, {17, 300, 256}, {33, 129, 72},  {64, 200, 4096},
                      {100, 257, 520}, {130, 77, 33}, {300, 500, 1000}};
  for (const S& s : shapes)
    for (bool bias : {false, true}) {
      if (bias && s.K > 4096) continue;
      vecf x = rnd(size_t(s.T) * s.K, 1.f, dt, 10 + s.T), W = rnd(size_t(s.N) * s.K, 1.f, dt, 11 + s.N),
           b = rnd(s.N, 1.f, dt, 12);
      DB xb(be, x), yb(be, size_t(s.T) * s.N);
      DW Ww(be, W, s.N, s.K), bw(be, b, 1, s.N);
      be.linear(xb.p, Ww.w, bias ? &bw.w : nullptr, s.T, yb.p);
      cu::LinearArgs a;
      a.act = dt;
      a.out = dt;
      a.x = xb.p;
      a.W = Ww.w.data;
      a.T = s.T;
      a.N = s.N;
      a.K = s.K;
      a.cublas = h;
      check(std::string("linear[") + cu::linear_path(a) + "," + tag + "] T=" + std::to_string(s.T) +
                " N=" + std::to_string(s.N) + " K=" + std::to_string(s.K) + (bias ? " +b" : ""),
            dt, yb.get(), ref_linear(x, W, bias ? &b : nullptr, s.T, s.N, s.K));
    }
}

static vecd ref_rope(const vecf& qkv, int T, int pos0, int nh, int hd, const RopeParams& rp) {
  const int H = nh * hd, half = rp.rot_dims / 2;
  vecd out(qkv.begin(), qkv.end());
  for (int t = 0; t < T; ++t) {
    const int p = pos0 + t;
    double scale = 1.0;
    if (rp.logn_base > 0 && p + 1 > rp.logn_base) scale = std::log(double(p + 1)) / std::log(double(rp.logn_base));
    for (int head = 0; head < 2 * nh; ++head) {
      double* x = &out[size_t(t) * 3 * H + size_t(head) * hd];
      for (int i = 0; i < half; ++i) {
        const double th = double(float(p) * rp.inv_freq[i]);
        const double a = x[i], b = x[i + half];
        x[i] = a * std::cos(th) - b * std::sin(th);
        x[i + half] = b * std::cos(th) + a * std::sin(th);
      }
      if (head < nh)
        for (int d = 0; d < hd; ++d) x[d] *= scale;
    }
  }
  return out;
}

static void test_rope(Backend& be, DType dt) {
  struct S {
    int T, pos0, nh, hd, rot, logn;
  };
  const S shapes[] = {{1, 0, 4, 128, 128, 0},    {3, 5, 4, 128, 128, 8192}, {17, 9000, 2, 128, 128, 8192},
                      {5, 8190, 3, 64, 32, 8192}, {100, 20000, 2, 128, 128, 8192}};
  for (const S& s : shapes) {
    RopeParams rp;
    rp.rot_dims = s.rot;
    rp.logn_base = s.logn;
    const double base = s.pos0 > 8192 ? 30527.737 : 10000.0;
    for (int i = 0; i < s.rot / 2; ++i) rp.inv_freq[i] = float(1.0 / std::pow(base, 2.0 * i / s.rot));
    const int H = s.nh * s.hd;
    vecf qkv = rnd(size_t(s.T) * 3 * H, 1.f, dt, 20 + s.T);
    DB b(be, qkv);
    be.rope(b.p, s.T, s.pos0, s.nh, s.hd, rp);
    check("rope T=" + std::to_string(s.T) + " pos0=" + std::to_string(s.pos0) + " nh=" + std::to_string(s.nh) +
              " hd=" + std::to_string(s.hd) + " rot=" + std::to_string(s.rot) + " logn=" + std::to_string(s.logn),
          dt, b.get(), ref_rope(qkv, s.T, s.pos0, s.nh, s.hd, rp));
  }
}

// K/V of positions 0..P-1 (past) and P..P+T-1 (from qkv); query t sees keys 0..P+t.
static vecd ref_attention(const vecf& qkv, const vecf& past, int T, int P, int nh, int hd) {
  const int H = nh * hd;
  auto K = [&](int j, int h, int d) -> double {
    return j < P ? past[size_t(j) * 2 * H + h * hd + d] : qkv[size_t(j - P) * 3 * H + H + h * hd + d];
  };
  auto V = [&](int j, int h, int d) -> double {
    return j < P ? past[size_t(j) * 2 * H + H + h * hd + d] : qkv[size_t(j - P) * 3 * H + 2 * H + h * hd + d];
  };
  vecd out(size_t(T) * H);
  for (int t = 0; t < T; ++t)
    for (int h = 0; h < nh; ++h) {
      const int L = P + t + 1;
      vecd s(L);
      double m = -1e300;
      for (int j = 0; j < L; ++j) {
        double acc = 0;
        for (int d = 0; d < hd; ++d) acc += double(qkv[size_t(t) * 3 * H + h * hd + d]) * K(j, h, d);
        s[j] = acc / std::sqrt(double(hd));
        m = std::max(m, s[j]);
      }
      double l = 0;
      for (int j = 0; j < L; ++j) l += (s[j] = std::exp(s[j] - m));
      for (int d = 0; d < hd; ++d) {
        double o = 0;
        for (int j = 0; j < L; ++j) o += s[j] * V(j, h, d);
        out[size_t(t) * H + h * hd + d] = o / l;
      }
    }
  return out;
}

static void test_attention(Backend& be, DType dt) {
  struct S {
    int T, P, nh, hd;
  };
  const S shapes[] = {{1, 0, 2, 128},  {1, 300, 3, 128}, {3, 600, 2, 64},  {4, 5000, 2, 128}, {16, 250, 2, 128},
                      {17, 0, 2, 128}, {100, 37, 3, 128}, {33, 0, 2, 64},  {130, 700, 2, 128}, {5, 1000, 2, 80},
                      {70, 10, 1, 32}, {20, 300, 2, 72}};
  for (const S& s : shapes) {
    const int H = s.nh * s.hd;
    vecf qkv = rnd(size_t(s.T) * 3 * H, 2.f, dt, 30 + s.T), past = rnd(size_t(s.P) * 2 * H, 2.f, dt, 31 + s.P);
    ModelConfig c;
    c.n_layers = 2;
    c.hidden = H;
    c.n_heads = s.nh;
    c.head_dim = s.hd;
    auto kv = be.new_kv_cache(c);
    kv->reserve(s.P > 0 ? s.P : 1);
    if (s.P > 0) {  // past keys/values into layer 1 through kv_store with a qkv-shaped buffer (q part unused)
      vecf fake(size_t(s.P) * 3 * H, 0.f);
      for (int p = 0; p < s.P; ++p)
        for (int i = 0; i < 2 * H; ++i) fake[size_t(p) * 3 * H + H + i] = past[size_t(p) * 2 * H + i];
      DB fb(be, fake);
      be.kv_store(fb.p, s.P, 0, *kv, 1);
    }
    {  // grow (layer 1's past must survive the copy), then fill layer 0 with junk layer 1 must never read
      vecf junk = rnd(size_t(s.P + s.T) * 3 * H, 5.f, dt, 99);
      DB jb(be, junk);
      be.kv_store(jb.p, s.P + s.T, 0, *kv, 0);  // beyond capacity: kv_store grows the cache itself
      kv->reserve(1);  // no-op
    }
    DB qb(be, qkv), ob(be, size_t(s.T) * H);
    be.kv_store(qb.p, s.T, s.P, *kv, 1);
    be.attention(qb.p, s.T, s.P, s.nh, s.hd, *kv, 1, ob.p);
    cu::AttnArgs a;
    a.act = dt;
    a.qkv = qb.p;
    a.K = a.V = qb.p;
    a.T = s.T;
    a.pos0 = s.P;
    a.n_heads = s.nh;
    a.head_dim = s.hd;
    check(std::string("attention[") + cu::attention_path(a) + "] T=" + std::to_string(s.T) + " P=" +
              std::to_string(s.P) + " nh=" + std::to_string(s.nh) + " hd=" + std::to_string(s.hd),
          dt, ob.get(), ref_attention(qkv, past, s.T, s.P, s.nh, s.hd));
  }
}

static void test_elementwise(Backend& be, DType dt) {
  for (auto tf : {std::pair{1, 11008}, std::pair{3, 1001}, std::pair{17, 37}}) {
    const int T = tf.first, F = tf.second;
    vecf a = rnd(size_t(T) * F, 3.f, dt, 40), g = rnd(size_t(T) * F, 6.f, dt, 41);
    DB ab(be, a), gb(be, g), ob(be, a.size());
    be.swiglu(ab.p, gb.p, T, F, ob.p);
    vecd ref(a.size()), refadd(a.size());
    for (size_t i = 0; i < a.size(); ++i) {
      ref[i] = double(a[i]) * g[i] / (1.0 + std::exp(-double(g[i])));
      refadd[i] = double(a[i]) + g[i];
    }
    check("swiglu T=" + std::to_string(T) + " F=" + std::to_string(F), dt, ob.get(), ref);
    be.swiglu(ab.p, gb.p, T, F, ab.p);  // out aliases a, as the engine does
    check("swiglu in place T=" + std::to_string(T) + " F=" + std::to_string(F), dt, ab.get(), ref);
    DB hb(be, a);
    be.add(hb.p, gb.p, T, F);
    check("add T=" + std::to_string(T) + " H=" + std::to_string(F), dt, hb.get(), refadd);
  }
}

static void test_final_logits(Backend& be, DType dt) {
  struct S {
    int T, H, V;
    std::vector<int> rows;
  };
  std::vector<int> many;
  for (int i = 0; i < 70; ++i) many.push_back((i * 7) % 90);
  const S shapes[] = {{5, 256, 1000, {4, 0, 2}}, {1, 4096, 5003, {0}}, {90, 64, 333, many}, {3, 40, 17, {2}}};
  for (const S& s : shapes) {
    vecf h = rnd(size_t(s.T) * s.H, 2.f, dt, 50), g = rnd(s.H, 1.f, dt, 51), W = rnd(size_t(s.V) * s.H, 1.f, dt, 52);
    DB hb(be, h);
    DW gw(be, g, 1, s.H), Ww(be, W, s.V, s.H);
    vecf out(s.rows.size() * size_t(s.V), NAN);
    be.final_logits(hb.p, s.rows.data(), int(s.rows.size()), s.H, gw.w, Ww.w, 1e-6f, out.data());
    vecd xn = ref_rmsnorm_rows(h, g, s.rows, s.H, 1e-6f);
    vecf xnf(xn.size());
    for (size_t i = 0; i < xn.size(); ++i) xnf[i] = quant(float(xn[i]), dt);  // the device rounds xn to act
    check("final_logits T=" + std::to_string(s.T) + " H=" + std::to_string(s.H) + " V=" + std::to_string(s.V) +
              " R=" + std::to_string(s.rows.size()),
          dt, out, ref_linear(xnf, W, nullptr, int(s.rows.size()), s.V, s.H));
  }
}

static void test_errors(Backend& be) {
  bool threw = false;
  std::string msg;
  try {
    be.alloc(size_t(1) << 46);
  } catch (const std::runtime_error& e) {
    threw = true;
    msg = e.what();
  }
  expect(threw && msg.rfind("CUDA out of memory while allocating", 0) == 0, "OOM throws: " + msg);
  vecf x = {1, 2, 3};
  DB a(be, x), b(be, x);
  be.add(a.p, b.p, 1, 3);
  vecf r = a.get();
  expect(r[0] == 2 && r[1] == 4 && r[2] == 6, "backend still works after OOM");
}

// ------------------------------------------------------------------------------------------------ perf
static double time_it(Backend& be, int reps, const std::function<void()>& f) {
  f();
  be.synchronize();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) f();
  be.synchronize();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps;
}

static void perf(Backend& be, DType dt) {
  std::printf("---- perf (%s, cuBLAS %s) ----\n", dt_name(dt),
              static_cast<cu::CudaBackend&>(be).cublas_in_use() ? "on" : "off");
  const size_t es = dtype_size(dt);
  struct G {
    int N, K;
  };
  double total_s = 0, total_b = 0;
  for (G g : {G{12288, 4096}, G{4096, 4096}, G{11008, 4096}, G{4096, 11008}, G{151936, 4096}}) {
    std::vector<uint16_t> host(size_t(g.N) * g.K, 0x3c00);  // bf16 1.0078 / fp16 1.0
    Weight hw;
    hw.data = host.data();
    hw.dtype = dt == DType::F16 ? DType::F16 : DType::BF16;
    hw.rows = g.N;
    hw.cols = g.K;
    Weight w = be.upload(hw);
    for (int T : {1, 4, 8}) {
      DB x(be, size_t(T) * g.K), y(be, size_t(T) * g.N);
      const double s = time_it(be, 20, [&] { be.linear(x.p, w, nullptr, T, y.p); });
      const double bytes = double(g.N) * g.K * es;
      std::printf("PERF gemv T=%d N=%6d K=%5d  %8.1f us  %6.0f GB/s\n", T, g.N, g.K, s * 1e6, bytes / s / 1e9);
      if (T == 1 && g.N != 4096) {
        total_s += s * (g.N == 151936 ? 1 : 32);
        total_b += bytes * (g.N == 151936 ? 1 : 32);
      }
      if (T == 1 && g.N == 4096 && g.K == 4096) {
        total_s += s * 32;
        total_b += bytes * 32;
      }
    }
    for (int T : {64, 512, 2048}) {
      DB x(be, size_t(T) * g.K), y(be, size_t(T) * g.N);
      const double s = time_it(be, 5, [&] { be.linear(x.p, w, nullptr, T, y.p); });
      std::printf("PERF gemm T=%4d N=%6d K=%5d  %8.1f us  %6.1f TFLOP/s\n", T, g.N, g.K, s * 1e6,
                  2.0 * T * g.N * g.K / s / 1e12);
    }
    be.release(w);
  }
  std::printf("PERF decode GEMV total (32 x (qkv + o + w1 + w2 + down) + lm_head, T=1): %.2f ms, %.0f GB/s\n",
              total_s * 1e3, total_b / total_s / 1e9);
  // attention
  const int nh = 32, hd = 128, H = nh * hd;
  ModelConfig c;
  c.n_layers = 1;
  c.hidden = H;
  c.n_heads = nh;
  c.head_dim = hd;
  for (auto tp : {std::pair{1, 512}, std::pair{1, 8192}, std::pair{1, 32000}, std::pair{4, 8192},
                  std::pair{512, 0}, std::pair{2048, 0}, std::pair{512, 4096}}) {
    const int T = tp.first, P = tp.second;
    auto kv = be.new_kv_cache(c);
    kv->reserve(P + T);
    DB qkv(be, size_t(P + T) * 3 * H), out(be, size_t(T) * H);
    be.kv_store(qkv.p, P + T, 0, *kv, 0);
    const double s = time_it(be, 10, [&] { be.attention(qkv.p, T, P, nh, hd, *kv, 0, out.p); });
    const double pairs = double(T) * P + double(T) * (T + 1) / 2;
    std::printf("PERF attention T=%5d P=%5d  %8.1f us  %6.0f GB/s (K+V)  %6.1f TFLOP/s\n", T, P, s * 1e6,
                2.0 * (P + T) * H * es / s / 1e9, 4.0 * pairs * hd * nh / s / 1e12);
  }
}

int main(int argc, char** argv) {
  bool do_perf = false;
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--perf") == 0) do_perf = true;
  const CudaInfo info = cuda_info();
  std::printf("cuda_info: available=%d devices=%d runtime=%d driver=%d name='%s' cc=%d.%d mem=%zu/%zu cublas=%d "
              "error='%s' cublas_error='%s'\n",
              info.available, info.device_count, info.runtime_version, info.driver_version, info.name.c_str(),
              info.cc_major, info.cc_minor, info.free_mem, info.total_mem, info.cublas, info.error.c_str(),
              info.cublas_error.c_str());
  if (!info.available) return 2;
  for (const char* dts : {"bf16", "fp16", "fp32"}) {
    try {
      auto be = make(dts);
      const DType dt = be->act_dtype();
      auto& cb = static_cast<cu::CudaBackend&>(*be);
      std::printf("==== %s: cuBLAS %s %s\n", dts, cb.cublas_in_use() ? "on" : "off", cb.cublas_note().c_str());
      test_embedding_upload(*be, dt);
      test_rmsnorm(*be, dt);
      test_linear(*be, dt, "default");
      if (cb.cublas_in_use()) {  // the same shapes without cuBLAS: T >= 64 then runs the own GEMMs
        setenv("QWEN_CUBLAS", "0", 1);
        auto own = make(dts);
        unsetenv("QWEN_CUBLAS");
        test_linear(*own, dt, "QWEN_CUBLAS=0");
      }
      test_rope(*be, dt);
      test_attention(*be, dt);
      test_elementwise(*be, dt);
      test_final_logits(*be, dt);
      test_errors(*be);
      if (do_perf && dt == DType::BF16) perf(*be, dt);
    } catch (const std::exception& e) {
      ++g_fail;
      std::printf("FAIL %s: exception: %s\n", dts, e.what());
    }
  }
  std::printf("%d passed, %d failed\n", g_pass, g_fail);
  return g_fail ? 1 : 0;
}
