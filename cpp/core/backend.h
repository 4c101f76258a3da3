// The backend seam: one virtual per op of the Qwen forward pass. The engine (engine.cc) calls only these; the CPU
// backend (cpp/cpu) implements them all, the CUDA backend (cuda/) mirrors them with the same names, and the op tests
// (test/ops.test.ts through cpp/addon/ops_binding.cc) drive any backend through this interface against float64 loops.
//
// Buffers ("Buf") are backend memory holding activations in the backend's activation type (act_dtype(): fp32 on the
// CPU; bf16/fp16/fp32 on CUDA). Shapes are row-major and given in the comments; T = tokens in this step, H = hidden,
// F = ffn width, V = vocab, P = pos0 = tokens already in the KV cache.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/dtype.h"
#include "core/kv_cache.h"

namespace qwen {

// A weight matrix [rows, cols] (a vector has rows == 1) as the backend holds it: for the CPU a view into the mmapped
// safetensors file (any stored dtype), for CUDA device memory in the compute dtype.
struct Weight {
  const void* data = nullptr;
  DType dtype = DType::F32;
  int64_t rows = 0, cols = 0;
};

// The one table of per-layer weights in the order lib/model/weights.ts sends them (WEIGHT_TABLE there).
struct LayerWeights {
  Weight ln_1;         // [H]            transformer.h.i.ln_1.weight
  Weight c_attn_w;     // [3H, H]        attn.c_attn.weight  (rows Q | K | V)
  Weight c_attn_b;     // [3H]           attn.c_attn.bias    (the only bias in the model)
  Weight attn_c_proj;  // [H, H]         attn.c_proj.weight
  Weight ln_2;         // [H]
  Weight w1;           // [F, H]         mlp.w1.weight  (the "up" branch)
  Weight w2;           // [F, H]         mlp.w2.weight  (the gate: silu applies to w2(x))
  Weight mlp_c_proj;   // [H, F]         mlp.c_proj.weight
};
struct ModelWeights {
  Weight wte;      // [V, H]
  Weight ln_f;     // [H]
  Weight lm_head;  // [V, H]  untied
  std::vector<LayerWeights> layers;
};

// Rotary parameters of one sequence: inv_freq is computed once on the host in fp32 exactly as the reference
// (1 / base'^(2i/rot) with base' = base * alpha^(rot/(rot-2))) so every backend rotates by bit-identical angles.
struct RopeParams {
  int rot_dims = 0;          // leading dims of each head that rotate (rotate-half pairs i and i + rot_dims/2)
  float inv_freq[128] = {};  // [rot_dims / 2]
  int logn_base = 0;         // S (seq_length) when logN query scaling is on, else 0
};

// One sequence's share of a batched step. The step's activations are the rows of every sequence in it, concatenated:
// rows [row0, row0 + T) belong to this sequence and sit at its positions pos0 .. pos0 + T - 1.
struct SeqSlice {
  int row0 = 0;
  int T = 0;
  int pos0 = 0;                      // positions already in the KV cache
  const RopeParams* rope = nullptr;  // this sequence's rotary parameters (NTK alpha is per sequence)
  KVCache* kv = nullptr;             // paged cache with blocks reserved for >= pos0 + T positions
};

// ---- the pick of the next id (final_pick / pick_logits): greedy, or sampled with do_sample ----
constexpr int kMaxPickTop = 20;  // top-n logprobs per row at most (OpenAI's top_logprobs limit)

// The per-row request of a greedy pick: the penalties exactly as lib/sampling applies them (qwen-reference §6.2),
//   1. HF repetition penalty over every id of the sequence, prompt included, once per distinct id:
//        x <- x < 0 ? x * repetition : x / repetition                      (skipped when repetition == 1)
//   2. OpenAI presence / frequency over the GENERATED ids with their counts c:
//        x <- x - (frequency * c + presence)     for c > 0                  (skipped when both are 0)
// each in double and rounded once to fp32 (what the TS sampler's Float32Array stores), then the argmax over ids
// [0, vocab_limit) (ties -> lowest id; NaN never wins; +Infinity wins; no finite or +Infinity logit -> id -1).
struct PickSpec {
  const int32_t* ids = nullptr;     // [n_ids] DISTINCT ids of the sequence (prompt + generated), any order; ids
                                    //   >= vocab_limit are ignored
  const int32_t* counts = nullptr;  // [n_ids] how often each was generated: 0 = prompt-only (repetition penalty only)
  int n_ids = 0;
  double repetition = 1.0;  // 1 = off
  double presence = 0.0;    // 0 = off (with frequency 0)
  double frequency = 0.0;
  int vocab_limit = 0;      // eligible ids [0, vocab_limit); 0 or > V means all V (the tokenizer's 151851 for Qwen)
  int top_n = -1;           // -1: no logprobs; 0: the chosen id's logprob; 1..kMaxPickTop: also the top-n list
  // Sampling (do_sample): after the penalties, HF's warpers in lib/sampling's PROCESSOR_CHAIN order, then a draw:
  //   temperature: weights w = exp((x - max) / temperature)     (cpp/core/pick.h pick_exp_neg, the TS table)
  //   top_k > 0:   keep the top_k best (value desc, id asc) and every id tied with the k-th   (>= n: no-op)
  //   top_p < 1:   keep the shortest prefix of that order whose mass reaches top_p * (kept mass)
  //   draw:        the first kept id, in lib/sampling/pick.ts's walk order, whose cumulative weight exceeds
  //                u * (kept mass)
  // Logprobs are then those of the kept, renormalized, tempered distribution (pick.ts logprobsOf), and the top list
  // holds kept ids only. The CPU pick equals lib/sampling's Sampler.sample() bit for bit (cpp/cpu/sample.cc);
  // cuda/pick.cu sums in another order (cuda/README.md).
  bool do_sample = false;
  double temperature = 1.0;  // > 0 (finite)
  int top_k = 0;             // 0 = off
  double top_p = 1.0;        // (0, 1]; 1 = off
  double u = 0.0;            // [0, 1): the sampler's Rng draw for this step
};

// Logprobs are those of the softmax at temperature 1 of the penalized logits over the eligible ids (NaN and -Infinity
// weigh 0; with +Infinity logits present they share all the mass). The top list holds the n most likely ids with a
// non-zero fp32 weight exp(x - max), ordered (logprob desc, id asc); it may be shorter than top_n.
struct PickResult {
  int32_t id = -1;       // the argmax; -1 when the row has no usable logit (all NaN / -Infinity): an error for the caller
  double logprob = 0.0;  // of id (top_n >= 0)
  int n_top = 0;
  int32_t top_ids[kMaxPickTop] = {};
  double top_logprobs[kMaxPickTop] = {};
};

using Buf = void*;

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;
  virtual DType act_dtype() const = 0;

  // Memory. Buffers hold `elems` activations; to_device/to_host convert from/to fp32 host arrays.
  virtual Buf alloc(size_t elems) = 0;
  virtual void free(Buf b) = 0;
  virtual void to_device(Buf dst, const float* src, size_t elems) = 0;
  virtual void to_host(float* dst, const Buf src, size_t elems) = 0;
  // Make a backend copy (or view) of a host weight; the host view stays valid for the engine's lifetime.
  virtual Weight upload(const Weight& host) = 0;
  virtual void release(Weight& w) = 0;
  // The engine's pool of KV blocks (kv_cache.h): at most `max_blocks` blocks of kKvBlockTokens positions for every
  // layer, each given storage on first use. The layout inside a block is the backend's own.
  virtual std::shared_ptr<KVPool> new_kv_pool(const ModelConfig& cfg, int max_blocks) = 0;
  virtual void synchronize() {}
  // Called once per step, before the layers, with that step's slices (rows contiguous and in order, sequences
  // distinct); rope/kv_store/attention of the step then receive the same array. CUDA uploads the block tables and
  // rotary tables here once instead of once per layer.
  virtual void begin_step(const SeqSlice* s, int n) { (void)s; (void)n; }

  // ---- ops: the Qwen forward, one entry each ----
  // h[T,H] = wte[ids[t]]; ids are host int32 already checked < V.
  virtual void embedding(const Weight& wte, const int32_t* ids, int T, Buf h) = 0;
  // y[T,H] = x / sqrt(mean(x^2) + eps) * g
  virtual void rmsnorm(const Buf x, const Weight& g, float eps, int T, int H, Buf y) = 0;
  // y[T,N] = x[T,K] . W[N,K]^T (+ b[N])
  virtual void linear(const Buf x, const Weight& W, const Weight* b, int T, Buf y) = 0;
  // The three per-sequence ops take the step's slices s[0..n); qkv[T,3H] and out[T,H] span all rows of the step.
  // In place on qkv: rotate-half RoPE of every q and k head of slice rows at positions pos0..pos0+T-1 with the
  // slice's inv_freq, then q *= logn(pos).
  virtual void rope(Buf qkv, const SeqSlice* s, int n, int n_heads, int head_dim) = 0;
  // K/V parts of each slice's rows of qkv -> its cache, layer `layer`, positions pos0..pos0+T-1.
  virtual void kv_store(const Buf qkv, const SeqSlice* s, int n, int n_heads, int head_dim, int layer) = 0;
  // Per slice and head: out = softmax(q k^T / sqrt(d) + causal) v with keys/values 0..pos0+T-1 of its cache; the
  // slice's row t sees keys 0..pos0+t (bottom-right aligned causal mask).
  virtual void attention(const Buf qkv, const SeqSlice* s, int n, int n_heads, int head_dim, int layer,
                         Buf out) = 0;
  // out[T,F] = a * silu(g), a = w1(x), g = w2(x)
  virtual void swiglu(const Buf a, const Buf g, int T, int F, Buf out) = 0;
  // h[T,H] += x[T,H]
  virtual void add(Buf h, const Buf x, int T, int H) = 0;

  // ---- fused ops: each equals the composition in its default body, which a backend may replace by fewer passes
  // over memory (CUDA: one launch each). The CPU backend keeps the compositions: they are the reference.
  // h[T,H] += x[T,H]; y[T,H] = rmsnorm(h; g, eps)   (the residual add, then the next RMSNorm of the new h)
  virtual void add_rmsnorm(Buf h, const Buf x, const Weight& g, float eps, int T, int H, Buf y) {
    add(h, x, T, H);
    rmsnorm(h, g, eps, T, H, y);
  }
  // a[T,F] = w1(x) * silu(w2(x)) for x[T,K], w1/w2 [F,K]; g[T,F] is scratch (holds w2(x) in the composition)
  virtual void mlp_swiglu(const Buf x, const Weight& w1, const Weight& w2, int T, Buf a, Buf g) {
    linear(x, w1, nullptr, T, a);
    linear(x, w2, nullptr, T, g);
    swiglu(a, g, T, int(w1.rows), a);
  }
  // The folded layer (QWEN_FOLD_NORM=1; engine.cc): when folds_norm(T) is true for a pass of T rows, each layer runs
  //   norm_linear(h; ln_1, c_attn) -> rope_kv_store -> attention -> linear_add(att, attn_c_proj; h)
  //   -> norm_mlp_swiglu(h; ln_2, w1, w2) -> linear_add(a, mlp_c_proj; h)
  // instead of ... linear -> add_rmsnorm -> mlp_swiglu ... The default bodies are the compositions, the same ops in
  // the same order as the unfolded layer (the CPU honours the switch, so a test can check the folded order there).
  // CUDA folds each RMSNorm into the GEMV that reads it and each residual add into the one that writes it (two
  // launches fewer per decode layer; cuda/gemv.cuh).
  virtual bool folds_norm(int T) const {
    (void)T;
    return false;
  }
  // The switches this backend is running with (BackendOptions::switch_on names -> state), for Model.switches.
  virtual std::map<std::string, bool> switches() const { return {}; }
  // y[T,N] = rmsnorm(h[T,K]; g, eps) . W^T (+ b); x[T,K] is scratch (the composition's normalized rows)
  virtual void norm_linear(const Buf h, const Weight& g, float eps, const Weight& W, const Weight* b, int T, Buf x,
                           Buf y) {
    rmsnorm(h, g, eps, T, int(W.cols), x);
    linear(x, W, b, T, y);
  }
  // h[T,N] += x[T,K] . W^T; y[T,N] is scratch (the composition's product)
  virtual void linear_add(const Buf x, const Weight& W, int T, Buf h, Buf y) {
    linear(x, W, nullptr, T, y);
    add(h, y, T, int(W.rows));
  }
  // a[T,F] = mlp_swiglu(rmsnorm(h[T,K]; g, eps)); x[T,K] and gs[T,F] are scratch
  virtual void norm_mlp_swiglu(const Buf h, const Weight& g, float eps, const Weight& w1, const Weight& w2, int T,
                               Buf x, Buf a, Buf gs) {
    rmsnorm(h, g, eps, T, int(w1.cols), x);
    mlp_swiglu(x, w1, w2, T, a, gs);
  }
  // rope, then kv_store, after adding the QKV bias b[3H] (nullable) to every row of qkv[T,3H]. The engine keeps the
  // bias in linear() and passes nullptr (CUDA's fused kernel can add it, but rounding the GEMM output before the add
  // cost accuracy on the H100; op_check tests that variant). Afterwards the q part of qkv holds the rotated, logN-scaled queries; the k and v parts are unspecified (attention
  // reads K and V from the cache only).
  virtual void rope_kv_store(Buf qkv, const Weight* bias, const SeqSlice* s, int n, int n_heads, int head_dim,
                             int layer) {
    if (bias) throw std::logic_error("rope_kv_store: this backend takes the QKV bias in linear()");
    rope(qkv, s, n, n_heads, head_dim);
    kv_store(qkv, s, n, n_heads, head_dim, layer);
  }
  // Optional recording of the layer loop (CUDA graphs). The engine calls begin_layers() right after begin_step: true
  // means the backend replayed a recording made for exactly this step's shape (same StepView, buffers and
  // workspaces) and the engine must NOT issue the layer ops; false means it issues them (the backend may be recording
  // them) and then calls end_layers(), or abort_layers() when an op threw. end_layers() false: the recording failed
  // and nothing of it ran, so the engine issues the ops again (the backend records no more).
  virtual bool begin_layers() { return false; }
  virtual bool end_layers() { return true; }
  virtual void abort_layers() noexcept {}
  // Rows per forward pass (Engine::step packs a step's tokens into passes of at most this many; workspace memory
  // grows with it). CPU: 512 keeps the activations cache-friendly; CUDA: 2048 (bigger GEMMs run nearer the peak).
  virtual int max_step_tokens() const { return 512; }
  // logits[R,V] (host fp32) = lm_head( rmsnorm(h[rows[r]], ln_f) ) for the R selected rows of h[T,H].
  virtual void final_logits(const Buf h, const int* rows, int R, int H, const Weight& ln_f, const Weight& lm_head,
                            float eps, float* logits) = 0;
  // Greedy pick (PickSpec / PickResult above): the logits of final_logits for the R selected rows of h[T,H], kept in
  // the backend, then per row r: specs[r]'s penalties, argmax and (specs[r].top_n >= 0) logprobs -> out[r]. Only
  // out[R] comes back to the host, not the [R,V] logits. A row with no usable logit gets id -1 (no throw).
  virtual void final_pick(const Buf h, const int* rows, int R, int H, const Weight& ln_f, const Weight& lm_head,
                          float eps, const PickSpec* specs, PickResult* out) = 0;
  // The pick half of final_pick on given host logits[R,V] (fp32): the same code after the lm_head (tests compare
  // every backend's pick with the TS sampler on chosen logits: ties, NaN, +-Infinity).
  virtual void pick_logits(const float* logits, int R, int V, const PickSpec* specs,
                           PickResult* out) = 0;
};

// Registry: the only place backends are named. Throws std::runtime_error with the reason when unavailable.
struct BackendOptions {
  std::string device = "cpu";  // "cpu" | "cuda"
  std::string dtype = "auto";  // "auto" | "bf16" | "fp16" | "fp32"
  int threads = 0;             // CPU worker threads; 0 = hardware concurrency
  std::string cpu_isa;         // CPU kernels: "" = best available, or "scalar" | "avx2" | "avx512" (tests)
  // Switches a backend reads when it is made (cuda/README.md "Environment"): name -> "0" | "1", taking precedence
  // over the environment variable of that name (LoadOptions.switches; jest's process.env never reaches getenv).
  std::map<std::string, std::string> switches;
  // The switch `name`: "1" -> true, "0" -> false, from `switches`, else the environment; otherwise `dflt`.
  bool switch_on(const char* name, bool dflt) const {
    auto it = switches.find(name);
    const char* v = it != switches.end() ? it->second.c_str() : std::getenv(name);
    if (v && v[0] != '\0' && v[1] == '\0' && (v[0] == '0' || v[0] == '1')) return v[0] == '1';
    return dflt;
  }
};
std::unique_ptr<Backend> make_backend(const BackendOptions& opt);

}  // namespace qwen
