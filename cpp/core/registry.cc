// make_backend: the only place backends are named.
#include <stdexcept>

#include "core/backend.h"
#include "cpu/cpu_backend.h"
#include "../cuda/cuda_backend.h"

namespace qwen {

#ifndef QWEN_HAVE_CUDA
CudaInfo cuda_info() {
  CudaInfo info;
  info.error = "this build of qwen-node has no CUDA backend (built without nvcc or with QWEN_CUDA=OFF)";
  return info;
}
std::unique_ptr<Backend> make_cuda_backend(const BackendOptions&) { throw std::runtime_error(cuda_info().error); }
#endif

std::unique_ptr<Backend> make_backend(const BackendOptions& opt) {
  if (opt.device == "cpu") return make_cpu_backend(opt);
  if (opt.device == "cuda") return make_cuda_backend(opt);
  throw std::runtime_error("unknown device '" + opt.device + "'");
}

}  // namespace qwen
