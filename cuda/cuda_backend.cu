// CudaBackend: the Backend seam (cpp/core/backend.h) on one CUDA device (device 0) and one stream.
//
// Activations, weights and the KV cache live in the activation dtype (bf16 by default, fp16 or fp32 on request);
// every kernel accumulates in fp32 and softmax is fp32. Host weights (F32/F16/BF16 views of the mmapped file) are
// converted while streaming through a 2 x 16 MiB pinned staging buffer; no second host copy is ever made.
// Every op enqueues on stream_; to_host, final_logits and synchronize() wait for it.
//
// Batched steps over a paged KV cache: the engine's KVPool is a CudaKVPool (blocks of 32 positions x every layer,
// [layer][k|v][row][H], in slabs, addressed through a device table by block id). begin_step uploads, once per step and
// in one copy, the step's slice descriptors, block tables, rotary tables, row -> slice map, the rows for split
// attention and the (slice, q-tile) list for flash attention (layout in begin_step below); rope_kv_store (or rope and
// kv_store) and attention are then one launch each (attention: flash + split + combine at most) for ALL sequences of
// the step.
//
// Checked on an H100 80GB HBM3 (2026-11-27): op_check 651/651, memcheck clean. Per-op figures measured there
// (op_check --perf and a QWEN_CUDA_PROFILE=1 decode step of the 7b preset at ~2,100 keys; README "GPU"):
//   op             kernel                           bound    measured
//   linear T<=8    gemv_vec_kernel<NT>              HBM      2.6-3.1 TB/s at T=1 (op_check); 2.1-2.7 TB/s in a step
//   linear T>=64   cublasGemmEx (dlopen)            tensor   790-890 TFLOP/s at T=2048; 1.9-2.5 TB/s at T=64
//   linear other   gemm_wmma_kernel                 tensor   slow at 9-63 rows (grid N/128): see QWEN_CUBLAS_MIN_T
//   mlp_swiglu     mlp_swiglu_gemv_kernel (T<=8)    HBM      66 us for w1 + w2 (180 MB, 2.7 TB/s) incl. SwiGLU
//   add_rmsnorm    add_rmsnorm_vec_kernel           launch   6 us per decode row
//   rope, kv_store rope_kernel, kv_store_kernel     launch   8 us, 6 us per decode row (QWEN_CUDA_FUSED_ROPE=0)
//   rope_kv_store  rope_kv_store_kernel             launch   rope + K/V write in one (the default): not yet timed
//   attention      attn_split_vec_kernel (+combine) HBM      31 us per layer at 2,100 keys; 2.2-2.9 TB/s of K+V
//                  flash2 (flash_mma.cuh, T > 16)   tensor   146 us per layer at T=2048 (235 TFLOP/s)
//   final_pick     final-logits GEMV + pick_kernel  HBM      0.44 ms per decode row (lm_head 1.24 GB)
// Second H100 run (2026-11-27, profile of batch 64 at ~220 keys, per layer): split attention 84 us (225 MB of K+V,
// 2.7 TB/s: bandwidth-bound), cuBLAS at T=64 218 us for the four GEMMs (404 MB of weights, 1.85 TB/s), final_pick
// of 64 rows 2.2 ms per step. Follow-ups: a skinny tensor-core GEMM for 9-64 rows near the HBM limit, a pick that
// splits each row over several blocks, CUDA graphs for decode steps, PDL by default once timed (QWEN_CUDA_PDL).
#include "cuda_backend_impl.cuh"

#include <algorithm>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <exception>
#include <iterator>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <tuple>

#include "../cuda/cuda_backend.h"
#include "add.cuh"
#include "add_rmsnorm.cuh"
#include "attention.cuh"
#include "common.cuh"
#include "convert.cuh"
#include "embedding.cuh"
#include "final_logits.cuh"
#include "gemm_skinny.cuh"
#include "kv_store.cuh"
#include "linear.cuh"
#include "mlp_swiglu.cuh"
#include "pick.cuh"
#include "rmsnorm.cuh"
#include "rope.cuh"
#include "rope_kv_store.cuh"
#include "sample_fx.cuh"
#include "swiglu.cuh"
#include "core/pick.h"
#include "cpu/sample.h"
#include "cpu/sample_fx.h"

namespace qwen {
namespace cu {

bool pdl_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("QWEN_CUDA_PDL");
    if (!e || std::string(e) != "1") return false;
    int dev = 0, major = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    return major >= 9;
  }();
  return on;
}

namespace {
constexpr size_t kStageBytes = size_t(16) << 20;  // per staging buffer
constexpr int kLogitsRowChunk = 64;               // final_logits rows per lm_head call (scratch R x V fp32)
constexpr int kPickRowChunk = 256;                // final_pick rows per lm_head call + pick launch (155 MB at Qwen's V)

std::string describe_count_error(cudaError_t e) {
  if (e == cudaErrorInsufficientDriver)
    return std::string("no usable NVIDIA driver: cudaGetDeviceCount returned error 35 (") + cudaGetErrorString(e) +
           "); libcuda.so.1 is missing or older than the CUDA " + std::to_string(CUDART_VERSION / 1000) + "." +
           std::to_string(CUDART_VERSION % 1000 / 10) + " runtime this addon was built with";
  if (e == cudaErrorNoDevice) return std::string("no CUDA-capable device found (") + cudaGetErrorString(e) + ")";
  return std::string("cudaGetDeviceCount failed with error ") + std::to_string(int(e)) + " (" + cudaGetErrorName(e) +
         "): " + cudaGetErrorString(e);
}

// "" when a cuBLAS handle can be created on the current device, else the reason. Probed once per process.
const std::string& cublas_handle_probe() {
  static const std::string r = [] {
    const cublas::Api& api = cublas::api();
    if (!api.ok) return api.error;
    cublas::Handle h = nullptr;
    const cublas::Status st = api.create(&h);
    if (st != 0) return "cublasCreate_v2 failed with status " + std::to_string(st);
    api.destroy(h);
    return std::string();
  }();
  return r;
}

DType choose_act_dtype(const std::string& want, int cc_major) {
  if (want == "auto" || want == "bf16") return cc_major >= 8 ? DType::BF16 : DType::F16;
  if (want == "fp16") return DType::F16;
  if (want == "fp32") return DType::F32;
  throw std::invalid_argument("CUDA backend: unknown dtype '" + want + "' (expected auto, bf16, fp16 or fp32)");
}
}  // namespace

// ------------------------------------------------------------------------------------------------ memory helpers
void* device_alloc(size_t bytes, const std::string& what) {
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, bytes == 0 ? 1 : bytes);
  if (e == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    throw std::runtime_error("CUDA out of memory while allocating " + std::to_string(bytes) + " bytes for " + what);
  }
  check_cuda(e, "cudaMalloc", __FILE__, __LINE__);
  return p;
}

void* DeviceScratch::get(size_t bytes, cudaStream_t stream, const char* what) {
  if (bytes <= bytes_ && p_) return p_;
  if (p_) {
    CUDA_CHECK(cudaStreamSynchronize(stream));
    cudaFree(p_);
    p_ = nullptr;
    bytes_ = 0;
  }
  p_ = device_alloc(bytes, what);
  bytes_ = bytes;
  return p_;
}

void DeviceScratch::release() {
  if (p_) cudaFree(p_);
  p_ = nullptr;
  bytes_ = 0;
}

void* PinnedHost::get(size_t bytes) {
  if (bytes <= bytes_) return p_;
  release();
  if (cudaHostAlloc(&p_, bytes, cudaHostAllocDefault) == cudaSuccess) {
    pinned_ = true;
  } else {
    cudaGetLastError();
    p_ = std::malloc(bytes);
    if (!p_) throw std::bad_alloc();
    pinned_ = false;
  }
  bytes_ = bytes;
  return p_;
}

void PinnedHost::release() {
  if (!p_) return;
  if (pinned_) cudaFreeHost(p_); else std::free(p_);
  p_ = nullptr;
  bytes_ = 0;
}

const int32_t* IntStager::stage(const int32_t* src, int n, cudaStream_t stream, const char* what) {
  if (n <= 0) return static_cast<const int32_t*>(dev_);
  if (!ev_) CUDA_CHECK(cudaEventCreateWithFlags(&ev_, cudaEventDisableTiming));
  if (size_t(n) > cap_) {
    CUDA_CHECK(cudaStreamSynchronize(stream));  // queued kernels may read dev_; queued copies read host_
    if (dev_) cudaFree(dev_);
    dev_ = nullptr;
    if (host_) pinned_ ? (void)cudaFreeHost(host_) : std::free(host_);
    host_ = nullptr;
    cap_ = 0;
    const size_t cap = std::max<size_t>(size_t(n), 1024);
    dev_ = device_alloc(cap * sizeof(int32_t), what);
    void* h = nullptr;
    pinned_ = cudaMallocHost(&h, cap * sizeof(int32_t)) == cudaSuccess;
    if (!pinned_) {
      cudaGetLastError();
      h = std::malloc(cap * sizeof(int32_t));
      if (!h) throw std::runtime_error(std::string("out of host memory staging ") + what);
    }
    host_ = static_cast<int32_t*>(h);
    cap_ = cap;
  }
  CUDA_CHECK(cudaEventSynchronize(ev_));  // the previous copy out of host_ has finished
  std::memcpy(host_, src, size_t(n) * sizeof(int32_t));
  CUDA_CHECK(cudaMemcpyAsync(dev_, host_, size_t(n) * sizeof(int32_t), cudaMemcpyHostToDevice, stream));
  CUDA_CHECK(cudaEventRecord(ev_, stream));
  return static_cast<const int32_t*>(dev_);
}

void IntStager::release() {
  if (ev_) {
    cudaEventSynchronize(ev_);
    cudaEventDestroy(ev_);
  }
  ev_ = nullptr;
  if (dev_) cudaFree(dev_);
  dev_ = nullptr;
  if (host_) pinned_ ? (void)cudaFreeHost(host_) : std::free(host_);
  host_ = nullptr;
  cap_ = 0;
}

// ------------------------------------------------------------------------------------------------ KV pool
namespace {
constexpr int kSlabBlocks = 64;                     // blocks per cudaMalloc at most ...
constexpr size_t kSlabBytes = size_t(256) << 20;    // ... and bytes per slab at most (Qwen-7B bf16: 16 blocks)
constexpr size_t kBlockAlign = 256;
}  // namespace

CudaKVPool::CudaKVPool(int n_layers, int hidden, DType act, int max_blocks)
    : KVPool(max_blocks), n_layers_(n_layers), hidden_(hidden), act_(act) {
  if (n_layers <= 0 || hidden <= 0 || max_blocks < 0)
    throw std::invalid_argument("CUDA KV pool: bad shape (layers " + std::to_string(n_layers) + ", hidden " +
                                std::to_string(hidden) + ", blocks " + std::to_string(max_blocks) + ")");
  const size_t raw = size_t(n_layers) * 2 * kKvBlockTokens * size_t(hidden) * dtype_size(act);
  stride_ = (raw + kBlockAlign - 1) / kBlockAlign * kBlockAlign;
  host_table_.assign(size_t(max_blocks), 0);
  dev_table_ = static_cast<uint64_t*>(device_alloc(size_t(max_blocks > 0 ? max_blocks : 1) * sizeof(uint64_t),
                                                   "KV cache block table (" + std::to_string(max_blocks) +
                                                       " blocks)"));
}

CudaKVPool::~CudaKVPool() {
  cudaDeviceSynchronize();  // queued kernels (of any stream) may still read the blocks or the table
  cudaGetLastError();
  for (void* p : slabs_) cudaFree(p);
  if (dev_table_) cudaFree(dev_table_);
  cudaGetLastError();
}

// Ids come in increasing order, each once (a throw leaves the id to be asked for again), so a new slab is needed
// exactly when id reaches the end of the current one.
void CudaKVPool::materialize(int id) {
  if (!slab_ || id >= slab_first_ + slab_n_) {
    const int by_bytes = int(std::max<size_t>(1, std::min<size_t>(kSlabBlocks, kSlabBytes / stride_)));
    int nb = std::min(by_bytes, max_blocks() - id);
    if (nb < 1) nb = 1;
    void* p = nullptr;
    for (;;) {  // the last slab that fits may be smaller: halve down to one block before giving up
      const cudaError_t e = cudaMalloc(&p, size_t(nb) * stride_);
      if (e == cudaSuccess) break;
      cudaGetLastError();
      if (e != cudaErrorMemoryAllocation) check_cuda(e, "cudaMalloc", __FILE__, __LINE__);
      if (nb == 1)
        throw std::runtime_error("CUDA out of memory while allocating " + std::to_string(stride_) +
                                 " bytes for KV cache block " + std::to_string(id) + " (" + std::to_string(id) +
                                 " of at most " + std::to_string(max_blocks()) + " blocks allocated)");
      nb /= 2;
    }
    slabs_.push_back(p);
    slab_bytes_ += size_t(nb) * stride_;
    slab_ = static_cast<char*>(p);
    slab_first_ = id;
    slab_n_ = nb;
  }
  host_table_[size_t(id)] = reinterpret_cast<uint64_t>(slab_ + size_t(id - slab_first_) * stride_);
  made_.store(id + 1, std::memory_order_release);
}

// ------------------------------------------------------------------------------------------------ step stager
char* StepStager::host(size_t bytes, cudaStream_t stream) {
  for (auto& e : ev_)
    if (!e) CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  cur_ ^= 1;
  if (bytes > cap_) {
    CUDA_CHECK(cudaStreamSynchronize(stream));  // queued kernels read dev_, queued copies read host_
    const size_t cap = std::max<size_t>(bytes + bytes / 2, size_t(64) << 10);
    if (dev_) cudaFree(dev_);
    dev_ = nullptr;
    for (int i = 0; i < 2; ++i) {
      if (host_[i]) pinned_[i] ? (void)cudaFreeHost(host_[i]) : std::free(host_[i]);
      host_[i] = nullptr;
    }
    cap_ = 0;
    dev_ = device_alloc(cap, "step tables (block tables, rotary tables, row maps)");
    for (int i = 0; i < 2; ++i) {
      void* h = nullptr;
      pinned_[i] = cudaMallocHost(&h, cap) == cudaSuccess;
      if (!pinned_[i]) {
        cudaGetLastError();
        h = std::malloc(cap);
        if (!h) throw std::runtime_error("out of host memory staging the step tables");
      }
      host_[i] = static_cast<char*>(h);
    }
    cap_ = cap;
  }
  CUDA_CHECK(cudaEventSynchronize(ev_[cur_]));  // the copies that last read host_[cur_] are done
  return host_[cur_];
}

void StepStager::upload(size_t bytes, const Extra* extra, int n_extra, cudaStream_t stream) {
  if (bytes) CUDA_CHECK(cudaMemcpyAsync(dev_, host_[cur_], bytes, cudaMemcpyHostToDevice, stream));
  for (int i = 0; i < n_extra; ++i)
    CUDA_CHECK(cudaMemcpyAsync(extra[i].dst, host_[cur_] + extra[i].offset, extra[i].bytes, cudaMemcpyHostToDevice,
                               stream));
  CUDA_CHECK(cudaEventRecord(ev_[cur_], stream));
}

void StepStager::release() {
  for (auto& e : ev_) {
    if (e) {
      cudaEventSynchronize(e);
      cudaEventDestroy(e);
    }
    e = nullptr;
  }
  if (dev_) cudaFree(dev_);
  dev_ = nullptr;
  for (int i = 0; i < 2; ++i) {
    if (host_[i]) pinned_[i] ? (void)cudaFreeHost(host_[i]) : std::free(host_[i]);
    host_[i] = nullptr;
  }
  cap_ = 0;
}

// ------------------------------------------------------------------------------------------------ backend
CudaBackend::CudaBackend(const BackendOptions& opt) {
  const CudaInfo info = cuda_info();
  if (!info.available) throw std::runtime_error("CUDA backend unavailable: " + info.error);
  try {
    device_ = 0;
    CUDA_CHECK(cudaSetDevice(device_));
    {  // switches (cuda/README.md "Environment"): graphs are opt-in until timed; the fused rope is the default
      graph_on_ = opt.switch_on("QWEN_CUDA_GRAPH", false);
      fused_rope_ = opt.switch_on("QWEN_CUDA_FUSED_ROPE", true);
      sample_fx_ = opt.switch_on("QWEN_SAMPLE_FX", false);
      fold_norm_ = opt.switch_on("QWEN_FOLD_NORM", false);
    }
    act_ = choose_act_dtype(opt.dtype, info.cc_major);
    esize_ = dtype_size(act_);
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    for (auto& e : stage_ev_) CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    stage_pinned_ = true;
    for (auto& s : stage_) {
      if (cudaMallocHost(&s, kStageBytes) != cudaSuccess) {
        cudaGetLastError();
        stage_pinned_ = false;
        break;
      }
    }
    if (!stage_pinned_) {  // plain host staging still works, the copies are just synchronous
      for (auto& s : stage_) {
        if (s) cudaFreeHost(s);
        s = std::malloc(kStageBytes);
        if (!s) throw std::runtime_error("out of host memory allocating the CUDA staging buffers");
      }
    }
    cublas_note_ = cublas::disabled_by_env();
    if (cublas_note_.empty()) {
      const cublas::Api& api = cublas::api();
      if (!api.ok) {
        cublas_note_ = api.error;
      } else {
        cublas::Handle h = nullptr;
        cublas::Status st = api.create(&h);
        if (st != 0) {
          cublas_note_ = "cublasCreate_v2 failed with status " + std::to_string(st);
        } else if ((st = api.set_stream(h, stream_)) != 0) {
          cublas_note_ = "cublasSetStream_v2 failed with status " + std::to_string(st);
          api.destroy(h);
        } else {
          // fp32 split-K reductions even for 16-bit outputs; failure only costs accuracy, so it is not fatal
          if (api.set_math_mode) api.set_math_mode(h, cublas::MATH_DISALLOW_REDUCED_PRECISION_REDUCTION);
          // A workspace of our own, of the size NVIDIA recommends (cublasSetWorkspace: 32 MiB on Hopper, 4 MiB
          // before): with the library's default one, every CUDA graph capture of a cuBLAS call (QWEN_CUDA_GRAPH,
          // steps of >= 64 rows; a new capture every 256 keys) makes the library allocate another workspace
          // (PyTorch's experience, pytorch#83461). Set after cublasSetStream, which resets it; not fatal either.
          if (api.set_workspace) {
            int major = 0;
            cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device_);
            const size_t bytes = size_t(major >= 9 ? 32 : 4) << 20;
            if (cudaMalloc(&cublas_ws_, bytes) != cudaSuccess) {  // no memory for it: the library's default stays
              cudaGetLastError();
              cublas_ws_ = nullptr;
            } else if (api.set_workspace(h, cublas_ws_, bytes) != 0) {
              cudaFree(cublas_ws_);
              cublas_ws_ = nullptr;
            }
          }
          cublas_ = h;
        }
      }
    }
  } catch (...) {
    release_all();
    throw;
  }
}

CudaBackend::~CudaBackend() { release_all(); }

void CudaBackend::release_all() noexcept {
  abort_layers();
  if (stream_) cudaStreamSynchronize(stream_);
  cudaGetLastError();
  clear_graphs();
  if (cublas_) cublas::api().destroy(cublas_);
  cublas_ = nullptr;
  if (cublas_ws_) cudaFree(cublas_ws_);
  cublas_ws_ = nullptr;
  conv_.release();
  attn_ws_.release();
  gemm_ws_.release();
  xn_.release();
  logits_.release();
  logits_host_.release();
  ids_.release();
  rows_.release();
  pick_stage_.release();
  pick_out_.release();
  pick_host_.release();
  step_stage_.release();
  step_valid_ = false;
  for (auto& s : stage_) {
    if (s) stage_pinned_ ? (void)cudaFreeHost(s) : std::free(s);
    s = nullptr;
  }
  for (auto& e : stage_ev_) {
    if (e) cudaEventDestroy(e);
    e = nullptr;
  }
  if (stream_) cudaStreamDestroy(stream_);
  stream_ = nullptr;
  cudaGetLastError();
}

Buf CudaBackend::alloc(size_t elems) {
  return device_alloc(elems * esize_, "activations (" + std::to_string(elems) + " elements)");
}

void CudaBackend::free(Buf b) {
  if (!b) return;
  clear_graphs();                  // a recorded layer loop may hold its address
  cudaStreamSynchronize(stream_);  // queued kernels may still use it
  cudaFree(b);
  cudaGetLastError();
}

// Host array of src_dt -> device array of act_ dtype, in kStageBytes chunks: memcpy into pinned stage b, async H2D
// (straight to dst when the dtypes match, else into conv_ and a conversion kernel into dst), event b recorded.
void CudaBackend::h2d(void* dst, const void* src, DType src_dt, size_t elems) {
  if (elems == 0) return;
  const size_t ss = dtype_size(src_dt);
  const size_t chunk = kStageBytes / ss;
  const bool same = src_dt == act_;
  void* conv = same ? nullptr : conv_.get(kStageBytes, stream_, "dtype conversion staging");
  const char* s = static_cast<const char*>(src);
  char* d = static_cast<char*>(dst);
  for (size_t off = 0, i = 0; off < elems; off += chunk, ++i) {
    const size_t n = std::min(chunk, elems - off);
    const int b = int(i & 1);
    CUDA_CHECK(cudaEventSynchronize(stage_ev_[b]));  // the copy that last read stage_[b] is done
    std::memcpy(stage_[b], s + off * ss, n * ss);
    if (same) {
      CUDA_CHECK(cudaMemcpyAsync(d + off * esize_, stage_[b], n * ss, cudaMemcpyHostToDevice, stream_));
    } else {
      CUDA_CHECK(cudaMemcpyAsync(conv, stage_[b], n * ss, cudaMemcpyHostToDevice, stream_));
      convert(src_dt, conv, act_, d + off * esize_, n, stream_);  // stream order protects conv's reuse
    }
    CUDA_CHECK(cudaEventRecord(stage_ev_[b], stream_));
  }
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaBackend::to_device(Buf dst, const float* src, size_t elems) { h2d(dst, src, DType::F32, elems); }

void CudaBackend::to_host(float* dst, const Buf src, size_t elems) {
  if (elems == 0) return;
  if (act_ == DType::F32) {
    CUDA_CHECK(cudaMemcpyAsync(dst, src, elems * sizeof(float), cudaMemcpyDeviceToHost, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    return;
  }
  const size_t chunk = kStageBytes / sizeof(float);
  float* conv = static_cast<float*>(conv_.get(kStageBytes, stream_, "dtype conversion staging"));
  const char* s = static_cast<const char*>(src);
  for (size_t off = 0; off < elems; off += chunk) {
    const size_t n = std::min(chunk, elems - off);
    convert(act_, s + off * esize_, DType::F32, conv, n, stream_);
    CUDA_CHECK(cudaMemcpyAsync(stage_[0], conv, n * sizeof(float), cudaMemcpyDeviceToHost, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    std::memcpy(dst + off, stage_[0], n * sizeof(float));
  }
}

Weight CudaBackend::upload(const Weight& host) {
  const size_t n = size_t(host.rows) * size_t(host.cols);
  void* d = device_alloc(n * esize_, "weight [" + std::to_string(host.rows) + " x " + std::to_string(host.cols) + "]");
  try {
    h2d(d, host.data, host.dtype, n);
  } catch (...) {
    cudaFree(d);
    throw;
  }
  Weight w;
  w.data = d;
  w.dtype = act_;
  w.rows = host.rows;
  w.cols = host.cols;
  return w;
}

void CudaBackend::release(Weight& w) {
  if (w.data) {
    clear_graphs();
    cudaStreamSynchronize(stream_);
    cudaFree(const_cast<void*>(w.data));
    cudaGetLastError();
  }
  w.data = nullptr;
}

std::shared_ptr<KVPool> CudaBackend::new_kv_pool(const ModelConfig& cfg, int max_blocks) {
  return std::make_shared<CudaKVPool>(cfg.n_layers, cfg.hidden, act_, max_blocks);
}

void CudaBackend::synchronize() {
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  prof_.collect();
}

// ------------------------------------------------------------------------------------------------ ops
namespace {
void check_weight(const Weight& w, DType act, const char* op) {
  if (!w.data) throw std::invalid_argument(std::string(op) + ": weight not uploaded");
  if (w.dtype != act)
    throw std::invalid_argument(std::string(op) + ": weight dtype " + dtype_name(w.dtype) +
                                " is not the backend's " + dtype_name(act) + " (use upload())");
}
size_t align16(size_t n) { return (n + 15) & ~size_t(15); }
}  // namespace

void CudaBackend::embedding(const Weight& wte, const int32_t* ids, int T, Buf h) {
  ProfScope prof(prof_, stream_, [&] { return std::string("embedding"); });
  if (T <= 0) return;
  check_weight(wte, act_, "embedding");
  const int32_t* ids_dev = ids_.stage(ids, T, stream_, "token ids");
  cu::embedding(act_, wte.data, ids_dev, T, int(wte.cols), h, stream_);
}

void CudaBackend::rmsnorm(const Buf x, const Weight& g, float eps, int T, int H, Buf y) {
  ProfScope prof(prof_, stream_, [&] { return "rmsnorm T=" + std::to_string(T); });
  check_gain(g, H, "rmsnorm");
  cu::rmsnorm(act_, x, g.data, eps, T, H, nullptr, y, stream_);
}

void CudaBackend::linear(const Buf x, const Weight& W, const Weight* b, int T, Buf y) {
  ProfScope prof(prof_, stream_, [&] {
    return "linear N=" + std::to_string(W.rows) + " K=" + std::to_string(W.cols) + " T=" + std::to_string(T);
  });
  cu::linear(linear_args(x, W, b, T, y), stream_);
}

// ------------------------------------------------------------------------------------------------ layer graphs
// QWEN_CUDA_GRAPH=1: the engine's layer loop (rmsnorm .. the last add) is recorded into a CUDA graph the second time
// a step of the same key runs, and replayed from then on: one launch instead of ~9 per layer. The key is everything
// the recorded kernel parameters were made from: the StepView (device pointers into the step buffer, row / slice /
// tile counts, nchunks; begin_step puts the growing block-id section last so a run of decode steps keeps one view,
// changing only when nchunks does, every 256 keys), the workspace addresses, and graph_gen_, bumped whenever a
// buffer or weight is freed (the engine's activations are baked into the graph). Everything else an op decides on
// the host (paths, grids) follows from T and the view. The step's data (positions, block tables) is in the step
// buffer, uploaded by begin_step before the replay, so a replay computes the new step. Opt-in until timed (on an H100
// the 48-step greedy comparison of cuda.test.ts passes with it).
std::string CudaBackend::layers_key() const {
  std::string k;
  auto put = [&k](const auto& v) { k.append(reinterpret_cast<const char*>(&v), sizeof(v)); };
  put(step_.slices), put(step_.block_ids), put(step_.inv_freq), put(step_.row_slice), put(step_.small_rows);
  put(step_.flash_tiles), put(step_.n), put(step_.rows), put(step_.n_small), put(step_.n_tiles);
  put(step_.nchunks_small), put(step_.nchunks_all);
  put(attn_ws_.ptr()), put(gemm_ws_.ptr()), put(graph_gen_), put(fused_rope_), put(fold_norm_);
  // Switches the ops read at every call (attention.cu; tests flip them): part of what a recording baked in.
  for (const char* name : {"QWEN_ATTN_FLASH", "QWEN_ATTN_SPLIT"}) {
    const char* v = std::getenv(name);
    k.append(v ? v : "-").push_back('\0');
  }
  return k;
}

bool CudaBackend::begin_layers() {
  // A step some op will refuse (no rotary parameters, no cache) must reach the ops: a replay skips their checks.
  if (!graph_on_ || capturing_ || prof_.on() || !step_valid_ || step_.rows <= 0 || !rope_error_.empty() ||
      !kv_error_.empty())
    return false;
  if (graphs_.size() > 64) {  // keys of steps long gone (other batch sizes, old contexts): drop the never-recorded
    for (auto it = graphs_.begin(); it != graphs_.end();) it = it->second.exec ? std::next(it) : graphs_.erase(it);
    if (graphs_.size() > 48) clear_graphs();
  }
  std::string key = layers_key();
  LayerGraph& g = graphs_[key];
  if (g.exec) {
    CUDA_CHECK(cudaGraphLaunch(g.exec, stream_));
    return true;
  }
  if (++g.seen < 2) return false;  // the first run of a key makes its lazy allocations, uncaptured
  CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeRelaxed));
  capturing_ = true;
  capture_key_ = std::move(key);
  return false;
}

bool CudaBackend::end_layers() {
  if (!capturing_) return true;
  capturing_ = false;
  cudaGraph_t graph = nullptr;
  cudaError_t e = cudaStreamEndCapture(stream_, &graph);
  cudaGraphExec_t exec = nullptr;
  if (e == cudaSuccess) e = cudaGraphInstantiate(&exec, graph, 0);
  if (graph) cudaGraphDestroy(graph);
  if (e != cudaSuccess) {
    // The layer ops were recorded, not run. Graphs go off for this backend; the engine runs the ops again.
    cudaGetLastError();
    graph_on_ = false;
    clear_graphs();
    std::fprintf(stderr, "[qwen] CUDA graph capture of the layer loop failed (%s); graphs are off for this model\n",
                 cudaGetErrorString(e));
    return false;
  }
  graphs_[capture_key_].exec = exec;
  CUDA_CHECK(cudaGraphLaunch(exec, stream_));  // run what was recorded
  return true;
}

void CudaBackend::abort_layers() noexcept {
  if (!capturing_) return;
  capturing_ = false;
  graph_on_ = false;  // an op threw while recording: record no more (a capture-only error would repeat every step)
  cudaGraph_t graph = nullptr;
  cudaStreamEndCapture(stream_, &graph);
  if (graph) cudaGraphDestroy(graph);
  cudaGetLastError();
  clear_graphs();
}

void CudaBackend::clear_graphs() noexcept {
  for (auto& kv : graphs_)
    if (kv.second.exec) cudaGraphExecDestroy(kv.second.exec);
  graphs_.clear();
  ++graph_gen_;
}

std::pair<void*, size_t> CudaBackend::gemm_ws() {
  // 16 MiB holds every split of Qwen-7B's GEMMs at T = 64 (at most ~4 CTAs per SM of 64 rows: ~9.4 MB at N = 12288);
  // a bigger need runs with fewer splits (gemm_skinny.cu).
  constexpr size_t kGemmWsBytes = size_t(16) << 20;
  if (!cu::skinny_enabled()) return {nullptr, 0};
  return {gemm_ws_.get(kGemmWsBytes, stream_, "GEMM split-K workspace"), kGemmWsBytes};
}

// One upload per step, laid out in one buffer (sections 16-byte aligned):
//   DevSlice[n] | float inv_freq (per slice rot_dims / 2, concatenated) | int32 row -> slice [rows] | int32 small rows
//   [n_small] | int2 flash tiles [n_tiles] | int32 block ids (per slice kv_blocks_for(pos0 + T), concatenated)
// followed by the block addresses each pool made since its last upload (copied into that pool's device table). The
// block ids go last so that the StepView of a run of decode steps stays the same while the sequences grow (only
// nchunks changes, every 256 keys): a recorded CUDA graph of the layers can then be replayed (begin_layers).
// Problems that only some ops care about (a slice without rotary parameters, or without a big enough CUDA cache) are
// recorded and thrown by those ops, so rope-only or kv-only steps (the op tests) work.
void CudaBackend::begin_step(const SeqSlice* s, int n) {
  ProfScope prof(prof_, stream_, [&] { return "begin_step n=" + std::to_string(n); });
  step_valid_ = false;
  if (n < 0 || (n > 0 && !s)) throw std::invalid_argument("begin_step: bad slice array");
  if (prof_.on()) {
    int rows = 0;
    for (int i = 0; i < n; ++i) rows += s[i].T;
    prof_.step_class("rows=" + std::to_string(rows));
  }
  rope_error_.clear();
  kv_error_.clear();
  step_max_rot_ = 0;
  step_kv_layers_ = step_kv_hidden_ = 0;
  struct PoolDelta {
    CudaKVPool* pool;
    int from, to;
  };
  std::vector<PoolDelta> pools;
  std::vector<CudaKVPool*> slice_pool(size_t(n), nullptr);
  int rows = 0;
  size_t n_ids = 0, n_freq = 0, n_small = 0, n_tiles = 0;
  int nchunks_small = 0, nchunks_all = 0;
  for (int i = 0; i < n; ++i) {
    const SeqSlice& sl = s[i];
    if (sl.T < 0 || sl.pos0 < 0 || sl.row0 < rows)
      throw std::invalid_argument("begin_step: slice " + std::to_string(i) + " (row0 " + std::to_string(sl.row0) +
                                  ", T " + std::to_string(sl.T) + ", pos0 " + std::to_string(sl.pos0) +
                                  ") is out of row order or negative");
    rows = sl.row0 + sl.T;
    if (sl.T == 0) continue;  // owns no row: needs neither rotary parameters nor a cache
    auto who = [i] { return "slice " + std::to_string(i); };  // only built for an error message
    const int nc = ceil_div(sl.pos0 + sl.T, kSplitChunk);
    nchunks_all = std::max(nchunks_all, nc);
    if (sl.T > kFlashMinT) {
      n_tiles += size_t(ceil_div(sl.T, kFlashBQ));
    } else {
      n_small += size_t(sl.T);
      nchunks_small = std::max(nchunks_small, nc);
    }
    if (!sl.rope) {
      if (rope_error_.empty()) rope_error_ = who() + " has no rotary parameters";
    } else if (sl.rope->rot_dims < 0 || sl.rope->rot_dims % 2 || sl.rope->rot_dims > 256) {
      if (rope_error_.empty())
        rope_error_ = who() + ": rot_dims " + std::to_string(sl.rope->rot_dims) + " must be even and <= 256";
    } else {
      n_freq += size_t(sl.rope->rot_dims / 2);
      step_max_rot_ = std::max(step_max_rot_, sl.rope->rot_dims);
    }
    std::string kerr;
    CudaKVPool* pool = sl.kv ? dynamic_cast<CudaKVPool*>(&sl.kv->pool()) : nullptr;
    const int need = kv_blocks_for(sl.pos0 + sl.T);
    if (!sl.kv) {
      kerr = who() + " has no KV cache";
    } else if (!pool) {
      kerr = who() + ": KV cache was not made by the CUDA backend";
    } else if (pool->act() != act_) {
      kerr = who() + ": KV pool dtype " + dtype_name(pool->act()) + " is not the backend's " + dtype_name(act_);
    } else if (step_kv_hidden_ && (pool->hidden() != step_kv_hidden_ || pool->n_layers() != step_kv_layers_)) {
      kerr = who() + ": KV pools of different shapes in one step";
    } else if (int(sl.kv->blocks().size()) < need) {
      kerr = who() + ": KV cache holds " + std::to_string(sl.kv->capacity()) + " positions, the step needs " +
             std::to_string(sl.pos0 + sl.T);
    }
    if (!kerr.empty()) {
      if (kv_error_.empty()) kv_error_ = kerr;
      continue;
    }
    step_kv_hidden_ = pool->hidden();
    step_kv_layers_ = pool->n_layers();
    slice_pool[size_t(i)] = pool;
    n_ids += size_t(need);
    bool seen = false;
    for (const PoolDelta& d : pools) seen = seen || d.pool == pool;
    if (!seen) {
      const int made = pool->made();  // every id in this step's tables is < made (acquired before)
      if (made > pool->uploaded) pools.push_back({pool, pool->uploaded, made});
    }
  }

  // layout
  const size_t o_slices = 0;
  const size_t o_freq = align16(o_slices + size_t(n) * sizeof(DevSlice));
  const size_t o_rows = align16(o_freq + n_freq * sizeof(float));
  const size_t o_small = align16(o_rows + size_t(rows) * sizeof(int32_t));
  const size_t o_tiles = align16(o_small + n_small * sizeof(int32_t));
  const size_t o_ids = align16(o_tiles + n_tiles * sizeof(int2));  // last: its length changes as sequences grow
  const size_t main_bytes = align16(o_ids + n_ids * sizeof(int32_t));
  std::vector<StepStager::Extra> extra;
  size_t total = main_bytes;
  for (const PoolDelta& d : pools) {
    extra.push_back({d.pool->device_table() + d.from, total, size_t(d.to - d.from) * sizeof(uint64_t)});
    total = align16(total + extra.back().bytes);
  }

  step_ = StepView();
  if (total > 0) {
    char* h = step_stage_.host(total, stream_);
    auto* ds = reinterpret_cast<DevSlice*>(h + o_slices);
    auto* ids = reinterpret_cast<int32_t*>(h + o_ids);
    auto* freq = reinterpret_cast<float*>(h + o_freq);
    auto* row_slice = reinterpret_cast<int32_t*>(h + o_rows);
    auto* small = reinterpret_cast<int32_t*>(h + o_small);
    auto* tiles = reinterpret_cast<int2*>(h + o_tiles);
    std::fill(row_slice, row_slice + rows, -1);
    size_t ni = 0, nf = 0, ns = 0, nt = 0;
    for (int i = 0; i < n; ++i) {
      const SeqSlice& sl = s[i];
      DevSlice d{};
      d.row0 = sl.row0;
      d.T = sl.T;
      d.pos0 = sl.pos0;
      d.blk = int(ni);
      d.freq = int(nf);
      if (CudaKVPool* pool = slice_pool[size_t(i)]) {
        const int need = kv_blocks_for(sl.pos0 + sl.T);
        std::memcpy(ids + ni, sl.kv->blocks().data(), size_t(need) * sizeof(int32_t));
        ni += size_t(need);
        d.nblk = need;
        d.blockptr = pool->device_table();
      }
      if (sl.T > 0 && sl.rope && sl.rope->rot_dims >= 0 && sl.rope->rot_dims % 2 == 0 && sl.rope->rot_dims <= 256) {
        d.rot_dims = sl.rope->rot_dims;
        d.logn_base = sl.rope->logn_base;
        std::memcpy(freq + nf, sl.rope->inv_freq, size_t(d.rot_dims / 2) * sizeof(float));
        nf += size_t(d.rot_dims / 2);
      }
      std::memcpy(ds + i, &d, sizeof(DevSlice));
      for (int t = 0; t < sl.T; ++t) row_slice[sl.row0 + t] = i;
      if (sl.T > 0 && sl.T <= kFlashMinT) {
        for (int t = 0; t < sl.T; ++t) small[ns++] = sl.row0 + t;
      } else if (sl.T > kFlashMinT) {
        for (int q0 = 0; q0 < sl.T; q0 += kFlashBQ) tiles[nt++] = make_int2(i, q0);
      }
    }
    // heaviest tiles (longest key range) first, so the long ones do not start last
    std::stable_sort(tiles, tiles + nt, [&](const int2& a, const int2& b) {
      const int ka = s[a.x].pos0 + std::min(a.y + kFlashBQ, s[a.x].T);
      const int kb = s[b.x].pos0 + std::min(b.y + kFlashBQ, s[b.x].T);
      return ka > kb;
    });
    for (const PoolDelta& d : pools)
      std::memcpy(h + extra[size_t(&d - pools.data())].offset, d.pool->host_table() + d.from,
                  size_t(d.to - d.from) * sizeof(uint64_t));
    step_stage_.upload(main_bytes, extra.data(), int(extra.size()), stream_);
    for (const PoolDelta& d : pools) d.pool->uploaded = d.to;
    char* dv = step_stage_.device();
    step_.slices = reinterpret_cast<const DevSlice*>(dv + o_slices);
    step_.block_ids = reinterpret_cast<const int32_t*>(dv + o_ids);
    step_.inv_freq = reinterpret_cast<const float*>(dv + o_freq);
    step_.row_slice = reinterpret_cast<const int32_t*>(dv + o_rows);
    step_.small_rows = reinterpret_cast<const int32_t*>(dv + o_small);
    step_.flash_tiles = reinterpret_cast<const int2*>(dv + o_tiles);
  }
  step_.n = n;
  step_.rows = rows;
  step_.n_small = int(n_small);
  step_.n_tiles = int(n_tiles);
  step_.nchunks_small = nchunks_small;
  step_.nchunks_all = nchunks_all;
  step_key_.resize(size_t(n));
  for (int i = 0; i < n; ++i)
    step_key_[size_t(i)] = {s[i].row0, s[i].T, s[i].pos0, s[i].rope, s[i].kv, s[i].kv ? s[i].kv->blocks().size() : 0};
  step_valid_ = true;
}

void CudaBackend::ensure_step(const SeqSlice* s, int n) {
  bool same = step_valid_ && n == int(step_key_.size());
  for (int i = 0; same && i < n; ++i) {
    const StepKey& k = step_key_[size_t(i)];
    same = k.row0 == s[i].row0 && k.T == s[i].T && k.pos0 == s[i].pos0 && k.rope == s[i].rope && k.kv == s[i].kv &&
           k.nblocks == (s[i].kv ? s[i].kv->blocks().size() : 0);
  }
  if (!same) begin_step(s, n);
}

void CudaBackend::check_kv(const char* op, int n_heads, int head_dim, int layer) const {
  if (!kv_error_.empty()) throw std::invalid_argument(std::string(op) + ": " + kv_error_);
  if (n_heads <= 0 || head_dim <= 0 || n_heads * head_dim != step_kv_hidden_)
    throw std::invalid_argument(std::string(op) + ": n_heads * head_dim = " + std::to_string(n_heads * head_dim) +
                                " is not the KV pool's hidden size " + std::to_string(step_kv_hidden_));
  if (layer < 0 || layer >= step_kv_layers_)
    throw std::invalid_argument(std::string(op) + ": layer " + std::to_string(layer) + " out of range (pool has " +
                                std::to_string(step_kv_layers_) + ")");
}

void CudaBackend::check_rope(const char* op, int n_heads, int head_dim) const {
  if (!rope_error_.empty()) throw std::invalid_argument(std::string(op) + ": " + rope_error_);
  if (n_heads <= 0 || head_dim <= 0 || step_max_rot_ > head_dim)
    throw std::invalid_argument(std::string(op) + ": rot_dims " + std::to_string(step_max_rot_) +
                                " exceed head_dim " + std::to_string(head_dim));
}

// The rows of a step's slices (profile keys: a prefill's ops apart from a decode step's).
static int rows_of(const SeqSlice* s, int n) {
  int rows = 0;
  for (int i = 0; s && i < n; ++i) rows += s[i].T;
  return rows;
}

void CudaBackend::rope(Buf qkv, const SeqSlice* s, int n, int n_heads, int head_dim) {
  ProfScope prof(prof_, stream_, [&] { return "rope rows=" + std::to_string(rows_of(s, n)); });
  ensure_step(s, n);
  if (step_.rows <= 0) return;
  check_rope("rope", n_heads, head_dim);
  cu::rope(act_, qkv, step_, n_heads, head_dim, stream_);
}

void CudaBackend::kv_store(const Buf qkv, const SeqSlice* s, int n, int n_heads, int head_dim, int layer) {
  ProfScope prof(prof_, stream_, [&] { return "kv_store rows=" + std::to_string(rows_of(s, n)); });
  ensure_step(s, n);
  if (step_.rows <= 0) return;
  check_kv("kv_store", n_heads, head_dim, layer);
  cu::kv_store(act_, qkv, step_, n_heads * head_dim, layer, stream_);
}

void CudaBackend::rope_kv_store(Buf qkv, const Weight* bias, const SeqSlice* s, int n, int n_heads, int head_dim,
                                int layer) {
  if (!fused_rope_) {  // QWEN_CUDA_FUSED_ROPE=0: the composition (which refuses a bias)
    Backend::rope_kv_store(qkv, bias, s, n, n_heads, head_dim, layer);
    return;
  }
  ProfScope prof(prof_, stream_, [&] { return "rope_kv_store rows=" + std::to_string(rows_of(s, n)); });
  ensure_step(s, n);
  if (step_.rows <= 0) return;
  check_rope("rope_kv_store", n_heads, head_dim);
  check_kv("rope_kv_store", n_heads, head_dim, layer);
  if (bias) {
    check_weight(*bias, act_, "rope_kv_store bias");
    if (bias->rows * bias->cols != int64_t(3) * n_heads * head_dim)
      throw std::invalid_argument("rope_kv_store: bias has " + std::to_string(bias->rows * bias->cols) +
                                  " elements, not 3 * n_heads * head_dim = " + std::to_string(3 * n_heads * head_dim));
  }
  cu::rope_kv_store(act_, qkv, bias ? bias->data : nullptr, step_, n_heads, head_dim, layer, stream_);
}

void CudaBackend::attention(const Buf qkv, const SeqSlice* s, int n, int n_heads, int head_dim, int layer,
                            Buf out) {
  ensure_step(s, n);
  const AttnArgs a{act_, qkv, out, step_, n_heads, head_dim, layer};
  ProfScope prof(prof_, stream_,
                 [&] { return std::string("attention ") + attention_path(a) + " rows=" + std::to_string(step_.rows); });
  if (step_.rows <= 0) return;
  check_kv("attention", n_heads, head_dim, layer);
  const size_t ws_bytes = attention_workspace_bytes(a);
  void* ws = ws_bytes ? attn_ws_.get(ws_bytes, stream_, "attention workspace") : nullptr;
  cu::attention(a, ws, ws_bytes, stream_);
}

void CudaBackend::swiglu(const Buf a, const Buf g, int T, int F, Buf out) {
  ProfScope prof(prof_, stream_, [&] { return "swiglu T=" + std::to_string(T); });
  if (T <= 0 || F <= 0) return;
  cu::swiglu(act_, a, g, size_t(T) * size_t(F), out, stream_);
}

void CudaBackend::add(Buf h, const Buf x, int T, int H) {
  ProfScope prof(prof_, stream_, [&] { return "add T=" + std::to_string(T); });
  if (T <= 0 || H <= 0) return;
  cu::add(act_, h, x, size_t(T) * size_t(H), stream_);
}

void CudaBackend::add_rmsnorm(Buf h, const Buf x, const Weight& g, float eps, int T, int H, Buf y) {
  ProfScope prof(prof_, stream_, [&] { return "add_rmsnorm T=" + std::to_string(T); });
  check_gain(g, H, "add_rmsnorm");
  cu::add_rmsnorm(act_, h, x, g.data, eps, T, H, y, stream_);
}

void CudaBackend::mlp_swiglu(const Buf x, const Weight& w1, const Weight& w2, int T, Buf a, Buf g) {
  ProfScope prof(prof_, stream_,
                 [&] { return "mlp_swiglu N=" + std::to_string(w1.rows) + " T=" + std::to_string(T); });
  check_weight(w1, act_, "mlp_swiglu w1");
  check_weight(w2, act_, "mlp_swiglu w2");
  if (w1.rows != w2.rows || w1.cols != w2.cols) throw std::invalid_argument("mlp_swiglu: w1 and w2 shapes differ");
  const auto ws = gemm_ws();
  cu::mlp_swiglu(act_, x, w1.data, w2.data, T, int(w1.rows), int(w1.cols), a, g, cublas_, ws.first, ws.second,
                 stream_);
}

// The LinearArgs of x . W^T (+ b) -> y on this backend (W and b checked): linear() and the folded ops.
LinearArgs CudaBackend::linear_args(const Buf x, const Weight& W, const Weight* b, int T, Buf y) {
  check_weight(W, act_, "linear");
  if (b) {
    check_weight(*b, act_, "linear bias");
    if (b->rows * b->cols != W.rows) throw std::invalid_argument("linear: bias size != W rows");
  }
  LinearArgs a;
  a.act = act_;
  a.out = act_;
  a.x = x;
  a.W = W.data;
  a.b = b ? b->data : nullptr;
  a.y = y;
  a.T = T;
  a.N = int(W.rows);
  a.K = int(W.cols);
  a.cublas = cublas_;
  std::tie(a.ws, a.ws_bytes) = gemm_ws();
  return a;
}

// An RMSNorm gain of the backend's for rows of H elements.
void CudaBackend::check_gain(const Weight& g, int H, const char* op) const {
  check_weight(g, act_, op);
  if (g.rows * g.cols != H)
    throw std::invalid_argument(std::string(op) + ": gain has " + std::to_string(g.rows * g.cols) + " elements, H = " +
                                std::to_string(H));
}

// Each folds where its GEMV applies (profiled as one op), else runs the composition (profiled as its ops).
void CudaBackend::norm_linear(const Buf h, const Weight& g, float eps, const Weight& W, const Weight* b, int T, Buf x,
                              Buf y) {
  check_gain(g, int(W.cols), "norm_linear");
  const LinearArgs a = linear_args(h, W, b, T, y);
  if (!cu::gemv_folds(a, g.data)) return Backend::norm_linear(h, g, eps, W, b, T, x, y);
  ProfScope prof(prof_, stream_, [&] {
    return "norm_linear N=" + std::to_string(W.rows) + " K=" + std::to_string(W.cols) + " T=" + std::to_string(T);
  });
  cu::linear_norm(a, g.data, eps, stream_);
}

void CudaBackend::linear_add(const Buf x, const Weight& W, int T, Buf h, Buf y) {
  const LinearArgs a = linear_args(x, W, nullptr, T, h);
  if (!cu::gemv_folds(a, nullptr)) return Backend::linear_add(x, W, T, h, y);
  ProfScope prof(prof_, stream_, [&] {
    return "linear_add N=" + std::to_string(W.rows) + " K=" + std::to_string(W.cols) + " T=" + std::to_string(T);
  });
  cu::linear_add(a, stream_);
}

void CudaBackend::norm_mlp_swiglu(const Buf h, const Weight& g, float eps, const Weight& w1, const Weight& w2, int T,
                                  Buf x, Buf a, Buf gs) {
  check_weight(w1, act_, "norm_mlp_swiglu w1");
  check_weight(w2, act_, "norm_mlp_swiglu w2");
  if (w1.rows != w2.rows || w1.cols != w2.cols) throw std::invalid_argument("norm_mlp_swiglu: w1 and w2 shapes differ");
  check_gain(g, int(w1.cols), "norm_mlp_swiglu");
  const int F = int(w1.rows), K = int(w1.cols);
  if (!cu::mlp_swiglu_folds(act_, h, g.data, w1.data, w2.data, T, F, K))
    return Backend::norm_mlp_swiglu(h, g, eps, w1, w2, T, x, a, gs);
  ProfScope prof(prof_, stream_, [&] { return "norm_mlp_swiglu N=" + std::to_string(F) + " T=" + std::to_string(T); });
  cu::mlp_swiglu_norm(act_, h, g.data, eps, w1.data, w2.data, T, F, K, a, stream_);
}

// final_logits / final_pick: the weights must be the backend's and match H; returns V.
int CudaBackend::check_head(const char* op, int H, const Weight& ln_f, const Weight& lm_head) const {
  check_weight(ln_f, act_, (std::string(op) + " ln_f").c_str());
  check_weight(lm_head, act_, (std::string(op) + " lm_head").c_str());
  if (ln_f.rows * ln_f.cols != H || lm_head.cols != H)
    throw std::invalid_argument(std::string(op) + ": ln_f / lm_head do not match H = " + std::to_string(H));
  return int(lm_head.rows);
}

// fp32 logits [n, V] of the n staged rows rows_dev[0, n) of h into lg (rmsnorm into xn, then the lm_head linear).
void CudaBackend::head_rows(const Buf h, const int32_t* rows_dev, int n, int H, int V, const Weight& ln_f,
                            const Weight& lm_head, float eps, void* xn, float* lg) {
  FinalLogitsArgs a;
  a.act = act_;
  a.h = h;
  a.rows = rows_dev;
  a.R = n;
  a.H = H;
  a.V = V;
  a.ln_f = ln_f.data;
  a.lm_head = lm_head.data;
  a.eps = eps;
  a.xn = xn;
  a.logits = lg;
  a.cublas = cublas_;
  cu::final_logits(a, stream_);
}

void CudaBackend::final_logits(const Buf h, const int* rows, int R, int H, const Weight& ln_f, const Weight& lm_head,
                               float eps, float* logits) {
  ProfScope prof(prof_, stream_, [&] { return "final_logits R=" + std::to_string(R); });
  static_assert(sizeof(int) == sizeof(int32_t), "rows are staged as int32");
  if (R <= 0) return;
  const int V = check_head("final_logits", H, ln_f, lm_head);
  const int32_t* rows_dev = rows_.stage(reinterpret_cast<const int32_t*>(rows), R, stream_, "logit rows");
  const int rc = std::min(R, kLogitsRowChunk);
  void* xn = xn_.get(size_t(rc) * H * esize_, stream_, "final-logits normalised rows");
  float* lg = static_cast<float*>(logits_.get(size_t(rc) * V * sizeof(float), stream_, "final logits"));
  void* host = logits_host_.get(size_t(rc) * V * sizeof(float));
  for (int r0 = 0; r0 < R; r0 += rc) {
    const int n = std::min(rc, R - r0);
    head_rows(h, rows_dev + r0, n, H, V, ln_f, lm_head, eps, xn, lg);
    CUDA_CHECK(cudaMemcpyAsync(host, lg, size_t(n) * V * sizeof(float), cudaMemcpyDeviceToHost, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    std::memcpy(logits + size_t(r0) * V, host, size_t(n) * V * sizeof(float));
  }
}

// final_pick: the final_logits GEMM into the device logits scratch, then ONE pick launch per kPickRowChunk rows (all
// rows of a step up to 256); the upload (rows, per-row specs, penalty entries) is one staged copy and the results one
// copy of R x sizeof(DevPickOut) back, instead of R x V x 4 bytes of logits.
CudaBackend::PickCall CudaBackend::stage_pick(const int* rows, int R, int V, const PickSpec* specs) {
  bool sampled = false;
  for (int r = 0; r < R; ++r) {
    if (specs[r].n_ids > 0 && (!specs[r].ids || !specs[r].counts))
      throw std::invalid_argument("final_pick: row " + std::to_string(r) + " has n_ids but no ids / counts");
    sampled = sampled || specs[r].do_sample;
  }
  const PickLayout l = pick_layout(specs, R, V, rows != nullptr);
  const bool fx = sample_fx_ && sampled;
  const size_t bytes = l.bytes + (fx ? size_t(R) * sizeof(DevSampleRow) : 0);  // l.bytes is 16-byte aligned
  char* host = pick_stage_.host(bytes, stream_);
  pick_fill(host, l, rows, specs, R, V);
  for (int r = 0; fx && r < R; ++r) {
    const DevSampleRow d = sample_fx_row_of(specs[r], V);
    std::memcpy(host + l.bytes + size_t(r) * sizeof(DevSampleRow), &d, sizeof d);
  }
  pick_stage_.upload(bytes, nullptr, 0, stream_);
  const char* dv = pick_stage_.device();
  PickCall c;
  c.rows = reinterpret_cast<const int32_t*>(dv + l.o_rows);
  c.specs = reinterpret_cast<const DevPickRow*>(dv + l.o_specs);
  c.entries = reinterpret_cast<const DevPickEntry*>(dv + l.o_entries);
  c.out = static_cast<DevPickOut*>(pick_out_.get(size_t(R) * sizeof(DevPickOut), stream_, "final_pick results"));
  if (fx) {
    c.samples = reinterpret_cast<const DevSampleRow*>(dv + l.bytes);
    c.fx = static_cast<FxOut*>(sample_out_.get(size_t(R) * sizeof(FxOut), stream_, "sampled picks"));
  }
  return c;
}

void CudaBackend::pick_chunk(const PickCall& c, float* lg, int r0, int n, int V, const PickSpec* specs, int R) {
  cu::pick(lg, n, V, c.specs + r0, c.entries, c.out + r0, stream_);
  if (!c.samples) {
    keep_sampled(lg, r0, n, V, specs, R);
    return;
  }
  if (!exp_table_up_) {
    void* t = exp_table_.get(sizeof kPickExpTable, stream_, "sampling exp table");
    CUDA_CHECK(cudaMemcpyAsync(t, kPickExpTable, sizeof kPickExpTable, cudaMemcpyHostToDevice, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));  // the source is pageable host memory
    exp_table_up_ = true;
  }
  auto* w = static_cast<float*>(sample_w_.get(size_t(n) * V * sizeof(float), stream_, "sampling weights"));
  cu::sample_fx(lg, w, n, V, c.samples + r0, c.out + r0, static_cast<const double*>(exp_table_.ptr()), c.fx + r0,
                stream_);
}

void CudaBackend::finish_pick(const PickCall& c, int R, int V, const PickSpec* specs, PickResult* out) {
  const size_t bytes = size_t(R) * sizeof(DevPickOut);
  void* host = pick_host_.get(std::max<size_t>(bytes, 64 * sizeof(DevPickOut)));  // every earlier copy was waited for
  CUDA_CHECK(cudaMemcpyAsync(host, c.out, bytes, cudaMemcpyDeviceToHost, stream_));
  FxOut* fx = nullptr;
  if (c.fx) {
    fx = static_cast<FxOut*>(sample_out_host_.get(std::max<size_t>(size_t(R), 64) * sizeof(FxOut)));
    CUDA_CHECK(cudaMemcpyAsync(fx, c.fx, size_t(R) * sizeof(FxOut), cudaMemcpyDeviceToHost, stream_));
  }
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  pick_results(static_cast<const DevPickOut*>(host), specs, R, out);
  if (!fx) {
    draw_sampled(V, specs, R, out);
    return;
  }
  for (int r = 0; r < R; ++r)
    if (specs[r].do_sample) fx_result(fx[r], specs[r].top_n, out[r]);
}

void CudaBackend::keep_sampled(const float* lg, int r0, int n, int V, const PickSpec* specs, int R) {
  int before = 0, total = 0;
  for (int r = 0; r < R; ++r)
    if (specs[r].do_sample) {
      before += r < r0 ? 1 : 0;
      ++total;
    }
  if (total == 0) return;
  // one buffer for the call's sampled rows: the same size for every chunk, so no chunk reallocates it under a queued
  // copy (the previous call's copies were waited for in its finish_pick)
  auto* host = static_cast<float*>(sample_host_.get(size_t(total) * size_t(V) * sizeof(float)));
  for (int r = r0, k = before; r < r0 + n; ++r) {
    if (!specs[r].do_sample) continue;
    CUDA_CHECK(cudaMemcpyAsync(host + size_t(k) * V, lg + size_t(r - r0) * V, size_t(V) * sizeof(float),
                               cudaMemcpyDeviceToHost, stream_));
    ++k;
  }
}

void CudaBackend::draw_sampled(int V, const PickSpec* specs, int R, PickResult* out) {
  auto* host = static_cast<float*>(sample_host_.get(0));
  std::vector<int> sampled;  // row of the k-th sampled row (its logits are at host + k * V)
  for (int r = 0; r < R; ++r)
    if (specs[r].do_sample) sampled.push_back(r);
  if (sampled.empty()) return;
  if (sampled.size() > 1 && !draw_pool_) {
    const int hw = int(std::thread::hardware_concurrency());
    draw_pool_ = std::make_unique<ThreadPool>(std::max(1, std::min(hw > 0 ? hw / 2 : 1, 8)));
  }
  const int threads = draw_pool_ ? draw_pool_->size() : 1;
  if (int(draw_scratch_.size()) < threads) draw_scratch_.resize(size_t(threads));
  auto draw = [&](int k, int thread) {
    const int r = sampled[size_t(k)];
    sample_row(host + size_t(k) * V, pick_limit(specs[r], V), specs[r], out[r], draw_scratch_[size_t(thread)]);
  };
  if (sampled.size() == 1 || !draw_pool_) {
    for (int k = 0; k < int(sampled.size()); ++k) draw(k, 0);
    return;
  }
  // A worker must not throw (the pool would terminate the process): the first error is kept and rethrown here.
  std::exception_ptr err;
  std::mutex mu;
  draw_pool_->parallel_for(int(sampled.size()), [&](int k, int thread) {
    try {
      draw(k, thread);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu);
      if (!err) err = std::current_exception();
    }
  });
  if (err) std::rethrow_exception(err);
}

void CudaBackend::final_pick(const Buf h, const int* rows, int R, int H, const Weight& ln_f, const Weight& lm_head,
                             float eps, const PickSpec* specs, PickResult* out) {
  static_assert(sizeof(int) == sizeof(int32_t), "rows are staged as int32");
  if (R <= 0) return;
  const int V = check_head("final_pick", H, ln_f, lm_head);
  // Profiled as four parts, one after another (not nested: the step's op sum must not count anything twice), so that
  // the lm_head GEMM and the pick can be told apart (batch 64 on the H100: 2.2 ms per step for the whole op).
  auto key = [&](const char* part, int rows_) { return std::string("final_pick ") + part + " R=" + std::to_string(rows_); };
  const PickCall c = [&] {
    ProfScope prof(prof_, stream_, [&] { return key("stage", R); });
    return stage_pick(rows, R, V, specs);
  }();
  const int rc = std::min(R, kPickRowChunk);
  void* xn = xn_.get(size_t(rc) * H * esize_, stream_, "final-logits normalised rows");
  float* lg = static_cast<float*>(logits_.get(size_t(rc) * V * sizeof(float), stream_, "final logits"));
  for (int r0 = 0; r0 < R; r0 += rc) {
    const int n = std::min(rc, R - r0);
    {
      ProfScope prof(prof_, stream_, [&] { return key("lm_head", n); });
      head_rows(h, c.rows + r0, n, H, V, ln_f, lm_head, eps, xn, lg);
    }
    ProfScope prof(prof_, stream_, [&] { return key("pick", n); });
    pick_chunk(c, lg, r0, n, V, specs, R);
  }
  ProfScope prof(prof_, stream_, [&] { return key("results", R); });
  finish_pick(c, R, V, specs, out);
}

void CudaBackend::pick_logits(const float* logits, int R, int V, const PickSpec* specs, PickResult* out) {
  ProfScope prof(prof_, stream_, [&] { return "pick_logits R=" + std::to_string(R); });
  if (R <= 0) return;
  if (V <= 0) throw std::invalid_argument("pick_logits: V must be >= 1");
  const PickCall c = stage_pick(nullptr, R, V, specs);
  const int rc = std::min(R, kPickRowChunk);
  float* lg = static_cast<float*>(logits_.get(size_t(rc) * V * sizeof(float), stream_, "final logits"));
  for (int r0 = 0; r0 < R; r0 += rc) {
    const int n = std::min(rc, R - r0);
    CUDA_CHECK(cudaMemcpyAsync(lg, logits + size_t(r0) * V, size_t(n) * V * sizeof(float), cudaMemcpyHostToDevice,
                               stream_));
    pick_chunk(c, lg, r0, n, V, specs, R);
  }
  finish_pick(c, R, V, specs, out);
}

}  // namespace cu

// ------------------------------------------------------------------------------------------------ public entries
CudaInfo cuda_info() {
  CudaInfo info;
  info.compiled = true;
  int v = 0;
  if (cudaRuntimeGetVersion(&v) == cudaSuccess) info.runtime_version = v;
  cudaGetLastError();
  v = 0;
  if (cudaDriverGetVersion(&v) == cudaSuccess) info.driver_version = v;
  cudaGetLastError();

  const std::string env_off = cublas::disabled_by_env();
  const cublas::Api& api = cublas::api();
  auto set_cublas = [&](bool device_ok) {
    if (!api.ok) {
      info.cublas_error = api.error;
    } else if (!device_ok) {
      info.cublas_error = "libcublas found (" + api.path + ") but not initialised: no usable device";
    } else if (const std::string& p = cu::cublas_handle_probe(); !p.empty()) {
      info.cublas_error = p;
    } else if (!env_off.empty()) {
      info.cublas_error = "libcublas found (" + api.path + ") but " + env_off;
    } else {
      info.cublas = true;
    }
  };

  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    info.error = cu::describe_count_error(e);
    set_cublas(false);
    return info;
  }
  info.device_count = n;
  if (n <= 0) {
    info.error = "no CUDA-capable device found";
    set_cublas(false);
    return info;
  }
  cudaDeviceProp prop;
  std::memset(&prop, 0, sizeof(prop));
  const cudaError_t pe = cudaGetDeviceProperties(&prop, 0);
  if (pe != cudaSuccess) {
    cudaGetLastError();
    info.error = std::string("cudaGetDeviceProperties(0) failed: ") + cudaGetErrorString(pe);
    set_cublas(false);
    return info;
  }
  info.name = prop.name;
  info.cc_major = prop.major;
  info.cc_minor = prop.minor;
  info.total_mem = prop.totalGlobalMem;
  if (prop.major < 8) {
    info.error = "device 0 (" + info.name + ") has compute capability " + std::to_string(prop.major) + "." +
                 std::to_string(prop.minor) + "; this build has kernels for 8.0+ only";
    set_cublas(false);
    return info;
  }
  cudaError_t me = cudaSetDevice(0);
  size_t fr = 0, tot = 0;
  if (me == cudaSuccess) me = cudaMemGetInfo(&fr, &tot);
  if (me != cudaSuccess) {
    cudaGetLastError();
    info.error = std::string("cannot create a CUDA context on device 0: ") + cudaGetErrorString(me);
    set_cublas(false);
    return info;
  }
  info.free_mem = fr;
  info.total_mem = tot;
  info.available = true;
  set_cublas(true);
  return info;
}

std::unique_ptr<Backend> make_cuda_backend(const BackendOptions& opt) {
  return std::make_unique<cu::CudaBackend>(opt);
}

}  // namespace qwen
