// Stand-alone check of the CUDA backend for the GPU machine (no Node needed): every Backend op at odd and Qwen
// shapes, for bf16 / fp16 / fp32 activations, against float64 loops on inputs pre-rounded to the activation type;
// every kernel path (GEMV vec/scalar, cuBLAS, WMMA, FMA GEMM; split/flash attention); batched steps of mixed
// sequences (decode / prefill / chunk continuation) over a paged KV cache with shuffled block ids, checked against
// float64 for rope and attention and bit for bit for the cache layout; OOM survival (activations and KV pool);
// then (with --perf) bandwidth / FLOP/s of the hot kernels. Build: cuda/test/build_op_check.sh. Exit code 1 on any
// failure. Not part of the addon (cuda/test/ is not globbed by CMakeLists.txt).
#include <algorithm>
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
#include "../gemm_skinny.cuh"
#include "../linear.cuh"
#include "core/backend.h"
#include "core/dtype.h"
#include "core/kv_cache.h"
#include "cpu/sample_fx.h"

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
template <class X>  // float inputs as stored, or exact (double) normalized rows
static vecd ref_linear(const std::vector<X>& x, const vecf& W, const vecf* b, int T, int N, int K) {
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

// gemm_skinny called directly (the backend takes it only under QWEN_GEMM_SKINNY=1): odd and Qwen shapes, bias or
// not, with a workspace (split-K + reduce) and without (one pass), act and fp32 output.
static void test_skinny(Backend& be, DType dt) {
  if (dt == DType::F32) return;
  struct S {
    int T, N, K;
  };
  const S shapes[] = {{9, 130, 24},   {16, 64, 64},     {17, 300, 256},  {33, 129, 72},   {48, 200, 520},
                      {64, 200, 4096}, {64, 4096, 4096}, {40, 12288, 4096}, {64, 4096, 11008}, {1, 77, 64},
                      {64, 1000, 8},   {23, 33, 4104},   {4, 4096, 4096},   {8, 11008, 4096},  {3, 130, 1032}};
  void* ws = nullptr;
  const size_t ws_bytes = size_t(16) << 20;
  if (cudaMalloc(&ws, ws_bytes) != cudaSuccess) {
    expect(false, "skinny: cudaMalloc of the workspace");
    return;
  }
  for (const S& s : shapes)
    for (int mode = 0; mode < 3; ++mode) {  // 0: with workspace, 1: without, 2: fp32 output with workspace
      const bool bias = mode != 1;
      vecf x = rnd(size_t(s.T) * s.K, 1.f, dt, 20 + s.T), W = rnd(size_t(s.N) * s.K, 1.f, dt, 21 + s.N),
           b = rnd(s.N, 1.f, dt, 22);
      DB xb(be, x), yb(be, size_t(s.T) * s.N);
      DW Ww(be, W, s.N, s.K), bw(be, b, 1, s.N);
      float* y32 = nullptr;
      if (mode == 2 && cudaMalloc(&y32, size_t(s.T) * s.N * sizeof(float)) != cudaSuccess) y32 = nullptr;
      be.synchronize();
      bool threw = false;
      try {
        cu::gemm_skinny(dt, mode == 2 ? DType::F32 : dt, xb.p, Ww.w.data, bias ? bw.w.data : nullptr,
                        mode == 2 ? static_cast<void*>(y32) : yb.p, s.T, s.N, s.K, mode == 1 ? nullptr : ws,
                        mode == 1 ? 0 : ws_bytes, 0);
      } catch (const std::exception& e) {
        threw = true;
        expect(false, std::string("skinny threw: ") + e.what());
      }
      const cudaError_t e = cudaDeviceSynchronize();
      const std::string label = "skinny T=" + std::to_string(s.T) + " N=" + std::to_string(s.N) + " K=" +
                                std::to_string(s.K) + (bias ? " +b" : "") +
                                (mode == 0 ? " ws" : mode == 1 ? " no-ws" : " ws fp32-out") + " splits-ws=" +
                                std::to_string(cu::gemm_skinny_workspace(s.T, s.N, s.K));
      if (e != cudaSuccess || threw) {
        expect(false, label + ": " + cudaGetErrorString(e));
        cudaGetLastError();
      } else if (mode == 2) {
        vecf got(size_t(s.T) * s.N);
        cudaMemcpy(got.data(), y32, got.size() * sizeof(float), cudaMemcpyDeviceToHost);
        check(label, DType::F32, got, ref_linear(x, W, &b, s.T, s.N, s.K), 10.0);  // fp32 accumulators, unrounded
      } else {
        check(label, dt, yb.get(), ref_linear(x, W, bias ? &b : nullptr, s.T, s.N, s.K));
      }
      if (y32) cudaFree(y32);
    }
  cudaFree(ws);
}

// ------------------------------------------------------------------------------------------------ paged steps
// One sequence of a test step: T new rows at positions P..P+T-1 after P cached positions, its own rotary parameters.
struct Seq {
  int T, P;
  double base;  // rotary base (NTK alpha differs per sequence)
  int logn;     // logN base (0 = off)
};

static RopeParams rope_for(const Seq& q, int rot) {
  RopeParams rp;
  rp.rot_dims = rot;
  rp.logn_base = q.logn;
  for (int i = 0; i < rot / 2; ++i) rp.inv_freq[i] = float(1.0 / std::pow(q.base, 2.0 * i / rot));
  return rp;
}

// Rows [row0, row0 + T) of qkv[*, 3H] rotated as slice (pos0, rp) in float64 (what the device computes in fp32).
static void ref_rope_rows(vecd& out, int row0, int T, int pos0, int nh, int hd, const RopeParams& rp) {
  const int H = nh * hd, half = rp.rot_dims / 2;
  for (int t = 0; t < T; ++t) {
    const int p = pos0 + t;
    double scale = 1.0;
    if (rp.logn_base > 0 && p + 1 > rp.logn_base) scale = std::log(double(p + 1)) / std::log(double(rp.logn_base));
    for (int head = 0; head < 2 * nh; ++head) {
      double* x = &out[size_t(row0 + t) * 3 * H + size_t(head) * hd];
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
}

// A pool and one cache per sequence, with block ids deliberately non-contiguous and out of order: half the blocks
// are taken and given back first (so they come back in descending order), then the caches take one block each in
// turn (interleaved), the rest are fresh ids (ascending, on new slabs once past 64).
struct PagedCaches {
  std::shared_ptr<KVPool> pool;
  std::vector<std::unique_ptr<KVCache>> kv;
  PagedCaches(Backend& be, int n_layers, int nh, int hd, const std::vector<Seq>& seqs, int spare = 3) {
    ModelConfig c;
    c.n_layers = n_layers;
    c.hidden = nh * hd;
    c.n_heads = nh;
    c.head_dim = hd;
    int blocks = 0;
    for (const Seq& q : seqs) blocks += kv_blocks_for(q.P + q.T);
    pool = be.new_kv_pool(c, blocks + spare);
    {
      KVCache tmp(pool);
      if (!tmp.reserve((blocks / 2) * kKvBlockTokens)) throw std::runtime_error("pool too small (shuffle)");
    }
    for (size_t i = 0; i < seqs.size(); ++i) kv.push_back(std::make_unique<KVCache>(pool));
    for (bool more = true; more;) {
      more = false;
      for (size_t i = 0; i < seqs.size(); ++i)
        if (kv[i]->capacity() < seqs[i].P + seqs[i].T) {
          if (!kv[i]->reserve(kv[i]->capacity() + 1)) throw std::runtime_error("pool too small");
          more = true;
        }
    }
  }
};

static std::vector<SeqSlice> slices_for(const std::vector<Seq>& seqs, const std::vector<RopeParams>& rp,
                                        PagedCaches* pc) {
  std::vector<SeqSlice> sl(seqs.size());
  int row = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    sl[i].row0 = row;
    sl[i].T = seqs[i].T;
    sl[i].pos0 = seqs[i].P;
    sl[i].rope = &rp[i];
    sl[i].kv = pc ? pc->kv[i].get() : nullptr;
    row += seqs[i].T;
  }
  return sl;
}

// One element of a KV block as float: block `id`, layer, k = 0 | v = 1, row, column (layout [layer][k|v][row][H]).
static vecf read_kv_row(Backend& be, KVPool& pool, int32_t id, int layer, int kv, int row, int H) {
  auto* cp = dynamic_cast<cu::CudaKVPool*>(&pool);
  const DType dt = be.act_dtype();
  const size_t es = dtype_size(dt);
  const char* base = reinterpret_cast<const char*>(cp->host_table()[id]);
  std::vector<unsigned char> raw(size_t(H) * es);
  be.synchronize();
  const cudaError_t e = cudaMemcpy(raw.data(), base + ((size_t(layer) * 2 + kv) * kKvBlockTokens + row) * H * es,
                                   raw.size(), cudaMemcpyDeviceToHost);
  if (e != cudaSuccess) throw std::runtime_error(std::string("cudaMemcpy of a KV row: ") + cudaGetErrorString(e));
  vecf o(static_cast<size_t>(H));
  for (int i = 0; i < H; ++i) {
    if (dt == DType::F32) {
      std::memcpy(&o[i], &raw[size_t(i) * 4], 4);
    } else {
      uint16_t u;
      std::memcpy(&u, &raw[size_t(i) * 2], 2);
      o[i] = dt == DType::BF16 ? bf16_to_f32(u) : f16_to_f32(u);
    }
  }
  return o;
}

// rope alone: single-slice shapes, then one step of several slices (own pos0, inv_freq and logN each, a row gap that
// must stay untouched); kv == nullptr, as the op tests do.
static void test_rope(Backend& be, DType dt) {
  struct S {
    int T, pos0, nh, hd, rot, logn;
  };
  const S shapes[] = {{1, 0, 4, 128, 128, 0},    {3, 5, 4, 128, 128, 8192}, {17, 9000, 2, 128, 128, 8192},
                      {5, 8190, 3, 64, 32, 8192}, {100, 20000, 2, 128, 128, 8192}};
  for (const S& sh : shapes) {
    const std::vector<Seq> seqs = {{sh.T, sh.pos0, sh.pos0 > 8192 ? 30527.737 : 10000.0, sh.logn}};
    const std::vector<RopeParams> rp = {rope_for(seqs[0], sh.rot)};
    const std::vector<SeqSlice> sl = slices_for(seqs, rp, nullptr);
    const int H = sh.nh * sh.hd;
    vecf qkv = rnd(size_t(sh.T) * 3 * H, 1.f, dt, 20 + sh.T);
    DB b(be, qkv);
    be.begin_step(sl.data(), 1);
    be.rope(b.p, sl.data(), 1, sh.nh, sh.hd);
    vecd ref(qkv.begin(), qkv.end());
    ref_rope_rows(ref, 0, sh.T, sh.pos0, sh.nh, sh.hd, rp[0]);
    check("rope T=" + std::to_string(sh.T) + " pos0=" + std::to_string(sh.pos0) + " nh=" + std::to_string(sh.nh) +
              " hd=" + std::to_string(sh.hd) + " rot=" + std::to_string(sh.rot) + " logn=" + std::to_string(sh.logn),
          dt, b.get(), ref);
  }
  {  // several slices in one launch; rows 9..10 belong to no slice
    const int nh = 3, hd = 64, rot = 32, H = nh * hd;
    const std::vector<Seq> seqs = {{1, 8191, 10000.0, 8192},  {4, 33, 17000.0, 0},   {1, 20000, 30527.737, 8192},
                                   {3, 0, 10000.0, 8192},     {2, 12345, 23000.0, 8192}};
    std::vector<RopeParams> rp;
    for (const Seq& q : seqs) rp.push_back(rope_for(q, rot));
    std::vector<SeqSlice> sl = slices_for(seqs, rp, nullptr);
    for (size_t i = 3; i < sl.size(); ++i) sl[i].row0 += 2;  // the gap
    const int rows = sl.back().row0 + sl.back().T;
    vecf qkv = rnd(size_t(rows) * 3 * H, 1.f, dt, 77);
    DB b(be, qkv);
    be.rope(b.p, sl.data(), int(sl.size()), nh, hd);  // no begin_step: the backend must stage this step itself
    vecd ref(qkv.begin(), qkv.end());
    for (size_t i = 0; i < sl.size(); ++i) ref_rope_rows(ref, sl[i].row0, sl[i].T, sl[i].pos0, nh, hd, rp[i]);
    check("rope 5 slices (own inv_freq / logN, row gap)", dt, b.get(), ref);
  }
}

// out[rows, H] of one slice: row t sees keys 0..P+t; keys/values of positions < P from past[P][2H] (k | v), of
// positions >= P from qkv rows row0 + (p - P) (as the device holds them: post-rope, in the activation type).
static void ref_attention_slice(vecd& out, const vecf& qkv, const vecf& past, int row0, int T, int P, int nh,
                                int hd) {
  const int H = nh * hd;
  auto K = [&](int j, int h, int d) -> double {
    return j < P ? past[size_t(j) * 2 * H + h * hd + d] : qkv[size_t(row0 + j - P) * 3 * H + H + h * hd + d];
  };
  auto V = [&](int j, int h, int d) -> double {
    return j < P ? past[size_t(j) * 2 * H + H + h * hd + d] : qkv[size_t(row0 + j - P) * 3 * H + 2 * H + h * hd + d];
  };
  for (int t = 0; t < T; ++t)
    for (int h = 0; h < nh; ++h) {
      const int L = P + t + 1;
      vecd sc(L);
      double m = -1e300;
      for (int j = 0; j < L; ++j) {
        double acc = 0;
        for (int d = 0; d < hd; ++d) acc += double(qkv[size_t(row0 + t) * 3 * H + h * hd + d]) * K(j, h, d);
        sc[j] = acc / std::sqrt(double(hd));
        m = std::max(m, sc[j]);
      }
      double l = 0;
      for (int j = 0; j < L; ++j) l += (sc[j] = std::exp(sc[j] - m));
      for (int d = 0; d < hd; ++d) {
        double o = 0;
        for (int j = 0; j < L; ++j) o += sc[j] * V(j, h, d);
        out[size_t(row0 + t) * H + h * hd + d] = o / l;
      }
    }
}

// A full step of several sequences at layer 1 of a 2-layer paged cache: past K/V written by a kv_store step of their
// own (slices at pos 0), layer 0 filled with junk that layer 1 must never read, then [begin_step], rope (optional),
// kv_store, attention. Checks rope against float64, the cache contents bit for bit (layout [layer][k|v][row][H] at
// block blocks()[p / 32], row p % 32) and attention against float64 on the values the device holds.
// fused: rope_kv_store with a random QKV bias instead of rope + kv_store (with_rope must be true); then q is checked
// against float64 of (qkv + bias) rotated and scaled, and the new cache rows against float64 of the rotated k and
// biased v (they are not in qkv any more), the past rows bit for bit.
static void run_step_check(Backend& be, DType dt, const std::string& name, int nh, int hd, const std::vector<Seq>& seqs,
                           bool with_rope, bool call_begin_step, uint32_t seed, bool fused = false) {
  const int H = nh * hd, rot = hd % 4 == 0 ? hd / 2 : hd - (hd % 2);  // partial rotation when hd allows
  PagedCaches pc(be, 2, nh, hd, seqs);
  std::vector<RopeParams> rp;
  for (const Seq& q : seqs) rp.push_back(rope_for(q, rot));
  const std::vector<SeqSlice> sl = slices_for(seqs, rp, &pc);
  const int n = int(sl.size()), rows = sl.back().row0 + sl.back().T;
  int Ptot = 0, Ltot = 0;
  for (const Seq& q : seqs) {
    Ptot += q.P;
    Ltot += q.P + q.T;
  }
  std::vector<vecf> past(seqs.size());
  for (size_t i = 0; i < seqs.size(); ++i) past[i] = rnd(size_t(seqs[i].P) * 2 * H, 2.f, dt, seed + 1000 + uint32_t(i));
  {  // layer 0: junk at every position of every sequence
    std::vector<Seq> js = seqs;
    for (Seq& q : js) {
      q.T += q.P;
      q.P = 0;
    }
    const std::vector<SeqSlice> jsl = slices_for(js, rp, &pc);
    vecf junk = rnd(size_t(Ltot) * 3 * H, 50.f, dt, seed + 7);
    DB jb(be, junk);
    be.begin_step(jsl.data(), n);
    be.kv_store(jb.p, jsl.data(), n, nh, hd, 0);
  }
  if (Ptot > 0) {  // layer 1: the past, through kv_store of a step whose slices start at position 0
    std::vector<Seq> ps;
    std::vector<RopeParams> prp;
    std::vector<KVCache*> pkv;
    for (size_t i = 0; i < seqs.size(); ++i)
      if (seqs[i].P > 0) {
        ps.push_back({seqs[i].P, 0, seqs[i].base, seqs[i].logn});
        prp.push_back(rp[i]);
        pkv.push_back(pc.kv[i].get());
      }
    std::vector<SeqSlice> psl = slices_for(ps, prp, nullptr);
    for (size_t i = 0; i < psl.size(); ++i) psl[i].kv = pkv[i];
    vecf fake(size_t(Ptot) * 3 * H, 0.f);
    int row = 0;
    for (size_t i = 0; i < seqs.size(); ++i)
      for (int p = 0; p < seqs[i].P; ++p, ++row)
        for (int e = 0; e < 2 * H; ++e) fake[size_t(row) * 3 * H + H + e] = past[i][size_t(p) * 2 * H + e];
    DB fb(be, fake);
    be.begin_step(psl.data(), int(psl.size()));
    be.kv_store(fb.p, psl.data(), int(psl.size()), nh, hd, 1);
  }
  vecf qkv = rnd(size_t(rows) * 3 * H, 2.f, dt, seed);
  const vecf bias = rnd(size_t(3) * H, 1.f, dt, seed + 77);
  DW bw(be, bias, 3 * H, 1);
  DB qb(be, qkv), ob(be, size_t(rows) * H);
  if (call_begin_step) be.begin_step(sl.data(), n);
  if (fused) {
    auto& cb = static_cast<cu::CudaBackend&>(be);
    const bool was = cb.fused_rope();
    cb.set_fused_rope(true);
    be.rope_kv_store(qb.p, &bw.w, sl.data(), n, nh, hd, 1);
    cb.set_fused_rope(was);
  } else {
    if (with_rope) be.rope(qb.p, sl.data(), n, nh, hd);
    be.kv_store(qb.p, sl.data(), n, nh, hd, 1);
  }
  be.attention(qb.p, sl.data(), n, nh, hd, 1, ob.p);
  vecf dev_qkv = qb.get();  // post-rope q (and k, unfused) as the device rounded them
  cu::AttnArgs a;
  a.act = dt;
  a.qkv = qb.p;
  a.out = ob.p;
  a.step = static_cast<cu::CudaBackend&>(be).step_view();
  a.n_heads = nh;
  a.head_dim = hd;
  const std::string label = name + " [" + cu::attention_path(a) + "] nh=" + std::to_string(nh) +
                            " hd=" + std::to_string(hd) + " slices=" + std::to_string(n) + " rows=" +
                            std::to_string(rows);
  if (with_rope) {
    vecd ref(qkv.begin(), qkv.end());
    if (fused)
      for (size_t e = 0; e < ref.size(); ++e) ref[e] += bias[e % size_t(3 * H)];
    for (int i = 0; i < n; ++i) ref_rope_rows(ref, sl[i].row0, sl[i].T, sl[i].pos0, nh, hd, rp[size_t(i)]);
    if (fused) {
      // q against float64; k and v are only in the cache: read the new rows back into dev_qkv's k | v columns (so
      // the attention reference below uses what the device holds) and check them against float64 too.
      vecd qref(size_t(rows) * H), kvref(size_t(rows) * 2 * H);
      vecf qgot(size_t(rows) * H), kvgot(size_t(rows) * 2 * H);
      for (int i = 0; i < n; ++i)
        for (int t = 0; t < sl[i].T; ++t) {
          const int row = sl[i].row0 + t, p = sl[i].pos0 + t;
          const auto& blocks = pc.kv[size_t(i)]->blocks();
          for (int kvi = 0; kvi < 2; ++kvi) {
            const vecf got = read_kv_row(be, *pc.pool, blocks[size_t(p / kKvBlockTokens)], 1, kvi,
                                         p % kKvBlockTokens, H);
            for (int e = 0; e < H; ++e) {
              dev_qkv[size_t(row) * 3 * H + size_t(kvi + 1) * H + e] = got[e];
              kvgot[size_t(row) * 2 * H + size_t(kvi) * H + e] = got[e];
              kvref[size_t(row) * 2 * H + size_t(kvi) * H + e] = ref[size_t(row) * 3 * H + size_t(kvi + 1) * H + e];
            }
          }
        }
      for (int row = 0; row < rows; ++row)
        for (int e = 0; e < H; ++e) {
          qgot[size_t(row) * H + e] = dev_qkv[size_t(row) * 3 * H + e];
          qref[size_t(row) * H + e] = ref[size_t(row) * 3 * H + e];
        }
      check("step rope_kv_store q " + label, dt, qgot, qref);
      check("step rope_kv_store k|v (cache) " + label, dt, kvgot, kvref);
    } else {
      check("step rope " + label, dt, dev_qkv, ref);
    }
  }
  {  // cache contents, bit for bit: past rows and the new rows, K and V, layer 1
    size_t bad = 0, checked = 0;
    std::string first;
    for (int i = 0; i < n; ++i) {
      const auto& blocks = pc.kv[size_t(i)]->blocks();
      const int P = seqs[size_t(i)].P, L = P + seqs[size_t(i)].T;
      for (int p = 0; p < L; ++p) {
        if (p < P && p % 7 != 0 && p != P - 1) continue;  // a sample of the past is enough
        for (int kvi = 0; kvi < 2; ++kvi) {
          const vecf got = read_kv_row(be, *pc.pool, blocks[size_t(p / kKvBlockTokens)], 1, kvi,
                                       p % kKvBlockTokens, H);
          for (int e = 0; e < H; ++e) {
            const float want = p < P ? past[size_t(i)][size_t(p) * 2 * H + size_t(kvi) * H + e]
                                     : dev_qkv[size_t(sl[i].row0 + p - P) * 3 * H + size_t(kvi + 1) * H + e];
            ++checked;
            if (got[e] != want && !bad++)
              first = "slice " + std::to_string(i) + " pos " + std::to_string(p) + (kvi ? " v" : " k") + "[" +
                      std::to_string(e) + "] got " + std::to_string(got[e]) + " want " + std::to_string(want);
          }
        }
      }
    }
    expect(bad == 0, "step kv_store layout " + label + ": " + std::to_string(bad) + "/" + std::to_string(checked) +
                         " mismatches " + first);
  }
  vecd ref(size_t(rows) * H, 0.0);
  for (int i = 0; i < n; ++i)
    ref_attention_slice(ref, dev_qkv, past[size_t(i)], sl[i].row0, sl[i].T, sl[i].pos0, nh, hd);
  check("step attention " + label, dt, ob.get(), ref);
}

static void test_attention(Backend& be, DType dt) {
  // single sequences (every path: split with one / several chunks, flash, odd head_dim, head counts, block edges)
  struct S {
    int T, P, nh, hd;
  };
  const S shapes[] = {{1, 0, 2, 128},  {1, 300, 3, 128}, {3, 600, 2, 64},  {4, 5000, 2, 128}, {16, 250, 2, 128},
                      {17, 0, 2, 128}, {100, 37, 3, 128}, {33, 0, 2, 64},  {130, 700, 2, 128}, {5, 1000, 2, 80},
                      {70, 10, 1, 32}, {20, 300, 2, 72},  {32, 32, 1, 128}, {1, 31, 3, 64},  {20, 13, 2, 64}};
  for (const S& sh : shapes)
    run_step_check(be, dt, "1 seq T=" + std::to_string(sh.T) + " P=" + std::to_string(sh.P), sh.nh, sh.hd,
                   {{sh.T, sh.P, 10000.0, 0}}, false, true, 30 + sh.T);

  // mixed batches: many decodes (various pos0, most not multiples of 32, several chunks), a prefill, a chunk
  // continuation, slices just above / at kFlashMinT, a slice with pos0 = 0 and T = 1
  std::vector<Seq> mix;
  for (int i = 0; i < 24; ++i) mix.push_back({1, (i * 613 + 5) % 1700, 10000.0 + 500.0 * i, i % 3 ? 8192 : 40});
  mix.insert(mix.begin() + 5, Seq{300, 0, 10000.0, 8192});
  mix.insert(mix.begin() + 11, Seq{100, 700, 12000.0, 256});
  mix.insert(mix.begin() + 13, Seq{17, 31, 10000.0, 0});
  mix.insert(mix.begin() + 2, Seq{16, 500, 10000.0, 0});
  mix.push_back({5, 33, 10000.0, 0});
  mix.push_back({1, 0, 10000.0, 0});
  run_step_check(be, dt, "mixed rope+kv_store+attention", 3, 128, mix, true, true, 501);
  run_step_check(be, dt, "mixed (ops without begin_step)", 3, 64, mix, true, false, 502);
  run_step_check(be, dt, "mixed fused rope_kv_store", 3, 128, mix, true, true, 505, true);
  run_step_check(be, dt, "mixed fused rope_kv_store (no begin_step)", 3, 64, mix, true, false, 506, true);
  const std::vector<Seq> odd = {{1, 900, 10000.0, 0}, {40, 0, 10000.0, 0}, {1, 3, 10000.0, 0},
                                {23, 259, 10000.0, 64}, {2, 511, 10000.0, 0}};
  run_step_check(be, dt, "mixed odd head_dim", 5, 80, odd, true, true, 503);
  run_step_check(be, dt, "mixed tiny heads", 1, 32, odd, true, true, 504);
  run_step_check(be, dt, "mixed odd head_dim fused", 5, 80, odd, true, true, 507, true);  // partial rotary: rest dims

  // flash tile edges (default path = flash2 for bf16/fp16): T around the 16-row warp / 64-query tile / 64-key tile
  // edges, pos0 = 0 (prefill) and pos0 > 0 not a multiple of 32 (chunked prefill), both head dims
  for (int hd : {64, 128})
    for (int T : {17, 63, 64, 65, 100, 512})
      for (int P : {0, 45})
        run_step_check(be, dt, "flash T=" + std::to_string(T) + " P=" + std::to_string(P), 2, hd,
                       {{T, P, 10000.0, 0}}, false, true, 600 + T + P + hd);
  for (int hd : {64, 128}) run_step_check(be, dt, "flash T=512 P=1000", 2, hd, {{512, 1000, 10000.0, 0}}, false,
                                          true, 611 + hd);
  // several flash slices of different lengths (and a few split rows) in one step, with rope; then the same step
  // through the WMMA fallback (QWEN_ATTN_FLASH=wmma is read on every call)
  const std::vector<Seq> fl = {{63, 0, 10000.0, 0},  {1, 50, 10000.0, 0},   {65, 45, 12000.0, 0},
                               {17, 200, 10000.0, 0}, {100, 0, 10000.0, 64}, {64, 64, 10000.0, 0},
                               {5, 7, 10000.0, 0},    {512, 33, 11000.0, 0}};
  for (int hd : {64, 128}) run_step_check(be, dt, "flash slices", 3, hd, fl, true, true, 620 + hd);
  setenv("QWEN_ATTN_FLASH", "wmma", 1);
  for (int hd : {64, 128}) run_step_check(be, dt, "flash slices (QWEN_ATTN_FLASH=wmma)", 3, hd, fl, true, true, 630 + hd);
  unsetenv("QWEN_ATTN_FLASH");
}

// A pool larger than the device: acquire throws "CUDA out of memory ... KV cache", takes nothing, and the backend and
// the pool keep working.
static void test_kv_pool_oom(Backend& be, DType dt) {
  ModelConfig c;
  c.n_layers = 32;
  c.hidden = 4096;
  c.n_heads = 32;
  c.head_dim = 128;
  auto pool = be.new_kv_pool(c, 1 << 20);  // 16 TiB of bf16 blocks
  KVCache kv(pool);
  bool threw = false;
  std::string msg;
  try {
    kv.reserve((1 << 20) * kKvBlockTokens);
  } catch (const std::runtime_error& e) {
    threw = true;
    msg = e.what();
  }
  expect(threw && msg.find("CUDA out of memory") != std::string::npos && msg.find("KV cache") != std::string::npos &&
             pool->used() == 0 && kv.capacity() == 0,
         "KV pool OOM throws and takes nothing: " + msg);
  expect(kv.reserve(100 * kKvBlockTokens) && pool->used() == 100, "KV pool still hands out blocks after OOM");
  kv.shrink(0);
  pool.reset();
  (void)dt;
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

// The fused ops against their float64 compositions: add_rmsnorm (h += x, then rmsnorm of the STORED h) and
// mlp_swiglu (fused GEMV for T <= 8 with K % 8 == 0, else linear + linear + swiglu).
static void test_fused(Backend& be, DType dt) {
  for (auto th : {std::pair{1, 4096}, std::pair{3, 100}, std::pair{9, 4096}}) {
    const int T = th.first, H = th.second;
    vecf h = rnd(size_t(T) * H, 3.f, dt, 60), x = rnd(size_t(T) * H, 3.f, dt, 61), g = rnd(H, 1.5f, dt, 62);
    DB hb(be, h), xb(be, x), yb(be, h.size());
    DW gw(be, g, 1, H);
    be.add_rmsnorm(hb.p, xb.p, gw.w, 1e-6f, T, H, yb.p);
    vecd sum(h.size());
    vecf hs(h.size());
    for (size_t i = 0; i < h.size(); ++i) {
      sum[i] = double(h[i]) + x[i];
      hs[i] = quant(float(sum[i]), dt);  // the stored residual the norm reads
    }
    std::vector<int> rows(static_cast<size_t>(T), 0);
    for (int t = 0; t < T; ++t) rows[size_t(t)] = t;
    const std::string sh = " T=" + std::to_string(T) + " H=" + std::to_string(H);
    check("add_rmsnorm h" + sh, dt, hb.get(), sum);
    check("add_rmsnorm y" + sh, dt, yb.get(), ref_rmsnorm_rows(hs, g, rows, H, 1e-6f));
  }
  struct M {
    int T, K, F;
  };
  for (const M m : {M{1, 4096, 11008}, M{4, 256, 300}, M{8, 64, 33}, M{9, 256, 300}, M{2, 37, 21}}) {
    vecf x = rnd(size_t(m.T) * m.K, 1.f, dt, 63), w1 = rnd(size_t(m.F) * m.K, 0.1f, dt, 64),
         w2 = rnd(size_t(m.F) * m.K, 0.1f, dt, 65);
    DB xb(be, x), ab(be, size_t(m.T) * m.F), gb(be, size_t(m.T) * m.F);
    DW w1w(be, w1, m.F, m.K), w2w(be, w2, m.F, m.K);
    be.mlp_swiglu(xb.p, w1w.w, w2w.w, m.T, ab.p, gb.p);
    const vecd up = ref_linear(x, w1, nullptr, m.T, m.F, m.K), gate = ref_linear(x, w2, nullptr, m.T, m.F, m.K);
    vecd ref(up.size());
    for (size_t i = 0; i < ref.size(); ++i) ref[i] = up[i] * gate[i] / (1.0 + std::exp(-gate[i]));
    check("mlp_swiglu T=" + std::to_string(m.T) + " K=" + std::to_string(m.K) + " F=" + std::to_string(m.F), dt,
          ab.get(), ref);
  }
}

// The folded layer's ops (QWEN_FOLD_NORM; cuda/gemv.cuh): for T <= 8 with K % 8 == 0 one GEMV each, else the
// compositions (T = 9, odd K). References in float64 from the exact normalized rows (the folded GEMV does not round
// them; the composition does, within the tolerance).
static void test_folded(Backend& be, DType dt) {
  struct S {
    int T, K, N;
  };
  auto rows_of = [](int T) {
    std::vector<int> r(static_cast<size_t>(T));
    for (int t = 0; t < T; ++t) r[size_t(t)] = t;
    return r;
  };
  for (const S m : {S{1, 4096, 12288}, S{8, 4096, 300}, S{3, 256, 33}, S{9, 256, 40}, S{2, 37, 21}}) {
    vecf h = rnd(size_t(m.T) * m.K, 3.f, dt, 70), g = rnd(m.K, 1.5f, dt, 71), W = rnd(size_t(m.N) * m.K, 0.05f, dt, 72),
         b = rnd(m.N, 1.f, dt, 73);
    DB hb(be, h), xb(be, h.size()), yb(be, size_t(m.T) * m.N);
    DW gw(be, g, 1, m.K), ww(be, W, m.N, m.K), bw(be, b, 1, m.N);
    be.norm_linear(hb.p, gw.w, 1e-6f, ww.w, &bw.w, m.T, xb.p, yb.p);
    const vecd xn = ref_rmsnorm_rows(h, g, rows_of(m.T), m.K, 1e-6f);
    const std::string sh = " T=" + std::to_string(m.T) + " K=" + std::to_string(m.K) + " N=" + std::to_string(m.N);
    check("norm_linear" + sh, dt, yb.get(), ref_linear(xn, W, &b, m.T, m.N, m.K));
  }
  for (const S m : {S{1, 4096, 4096}, S{8, 11008, 64}, S{3, 256, 33}, S{9, 256, 40}, S{2, 37, 21}}) {
    vecf x = rnd(size_t(m.T) * m.K, 1.f, dt, 74), W = rnd(size_t(m.N) * m.K, 0.05f, dt, 75),
         h = rnd(size_t(m.T) * m.N, 3.f, dt, 76);
    DB xb(be, x), hb(be, h), yb(be, h.size());
    DW ww(be, W, m.N, m.K);
    be.linear_add(xb.p, ww.w, m.T, hb.p, yb.p);
    vecd ref = ref_linear(x, W, nullptr, m.T, m.N, m.K);
    for (size_t i = 0; i < ref.size(); ++i) ref[i] += h[i];
    const std::string sh = " T=" + std::to_string(m.T) + " K=" + std::to_string(m.K) + " N=" + std::to_string(m.N);
    const vecf got = hb.get();
    check("linear_add" + sh, dt, got, ref);
    DB h2(be, h), y2(be, h.size());  // the composition it replaces stores the same residual, bit for bit
    be.linear(xb.p, ww.w, nullptr, m.T, y2.p);
    be.add(h2.p, y2.p, m.T, m.N);
    expect(std::memcmp(got.data(), h2.get().data(), got.size() * sizeof(float)) == 0,
           std::string("linear_add == linear + add bit for bit") + sh + " " + dt_name(dt));
  }
  for (const S m : {S{1, 4096, 11008}, S{4, 256, 300}, S{9, 256, 300}, S{2, 37, 21}}) {
    vecf h = rnd(size_t(m.T) * m.K, 3.f, dt, 77), g = rnd(m.K, 1.5f, dt, 78),
         w1 = rnd(size_t(m.N) * m.K, 0.05f, dt, 79), w2 = rnd(size_t(m.N) * m.K, 0.05f, dt, 80);
    DB hb(be, h), xb(be, h.size()), ab(be, size_t(m.T) * m.N), gb(be, size_t(m.T) * m.N);
    DW gw(be, g, 1, m.K), w1w(be, w1, m.N, m.K), w2w(be, w2, m.N, m.K);
    be.norm_mlp_swiglu(hb.p, gw.w, 1e-6f, w1w.w, w2w.w, m.T, xb.p, ab.p, gb.p);
    const vecd xn = ref_rmsnorm_rows(h, g, rows_of(m.T), m.K, 1e-6f);
    const vecd up = ref_linear(xn, w1, nullptr, m.T, m.N, m.K), gate = ref_linear(xn, w2, nullptr, m.T, m.N, m.K);
    vecd ref(up.size());
    for (size_t i = 0; i < ref.size(); ++i) ref[i] = up[i] * gate[i] / (1.0 + std::exp(-gate[i]));
    check("norm_mlp_swiglu T=" + std::to_string(m.T) + " K=" + std::to_string(m.K) + " F=" + std::to_string(m.N), dt,
          ab.get(), ref);
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

// ---- final_pick / pick_logits (cuda/pick.cu) against a double-precision host pick with the same penalty rules
struct PickRef {
  int id = -1;
  double gap = 0;  // max - the second largest penalized logit
  double logprob = 0;
  std::vector<std::pair<int, double>> top;
};
// The row with the spec's penalties applied (double, rounded once to fp32: the TS rules).
static std::vector<float> penalized(const float* row, int V, const PickSpec& s) {
  std::vector<float> L(row, row + V);
  const int n = s.vocab_limit > 0 && s.vocab_limit < V ? s.vocab_limit : V;
  const bool rep = s.repetition != 1.0, oa = s.presence != 0.0 || s.frequency != 0.0;
  for (int k = 0; k < s.n_ids; ++k) {
    const int id = s.ids[k];
    if (id < 0 || id >= n) continue;
    float x = L[size_t(id)];
    if (rep) x = x < 0 ? float(double(x) * s.repetition) : float(double(x) / s.repetition);
    if (oa && s.counts[k] > 0) {
      const double fc = s.frequency * double(s.counts[k]);
      x = float(double(x) - (fc + s.presence));
    }
    L[size_t(id)] = x;
  }
  return L;
}
static PickRef ref_pick(const float* row, int V, const PickSpec& s) {
  const std::vector<float> L = penalized(row, V, s);
  const int n = s.vocab_limit > 0 && s.vocab_limit < V ? s.vocab_limit : V;
  PickRef r;
  float m = -INFINITY;
  for (int i = 0; i < n; ++i)
    if (L[size_t(i)] > m) m = L[size_t(i)], r.id = i;
  float m2 = -INFINITY;
  for (int i = 0; i < n; ++i)
    if (i != r.id && L[size_t(i)] > m2) m2 = L[size_t(i)];
  r.gap = double(m) - double(m2);
  if (r.id < 0 || s.top_n < 0) return r;
  double z = 0;
  for (int i = 0; i < n; ++i) {
    const float x = L[size_t(i)];
    if (std::isinf(m)) z += x == m ? 1 : 0;
    else if (x == x) z += std::exp(double(x) - double(m));
  }
  r.logprob = -std::log(z);
  std::vector<int> ids;
  for (int i = 0; i < n; ++i)
    if (L[size_t(i)] > -INFINITY) ids.push_back(i);
  std::stable_sort(ids.begin(), ids.end(), [&](int a, int b) { return L[size_t(a)] > L[size_t(b)]; });
  for (int i : ids) {
    if (int(r.top.size()) == s.top_n) break;
    const float x = L[size_t(i)];
    if (std::isinf(m) ? x != m : !(float(std::exp(double(x) - double(m))) > 0.f)) break;
    r.top.push_back({i, std::isinf(m) ? -std::log(z) : double(x) - double(m) - std::log(z)});
  }
  return r;
}
// expf (4U) and the fp32 x - max (U |x - max| <= 104 U for a non-zero weight) against the double reference.
static bool same_pick(const PickResult& g, const PickRef& w, const PickSpec& s) {
  const double tol = 110 * std::ldexp(1.0, -24);
  if (g.id != w.id) return false;
  if (w.id < 0 || s.top_n < 0) return true;
  if (std::fabs(g.logprob - w.logprob) > tol) return false;
  if (s.top_n == 0) return g.n_top == 0;
  if (size_t(g.n_top) != w.top.size()) return false;
  for (int k = 0; k < g.n_top; ++k)
    if (g.top_ids[k] != w.top[size_t(k)].first || std::fabs(g.top_logprobs[k] - w.top[size_t(k)].second) > tol) return false;
  return true;
}
struct PickCase {
  std::vector<int32_t> ids, counts;
  PickSpec spec;
};
static PickCase pick_case(int V, int r, std::mt19937& g) {
  PickCase c;
  std::uniform_int_distribution<int> id(0, V - 1), cnt(0, 3);
  for (int k = 0; k < 40 + r; ++k) {
    const int32_t i = id(g);
    if (std::find(c.ids.begin(), c.ids.end(), i) == c.ids.end()) {
      c.ids.push_back(i);
      c.counts.push_back(cnt(g));
    }
  }
  c.spec.repetition = r % 3 == 0 ? 1.0 : 1.1 + 0.1 * (r % 4);
  c.spec.presence = r % 2 ? 0.5 : 0.0;
  c.spec.frequency = r % 5 ? -0.3 : 0.0;
  c.spec.vocab_limit = V - 85;
  c.spec.top_n = r % 23 - 2;  // -2 -> -1 (none) .. 20
  if (c.spec.top_n < -1) c.spec.top_n = -1;
  return c;
}
// R cases pick_case(V, r0 + r) into cs and their specs (which point into cs: keep cs alive and unchanged).
static std::vector<PickSpec> pick_specs(std::vector<PickCase>& cs, int V, int R, int r0, std::mt19937& g) {
  cs.clear();
  for (int r = 0; r < R; ++r) cs.push_back(pick_case(V, r0 + r, g));
  std::vector<PickSpec> specs;
  for (auto& c : cs) {
    c.spec.ids = c.ids.data();
    c.spec.counts = c.counts.data();
    c.spec.n_ids = int(c.ids.size());
    specs.push_back(c.spec);
  }
  return specs;
}
static void test_final_pick(Backend& be, DType dt) {
  std::mt19937 g(77);
  {  // pick_logits: Qwen's V, grid values (ties), NaN / -Infinity, +Infinity, no usable logit, padding ids high
    const int V = 151936, R = 7;
    vecf L(size_t(R) * V);
    std::uniform_int_distribution<int> q(-80, 80);
    for (auto& x : L) x = float(q(g)) / 8.f;
    for (int i = 0; i < V; i += 7) L[size_t(V) + i] = NAN;
    for (int i = 3; i < V; i += 11) L[size_t(V) + i] = -INFINITY;
    for (int i : {300, 17, 301}) L[size_t(V) + i] = 11.f;           // row 1: 3-way tie at the max
    for (int i = V - 85; i < V; ++i) L[size_t(2) * V + i] = 1000.f;  // row 2: padding rows highest
    L[size_t(3) * V + 900] = L[size_t(3) * V + 20] = INFINITY;       // row 3: two +Infinity
    for (int i = 0; i < V; ++i) L[size_t(4) * V + i] = i < V - 85 ? (i % 2 ? NAN : -INFINITY) : 1.f;  // row 4: none
    for (int i = 0; i < V; ++i) L[size_t(5) * V + i] = i == 10 ? 200.f : i == 20 ? 150.f : 0.f;        // row 5: spread
    std::vector<PickCase> cs;
    const std::vector<PickSpec> specs = pick_specs(cs, V, R, 20, g);
    std::vector<PickResult> got(static_cast<size_t>(R));
    be.pick_logits(L.data(), R, V, specs.data(), got.data());
    for (int r = 0; r < R; ++r) {
      const PickRef w = ref_pick(L.data() + size_t(r) * V, V, specs[size_t(r)]);
      expect(same_pick(got[size_t(r)], w, specs[size_t(r)]),
             std::string("pick_logits V=151936 row ") + std::to_string(r) + " " + dt_name(dt) + ": id " +
                 std::to_string(got[size_t(r)].id) + " (want " + std::to_string(w.id) + ")");
    }
  }
  // final_pick against the reference on final_logits' logits: R = 64 is one lm_head call of the same shape in both
  // ops (identical logits: everything must match); R = 300 crosses final_pick's 256-row chunk, whose GEMM shape
  // differs from final_logits' 64-row chunks, so ids are compared where the top-2 gap is clear of GEMM rounding.
  for (const int R : {64, 300}) {
    const int T = 320, H = 64, V = 1003;
    vecf h = rnd(size_t(T) * H, 2.f, dt, 60), gw = rnd(H, 1.f, dt, 61), W = rnd(size_t(V) * H, 1.f, dt, 62);
    DB hb(be, h);
    DW gd(be, gw, 1, H), Wd(be, W, V, H);
    std::vector<int> rows(static_cast<size_t>(R));
    for (int r = 0; r < R; ++r) rows[size_t(r)] = (r * 7) % T;
    vecf logits(size_t(R) * V);
    std::vector<PickCase> cs;
    const std::vector<PickSpec> specs = pick_specs(cs, V, R, 0, g);
    std::vector<PickResult> got(static_cast<size_t>(R));
    be.final_pick(hb.p, rows.data(), R, H, gd.w, Wd.w, 1e-6f, specs.data(), got.data());
    be.final_logits(hb.p, rows.data(), R, H, gd.w, Wd.w, 1e-6f, logits.data());
    int bad = 0;
    for (int r = 0; r < R; ++r) {
      const PickRef w = ref_pick(logits.data() + size_t(r) * V, V, specs[size_t(r)]);
      if (R == 64 ? !same_pick(got[size_t(r)], w, specs[size_t(r)]) : (w.gap > 1e-3 && got[size_t(r)].id != w.id)) ++bad;
    }
    expect(bad == 0, std::string("final_pick R=") + std::to_string(R) + " V=1003 " + dt_name(dt) + ": " +
                         std::to_string(bad) + " rows differ from the reference pick of final_logits");
  }
}

// ---- the device draw (QWEN_SAMPLE_FX=1, cuda/sample_fx.cu) against its host reference (cpu/sample_fx.cc): equal bit
// for bit (integer sums), over rows and configs that take every route of core/sample_fx.h
static std::unique_ptr<Backend> make_sample_fx(const char* dtype) {
  setenv("QWEN_SAMPLE_FX", "1", 1);
  auto be = make(dtype);
  unsetenv("QWEN_SAMPLE_FX");
  return be;
}
static void test_sample_fx(const char* dts) {
  auto be = make_sample_fx(dts);
  const int V = 151936, lim = V - 85, R = 8;
  std::mt19937 g(91);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::uniform_real_distribution<double> ud(0.0, 1.0);
  std::uniform_int_distribution<int> q(-80, 80), pos(0, lim - 1);
  vecf L(size_t(R) * V);
  auto row = [&](int r) { return L.data() + size_t(r) * V; };
  for (int r = 0; r < R; ++r) {
    float* x = row(r);
    if (r == 0 || r == 1) {  // model-like: a Gaussian body and a few peaks (the probe settles)
      for (int i = 0; i < V; ++i) x[i] = 2.5f * nd(g);
      for (int k = 0; k < 4 + 8 * r; ++k) x[pos(g)] = 8.f + 6.f * float(ud(g));
    } else if (r == 2) {  // flat: the histogram
      for (int i = 0; i < V; ++i) x[i] = 0.5f * nd(g);
    } else if (r == 3) {  // grid values: ties everywhere
      for (int i = 0; i < V; ++i) x[i] = float(q(g)) / 8.f;
    } else if (r == 4) {  // NaN, -Infinity, a 3-way tie at the max
      for (int i = 0; i < V; ++i) x[i] = i % 7 == 0 ? NAN : i % 11 == 3 ? -INFINITY : float(q(g)) / 8.f;
      for (int i : {300, 17, 301}) x[i] = 11.f;
    } else if (r == 5) {  // +Infinity at two ids
      for (int i = 0; i < V; ++i) x[i] = float(q(g)) / 8.f;
      x[900] = x[20] = INFINITY;
    } else if (r == 6) {  // a wide spread: most weights are 0
      for (int i = 0; i < V; ++i) x[i] = i == 10 ? 200.f : i == 20 || i == 30 ? 150.f : 0.f;
    } else {  // ~3000 ids within 8 nats of the best (the probe's head overflows: the sorted head or the histogram)
      for (int i = 0; i < V; ++i) x[i] = i % 50 == 0 ? 4.f * float(ud(g)) : -20.f + nd(g);
    }
  }
  std::vector<int32_t> pen_ids = {17, 300, 900, 10, 5, 6}, pen_counts = {1, 0, 2, 1, 3, 0};
  int rows = 0, bad = 0, seen[5] = {0, 0, 0, 0, 0};
  for (const double temp : {0.7, 1.0, 1.5})
    for (const int k : {0, 1, 5, 50})
      for (const double p : {0.1, 0.8, 0.95, 1.0}) {
        std::vector<PickSpec> specs(static_cast<size_t>(R));
        for (int r = 0; r < R; ++r) {
          PickSpec& s = specs[size_t(r)];
          s.vocab_limit = lim;
          s.do_sample = true;
          s.temperature = temp;
          s.top_k = k;
          s.top_p = p;
          s.u = ud(g);
          s.top_n = (rows + r) % 4 == 0 ? -1 : (rows + r) % 4 == 1 ? 0 : (rows + r) % 4 == 2 ? 5 : 20;
          if (r % 3 == 1) {  // penalties: the kernel applies them before the draw
            s.ids = pen_ids.data();
            s.counts = pen_counts.data();
            s.n_ids = int(pen_ids.size());
            s.repetition = 1.1;
            s.presence = 0.4;
            s.frequency = 0.3;
          }
        }
        std::vector<PickResult> got(static_cast<size_t>(R));
        be->pick_logits(L.data(), R, V, specs.data(), got.data());
        for (int r = 0; r < R; ++r) {
          const PickSpec& s = specs[size_t(r)];
          const std::vector<float> P = penalized(row(r), V, s);
          std::vector<float> W(static_cast<size_t>(lim));
          FxOut o;
          sample_fx_row(P.data(), W.data(), fx_row_in(P.data(), lim, s), o);
          PickResult want;
          fx_result(o, s.top_n, want);
          ++seen[o.route];
          const PickResult& h = got[size_t(r)];
          bool same = h.id == want.id && h.n_top == want.n_top && (want.id < 0 || s.top_n < 0 || h.logprob == want.logprob);
          for (int t = 0; same && t < want.n_top; ++t)
            same = h.top_ids[t] == want.top_ids[t] && h.top_logprobs[t] == want.top_logprobs[t];
          if (!same && bad++ < 5)
            std::printf("  sample_fx row %d T=%g k=%d p=%g u=%.17g top_n=%d: device id %d lp %.17g, host id %d lp %.17g "
                        "(route %d)\n", r, temp, k, p, s.u, s.top_n, h.id, h.logprob, want.id, want.logprob, o.route);
          ++rows;
        }
      }
  expect(bad == 0, std::string("sample_fx device == host reference (") + dts + ", " + std::to_string(rows) +
                       " rows): " + std::to_string(bad) + " differ");
  expect(seen[0] && seen[1] && seen[2] && seen[3] && seen[4],
         "sample_fx rows take every route (all/top-k/probe/head/hist: " + std::to_string(seen[0]) + "/" +
             std::to_string(seen[1]) + "/" + std::to_string(seen[2]) + "/" + std::to_string(seen[3]) + "/" +
             std::to_string(seen[4]) + ")");

  // final_pick (the lm_head GEMM, then pick_kernel and the device draw) of 64 rows, greedy and sampled mixed, penalties
  // on some: each row against the host on final_logits' logits of the same rows (one 64-row GEMM in both: identical)
  {
    const int T = 320, H = 64, Vs = 1003, Rf = 64;
    const DType dt = be->act_dtype();
    vecf h = rnd(size_t(T) * H, 2.f, dt, 80), gw = rnd(H, 1.f, dt, 81), W = rnd(size_t(Vs) * H, 1.f, dt, 82);
    DB hb(*be, h);
    DW gd(*be, gw, 1, H), Wd(*be, W, Vs, H);
    std::vector<int> rws(static_cast<size_t>(Rf));
    for (int r = 0; r < Rf; ++r) rws[size_t(r)] = (r * 5) % T;
    std::vector<PickCase> cs;
    std::vector<PickSpec> specs = pick_specs(cs, Vs, Rf, 0, g);
    for (int r = 0; r < Rf; ++r) {
      PickSpec& sp = specs[size_t(r)];
      if (r % 4 == 3) continue;  // greedy rows among the sampled ones
      sp.do_sample = true;
      sp.temperature = r % 3 == 0 ? 0.7 : 1.0;
      sp.top_k = r % 5 == 0 ? 20 : 0;
      sp.top_p = r % 2 ? 0.8 : 1.0;
      sp.u = ud(g);
    }
    std::vector<PickResult> got(static_cast<size_t>(Rf));
    be->final_pick(hb.p, rws.data(), Rf, H, gd.w, Wd.w, 1e-6f, specs.data(), got.data());
    vecf logits(size_t(Rf) * Vs);
    be->final_logits(hb.p, rws.data(), Rf, H, gd.w, Wd.w, 1e-6f, logits.data());
    int wrong = 0;
    for (int r = 0; r < Rf; ++r) {
      const PickSpec& sp = specs[size_t(r)];
      const PickResult& hgot = got[size_t(r)];
      if (!sp.do_sample) {
        wrong += same_pick(hgot, ref_pick(logits.data() + size_t(r) * Vs, Vs, sp), sp) ? 0 : 1;
        continue;
      }
      const std::vector<float> P = penalized(logits.data() + size_t(r) * Vs, Vs, sp);
      const int n = pick_limit(sp, Vs);
      std::vector<float> Wt(static_cast<size_t>(n));
      FxOut o;
      sample_fx_row(P.data(), Wt.data(), fx_row_in(P.data(), n, sp), o);
      PickResult want;
      fx_result(o, sp.top_n, want);
      bool same = hgot.id == want.id && hgot.n_top == want.n_top && (want.id < 0 || sp.top_n < 0 || hgot.logprob == want.logprob);
      for (int t = 0; same && t < want.n_top; ++t) same = hgot.top_ids[t] == want.top_ids[t];
      wrong += same ? 0 : 1;
    }
    expect(wrong == 0, std::string("final_pick R=64, sampled rows drawn on the device, greedy rows among them (") + dts +
                           "): " + std::to_string(wrong) + " rows differ from the host");
  }
}

static double time_it(Backend& be, int reps, const std::function<void()>& f);
// final_pick of R sampled rows (Qwen-7B-Chat's top_p 0.8, temperature 0.7): host draws vs the device draw
static void perf_sample(const char* dts) {
  const int H = 4096, V = 151936;
  for (const bool fx : {false, true}) {
    auto be = fx ? make_sample_fx(dts) : make(dts);
    std::vector<uint16_t> host(size_t(V) * H, 0x3c00);
    std::mt19937 g(5);
    std::uniform_int_distribution<int> bits(0x3a00, 0x3e00);
    for (size_t i = 0; i < host.size(); i += 13) host[i] = uint16_t(bits(g));
    Weight hw;
    hw.data = host.data();
    hw.dtype = DType::BF16;
    hw.rows = V;
    hw.cols = H;
    Weight w = be->upload(hw);
    vecf gv(H, 1.f);
    DW gd(*be, gv, 1, H);
    for (int R : {1, 16, 64}) {
      DB hb(*be, rnd(size_t(R) * H, 1.f, be->act_dtype(), 71));
      std::vector<int> rows(static_cast<size_t>(R));
      for (int r = 0; r < R; ++r) rows[size_t(r)] = r;
      PickSpec s;
      s.vocab_limit = V - 85;
      s.do_sample = true;
      s.temperature = 0.7;
      s.top_p = 0.8;
      s.u = 0.37;
      std::vector<PickSpec> specs(static_cast<size_t>(R), s);
      std::vector<PickResult> out(static_cast<size_t>(R));
      const double t = time_it(*be, 10, [&] { be->final_pick(hb.p, rows.data(), R, H, gd.w, w, 1e-6f, specs.data(), out.data()); });
      std::printf("PERF final_pick sampled R=%2d %s draw %8.1f us\n", R, fx ? "device" : "host  ", t * 1e6);
    }
    be->release(w);
  }
}

// A Qwen-7B-shaped lm_head [V, H] in the 16-bit type of dt (all ~1, every 97th a little more: no all-equal rows).
static Weight upload_head(Backend& be, DType dt, int V, int H) {
  std::vector<uint16_t> host(size_t(V) * H, 0x3c00);
  for (size_t i = 0; i < host.size(); i += 97) host[i] = 0x3c10;
  Weight hw;
  hw.data = host.data();
  hw.dtype = dt == DType::F16 ? DType::F16 : DType::BF16;
  hw.rows = V;
  hw.cols = H;
  return be.upload(hw);  // copied through the backend's staging before it returns
}

static void perf_pick(Backend& be, DType dt) {
  const int H = 4096, V = 151936;
  Weight w = upload_head(be, dt, V, H);
  vecf gv(H, 1.f);
  DW gd(be, gv, 1, H);
  for (int R : {1, 8, 64, 256}) {
    DB hb(be, rnd(size_t(R) * H, 1.f, dt, 70));
    std::vector<int> rows(static_cast<size_t>(R));
    for (int r = 0; r < R; ++r) rows[size_t(r)] = r;
    vecf logits(size_t(R) * V);
    std::vector<int32_t> ids(2000), counts(2000, 1);
    for (int k = 0; k < 2000; ++k) ids[size_t(k)] = k * 71;
    PickSpec s;
    s.ids = ids.data();
    s.counts = counts.data();
    s.n_ids = 2000;
    s.repetition = 1.1;
    s.presence = 0.5;
    s.vocab_limit = V - 85;
    std::vector<PickSpec> specs(static_cast<size_t>(R), s);
    std::vector<PickResult> out(static_cast<size_t>(R));
    const double tl = time_it(be, 10, [&] { be.final_logits(hb.p, rows.data(), R, H, gd.w, w, 1e-6f, logits.data()); });
    const double tp = time_it(be, 10, [&] { be.final_pick(hb.p, rows.data(), R, H, gd.w, w, 1e-6f, specs.data(), out.data()); });
    for (auto& x : specs) x.top_n = 20;
    const double tt = time_it(be, 10, [&] { be.final_pick(hb.p, rows.data(), R, H, gd.w, w, 1e-6f, specs.data(), out.data()); });
    std::printf("PERF final_logits R=%3d %8.1f us | final_pick %8.1f us | final_pick top 20 %8.1f us\n", R, tl * 1e6,
                tp * 1e6, tt * 1e6);
  }
  be.release(w);
}

// Where final_pick's time goes at batch sizes 8-64: the H100 profile of a batch-64 decode step (2026-11-27) gave
// final_pick 2.2 ms per step, far above the lm_head's 1.24 GB of weights at HBM speed (~0.45 ms) plus a pick of 64
// rows (~0.1 ms estimated), and op_check timed only the whole op. Here the lm_head GEMM with its fp32 output (the
// final_logits shape) is timed alone on each path it can take - linear() with the backend's cuBLAS handle, linear()
// without one (GEMV at T <= 8, WMMA above), gemm_skinny called directly - next to final_pick of as many greedy rows
// without penalties, which adds only the rmsnorm, the pick kernel and the staging.
static void perf_head(Backend& be, DType dt) {
  auto& cb = static_cast<cu::CudaBackend&>(be);
  const int H = 4096, V = 151936, maxT = 64;
  struct Held {  // freed on every way out, a throw included (the head alone is 1.24 GB)
    Backend& be;
    Weight w;
    void* y = nullptr;
    void* ws = nullptr;
    ~Held() {
      cudaFree(ws);
      cudaFree(y);
      be.release(w);
    }
  } m{be, upload_head(be, dt, V, H)};
  vecf gv(H, 1.f);
  DW gd(be, gv, 1, H);
  DB x(be, rnd(size_t(maxT) * H, 1.f, dt, 71));
  const size_t wsb = size_t(16) << 20;
  if (cudaMalloc(&m.y, size_t(maxT) * V * sizeof(float)) != cudaSuccess || cudaMalloc(&m.ws, wsb) != cudaSuccess) {
    cudaGetLastError();
    std::printf("PERF lm_head: cudaMalloc failed, skipped\n");
    return;
  }
  const double wbytes = double(V) * H * dtype_size(dt);
  for (int T : {8, 16, 64}) {
    cu::LinearArgs a;
    a.act = dt;
    a.out = DType::F32;
    a.x = x.p;
    a.W = m.w.data;
    a.y = m.y;
    a.T = T;
    a.N = V;
    a.K = H;
    std::string line = "PERF lm_head T=" + std::to_string(T) + " (fp32 out):";
    auto add = [&](const std::string& label, double s) {
      char buf[96];
      std::snprintf(buf, sizeof buf, " %s %.1f us (%.0f GB/s)", label.c_str(), s * 1e6, wbytes / s / 1e9);
      line += buf;
    };
    for (const bool with_handle : {true, false}) {
      if (with_handle && !cb.cublas_in_use()) continue;
      a.cublas = with_handle ? cb.cublas_handle() : nullptr;
      const std::string label = std::string(with_handle ? "handle:" : "no handle:") + cu::linear_path(a);
      add(label, time_it(be, 10, [&] { cu::linear(a, cb.stream()); }));
    }
    if (dt != DType::F32)  // T = 8 too: what QWEN_SKINNY_MIN_T would give it
      add("skinny", time_it(be, 10, [&] {
            cu::gemm_skinny(dt, DType::F32, x.p, m.w.data, nullptr, m.y, T, V, H, m.ws, wsb, cb.stream());
          }));
    std::vector<int> rows(static_cast<size_t>(T));
    for (int r = 0; r < T; ++r) rows[size_t(r)] = r;
    PickSpec s;
    s.vocab_limit = V;
    std::vector<PickSpec> specs(static_cast<size_t>(T), s);
    std::vector<PickResult> out(static_cast<size_t>(T));
    const double tp =
        time_it(be, 10, [&] { be.final_pick(x.p, rows.data(), T, H, gd.w, m.w, 1e-6f, specs.data(), out.data()); });
    char buf[64];
    std::snprintf(buf, sizeof buf, " | final_pick greedy %.1f us", tp * 1e6);
    std::printf("%s%s\n", line.c_str(), buf);
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

// One layer of attention over the step `seqs` (cache contents are whatever the blocks hold, which does not change the
// time); `shared` (optional) holds the caches instead, so that later chunks of one sequence can reuse them. Returns
// seconds per call and the path attention() took.
static double time_attention(Backend& be, int nh, int hd, const std::vector<Seq>& seqs, std::string* path,
                             PagedCaches* shared = nullptr) {
  const int H = nh * hd;
  std::unique_ptr<PagedCaches> own;
  if (!shared) {
    own = std::make_unique<PagedCaches>(be, 1, nh, hd, seqs);
    shared = own.get();
  }
  std::vector<RopeParams> rp(seqs.size());
  const std::vector<SeqSlice> sl = slices_for(seqs, rp, shared);
  const int n = int(sl.size()), rows = sl.back().row0 + sl.back().T;
  DB qkv(be, size_t(rows) * 3 * H), out(be, size_t(rows) * H);
  be.begin_step(sl.data(), n);
  cu::AttnArgs a;
  a.act = be.act_dtype();
  a.qkv = qkv.p;
  a.out = out.p;
  a.step = static_cast<cu::CudaBackend&>(be).step_view();
  a.n_heads = nh;
  a.head_dim = hd;
  if (path) *path = cu::attention_path(a);
  return time_it(be, 10, [&] { be.attention(qkv.p, sl.data(), n, nh, hd, 0, out.p); });
}

// Attention at the Qwen-7B shape (32 heads x 128): decode batches (split), and prefill / chunks on the default flash
// path (flash2) next to the WMMA fallback (QWEN_ATTN_FLASH=wmma). "prefill T=2048 as 4 x 512" is the engine's way
// (kStepTokens = 512): chunks at pos0 0, 512, 1024, 1536 of one cache, timed one by one and summed.
static void perf_attention(Backend& be, DType dt) {
  const int nh = 32, hd = 128, H = nh * hd;
  const size_t es = dtype_size(dt);
  auto decodes = [](int n, int P) {
    std::vector<Seq> v;
    for (int i = 0; i < n; ++i) v.push_back({1, P, 10000.0, 0});
    return v;
  };
  auto report = [&](const std::string& what, const std::string& path, double s, const std::vector<Seq>& seqs) {
    double pairs = 0, keys = 0;
    for (const Seq& q : seqs) {
      pairs += double(q.T) * q.P + double(q.T) * (q.T + 1) / 2;
      keys += q.P + q.T;
    }
    std::printf("PERF attention %-40s [%-12s] %8.1f us  %6.0f GB/s (K+V once)  %6.1f TFLOP/s\n", what.c_str(),
                path.c_str(), s * 1e6, 2.0 * keys * H * es / s / 1e9, 4.0 * pairs * hd * nh / s / 1e12);
  };
  struct A {
    const char* what;
    std::vector<Seq> seqs;
    bool flash;  // also time the WMMA fallback
  };
  std::vector<A> cases = {{"decode 1 x P=512", decodes(1, 512), false},
                          {"decode 1 x P=8192", decodes(1, 8192), false},
                          {"decode 1 x P=32000", decodes(1, 32000), false},
                          {"decode 32 x P=2048", decodes(32, 2048), false},
                          {"decode 64 x P=1024", decodes(64, 1024), false},
                          {"prefill T=512", {{512, 0, 1e4, 0}}, true},
                          {"prefill T=2048 (one slice)", {{2048, 0, 1e4, 0}}, true},
                          {"chunk T=512 P=4096", {{512, 4096, 1e4, 0}}, true}};
  {
    std::vector<Seq> m = decodes(32, 2048);
    m.push_back({512, 0, 1e4, 0});
    cases.push_back({"mixed 32 decodes P=2048 + prefill T=512", m, true});
  }
  for (const A& c : cases)
    for (int wmma = 0; wmma <= (c.flash ? 1 : 0); ++wmma) {
      if (wmma) setenv("QWEN_ATTN_FLASH", "wmma", 1);
      std::string path;
      const double s = time_attention(be, nh, hd, c.seqs, &path);
      unsetenv("QWEN_ATTN_FLASH");
      report(c.what, path, s, c.seqs);
    }
  for (int wmma = 0; wmma <= 1; ++wmma) {  // T = 2048 as the engine runs it: 4 steps of 512 on one cache
    if (wmma) setenv("QWEN_ATTN_FLASH", "wmma", 1);
    PagedCaches pc(be, 1, nh, hd, {{512, 1536, 1e4, 0}});
    double s = 0;
    std::string path;
    for (int c = 0; c < 4; ++c) s += time_attention(be, nh, hd, {{512, 512 * c, 1e4, 0}}, &path, &pc);
    unsetenv("QWEN_ATTN_FLASH");
    report("prefill T=2048 as 4 x 512 (sum)", path, s, {{2048, 0, 1e4, 0}});
  }
}

// The folded decode ops (QWEN_FOLD_NORM) against the launches they replace, one token, Qwen-7B shapes. A folded layer
// drops two add_rmsnorm launches and pays what its GEMVs take longer (the sweep's decode figures give the net).
static void perf_folded(Backend& be, DType dt) {
  const int H = 4096, F = 11008;
  const vecf g = rnd(H, 1.5f, dt, 81), wq = rnd(size_t(3 * H) * H, 0.01f, dt, 82), wo = rnd(size_t(H) * H, 0.01f, dt, 83),
             w1 = rnd(size_t(F) * H, 0.01f, dt, 84), w2 = rnd(size_t(F) * H, 0.01f, dt, 85);
  DW gw(be, g, 1, H), qw(be, wq, 3 * H, H), ow(be, wo, H, H), w1w(be, w1, F, H), w2w(be, w2, F, H);
  DB h(be, rnd(H, 1.f, dt, 86)), x(be, rnd(H, 1.f, dt, 87)), y(be, size_t(3 * H)), p(be, size_t(H)), a(be, size_t(F)),
      gs(be, size_t(F));
  const double add_norm = time_it(be, 50, [&] { be.add_rmsnorm(h.p, p.p, gw.w, 1e-6f, 1, H, x.p); });
  const double qkv = time_it(be, 20, [&] { be.linear(x.p, qw.w, nullptr, 1, y.p); });
  const double qkv_f = time_it(be, 20, [&] { be.norm_linear(h.p, gw.w, 1e-6f, qw.w, nullptr, 1, x.p, y.p); });
  const double o = time_it(be, 20, [&] { be.linear(x.p, ow.w, nullptr, 1, p.p); });
  const double o_f = time_it(be, 20, [&] { be.linear_add(x.p, ow.w, 1, h.p, p.p); });
  const double mlp = time_it(be, 20, [&] { be.mlp_swiglu(x.p, w1w.w, w2w.w, 1, a.p, gs.p); });
  const double mlp_f = time_it(be, 20, [&] { be.norm_mlp_swiglu(h.p, gw.w, 1e-6f, w1w.w, w2w.w, 1, x.p, a.p, gs.p); });
  std::printf("PERF folded T=1: add_rmsnorm %.1f us; qkv %.1f -> norm_linear %.1f us; o-proj %.1f -> linear_add %.1f us; "
              "mlp_swiglu %.1f -> norm_mlp_swiglu %.1f us\n",
              add_norm * 1e6, qkv * 1e6, qkv_f * 1e6, o * 1e6, o_f * 1e6, mlp * 1e6, mlp_f * 1e6);
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
      if (T == 1) {  // per token: 32 x (qkv + o + w1 + w2 + down) + lm_head; w1 and w2 are both the 11008 x 4096 shape
        const int times = g.N == 151936 ? 1 : g.N == 11008 ? 64 : 32;
        total_s += s * times;
        total_b += bytes * times;
      }
    }
    for (int T : {16, 64, 512, 2048}) {
      DB x(be, size_t(T) * g.K), y(be, size_t(T) * g.N);
      const double s = time_it(be, 5, [&] { be.linear(x.p, w, nullptr, T, y.p); });
      std::printf("PERF gemm T=%4d N=%6d K=%5d  %8.1f us  %6.1f TFLOP/s  %6.0f GB/s of W\n", T, g.N, g.K, s * 1e6,
                  2.0 * T * g.N * g.K / s / 1e12, double(g.N) * g.K * es / s / 1e9);
    }
    // gemm_skinny called directly (opt-in in the backend), with workspace; T <= 8 is for comparing with the GEMV
    // lines above (QWEN_SKINNY_MIN_T < 9 gives those rows to it)
    if (dt != DType::F32) {
      void* ws = nullptr;
      const size_t wsb = size_t(16) << 20;
      if (cudaMalloc(&ws, wsb) == cudaSuccess) {
        for (int T : {1, 4, 8, 16, 64}) {
          DB x(be, size_t(T) * g.K), y(be, size_t(T) * g.N);
          const cudaStream_t st = static_cast<cu::CudaBackend&>(be).stream();  // time_it syncs this stream
          const double s = time_it(be, 10, [&] {
            cu::gemm_skinny(dt, dt, x.p, w.data, nullptr, y.p, T, g.N, g.K, ws, wsb, st);
          });
          std::printf("PERF skinny T=%4d N=%6d K=%5d  %8.1f us  %6.0f GB/s of W\n", T, g.N, g.K, s * 1e6,
                      double(g.N) * g.K * es / s / 1e9);
        }
        cudaFree(ws);
      }
    }
    be.release(w);
  }
  std::printf("PERF decode GEMV total (32 x (qkv + o + w1 + w2 + down) + lm_head, T=1): %.2f ms, %.0f GB/s\n",
              total_s * 1e3, total_b / total_s / 1e9);
  perf_folded(be, dt);
  perf_attention(be, dt);
  {  // the step upload itself
    const std::vector<Seq> m(64, Seq{1, 4000, 10000.0, 0});
    PagedCaches pc(be, 1, 32, 128, m);
    std::vector<RopeParams> rp(m.size());
    const std::vector<SeqSlice> sl = slices_for(m, rp, &pc);
    const double s = time_it(be, 50, [&] { be.begin_step(sl.data(), int(sl.size())); });
    std::printf("PERF begin_step 64 slices x 126 blocks  %8.1f us\n", s * 1e6);
  }
}

int main(int argc, char** argv) {
  bool do_perf = false, pick_only = false;  // --pick: only the final_pick checks (and perf_pick with --perf)
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--perf") == 0) do_perf = true;
    if (std::strcmp(argv[i], "--pick") == 0) pick_only = true;
  }
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
      if (pick_only) {
        test_final_pick(*be, dt);
        test_sample_fx(dts);
        if (do_perf && dt == DType::BF16) perf_pick(*be, dt);
        if (do_perf && dt == DType::BF16) perf_sample(dts);
        continue;
      }
      test_embedding_upload(*be, dt);
      test_rmsnorm(*be, dt);
      test_linear(*be, dt, "default");
      if (cb.cublas_in_use()) {  // the same shapes without cuBLAS: T >= 64 then runs the own GEMMs
        setenv("QWEN_CUBLAS", "0", 1);
        auto own = make(dts);
        unsetenv("QWEN_CUBLAS");
        test_linear(*own, dt, "QWEN_CUBLAS=0");
      }
      test_skinny(*be, dt);
      test_rope(*be, dt);
      test_attention(*be, dt);
      test_kv_pool_oom(*be, dt);
      test_elementwise(*be, dt);
      test_fused(*be, dt);
      test_folded(*be, dt);
      test_final_logits(*be, dt);
      test_final_pick(*be, dt);
      if (dt == DType::BF16) test_sample_fx(dts);  // the draw runs on fp32 logits whatever the act type
      test_errors(*be);
      if (do_perf && dt == DType::BF16) perf(*be, dt);
      if (do_perf && dt == DType::BF16) perf_pick(*be, dt);
      if (do_perf && dt == DType::BF16) perf_head(*be, dt);
      if (do_perf && dt == DType::BF16) perf_sample(dts);
    } catch (const std::exception& e) {
      ++g_fail;
      std::printf("FAIL %s: exception: %s\n", dts, e.what());
    }
  }
  std::printf("%d passed, %d failed\n", g_pass, g_fail);
  return g_fail ? 1 : 0;
}
