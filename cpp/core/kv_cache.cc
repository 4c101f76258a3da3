#include "core/kv_cache.h"

namespace qwen {

bool KVPool::acquire(int n, std::vector<int32_t>& out) {
  if (n <= 0) return true;
  std::lock_guard<std::mutex> lock(mu_);
  if (max_ - used_.load() < n) return false;
  const size_t first = out.size();
  try {
    for (int i = 0; i < n; ++i) {
      if (!free_.empty()) {
        out.push_back(free_.back());
        free_.pop_back();
      } else {
        materialize(made_);  // may throw: ids taken so far go back below
        out.push_back(made_++);
        made_count_.store(made_);
      }
    }
  } catch (...) {
    for (size_t i = first; i < out.size(); ++i) free_.push_back(out[i]);
    out.resize(first);
    throw;
  }
  used_ += n;
  return true;
}

void KVPool::release(const int32_t* ids, int n) {
  if (n <= 0) return;
  std::lock_guard<std::mutex> lock(mu_);
  for (int i = 0; i < n; ++i) free_.push_back(ids[i]);
  used_ -= n;
}

bool KVCache::reserve(int positions) {
  const int need = kv_blocks_for(positions) - int(blocks_.size());
  return need <= 0 || pool_->acquire(need, blocks_);
}

void KVCache::shrink(int positions) {
  const int keep = kv_blocks_for(positions);
  if (keep >= int(blocks_.size())) return;
  pool_->release(blocks_.data() + keep, int(blocks_.size()) - keep);
  blocks_.resize(size_t(keep));
}

}  // namespace qwen
