// The Qwen forward pass over a Backend (top to bottom like the paper; qwen-reference.md §2-§4), and the per-sequence
// state it needs: the KV cache and the rotary parameters frozen at the sequence's first forward (dynamic NTK).
#pragma once
#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
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
};

class Sequence {
 public:
  int length() const { return length_; }
  double ntk_alpha() const { return alpha_; }

 private:
  friend class Engine;
  int length_ = 0;
  bool alpha_set_ = false;
  double alpha_ = 1.0;
  RopeParams rope_;
  std::unique_ptr<KVCache> kv_;
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

  // Appends ids[0..T) to the sequence. out receives the logits of every new position ([T][V], all == true) or of
  // the last one ([V]). Throws std::runtime_error (sequence unchanged) on bad ids or beyond kMaxPositions.
  void forward(Sequence& seq, const int32_t* ids, int T, bool all, float* out);

  // The NTK alpha the reference computes for a prompt of L tokens (qwen-reference.md §4.1).
  static double ntk_alpha(int L, int seq_length);
  static RopeParams rope_params(const ModelConfig& cfg, double alpha);

 private:
  Engine() = default;
  void ensure_workspace(int T);
  void forward_chunk(Sequence& seq, const int32_t* ids, int T, const int* rows, int R, float* out);

  std::mutex mu_;  // one forward at a time: the workspace and the backend's scratch are shared
  ModelConfig cfg_;
  std::vector<std::unique_ptr<MappedFile>> files_;
  std::unique_ptr<Backend> backend_;
  ModelWeights w_;
  int ws_tokens_ = 0;
  Buf h_ = nullptr, x_ = nullptr, qkv_ = nullptr, att_ = nullptr, proj_ = nullptr, a_ = nullptr, g_ = nullptr;
};

constexpr int kPrefillChunk = 512;  // tokens per forward_chunk: bounds the workspace; causal masking makes it exact

}  // namespace qwen
