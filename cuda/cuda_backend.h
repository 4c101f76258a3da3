// Entry points of the CUDA backend used by cpp/ (no CUDA types here, so cpp/ compiles without CUDA headers).
// Implemented in cuda/*.cu when QWEN_HAVE_CUDA; cpp/core/registry.cc reports "not compiled" otherwise.
#pragma once
#include <cstddef>
#include <memory>
#include <string>

#include "core/backend.h"

namespace qwen {

struct CudaInfo {
  bool compiled = false;      // this addon was built with the CUDA backend
  bool available = false;     // a usable device was found
  int device_count = 0;
  int runtime_version = 0;    // cudaRuntimeGetVersion (13000 = 13.0)
  int driver_version = 0;     // cudaDriverGetVersion (0 = no driver)
  std::string name;           // device 0
  int cc_major = 0, cc_minor = 0;
  size_t total_mem = 0, free_mem = 0;
  std::string error;          // why not available
  bool cublas = false;        // libcublas found and initialised (dlopen)
  std::string cublas_error;
};

CudaInfo cuda_info();
// Throws std::runtime_error naming the reason (no device, out of memory, unsupported dtype ...).
std::unique_ptr<Backend> make_cuda_backend(const BackendOptions& opt);

}  // namespace qwen
