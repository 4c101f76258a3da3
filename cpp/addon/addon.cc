// The addon's module: NativeModel, NativeSequence, NativeOps (tests), and the backend probes.
#include <napi.h>

#include <string>
#include <thread>

#include "../cuda/cuda_backend.h"
#include "addon/wraps.h"
#include "cpu/isa.h"

namespace qwen {

double read_bandwidth_gbs(size_t bytes, int threads);  // cpp/cpu/membench.cc

namespace {

Napi::Value ReadBandwidth(const Napi::CallbackInfo& info) {
  // readBandwidth(megabytes, threads) -> GB/s. Synchronous: a benchmark helper, not for serving paths.
  const double mb = info[0].As<Napi::Number>().DoubleValue();
  const int threads = info[1].As<Napi::Number>().Int32Value();
  return Napi::Number::New(info.Env(), read_bandwidth_gbs(size_t(mb * 1048576.0), threads));
}

Napi::Value CpuInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const CpuFeatures& f = cpu_features();
  Napi::Object o = Napi::Object::New(env);
  o.Set("isa", isa_name(best_isa()));
  Napi::Object feats = Napi::Object::New(env);
  feats.Set("avx2", f.avx2);
  feats.Set("fma", f.fma);
  feats.Set("f16c", f.f16c);
  feats.Set("avx512f", f.avx512f);
  feats.Set("avx512bw", f.avx512bw);
  feats.Set("avx512vl", f.avx512vl);
  feats.Set("avx512bf16", f.avx512bf16);
  feats.Set("amxBf16", f.amx_bf16);
  o.Set("features", feats);
  o.Set("threads", Napi::Number::New(env, std::thread::hardware_concurrency()));
  return o;
}

Napi::Value CudaInfoJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CudaInfo c = cuda_info();
  Napi::Object o = Napi::Object::New(env);
  o.Set("compiled", c.compiled);
  o.Set("available", c.available);
  o.Set("deviceCount", c.device_count);
  o.Set("runtimeVersion", c.runtime_version);
  o.Set("driverVersion", c.driver_version);
  o.Set("name", c.name);
  if (c.cc_major > 0) o.Set("computeCapability", std::to_string(c.cc_major) + "." + std::to_string(c.cc_minor));
  else o.Set("computeCapability", env.Null());
  o.Set("totalMemory", double(c.total_mem));
  o.Set("freeMemory", double(c.free_mem));
  o.Set("error", c.error);
  o.Set("cublas", c.cublas);
  o.Set("cublasError", c.cublas_error);
  return o;
}

}  // namespace
Napi::Object Init(Napi::Env env, Napi::Object exports) {
  NativeSequence::Init(env, exports);
  NativeModel::Init(env, exports);
  InitOps(env, exports);
  exports.Set("cpuInfo", Napi::Function::New(env, CpuInfo));
  exports.Set("cudaInfo", Napi::Function::New(env, CudaInfoJs));
  exports.Set("readBandwidth", Napi::Function::New(env, ReadBandwidth));
  return exports;
}

}  // namespace qwen

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return qwen::Init(env, exports); }

NODE_API_MODULE(qwen, InitAddon)
