// attention over a batched step (step.cuh): for every row of every slice and every head,
//   out[row, h] = softmax(q k^T / sqrt(d) + causal) v
// with q from qkv[rows, 3H] (row, cols h*d .. h*d+d-1) and keys/values 0 .. pos0+t of the slice's paged cache at
// `layer` (t = row - row0: bottom-right aligned causal mask). Scores, softmax and the weighted sum accumulate in fp32.
// Paths, chosen per call:
//   flash2+split (bf16/fp16, head_dim 64 or 128, qkv and out 16-byte aligned, QWEN_ATTN_FLASH unset or not "0" /
//       "wmma"): slices with T > kFlashMinT go to ONE flash launch over the step's (slice, 64-query tile) list x
//       heads -- the mma.sync FlashAttention-2 kernel of flash_mma.cuh; the rows of the other slices (decode, short
//       chunks) go to ONE split launch (+ combine) over their row list;
//   wmma+split (QWEN_ATTN_FLASH=wmma, or out not 16-byte aligned): the same with the older WMMA flash kernel;
//   split (everything else, QWEN_ATTN_FLASH=0): one split launch (+ combine) over all rows.
//   QWEN_ATTN_FLASH is read on every call ("flash2" / "wmma" without "+split" when the step has no short rows).
// Split: grid (key chunks of 256, heads, rows); each row stops at its own key count; needs
// attention_workspace_bytes() of fp32 scratch when some row has more than one chunk.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>

#include "core/dtype.h"
#include "step.cuh"

namespace qwen::cu {

struct AttnArgs {
  DType act = DType::F32;
  const void* qkv = nullptr;  // [rows, 3H]
  void* out = nullptr;        // [rows, H]; rows no slice owns are not written
  StepView step;              // slices, block tables (caches hold pos0 + T positions of `layer` for every slice)
  int n_heads = 0, head_dim = 0, layer = 0;
};

// Scratch the call wants (0 = none). Any ws_bytes >= one row's share works (rows are then done in groups).
size_t attention_workspace_bytes(const AttnArgs& a);
void attention(const AttnArgs& a, void* ws, size_t ws_bytes, cudaStream_t stream);
const char* attention_path(const AttnArgs& a);  // "flash2+split", "flash2", "wmma+split", "wmma", "split":
                                                //   what attention() will launch

}  // namespace qwen::cu
