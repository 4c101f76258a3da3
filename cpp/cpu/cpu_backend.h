// The CPU backend: fp32 activations, weights read in place from the mmapped checkpoint (F32/F16/BF16).
#pragma once
#include <memory>

#include "core/backend.h"

namespace qwen {

std::unique_ptr<Backend> make_cpu_backend(const BackendOptions& opt);

}  // namespace qwen
