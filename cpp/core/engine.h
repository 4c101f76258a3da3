// The Qwen forward pass over a Backend (top to bottom like the paper; qwen-reference.md §2-§4), and the per-sequence
// state it needs: the KV cache and the rotary parameters frozen at the sequence's first forward (dynamic NTK).
#pragma once
#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/mapped_file.h"

namespace qwen {

struct TensorDesc {
  std::string name;
  int file = 0;              // index into LoadRequest::files
  uint64_t offset = 0;       // absolute byte offset of the data in that file
  uint64_t nbytes = 0;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
};

struct LoadRequest {
  ModelConfig cfg;
  std::vector<std::string> files;
  std::vector<TensorDesc> tensors;  // wte, ln_f, lm_head, then 8 per layer in LayerWeights order
  BackendOptions backend;
  int kv_blocks = 0;                // KV pool cap in blocks of kKvBlockTokens positions (lib/ sizes it)
};

class Sequence {
 public:
  int length() const { return length_; }
  double ntk_alpha() const { return alpha_; }
  int kv_blocks() const { return int(kv_->blocks().size()); }
  // Preemption: give every KV block back and forget the cached positions; the NTK alpha stays frozen, so feeding the
  // same ids again (recompute) rebuilds the identical cache. Only between steps (the scheduler runs one at a time).
  void release_kv() {
    kv_->shrink(0);
    length_ = 0;
  }

 private:
  friend class Engine;
  int length_ = 0;
  bool alpha_set_ = false;
  double alpha_ = 1.0;
  RopeParams rope_;
  std::unique_ptr<KVCache> kv_;
};

// One sequence's part of a batched step.
struct StepItem {
  Sequence* seq = nullptr;
  const int32_t* ids = nullptr;
  int T = 0;              // new tokens (>= 1)
  int logits = 1;         // rows of logits wanted: 0 none, 1 the last new position, 2 every new position
  int prompt_length = 0;  // > 0: a sequence whose alpha is not frozen yet freezes it as for a prompt of this length
  // With logits == 1: the greedy pick of the last new position (Backend::final_pick) instead of its logits row.
  const PickSpec* pick = nullptr;
};

// Thrown when the KV pool cannot hold a step; nothing was changed.
struct KVFullError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Engine {
 public:
  // Maps the files, checks every tensor against the config (invariants: lib/ has validated them already), uploads
  // the weights to the backend. progress(fraction) is called on the loading thread; `cancel` is polled between
  // pieces of work and makes load() throw "aborted" after releasing what it mapped.
  static std::unique_ptr<Engine> load(const LoadRequest& req, const std::function<void(double)>& progress,
                                      const std::atomic<bool>& cancel);
  ~Engine();

  const ModelConfig& config() const { return cfg_; }
  Backend& backend() { return *backend_; }
  // prompt_length > 0 freezes the NTK alpha now, as for a prefill of that many tokens (a prompt fed in chunks, e.g.
  // perplexity windows); 0 computes it at the first forward from that forward's length.
  std::unique_ptr<Sequence> new_sequence(int prompt_length = 0);

  // One batched step: appends items[i].ids to each (distinct) sequence, all of them through every layer together.
  // out receives, item after item, the logits rows each asked for ([rows][V]); picks, item after item, the results of
  // the items with a pick (pick_rows of them). Throws std::runtime_error with no sequence changed on bad ids, repeated
  // sequences, a pick without logits == 1 or positions beyond kMaxPositions, KVFullError when the pool lacks blocks.
  // Steps over the backend's max_step_tokens() run as several passes (causal masking makes that exact).
  void step(const StepItem* items, int n, float* out, PickResult* picks = nullptr);
  static int logit_rows(const StepItem& it) {
    return it.pick ? 0 : it.logits == 2 ? it.T : it.logits == 1 ? 1 : 0;
  }
  static int pick_rows(const StepItem& it) { return it.pick && it.logits == 1 ? 1 : 0; }
  const KVPool& kv_pool() const { return *kv_pool_; }

  // The NTK alpha the reference computes for a prompt of L tokens (qwen-reference.md §4.1).
  static double ntk_alpha(int L, int seq_length);
  static RopeParams rope_params(const ModelConfig& cfg, double alpha);

 private:
  Engine() = default;
  void ensure_workspace(int T);
  // One pass: slices s[0..n) cover rows 0..T-1 of ids; logits of the R selected rows go to out ([R][V]), the greedy
  // picks of the P rows prows (specs[P]) to picks ([P]).
  void forward_pass(const SeqSlice* s, int n, const int32_t* ids, int T, const int* rows, int R, float* out,
                    const int* prows = nullptr, int P = 0, const PickSpec* specs = nullptr,
                    PickResult* picks = nullptr);

  std::mutex mu_;  // one forward at a time: the workspace and the backend's scratch are shared
  ModelConfig cfg_;
  std::vector<std::unique_ptr<MappedFile>> files_;
  std::unique_ptr<Backend> backend_;
  ModelWeights w_;
  std::shared_ptr<KVPool> kv_pool_;
  int ws_tokens_ = 0;
  Buf h_ = nullptr, x_ = nullptr, qkv_ = nullptr, att_ = nullptr, proj_ = nullptr, a_ = nullptr, g_ = nullptr;
};

}  // namespace qwen
