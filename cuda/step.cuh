// The device view of one batched step (Backend::begin_step): what rope, kv_store and attention need to map a row of
// the step's activations to its sequence, position, rotary table and paged KV blocks. CudaBackend::begin_step builds
// it on the host and uploads it ONCE per step (one pinned buffer, one cudaMemcpyAsync), so the 3 x n_layers per-layer
// ops launch without any host -> device traffic.
//
// KV block layout (CudaKVPool, cuda_backend_impl.cuh): one block holds kKvBlockTokens = 32 positions of every layer
// as [layer][k|v][row 0..31][H] in the activation dtype (H = n_heads * head_dim). Position p of a slice lives in block
// id = block_ids[slice.blk + p / 32], row p % 32; its key for head h starts at
//   blockptr[id] + ((layer * 2 + 0) * 32 + p % 32) * H + h * head_dim   (value: layer * 2 + 1).
// A flash tile of 32 keys is exactly one block: inside a block, one layer's K (or V) rows are a dense [32][H] matrix.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "core/kv_cache.h"

namespace qwen::cu {

static_assert(kKvBlockTokens == 32, "the CUDA kernels assume 32-position KV blocks (one warp / one flash tile)");

// One sequence of the step. 40 bytes, 8-aligned (blockptr first).
struct DevSlice {
  const uint64_t* blockptr;  // its pool's device table: block id -> block base address (nullptr: slice has no cache)
  int row0, T, pos0;         // rows [row0, row0 + T) of the step at positions pos0 .. pos0 + T - 1
  int blk;                   // offset of its block ids in StepView::block_ids
  int nblk;                  // block ids uploaded for it (kv_blocks_for(pos0 + T))
  int logn_base, rot_dims;   // RopeParams (0, 0 when the slice has none)
  int freq;                  // offset of its inv_freq[rot_dims / 2] in StepView::inv_freq
};
static_assert(sizeof(DevSlice) == 40, "DevSlice is uploaded as raw bytes");

// Passed by value to the kernels: device pointers into the step buffer plus the host-known counts that size the grids.
struct StepView {
  const DevSlice* slices = nullptr;  // [n]
  const int32_t* block_ids = nullptr;
  const float* inv_freq = nullptr;
  const int32_t* row_slice = nullptr;   // [rows]: slice index of each row, -1 for a row no slice owns
  const int32_t* small_rows = nullptr;  // [n_small]: rows of slices with T <= kFlashMinT (split attention with flash)
  const int2* flash_tiles = nullptr;    // [n_tiles]: (slice, q0) of 64-query tiles of slices with T > kFlashMinT,
                                        //   heaviest (longest key range) first
  int n = 0, rows = 0, n_small = 0, n_tiles = 0;
  int nchunks_small = 0;  // max over small rows of ceil(keys / kSplitChunk) (keys = pos0 + t + 1)
  int nchunks_all = 0;    // same over all rows (split for everything: fp32, odd head_dim, QWEN_ATTN_FLASH=0)
};

constexpr int kFlashMinT = 16;     // a slice with T above this goes to the flash kernel (when the call can use it)
constexpr int kFlashBQ = 64;       // queries per flash tile
constexpr int kSplitChunk = 256;   // keys per split-attention block (8 KV blocks)

// Base of (layer, k = 0 | v = 1) rows of the KV block holding the slice's position-block `b` (= p / 32).
template <typename T>
__device__ __forceinline__ T* kv_rows(const StepView& v, const DevSlice& s, int b, int layer, int kv, int H) {
  const uint64_t base = s.blockptr[v.block_ids[s.blk + b]];
  return reinterpret_cast<T*>(base) + (int64_t(layer) * 2 + kv) * kKvBlockTokens * int64_t(H);
}

}  // namespace qwen::cu
