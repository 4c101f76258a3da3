// Paged KV cache: the engine owns one KVPool of fixed-size blocks; each sequence's KVCache is a block table into it,
// so memory follows the real lengths of the sequences, admission can count free blocks, and finishing or aborting a
// sequence returns its blocks at once (vLLM's PagedAttention scheme, without sharing or copy-on-write).
//
// Position p of a sequence lives in block blocks()[p / kKvBlockTokens], row p % kKvBlockTokens. What a block holds
// (every layer's keys and values for its kKvBlockTokens positions) and how it is laid out is the backend's: the CPU
// keeps [layer][k|v][head][row][head_dim] fp32, CUDA [layer][k|v][row][H] in the activation dtype.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

namespace qwen {

// 32 positions per block: a CUDA attention tile of 32 keys is one block; on the CPU one head's keys of a block are
// 16 KB contiguous (fp32, head_dim 128), long enough for the prefetcher. At most 31 positions wasted per sequence.
constexpr int kKvBlockTokens = 32;

inline int kv_blocks_for(int positions) { return (positions + kKvBlockTokens - 1) / kKvBlockTokens; }

// Hands out block ids in [0, max_blocks). Storage for an id is made the first time it is handed out (materialize)
// and kept for reuse, so memory grows with the peak use, never beyond max_blocks. Thread-safe: blocks are returned
// from whichever thread drops a sequence, and the counters are read from the JS thread.
class KVPool {
 public:
  explicit KVPool(int max_blocks) : max_(max_blocks) {}
  virtual ~KVPool() = default;
  int max_blocks() const { return max_; }
  int used() const { return used_.load(); }
  int free_blocks() const { return max_ - used_.load(); }
  int made() const { return made_count_.load(); }  // blocks given storage so far
  // Bytes of storage the pool holds (blocks are made in slabs on CUDA, so this can exceed made() blocks' worth).
  virtual size_t storage_bytes() const = 0;
  // Takes n blocks (all or none) and appends their ids to out; false when fewer than n are free.
  // Throws what materialize throws (e.g. out of memory), having taken nothing.
  bool acquire(int n, std::vector<int32_t>& out);
  void release(const int32_t* ids, int n);

 protected:
  virtual void materialize(int id) = 0;  // give block `id` its storage (called once per id, under the lock)

 private:
  std::mutex mu_;
  const int max_;
  int made_ = 0;               // ids [0, made_) have storage
  std::vector<int32_t> free_;  // ids with storage, not in use
  std::atomic<int> used_{0};
  std::atomic<int> made_count_{0};  // made_, readable without the lock
};

// One sequence's block table.
class KVCache {
 public:
  explicit KVCache(std::shared_ptr<KVPool> pool) : pool_(std::move(pool)) {}
  ~KVCache() { shrink(0); }
  KVCache(const KVCache&) = delete;
  KVCache& operator=(const KVCache&) = delete;
  // Blocks for at least `positions` positions, keeping the content; false (nothing changed) when the pool is short.
  bool reserve(int positions);
  // Keep only the blocks that hold positions [0, positions); the rest go back to the pool.
  void shrink(int positions);
  int capacity() const { return int(blocks_.size()) * kKvBlockTokens; }
  const std::vector<int32_t>& blocks() const { return blocks_; }
  KVPool& pool() const { return *pool_; }

 private:
  std::shared_ptr<KVPool> pool_;
  std::vector<int32_t> blocks_;
};

}  // namespace qwen
