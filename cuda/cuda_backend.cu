// CudaBackend: the Backend seam (cpp/core/backend.h) on one CUDA device (device 0) and one stream.
//
// Activations, weights and the KV cache live in the activation dtype (bf16 by default, fp16 or fp32 on request);
// every kernel accumulates in fp32 and softmax is fp32. Host weights (F32/F16/BF16 views of the mmapped file) are
// converted while streaming through a 2 x 16 MiB pinned staging buffer; no second host copy is ever made.
// Every op enqueues on stream_; to_host, final_logits and synchronize() wait for it.
//
// NOTHING HERE HAS RUN ON A GPU YET (written and compiled on a machine without one). Expected figures on an H100
// (3.35 TB/s HBM3 nominal, ~2.96 TB/s measured copy, ~990 dense bf16 TFLOP/s nominal, ~743 measured via cuBLAS):
//   op            kernel                          bound    expectation / what is not optimised
//   embedding     embedding_kernel                memory   row copies, ~us; irrelevant
//   rmsnorm       rmsnorm_kernel                  launch   block per row, 2 passes over the row; ~3 us at T=1
//   linear T<=8   gemv_vec_kernel<NT>             HBM      warp per row, 4 x 16 B __ldcs in flight per lane:
//                                                          target >= 85 % of copy bandwidth (>= 2.5 TB/s), i.e.
//                                                          ~5 ms of GEMV per decoded token for Qwen-7B bf16
//   linear T>=64  cublasGemmEx (dlopen)           tensor   ~700+ TFLOP/s at prefill shapes (cuBLAS)
//   linear other  gemm_wmma_kernel                tensor   WMMA 64x128x32 tiles, cp.async double buffer: ~30-50 %
//                                                          of peak; 9 <= T < 64 is weight-bandwidth bound anyway
//                 gemm_fma_kernel                 FMA      fp32 / odd shapes only (tests), ~10-20 TFLOP/s
//   rope          rope_kernel                     launch   cos/sin in double per (token, pair) in shared memory
//   kv_store      kv_store_kernel                 memory   2 row copies per token
//   attention     attn_split_kernel (+combine)    memory   decode: scalar 2-byte K/V loads, 256 keys per block;
//                                                          guess 40-60 % of HBM bandwidth on long caches
//                 attn_flash_kernel (T > 16)      tensor   WMMA, O tile in shared, no K/V pipelining; guess
//                                                          100-200 TFLOP/s (torch SDPA does ~400 at 2048 tokens)
//   swiglu, add   elementwise                     memory   scalar loads, grid-stride
//   final_logits  rmsnorm rows + GEMV/GEMM fp32   HBM      lm_head 1.24 GB per decoded token
// Not done yet (follow-ups, each would be a NEW op of this backend, backend.h unchanged): CUDA graphs for the
// decode step (~35 launches per layer -> launch gaps of ~0.1-0.2 ms per token), fused rope + kv_store, fused
// residual add + rmsnorm, swiglu fused into the w1/w2 GEMV (one pass over x for both), an mma.sync flash-attention
// with O in registers and cp.async K/V pipelining, vectorised split-attention loads.
#include "cuda_backend_impl.cuh"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#include "../cuda/cuda_backend.h"
#include "add.cuh"
#include "attention.cuh"
#include "common.cuh"
#include "convert.cuh"
#include "embedding.cuh"
#include "final_logits.cuh"
#include "kv_store.cuh"
#include "linear.cuh"
#include "rmsnorm.cuh"
#include "rope.cuh"
#include "swiglu.cuh"

namespace qwen {
namespace cu {

namespace {
constexpr size_t kStageBytes = size_t(16) << 20;  // per staging buffer
constexpr int kLogitsRowChunk = 64;               // final_logits rows per lm_head call (scratch R x V fp32)

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

// ------------------------------------------------------------------------------------------------ KV cache
CudaKVCache::CudaKVCache(int n_layers, int hidden, DType act, cudaStream_t stream)
    : layers_(size_t(n_layers)), hidden_(hidden), act_(act), stream_(stream) {}

CudaKVCache::~CudaKVCache() {
  cudaDeviceSynchronize();  // queued attention kernels may still read the cache
  cudaGetLastError();
  for (auto& l : layers_) {
    if (l.k) cudaFree(l.k);
    if (l.v) cudaFree(l.v);
  }
}

void CudaKVCache::reserve(int tokens) {
  if (tokens <= capacity_) return;
  const int target = std::max(tokens, std::min(2 * capacity_, kMaxPositions));
  const size_t row = size_t(hidden_) * dtype_size(act_);
  for (size_t i = 0; i < layers_.size(); ++i) {
    Layer& l = layers_[i];
    if (l.cap >= target) continue;
    const std::string what = "KV cache layer " + std::to_string(i) + " (" + std::to_string(target) + " positions)";
    void* nk = device_alloc(size_t(target) * row, what + " keys");
    void* nv = nullptr;
    try {
      nv = device_alloc(size_t(target) * row, what + " values");
      if (l.cap > 0) {
        CUDA_CHECK(cudaMemcpyAsync(nk, l.k, size_t(l.cap) * row, cudaMemcpyDeviceToDevice, stream_));
        CUDA_CHECK(cudaMemcpyAsync(nv, l.v, size_t(l.cap) * row, cudaMemcpyDeviceToDevice, stream_));
      }
      CUDA_CHECK(cudaStreamSynchronize(stream_));  // copies done, and no queued kernel reads the old buffers
    } catch (...) {
      cudaFree(nk);
      if (nv) cudaFree(nv);
      throw;
    }
    if (l.k) cudaFree(l.k);
    if (l.v) cudaFree(l.v);
    l.k = nk;
    l.v = nv;
    l.cap = target;
  }
  capacity_ = target;
}

// ------------------------------------------------------------------------------------------------ backend
CudaBackend::CudaBackend(const BackendOptions& opt) {
  const CudaInfo info = cuda_info();
  if (!info.available) throw std::runtime_error("CUDA backend unavailable: " + info.error);
  try {
    device_ = 0;
    CUDA_CHECK(cudaSetDevice(device_));
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
  if (stream_) cudaStreamSynchronize(stream_);
  cudaGetLastError();
  if (cublas_) cublas::api().destroy(cublas_);
  cublas_ = nullptr;
  conv_.release();
  attn_ws_.release();
  xn_.release();
  logits_.release();
  ids_.release();
  rows_.release();
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
    cudaStreamSynchronize(stream_);
    cudaFree(const_cast<void*>(w.data));
    cudaGetLastError();
  }
  w.data = nullptr;
}

std::unique_ptr<KVCache> CudaBackend::new_kv_cache(const ModelConfig& cfg) {
  return std::make_unique<CudaKVCache>(cfg.n_layers, cfg.hidden, act_, stream_);
}

void CudaBackend::synchronize() { CUDA_CHECK(cudaStreamSynchronize(stream_)); }

// ------------------------------------------------------------------------------------------------ ops
namespace {
void check_weight(const Weight& w, DType act, const char* op) {
  if (!w.data) throw std::invalid_argument(std::string(op) + ": weight not uploaded");
  if (w.dtype != act)
    throw std::invalid_argument(std::string(op) + ": weight dtype " + dtype_name(w.dtype) +
                                " is not the backend's " + dtype_name(act) + " (use upload())");
}
CudaKVCache& as_cuda_kv(KVCache& kv, const char* op) {
  auto* c = dynamic_cast<CudaKVCache*>(&kv);
  if (!c) throw std::invalid_argument(std::string(op) + ": KV cache was not made by the CUDA backend");
  return *c;
}
}  // namespace

void CudaBackend::embedding(const Weight& wte, const int32_t* ids, int T, Buf h) {
  if (T <= 0) return;
  check_weight(wte, act_, "embedding");
  const int32_t* ids_dev = ids_.stage(ids, T, stream_, "token ids");
  cu::embedding(act_, wte.data, ids_dev, T, int(wte.cols), h, stream_);
}

void CudaBackend::rmsnorm(const Buf x, const Weight& g, float eps, int T, int H, Buf y) {
  check_weight(g, act_, "rmsnorm");
  if (g.rows * g.cols != H) throw std::invalid_argument("rmsnorm: gain has " + std::to_string(g.rows * g.cols) +
                                                        " elements, H = " + std::to_string(H));
  cu::rmsnorm(act_, x, g.data, eps, T, H, nullptr, y, stream_);
}

void CudaBackend::linear(const Buf x, const Weight& W, const Weight* b, int T, Buf y) {
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
  cu::linear(a, stream_);
}

void CudaBackend::rope(Buf qkv, int T, int pos0, int n_heads, int head_dim, const RopeParams& rp) {
  cu::rope(act_, qkv, T, pos0, n_heads, head_dim, rp, stream_);
}

void CudaBackend::kv_store(const Buf qkv, int T, int pos0, int /*n_heads*/, int /*head_dim*/, KVCache& kv, int layer) {
  CudaKVCache& c = as_cuda_kv(kv, "kv_store");
  if (layer < 0 || layer >= c.n_layers()) throw std::invalid_argument("kv_store: layer out of range");
  if (T <= 0) return;
  if (pos0 + T > c.capacity()) c.reserve(pos0 + T);  // grows (content kept) when the engine did not reserve
  cu::kv_store(act_, qkv, T, c.hidden(), pos0, c.k(layer), c.v(layer), stream_);
}

void CudaBackend::attention(const Buf qkv, int T, int pos0, int n_heads, int head_dim, KVCache& kv, int layer,
                            Buf out) {
  CudaKVCache& c = as_cuda_kv(kv, "attention");
  if (layer < 0 || layer >= c.n_layers()) throw std::invalid_argument("attention: layer out of range");
  if (T <= 0) return;
  if (n_heads * head_dim != c.hidden())
    throw std::invalid_argument("attention: n_heads * head_dim != cache hidden size");
  if (pos0 + T > c.capacity())
    throw std::invalid_argument("attention: positions up to " + std::to_string(pos0 + T) +
                                " exceed the KV cache capacity " + std::to_string(c.capacity()));
  AttnArgs a;
  a.act = act_;
  a.qkv = qkv;
  a.K = c.k(layer);
  a.V = c.v(layer);
  a.out = out;
  a.T = T;
  a.pos0 = pos0;
  a.n_heads = n_heads;
  a.head_dim = head_dim;
  const size_t ws_bytes = attention_workspace_bytes(a);
  void* ws = ws_bytes ? attn_ws_.get(ws_bytes, stream_, "attention workspace") : nullptr;
  cu::attention(a, ws, ws_bytes, stream_);
}

void CudaBackend::swiglu(const Buf a, const Buf g, int T, int F, Buf out) {
  if (T <= 0 || F <= 0) return;
  cu::swiglu(act_, a, g, size_t(T) * size_t(F), out, stream_);
}

void CudaBackend::add(Buf h, const Buf x, int T, int H) {
  if (T <= 0 || H <= 0) return;
  cu::add(act_, h, x, size_t(T) * size_t(H), stream_);
}

void CudaBackend::final_logits(const Buf h, const int* rows, int R, int H, const Weight& ln_f, const Weight& lm_head,
                               float eps, float* logits) {
  static_assert(sizeof(int) == sizeof(int32_t), "rows are staged as int32");
  if (R <= 0) return;
  check_weight(ln_f, act_, "final_logits ln_f");
  check_weight(lm_head, act_, "final_logits lm_head");
  if (ln_f.rows * ln_f.cols != H || lm_head.cols != H)
    throw std::invalid_argument("final_logits: ln_f / lm_head do not match H = " + std::to_string(H));
  const int V = int(lm_head.rows);
  const int32_t* rows_dev = rows_.stage(reinterpret_cast<const int32_t*>(rows), R, stream_, "logit rows");
  const int rc = std::min(R, kLogitsRowChunk);
  void* xn = xn_.get(size_t(rc) * H * esize_, stream_, "final-logits normalised rows");
  float* lg = static_cast<float*>(logits_.get(size_t(rc) * V * sizeof(float), stream_, "final logits"));
  for (int r0 = 0; r0 < R; r0 += rc) {
    const int n = std::min(rc, R - r0);
    FinalLogitsArgs a;
    a.act = act_;
    a.h = h;
    a.rows = rows_dev + r0;
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
    CUDA_CHECK(cudaMemcpyAsync(logits + size_t(r0) * V, lg, size_t(n) * V * sizeof(float), cudaMemcpyDeviceToHost,
                               stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
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
