// cuBLAS loader: dlopen + dlsym of the four entry points the backend uses. No CUDA call is made here.
#include "cublas_dyn.h"

#include <dlfcn.h>

#include <cstdlib>
#include <vector>

namespace qwen::cublas {

namespace {

Api load() {
  Api a;
  std::vector<std::string> candidates;
  if (const char* p = std::getenv("QWEN_CUBLAS_PATH"); p && *p) candidates.emplace_back(p);
  candidates.emplace_back("libcublas.so.13");
  candidates.emplace_back("/usr/local/cuda/lib64/libcublas.so.13");
  void* lib = nullptr;
  std::string tried;
  for (const auto& c : candidates) {
    lib = dlopen(c.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (lib) {
      a.path = c;
      break;
    }
    const char* e = dlerror();
    tried += (tried.empty() ? "" : "; ") + (e ? std::string(e) : c + ": not found");
  }
  if (!lib) {
    a.error = "libcublas.so.13 not found (" + tried + ")";
    return a;
  }
  auto sym = [&](const char* name) -> void* {
    void* s = dlsym(lib, name);
    if (!s && a.error.empty()) a.error = std::string("symbol ") + name + " missing in " + a.path;
    return s;
  };
  a.create = reinterpret_cast<decltype(a.create)>(sym("cublasCreate_v2"));
  a.destroy = reinterpret_cast<decltype(a.destroy)>(sym("cublasDestroy_v2"));
  a.set_stream = reinterpret_cast<decltype(a.set_stream)>(sym("cublasSetStream_v2"));
  a.gemm_ex = reinterpret_cast<decltype(a.gemm_ex)>(sym("cublasGemmEx"));
  a.set_math_mode = reinterpret_cast<decltype(a.set_math_mode)>(dlsym(lib, "cublasSetMathMode"));  // optional
  a.set_workspace = reinterpret_cast<decltype(a.set_workspace)>(dlsym(lib, "cublasSetWorkspace_v2"));  // optional
  a.ok = a.error.empty();
  // The library stays open for the life of the process (unloading under a live handle would crash).
  return a;
}

}  // namespace

const Api& api() {
  static const Api a = load();
  return a;
}

std::string disabled_by_env() {
  const char* v = std::getenv("QWEN_CUBLAS");
  if (v && std::string(v) == "0") return "disabled by QWEN_CUBLAS=0";
  return "";
}

}  // namespace qwen::cublas
