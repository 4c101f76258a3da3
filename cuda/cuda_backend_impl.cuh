// Internal declarations of the CUDA backend (CUDA types allowed here; cpp/ only sees cuda_backend.h).
#pragma once
#include <cuda_runtime.h>

#include <memory>
#include <string>
#include <vector>

#include "core/backend.h"
#include "cublas_dyn.h"

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
 private:
  void* p_ = nullptr;
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

// Per-layer K and V, each [capacity][H] in the activation dtype, keys after RoPE and before logN.
// reserve() grows every layer to max(tokens, min(2 * capacity, kMaxPositions)) positions by allocate + copy + free,
// one layer at a time (peak extra memory: one layer). A failed grow throws and leaves capacity() unchanged.
// Must not outlive the backend whose stream it uses.
class CudaKVCache final : public KVCache {
 public:
  CudaKVCache(int n_layers, int hidden, DType act, cudaStream_t stream);
  ~CudaKVCache() override;
  void reserve(int tokens) override;
  void* k(int layer) const { return layers_.at(size_t(layer)).k; }
  void* v(int layer) const { return layers_.at(size_t(layer)).v; }
  int hidden() const { return hidden_; }
  int n_layers() const { return int(layers_.size()); }
 private:
  struct Layer {
    void* k = nullptr;
    void* v = nullptr;
    int cap = 0;
  };
  std::vector<Layer> layers_;
  int hidden_;
  DType act_;
  cudaStream_t stream_;
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
  std::unique_ptr<KVCache> new_kv_cache(const ModelConfig& cfg) override;
  void synchronize() override;

  void embedding(const Weight& wte, const int32_t* ids, int T, Buf h) override;
  void rmsnorm(const Buf x, const Weight& g, float eps, int T, int H, Buf y) override;
  void linear(const Buf x, const Weight& W, const Weight* b, int T, Buf y) override;
  void rope(Buf qkv, int T, int pos0, int n_heads, int head_dim, const RopeParams& rp) override;
  void kv_store(const Buf qkv, int T, int pos0, int n_heads, int head_dim, KVCache& kv, int layer) override;
  void attention(const Buf qkv, int T, int pos0, int n_heads, int head_dim, KVCache& kv, int layer,
                 Buf out) override;
  void swiglu(const Buf a, const Buf g, int T, int F, Buf out) override;
  void add(Buf h, const Buf x, int T, int H) override;
  void final_logits(const Buf h, const int* rows, int R, int H, const Weight& ln_f, const Weight& lm_head, float eps,
                    float* logits) override;

  // Not part of Backend: for diagnostics / tests.
  bool cublas_in_use() const { return cublas_ != nullptr; }
  const std::string& cublas_note() const { return cublas_note_; }  // why cuBLAS is off ("" when on)
  cudaStream_t stream() const { return stream_; }

 private:
  void h2d(void* dst, const void* src, DType src_dt, size_t elems);  // host any dtype -> device act dtype
  void release_all() noexcept;

  int device_ = 0;
  DType act_ = DType::BF16;
  size_t esize_ = 2;
  cudaStream_t stream_ = nullptr;
  cublas::Handle cublas_ = nullptr;
  std::string cublas_note_;
  // Host staging for upload / to_device / to_host: two buffers of kStageBytes (pinned when possible), each guarded
  // by an event recorded after the copy that reads it.
  void* stage_[2] = {nullptr, nullptr};
  bool stage_pinned_ = false;
  cudaEvent_t stage_ev_[2] = {nullptr, nullptr};
  DeviceScratch conv_;      // raw host-dtype chunk on the device before conversion; fp32 chunk for to_host
  DeviceScratch attn_ws_;   // split-attention partials
  DeviceScratch xn_;        // final_logits: normalised rows [RC, H]
  DeviceScratch logits_;    // final_logits: fp32 logits [RC, V]
  IntStager ids_, rows_;
};

}  // namespace qwen::cu
