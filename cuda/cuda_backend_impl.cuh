// Internal declarations of the CUDA backend (CUDA types allowed here; cpp/ only sees cuda_backend.h).
#pragma once
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/backend.h"
#include "cpu/sample.h"
#include "linear.cuh"
#include "cpu/thread_pool.h"
#include "cublas_dyn.h"
#include "gemm_skinny.cuh"
#include "pick.cuh"
#include "profile.cuh"
#include "sample_fx.cuh"
#include "step.cuh"

namespace qwen::cu {

// cudaMalloc that throws std::runtime_error("CUDA out of memory while allocating N bytes for WHAT") on OOM and
// leaves the runtime usable (the OOM error is not sticky).
void* device_alloc(size_t bytes, const std::string& what);

// A device buffer that only grows. get() synchronizes `stream` before freeing a smaller old buffer, since kernels
// still queued may be reading it.
class DeviceScratch {
 public:
  DeviceScratch() = default;
  DeviceScratch(const DeviceScratch&) = delete;
  DeviceScratch& operator=(const DeviceScratch&) = delete;
  ~DeviceScratch() { release(); }
  void* get(size_t bytes, cudaStream_t stream, const char* what);
  void release();  // caller makes sure no queued work uses it
  const void* ptr() const { return p_; }
 private:
  void* p_ = nullptr;
  size_t bytes_ = 0;
};

// A pinned host buffer that only grows (plain malloc when pinning fails): device -> host copies into pageable memory
// ran at ~1.2 GB/s on the H100 machine (final logits of 64 rows: 33 ms), into pinned memory at PCIe speed.
class PinnedHost {
 public:
  PinnedHost() = default;
  PinnedHost(const PinnedHost&) = delete;
  PinnedHost& operator=(const PinnedHost&) = delete;
  ~PinnedHost() { release(); }
  void* get(size_t bytes);  // caller makes sure no queued copy uses the old buffer
  void release();
 private:
  void* p_ = nullptr;
  bool pinned_ = false;
  size_t bytes_ = 0;
};

// Host int32 arrays copied to the device through a pinned buffer; an event guards the pinned buffer's reuse.
class IntStager {
 public:
  IntStager() = default;
  IntStager(const IntStager&) = delete;
  IntStager& operator=(const IntStager&) = delete;
  ~IntStager() { release(); }
  const int32_t* stage(const int32_t* src, int n, cudaStream_t stream, const char* what);
  void release();
 private:
  int32_t* host_ = nullptr;
  bool pinned_ = false;
  void* dev_ = nullptr;
  size_t cap_ = 0;
  cudaEvent_t ev_ = nullptr;
};

// The engine's pool of paged KV blocks (kv_cache.h) on the device. One block = kKvBlockTokens (32) positions of every
// layer, laid out [layer][k|v][row 0..31][H] in the activation dtype (keys after RoPE and before logN); its stride is
// rounded up to 256 bytes so every block base (and, for H * esize % 16 == 0, every row) is 16-byte aligned.
// Storage comes in slabs of up to 64 blocks (at most ~256 MiB each; one cudaMalloc per slab, not per block); when a
// slab does not fit, smaller ones are tried down to one block before "CUDA out of memory ... KV cache" is thrown.
// Slabs are kept until the pool dies (the base class reuses freed ids).
// Block addresses: a host table (written by materialize, under the pool's lock, any thread) and a device table of
// max_blocks entries that the kernels index by block id; CudaBackend::begin_step copies the entries made since its
// last upload (stream-ordered, before the step's kernels). The pool holds no stream and may outlive the backend; its
// destructor waits for the device (queued kernels may still read the blocks) and frees everything.
class CudaKVPool final : public KVPool {
 public:
  CudaKVPool(int n_layers, int hidden, DType act, int max_blocks);
  ~CudaKVPool() override;
  int n_layers() const { return n_layers_; }
  int hidden() const { return hidden_; }
  DType act() const { return act_; }
  size_t block_stride() const { return stride_; }  // bytes between consecutive blocks of a slab
  // Blocks [0, made()) have storage and their host table entries are final (acquire pairs with materialize).
  int made() const { return made_.load(std::memory_order_acquire); }
  const uint64_t* host_table() const { return host_table_.data(); }  // [max_blocks] block id -> device address
  uint64_t* device_table() const { return dev_table_; }              // [max_blocks], entries [0, uploaded) valid
  int uploaded = 0;  // owned by the backend thread that runs the steps (begin_step)
  size_t storage_bytes() const override { return slab_bytes_.load(); }

 protected:
  void materialize(int id) override;

 private:
  int n_layers_, hidden_;
  DType act_;
  size_t stride_;
  std::vector<void*> slabs_;
  char* slab_ = nullptr;  // current slab: blocks [slab_first_, slab_first_ + slab_n_)
  int slab_first_ = 0, slab_n_ = 0;
  std::vector<uint64_t> host_table_;
  uint64_t* dev_table_ = nullptr;
  std::atomic<int> made_{0};
  std::atomic<size_t> slab_bytes_{0};
};

// The per-step upload of begin_step: two pinned host buffers used in turn (each guarded by an event recorded after
// the copies that read it, so the host may run one step ahead) and one device buffer (reused in stream order: the
// copy of step n+1 runs after the kernels of step n). Grows by synchronizing the stream and reallocating.
class StepStager {
 public:
  StepStager() = default;
  StepStager(const StepStager&) = delete;
  StepStager& operator=(const StepStager&) = delete;
  ~StepStager() { release(); }
  // Host buffer of >= bytes for the next upload (waits until its previous copies are done).
  char* host(size_t bytes, cudaStream_t stream);
  char* device() const { return static_cast<char*>(dev_); }
  // Queues the copy of host bytes [0, bytes) to the device buffer, plus extra host -> device copies, then the event.
  struct Extra {
    void* dst;
    size_t offset, bytes;  // from the host buffer
  };
  void upload(size_t bytes, const Extra* extra, int n_extra, cudaStream_t stream);
  void release();

 private:
  char* host_[2] = {nullptr, nullptr};
  bool pinned_[2] = {false, false};
  cudaEvent_t ev_[2] = {nullptr, nullptr};
  int cur_ = 1;
  void* dev_ = nullptr;
  size_t cap_ = 0;
};

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(const BackendOptions& opt);
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  const char* name() const override { return "cuda"; }
  DType act_dtype() const override { return act_; }

  Buf alloc(size_t elems) override;
  void free(Buf b) override;
  void to_device(Buf dst, const float* src, size_t elems) override;
  void to_host(float* dst, const Buf src, size_t elems) override;
  Weight upload(const Weight& host) override;
  void release(Weight& w) override;
  std::shared_ptr<KVPool> new_kv_pool(const ModelConfig& cfg, int max_blocks) override;
  void synchronize() override;
  void begin_step(const SeqSlice* s, int n) override;

  void embedding(const Weight& wte, const int32_t* ids, int T, Buf h) override;
  void rmsnorm(const Buf x, const Weight& g, float eps, int T, int H, Buf y) override;
  void linear(const Buf x, const Weight& W, const Weight* b, int T, Buf y) override;
  void rope(Buf qkv, const SeqSlice* s, int n, int n_heads, int head_dim) override;
  void kv_store(const Buf qkv, const SeqSlice* s, int n, int n_heads, int head_dim, int layer) override;
  void rope_kv_store(Buf qkv, const Weight* bias, const SeqSlice* s, int n, int n_heads, int head_dim,
                     int layer) override;
  // The engine keeps the bias in the QKV GEMM (one rounding of x.W^T + b, as HF): taking it into rope_kv_store rounds
  // the GEMM output first, which raised the tiny model's CUDA bf16 logit error from 7.6e-3 to 1.0e-2 on the H100.
  void set_fused_rope(bool on) { fused_rope_ = on; }  // op_check: the fused kernel whatever QWEN_CUDA_FUSED_ROPE says
  bool fused_rope() const { return fused_rope_; }
  // The GEMM scratch for LinearArgs::ws: {nullptr, 0} unless gemm_skinny is enabled.
  std::pair<void*, size_t> gemm_ws();
  // CUDA graphs of the layer loop (QWEN_CUDA_GRAPH=1): see begin_layers in cuda_backend.cu.
  bool begin_layers() override;
  bool end_layers() override;
  void abort_layers() noexcept override;
  void attention(const Buf qkv, const SeqSlice* s, int n, int n_heads, int head_dim, int layer, Buf out) override;
  void swiglu(const Buf a, const Buf g, int T, int F, Buf out) override;
  void add(Buf h, const Buf x, int T, int H) override;
  void add_rmsnorm(Buf h, const Buf x, const Weight& g, float eps, int T, int H, Buf y) override;
  void mlp_swiglu(const Buf x, const Weight& w1, const Weight& w2, int T, Buf a, Buf g) override;
  // The folded layer (backend.h, QWEN_FOLD_NORM=1): passes of up to 8 rows in bf16 / fp16, whose GEMVs take the
  // RMSNorm and the residual add (cuda/gemv.cuh). The three ops below fold whenever that GEMV applies, switch or
  // not (ops tests and op_check call them directly); otherwise they run the compositions.
  // Not when gemm_skinny takes these rows (QWEN_SKINNY_MIN_T < 9): the folds would all compose, with two launches
  // more per layer than the unfolded layer's fused add_rmsnorm.
  bool folds_norm(int T) const override {
    return fold_norm_ && T <= cu::kGemvMaxT && act_ != DType::F32 && !cu::skinny_takes_rows(T);
  }
  std::map<std::string, bool> switches() const override {
    return {{"QWEN_FOLD_NORM", fold_norm_}, {"QWEN_SAMPLE_FX", sample_fx_}, {"QWEN_CUDA_GRAPH", graph_on_},
            {"QWEN_CUDA_FUSED_ROPE", fused_rope_}};
  }
  LinearArgs linear_args(const Buf x, const Weight& W, const Weight* b, int T, Buf y);  // checks W and b
  void check_gain(const Weight& g, int H, const char* op) const;  // rmsnorm gains: the backend's, H elements
  void norm_linear(const Buf h, const Weight& g, float eps, const Weight& W, const Weight* b, int T, Buf x,
                   Buf y) override;
  void linear_add(const Buf x, const Weight& W, int T, Buf h, Buf y) override;
  void norm_mlp_swiglu(const Buf h, const Weight& g, float eps, const Weight& w1, const Weight& w2, int T, Buf x,
                       Buf a, Buf gs) override;
  int max_step_tokens() const override { return 2048; }
  void final_logits(const Buf h, const int* rows, int R, int H, const Weight& ln_f, const Weight& lm_head, float eps,
                    float* logits) override;
  void final_pick(const Buf h, const int* rows, int R, int H, const Weight& ln_f, const Weight& lm_head, float eps,
                  const PickSpec* specs, PickResult* out) override;
  void pick_logits(const float* logits, int R, int V, const PickSpec* specs, PickResult* out) override;

  // Not part of Backend: for diagnostics / tests.
  bool cublas_in_use() const { return cublas_ != nullptr; }
  cublas::Handle cublas_handle() const { return cublas_; }  // null when cuBLAS is off
  const std::string& cublas_note() const { return cublas_note_; }  // why cuBLAS is off ("" when on)
  cudaStream_t stream() const { return stream_; }
  // The device view of the current step (valid after begin_step; for tests and diagnostics).
  const StepView& step_view() const { return step_; }

 private:
  void h2d(void* dst, const void* src, DType src_dt, size_t elems);  // host any dtype -> device act dtype
  void release_all() noexcept;
  // begin_step(s, n) again unless the current step was made from the same slices (an op called without its
  // begin_step, or with other slices, still gets the right tables).
  void ensure_step(const SeqSlice* s, int n);
  void check_rope(const char* op, int n_heads, int head_dim) const;  // the step's rotary problems, rot <= head_dim
  void check_kv(const char* op, int n_heads, int head_dim, int layer) const;
  int check_head(const char* op, int H, const Weight& ln_f, const Weight& lm_head) const;
  void head_rows(const Buf h, const int32_t* rows_dev, int n, int H, int V, const Weight& ln_f, const Weight& lm_head,
                 float eps, void* xn, float* lg);
  // One final_pick / pick_logits call: its one staged upload (rows | DevPickRow[R] | penalty entries, then
  // DevSampleRow[R] when the device draws: sample_fx_ and a sampled row in the call) and its result buffers.
  struct PickCall {
    const int32_t* rows = nullptr;  // final_pick's rows of h
    const DevPickRow* specs = nullptr;
    const DevPickEntry* entries = nullptr;
    const DevSampleRow* samples = nullptr;  // null: sampled rows are drawn on the host
    DevPickOut* out = nullptr;              // [R]
    FxOut* fx = nullptr;                    // [R] the device draws (with samples)
  };
  PickCall stage_pick(const int* rows, int R, int V, const PickSpec* specs);
  // Rows [r0, r0 + n) of the call on their logits lg[n, V]: pick_kernel, then the device draw of the sampled rows or
  // their copy to the host.
  void pick_chunk(const PickCall& c, float* lg, int r0, int n, int V, const PickSpec* specs, int R);
  // DevPickOut[R] (and FxOut[R]) -> pinned host -> out (one synchronize); then the host draws, if the device did not.
  void finish_pick(const PickCall& c, int R, int V, const PickSpec* specs, PickResult* out);
  // Sampled rows (do_sample) of a pick call: their penalized logits rows lg[n, V] (rows r0.. of the call) copied back
  // to sample_host_, then drawn on the host by cpu/sample.cc (the TS sampler's arithmetic, exact) — see pick.cuh.
  void keep_sampled(const float* lg, int r0, int n, int V, const PickSpec* specs, int R);
  void draw_sampled(int V, const PickSpec* specs, int R, PickResult* out);

  int device_ = 0;
  DType act_ = DType::BF16;
  size_t esize_ = 2;
  cudaStream_t stream_ = nullptr;
  cublas::Handle cublas_ = nullptr;
  std::string cublas_note_;
  void* cublas_ws_ = nullptr;  // cuBLAS's workspace, ours (cublasSetWorkspace_v2): see the constructor
  // Host staging for upload / to_device / to_host: two buffers of kStageBytes (pinned when possible), each guarded
  // by an event recorded after the copy that reads it.
  void* stage_[2] = {nullptr, nullptr};
  bool stage_pinned_ = false;
  cudaEvent_t stage_ev_[2] = {nullptr, nullptr};
  DeviceScratch conv_;      // raw host-dtype chunk on the device before conversion; fp32 chunk for to_host
  DeviceScratch attn_ws_;   // split-attention partials
  DeviceScratch gemm_ws_;   // gemm_skinny's split-K partials (QWEN_GEMM_SKINNY=1 only), kGemmWsBytes
  // Layer-loop graphs, keyed by everything their kernels' parameters were made from (layers_key()).
  struct LayerGraph {
    cudaGraphExec_t exec = nullptr;
    int seen = 0;  // uncaptured occurrences so far: record on the second
  };
  bool graph_on_ = false;  // QWEN_CUDA_GRAPH=1, read at construction
  bool fused_rope_ = true;  // rope_kv_store's one kernel; QWEN_CUDA_FUSED_ROPE=0: rope, then kv_store
  bool fold_norm_ = false;  // QWEN_FOLD_NORM=1, read at construction (folds_norm)
  bool capturing_ = false;
  std::map<std::string, LayerGraph> graphs_;
  std::string capture_key_;
  uint64_t graph_gen_ = 0;  // bumped when a buffer or weight is freed: addresses baked into graphs may be gone
  std::string layers_key() const;
  void clear_graphs() noexcept;
  DeviceScratch xn_;        // final_logits: normalised rows [RC, H]
  DeviceScratch logits_;    // final_logits: fp32 logits [RC, V]
  PinnedHost logits_host_;  // final_logits: the same rows on the host, copied on into the caller's array
  IntStager ids_, rows_;
  StepStager pick_stage_;           // final_pick / pick_logits: one upload per call (pick.cuh PickLayout)
  DeviceScratch pick_out_;          // DevPickOut[R] on the device
  PinnedHost pick_host_;            // DevPickOut[R] on the host
  PinnedHost sample_host_;          // [sampled rows][V] penalized logits of a pick call's sampled rows
  // QWEN_SAMPLE_FX=1 (read at construction; opt-in until run on a GPU): sampled rows are drawn on the device
  // (sample_fx.cu) and only FxOut[R] comes back.
  bool sample_fx_ = false;
  DeviceScratch exp_table_;         // kPickExpTable on the device, uploaded at the first device draw
  bool exp_table_up_ = false;
  DeviceScratch sample_w_;          // the device draw's weights [RC, V]
  DeviceScratch sample_out_;        // FxOut[R] on the device
  PinnedHost sample_out_host_;      // FxOut[R] on the host
  // Host threads for the draws of sampled rows (~0.2-0.5 ms each at Qwen's V: serial, 64 rows would outlast the GPU
  // step), made at the first call with two or more; one scratch per thread, kept.
  std::unique_ptr<ThreadPool> draw_pool_;
  std::vector<SampleScratch> draw_scratch_;
  // The current step (begin_step): what it was built from, the uploaded view, and what the ops must refuse.
  struct StepKey {
    int row0, T, pos0;
    const RopeParams* rope;
    const KVCache* kv;
    size_t nblocks;
  };
  std::vector<StepKey> step_key_;
  bool step_valid_ = false;
  StepView step_;
  StepStager step_stage_;
  std::string rope_error_, kv_error_;  // "" when every slice has valid rotary parameters / a usable CUDA cache
  int step_max_rot_ = 0;
  int step_kv_layers_ = 0, step_kv_hidden_ = 0;  // of the slices' pool(s)
  std::vector<char> step_host_;                  // scratch for building the upload
  OpProfiler prof_;                              // QWEN_CUDA_PROFILE=1 (profile.cuh)
};

}  // namespace qwen::cu
