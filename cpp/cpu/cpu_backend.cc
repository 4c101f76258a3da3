// CPU backend: every op of backend.h over fp32 activations, parallelised with one ThreadPool.
// Linear layers dispatch to the ISA kernels of linear.h; the other ops are light and written plainly.
#include "cpu/cpu_backend.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <thread>
#include <vector>

#if defined(__x86_64__) && defined(__AVX2__)
#include <immintrin.h>
#endif

#include "cpu/isa.h"
#include "cpu/linear.h"
#include "cpu/pick.h"
#include "cpu/thread_pool.h"

namespace qwen {
namespace {

// KV blocks: each block holds, for every layer, K and V as [n_heads][kKvBlockTokens][head_dim] fp32, so one head's
// keys of a block are contiguous (decode attention streams them; a [pos][H] layout strides by H floats per key and
// defeats the prefetcher). Storage comes from malloc on first use (untouched pages cost nothing until written) and is
// kept for reuse by the pool.
class CpuKVPool : public KVPool {
 public:
  CpuKVPool(const ModelConfig& c, int max_blocks)
      : KVPool(max_blocks), nh_(c.n_heads), hd_(c.head_dim),
        block_floats_(size_t(c.n_layers) * 2 * c.n_heads * kKvBlockTokens * c.head_dim),
        blocks_(size_t(max_blocks), nullptr) {}
  ~CpuKVPool() override {
    for (float* b : blocks_) std::free(b);
  }
  size_t storage_bytes() const override { return size_t(made()) * block_floats_ * sizeof(float); }
  // Row 0 of (block, layer, k = 0 | v = 1, head): kKvBlockTokens rows of head_dim floats follow.
  float* rows(int32_t block, int layer, int kv, int h) const {
    return blocks_[size_t(block)] + ((size_t(layer) * 2 + kv) * nh_ + h) * kKvBlockTokens * hd_;
  }

 protected:
  void materialize(int id) override {
    float* p = static_cast<float*>(std::malloc(block_floats_ * sizeof(float)));
    if (!p) throw std::runtime_error("out of memory allocating a KV cache block of " + std::to_string(block_floats_ * 4) + " bytes");
    blocks_[size_t(id)] = p;
  }

 private:
  int nh_, hd_;
  size_t block_floats_;
  std::vector<float*> blocks_;
};

inline float dot(const float* a, const float* b, int n) {
  int i = 0;
  float s = 0.0f;
#if defined(__x86_64__) && defined(__AVX2__)
  __m256 acc = _mm256_setzero_ps();
  for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
  __m128 q = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
  q = _mm_add_ps(q, _mm_movehl_ps(q, q));
  q = _mm_add_ss(q, _mm_movehdup_ps(q));
  s = _mm_cvtss_f32(q);
#endif
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

inline void axpy(float a, const float* x, float* y, int n) {  // y += a * x
  int i = 0;
#if defined(__x86_64__) && defined(__AVX2__)
  __m256 av = _mm256_set1_ps(a);
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
#endif
  for (; i < n; ++i) y[i] += a * x[i];
}

// Tokens per GEMM pass: x^T (or its bf16 pairs) for 128 tokens stays in L2 next to the weight panel; 512 spilled and
// halved the rate (measured: fp32 150 -> 97, AMX 745 -> 446 GFLOP/s on 4096x4096). Weights are re-read per pass,
// which costs far less than the spills.
constexpr int kGemmTokens = 128;

class CpuBackend : public Backend {
 public:
  explicit CpuBackend(const BackendOptions& opt)
      : isa_(opt.cpu_isa.empty() ? best_isa() : parse_isa(opt.cpu_isa)),
        pool_(opt.threads > 0 ? opt.threads : int(std::thread::hardware_concurrency() ? std::thread::hardware_concurrency() : 1)) {
    if (int(isa_) > int(best_isa())) throw std::runtime_error(std::string("this CPU lacks ") + isa_name(isa_));
    if (opt.dtype != "auto" && opt.dtype != "fp32" && opt.dtype != "bf16")
      throw std::runtime_error("the CPU backend computes in fp32 ('auto', 'fp32') or with bf16 matmul inputs ('bf16'), not '" +
                               opt.dtype + "'");
    bf16_ = opt.dtype == "bf16";
    amx_ = bf16_ && isa_ == Isa::Avx512 && cpu_features().amx_bf16 && amx_enable();
    fold_norm_ = opt.switch_on("QWEN_FOLD_NORM", false);
  }
  const char* name() const override { return "cpu"; }
  // The compositions in the folded order: no faster here, but the same bits, so tests can check the engine's folded
  // layer on the CPU (backend.h).
  bool folds_norm(int) const override { return fold_norm_; }
  std::map<std::string, bool> switches() const override { return {{"QWEN_FOLD_NORM", fold_norm_}}; }
  DType act_dtype() const override { return DType::F32; }
  Isa isa() const { return isa_; }
  int threads() const { return pool_.size(); }

  Buf alloc(size_t elems) override {
    void* p = std::malloc((elems ? elems : 1) * sizeof(float));
    if (!p) throw std::runtime_error("out of memory allocating " + std::to_string(elems * 4) + " bytes");
    return p;
  }
  void free(Buf b) override { std::free(b); }
  void to_device(Buf dst, const float* src, size_t n) override { std::memcpy(dst, src, n * sizeof(float)); }
  void to_host(float* dst, const Buf src, size_t n) override { std::memcpy(dst, src, n * sizeof(float)); }
  Weight upload(const Weight& host) override { return host; }  // read in place from the mapping
  void release(Weight& w) override { w = Weight{}; }
  std::shared_ptr<KVPool> new_kv_pool(const ModelConfig& c, int max_blocks) override {
    return std::make_shared<CpuKVPool>(c, max_blocks);
  }

  void embedding(const Weight& wte, const int32_t* ids, int T, Buf hb) override {
    float* h = F(hb);
    const int H = int(wte.cols);
    pool_.parallel_for(T, [&](int t, int) {
      for (int i = 0; i < H; ++i) h[size_t(t) * H + i] = load_elem(wte.data, wte.dtype, int64_t(ids[t]) * H + i);
    });
  }

  void rmsnorm(const Buf xb, const Weight& g, float eps, int T, int H, Buf yb) override {
    const float* x = F(xb);
    float* y = F(yb);
    for (int t = 0; t < T; ++t) {  // cheap: T x H; a double sum keeps it close to the float64 reference
      const float* xr = x + size_t(t) * H;
      double ss = 0.0;
      for (int i = 0; i < H; ++i) ss += double(xr[i]) * xr[i];
      const float inv = float(1.0 / std::sqrt(ss / H + eps));
      for (int i = 0; i < H; ++i) y[size_t(t) * H + i] = xr[i] * inv * load_elem(g.data, g.dtype, i);
    }
  }

  void linear(const Buf xb, const Weight& W, const Weight* b, int T, Buf yb) override {
    LinearJob j;
    j.x = F(xb);
    j.T = T;
    j.K = int(W.cols);
    j.N = int(W.rows);
    j.W = W.data;
    j.wdt = W.dtype;
    j.bias = b ? b->data : nullptr;
    j.bdt = b ? b->dtype : DType::F32;
    j.y = F(yb);
    run_linear(j);
  }

  void rope(Buf qkvb, const SeqSlice* sl, int n, int n_heads, int head_dim) override {
    float* qkv = F(qkvb);
    const int H = n_heads * head_dim;
    const int T = n ? sl[n - 1].row0 + sl[n - 1].T : 0;
    const int half = n ? sl[0].rope->rot_dims / 2 : 0;  // rot_dims is the model's, the same for every slice
    // cos/sin per row [T][half][2] (shared by every head of q and k), then the scale of logN per row.
    cs_.resize(size_t(T) * half * 2);
    row_scale_.resize(size_t(T));
    for (int i = 0; i < n; ++i) {
      const RopeParams& rp = *sl[i].rope;
      for (int t = 0; t < sl[i].T; ++t) {
        const int r = sl[i].row0 + t, p = sl[i].pos0 + t;
        for (int k = 0; k < half; ++k) {
          const float theta = float(p) * rp.inv_freq[k];  // fp32 product, as the reference's outer(seq, inv_freq)
          cs_[(size_t(r) * half + k) * 2] = float(std::cos(double(theta)));
          cs_[(size_t(r) * half + k) * 2 + 1] = float(std::sin(double(theta)));
        }
        row_scale_[size_t(r)] = rp.logn_base > 0 && p + 1 > rp.logn_base
                                    ? float(std::log(double(p + 1)) / std::log(double(rp.logn_base)))
                                    : 1.0f;
      }
    }
    pool_.parallel_for(T, [&](int t, int) {
      const float scale = row_scale_[size_t(t)];
      const float* c_s = &cs_[size_t(t) * half * 2];
      for (int part = 0; part < 2; ++part) {  // q then k
        for (int h = 0; h < n_heads; ++h) {
          float* v = qkv + size_t(t) * 3 * H + size_t(part) * H + size_t(h) * head_dim;
          for (int i = 0; i < half; ++i) {
            const float c = c_s[2 * i], s = c_s[2 * i + 1];
            const float a = v[i], b = v[i + half];
            v[i] = a * c - b * s;
            v[i + half] = b * c + a * s;
          }
          if (part == 0 && scale != 1.0f)
            for (int i = 0; i < head_dim; ++i) v[i] *= scale;
        }
      }
    });
  }

  void kv_store(const Buf qkvb, const SeqSlice* sl, int n, int n_heads, int head_dim, int layer) override {
    const float* qkv = F(qkvb);
    const int H = n_heads * head_dim;
    for (int i = 0; i < n; ++i) {
      const CpuKVPool& pool = static_cast<const CpuKVPool&>(sl[i].kv->pool());
      const int32_t* table = sl[i].kv->blocks().data();
      for (int t = 0; t < sl[i].T; ++t) {
        const int p = sl[i].pos0 + t, blk = table[p / kKvBlockTokens], row = p % kKvBlockTokens;
        const float* src = qkv + size_t(sl[i].row0 + t) * 3 * H;
        for (int h = 0; h < n_heads; ++h) {
          std::memcpy(pool.rows(blk, layer, 0, h) + size_t(row) * head_dim, src + H + size_t(h) * head_dim, head_dim * sizeof(float));
          std::memcpy(pool.rows(blk, layer, 1, h) + size_t(row) * head_dim, src + 2 * H + size_t(h) * head_dim, head_dim * sizeof(float));
        }
      }
    }
  }

  // One task per (slice, head, block of kQBlock consecutive queries): each key and value row is read once for the
  // whole query block (from L1) instead of once per query; a batch of decoding sequences gives n_heads tasks each.
  // Keys are walked block by block of the paged cache. Softmax in fp32 with a double sum.
  static constexpr int kQBlock = 8;
  void attention(const Buf qkvb, const SeqSlice* sl, int n, int n_heads, int head_dim, int layer,
                 Buf outb) override {
    const float* qkv = F(qkvb);
    float* out = F(outb);
    const int H = n_heads * head_dim;
    const float scale = float(1.0 / std::sqrt(double(head_dim)));
    tasks_.clear();  // (slice, first query) per query block
    for (int i = 0; i < n; ++i)
      for (int t0 = 0; t0 < sl[i].T; t0 += kQBlock) tasks_.push_back({i, t0});
    scores_.resize(size_t(pool_.size()));
    pool_.parallel_for(int(tasks_.size()) * n_heads, [&](int task, int thread) {
      const int h = task % n_heads;
      const SeqSlice& s = sl[tasks_[size_t(task / n_heads)].first];
      const int t0 = tasks_[size_t(task / n_heads)].second;
      const int pos0 = s.pos0;
      const CpuKVPool& pool = static_cast<const CpuKVPool&>(s.kv->pool());
      const int32_t* table = s.kv->blocks().data();
      const int nq = std::min(kQBlock, s.T - t0);
      const int nmax = pos0 + t0 + nq;  // keys seen by the block's last query (bottom-right causal)
      std::vector<float>& sc = scores_[thread];
      if (sc.size() < size_t(kQBlock) * nmax) sc.resize(size_t(kQBlock) * nmax);
      const float* q[kQBlock];
      float* o[kQBlock];
      for (int i = 0; i < nq; ++i) {
        q[i] = qkv + size_t(s.row0 + t0 + i) * 3 * H + size_t(h) * head_dim;
        o[i] = out + size_t(s.row0 + t0 + i) * H + size_t(h) * head_dim;
        std::memset(o[i], 0, head_dim * sizeof(float));
      }
      // scores: query i sees keys 0 .. pos0 + t0 + i
      for (int j0 = 0; j0 < nmax; j0 += kKvBlockTokens) {
        const float* K = pool.rows(table[j0 / kKvBlockTokens], layer, 0, h);
        const int j1 = std::min(nmax, j0 + kKvBlockTokens);
        for (int j = j0; j < j1; ++j) {
          const float* kj = K + size_t(j - j0) * head_dim;
          for (int i = std::max(0, j - pos0 - t0); i < nq; ++i) sc[size_t(i) * nmax + j] = dot(q[i], kj, head_dim) * scale;
        }
      }
      float inv[kQBlock];
      for (int i = 0; i < nq; ++i) {
        float* si = &sc[size_t(i) * nmax];
        const int nk = pos0 + t0 + i + 1;
        float mx = -INFINITY;
        for (int j = 0; j < nk; ++j) mx = si[j] > mx ? si[j] : mx;
        double sum = 0.0;
        for (int j = 0; j < nk; ++j) {
          si[j] = std::exp(si[j] - mx);
          sum += si[j];
        }
        inv[i] = float(1.0 / sum);
      }
      for (int j0 = 0; j0 < nmax; j0 += kKvBlockTokens) {
        const float* V = pool.rows(table[j0 / kKvBlockTokens], layer, 1, h);
        const int j1 = std::min(nmax, j0 + kKvBlockTokens);
        for (int j = j0; j < j1; ++j) {
          const float* vj = V + size_t(j - j0) * head_dim;
          for (int i = std::max(0, j - pos0 - t0); i < nq; ++i) axpy(sc[size_t(i) * nmax + j] * inv[i], vj, o[i], head_dim);
        }
      }
    });
  }

  void swiglu(const Buf ab, const Buf gb, int T, int Fw, Buf outb) override {
    const float* a = F(ab);
    const float* g = F(gb);
    float* out = F(outb);
    const size_t n = size_t(T) * Fw;
    const int chunks = int((n + 16383) / 16384);
    pool_.parallel_for(chunks, [&](int c, int) {
      const size_t e = std::min(n, size_t(c + 1) * 16384);
      for (size_t i = size_t(c) * 16384; i < e; ++i) out[i] = a[i] * (g[i] / (1.0f + std::exp(-g[i])));
    });
  }

  void add(Buf hb, const Buf xb, int T, int H) override {
    float* h = F(hb);
    const float* x = F(xb);
    for (size_t i = 0, n = size_t(T) * H; i < n; ++i) h[i] += x[i];
  }

  void final_logits(const Buf hb, const int* rows, int R, int H, const Weight& ln_f, const Weight& lm_head, float eps,
                    float* logits) override {
    std::vector<float> sel(size_t(R) * H), normed(size_t(R) * H);
    for (int r = 0; r < R; ++r) std::memcpy(&sel[size_t(r) * H], F(hb) + size_t(rows[r]) * H, H * sizeof(float));
    rmsnorm(sel.data(), ln_f, eps, R, H, normed.data());
    linear(normed.data(), lm_head, nullptr, R, logits);
  }

  // final_logits into a scratch [R,V] kept here, then the pick (cpu/pick.cc): only out[R] leaves the backend.
  void final_pick(const Buf hb, const int* rows, int R, int H, const Weight& ln_f, const Weight& lm_head, float eps,
                  const PickSpec* specs, PickResult* out) override {
    if (R <= 0) return;
    const int V = int(lm_head.rows);
    pick_logits_.resize(size_t(R) * size_t(V));
    final_logits(hb, rows, R, H, ln_f, lm_head, eps, pick_logits_.data());
    pick_rows(pool_, pick_logits_.data(), R, V, specs, out);
  }

  void pick_logits(const float* logits, int R, int V, const PickSpec* specs, PickResult* out) override {
    if (R <= 0) return;
    pick_logits_.assign(logits, logits + size_t(R) * size_t(V));
    pick_rows(pool_, pick_logits_.data(), R, V, specs, out);
  }

 private:
  static float* F(Buf b) { return static_cast<float*>(b); }
  static const float* F(const void* b) { return static_cast<const float*>(b); }

  // Path thresholds, measured with NativeOps.timeLinear on a 2-vCPU Sapphire Rapids (AVX-512 + AMX), 2 threads, bf16
  // weights 11008 x 4096 (90 MB, beyond the caches) and 2048 x 2048, ms per call:
  //   fp32 activations, T =        4     8     9    12    16    24    32
  //     GEMV (a weight pass per 4 tokens)  2.22  4.62  5.82  6.78  9.12  13.4  17.2
  //     GEMM (one pass, packed x^T)       10.9  10.7  10.5  10.8  11.0  14.6  15.0     -> GEMV up to 24 tokens
  //   bf16 matmul, T =             1     2     4     8
  //     GEMV                        2.14  1.93  2.66  4.81
  //     AMX                         2.39  2.26  2.31  2.35                             -> AMX from 4 tokens
  // (The GEMV threshold was 8 and AMX's 9: batches of 9-16 fp32 decoders cost 2x those of 8, and 4-8 bf16 ones 2x.)
  static constexpr int kGemvMaxT = 24, kAmxMinT = 4;

  void run_linear(const LinearJob& jin) {
    LinearJob j = jin;
    if (bf16_) {
      // dtype 'bf16': matmul inputs rounded to bf16 (as the reference's bf16 activations), fp32 accumulation.
      if (amx_ && j.wdt == DType::BF16 && j.T >= kAmxMinT && j.K % 32 == 0 && j.N % 16 == 0) return run_linear_amx(j);
      xr_.resize(size_t(j.T) * j.K);
      for (size_t i = 0; i < xr_.size(); ++i) xr_[i] = bf16_to_f32(f32_to_bf16(j.x[i]));
      j.x = xr_.data();
    }
    const int rows_per_task = 64;
    const int tasks = (j.N + rows_per_task - 1) / rows_per_task;
    auto rows = [&](int task) { return std::pair<int, int>(task * rows_per_task, std::min(j.N, (task + 1) * rows_per_task)); };
    if (isa_ == Isa::Scalar) {
      pool_.parallel_for(tasks, [&](int task, int) { auto r = rows(task); linear_gemv_scalar(j, r.first, r.second); });
      return;
    }
    if (j.T <= kGemvMaxT) {  // decode, small batches, short chunks: weights stream from the mapping, 4 tokens a pass
      pool_.parallel_for(tasks, [&](int task, int) {
        auto r = rows(task);
        if (isa_ == Isa::Avx512) linear_gemv_avx512(j, r.first, r.second);
        else linear_gemv_avx2(j, r.first, r.second);
      });
      return;
    }
    // gemm: x^T packed once per pass of kGemmTokens tokens, panels of MR rows per task.
    const int MR = gemm_panel_rows(isa_), L = gemm_token_block(isa_);
    const int panel_rows = MR * 4;
    const int ptasks = (j.N + panel_rows - 1) / panel_rows;
    wbuf_.resize(size_t(pool_.size()));
    for (auto& w : wbuf_) w.resize(size_t(MR) * j.K);
    for (int t0 = 0; t0 < j.T; t0 += kGemmTokens) {
      LinearJob c = j;
      c.T = std::min(kGemmTokens, j.T - t0);
      c.x = j.x + size_t(t0) * j.K;
      c.y = j.y + size_t(t0) * j.N;
      const int Tp = (c.T + L - 1) / L * L;
      xt_.assign(size_t(j.K) * Tp, 0.0f);
      for (int t = 0; t < c.T; ++t)
        for (int k = 0; k < j.K; ++k) xt_[size_t(k) * Tp + t] = c.x[size_t(t) * j.K + k];
      pool_.parallel_for(ptasks, [&](int task, int thread) {
        const int n0 = task * panel_rows, n1 = std::min(j.N, n0 + panel_rows);
        if (isa_ == Isa::Avx512) linear_gemm_avx512(c, xt_.data(), Tp, n0, n1, wbuf_[thread].data());
        else linear_gemm_avx2(c, xt_.data(), Tp, n0, n1, wbuf_[thread].data());
      });
    }
  }

 private:
  // bf16 x bf16 GEMM on AMX: x packed once per pass of kGemmTokens tokens as pairs, weight rows read in place.
  void run_linear_amx(const LinearJob& j) {
    const int panel_rows = 64, Kp = j.K / 2;
    const int ptasks = (j.N + panel_rows - 1) / panel_rows;
    for (int t0 = 0; t0 < j.T; t0 += kGemmTokens) {
      LinearJob c = j;
      c.T = std::min(kGemmTokens, j.T - t0);
      c.x = j.x + size_t(t0) * j.K;
      c.y = j.y + size_t(t0) * j.N;
      const int Tp = (c.T + 15) / 16 * 16;
      xp_.assign(size_t(Kp) * Tp, 0u);
      for (int t = 0; t < c.T; ++t)
        for (int p = 0; p < Kp; ++p) {
          const float* x = c.x + size_t(t) * j.K + 2 * p;
          xp_[size_t(p) * Tp + t] = uint32_t(f32_to_bf16(x[0])) | uint32_t(f32_to_bf16(x[1])) << 16;
        }
      pool_.parallel_for(ptasks, [&](int task, int) {
        const int n0 = task * panel_rows, n1 = std::min(j.N, n0 + panel_rows);
        linear_gemm_amx(c, xp_.data(), Tp, n0, n1);
      });
    }
  }

  Isa isa_;
  bool bf16_ = false, amx_ = false, fold_norm_ = false;
  std::vector<float> xr_;
  std::vector<uint32_t> xp_;
  ThreadPool pool_;
  std::vector<std::vector<float>> scores_, wbuf_;
  std::vector<float> xt_, cs_, row_scale_;
  std::vector<float> pick_logits_;  // final_pick / pick_logits: the [R,V] logits, penalized in place
  std::vector<std::pair<int, int>> tasks_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(const BackendOptions& opt) { return std::make_unique<CpuBackend>(opt); }

}  // namespace qwen
