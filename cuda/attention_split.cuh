// Split attention with 16-byte loads (bf16/fp16, head_dim 64 or 128): the same contract as attn_split_kernel in
// attention.cu (grid (nchunks, n_heads, rows in group), 128 threads, keys [c*256, min((c+1)*256, L)) of row `row`,
// direct output when the row has one chunk, else (o, m, l) partials in the workspace slot for the combine kernel).
//
// Why: the scalar kernel reads K with one 2-byte load per lane (a warp covers one key row) and V with one 2-byte load
// per thread per key; on an H100 it took 79 us per layer for one decode row at 2,100 keys and 149 us for 64 rows at
// ~260 keys, 4-5x what the bytes need. Here a key row (HD * 2 bytes) is read by LPK = HD / 8 lanes with one uint4 each,
// so a warp reads 32 / LPK whole rows per load and every thread keeps 4 independent loads in flight.
//   QK:  lane group g = lane / LPK of warp w takes keys j = (w * KPW + g) + i * 4 * KPW; each lane dots its 8 q values
//        (fp32, pre-scaled) with its 8 key values, then a shuffle tree over the LPK lanes of the group.
//   PV:  thread t owns dims [8 * (t % LPK), +8) of key group t / LPK (NG = 128 / LPK groups, keys j = group + i * NG);
//        the NG partial vectors are summed through shared memory at the end.
// The softmax (fp32, max-subtracted, expf) is the scalar kernel's.
#pragma once
#include "common.cuh"
#include "step.cuh"

namespace qwen::cu {

template <typename T, int HD>
static __global__ void __launch_bounds__(128)
    attn_split_vec_kernel(const T* __restrict__ qkv, StepView v, const int32_t* __restrict__ rowlist, int r0,
                          int n_heads, int layer, float scale, int nchunks, float* __restrict__ ws_o,
                          float* __restrict__ ws_ml, T* __restrict__ out) {
  static_assert(HD == 64 || HD == 128, "head_dim 64 or 128");
  static_assert(sizeof(T) == 2, "16-bit activations: one uint4 = 8 elements");
  constexpr int kThreads = 128, kChunk = kSplitChunk, kBlocks = kSplitChunk / kKvBlockTokens;
  constexpr int LPK = HD / 8;           // lanes per key row (one uint4 = 8 elements each)
  constexpr int KPW = 32 / LPK;         // key rows per warp per load
  constexpr int NG = kThreads / LPK;    // key groups in PV
  __shared__ float ps[kChunk];
  __shared__ const T* kb[kBlocks];      // row 0 of this head's keys in each KV block of the chunk
  __shared__ __align__(16) float red[NG][HD];

  pdl_wait();  // q from rope_kv_store, K/V in the cache; the workspace the last combine read (the PDL contract)
  pdl_launch_dependents();
  const int c = blockIdx.x, h = blockIdx.y, z = blockIdx.z;
  const int row = rowlist ? rowlist[r0 + z] : r0 + z;
  const int si = v.row_slice[row];
  if (si < 0) return;  // uniform over the block
  const DevSlice sl = v.slices[si];
  const int L = sl.pos0 + (row - sl.row0) + 1;
  const int nc = ceil_div(L, kChunk);
  if (c >= nc) return;
  const int k0 = c * kChunk, n = min(kChunk, L - k0);
  const int H = n_heads * HD;
  const int64_t slot = (int64_t(z) * n_heads + h) * nchunks + c;
  if (threadIdx.x < ceil_div(n, kKvBlockTokens))
    kb[threadIdx.x] = kv_rows<const T>(v, sl, k0 / kKvBlockTokens + threadIdx.x, layer, 0, H) + int64_t(h) * HD;

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int sub = lane % LPK;  // which 8 dims of the row
  float q[8];
  {
    const uint4 qv = *reinterpret_cast<const uint4*>(qkv + int64_t(row) * 3 * H + int64_t(h) * HD + sub * 8);
    unpack16<T>(qv, q);
#pragma unroll
    for (int i = 0; i < 8; ++i) q[i] *= scale;
  }
  __syncthreads();  // kb

  // ---- scores: 4 loads in flight per thread
  constexpr int kStep = 4 * KPW;  // rows per warp-iteration across the 4 warps
  // The loop bound is warp-uniform (jb), so all 32 lanes reach the shuffles; rows j >= n load and store nothing.
  for (int jb = warp * KPW; jb < n; jb += 4 * kStep) {
    const int j0 = jb + lane / LPK;
    uint4 kv[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const int j = j0 + u * kStep;
      if (j < n)
        kv[u] = *reinterpret_cast<const uint4*>(kb[j / kKvBlockTokens] + int64_t(j % kKvBlockTokens) * H + sub * 8);
      else
        kv[u] = make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      float kf[8];
      unpack16<T>(kv[u], kf);
      float acc = 0.f;
#pragma unroll
      for (int i = 0; i < 8; ++i) acc = fmaf(q[i], kf[i], acc);
#pragma unroll
      for (int o = LPK / 2; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
      const int j = j0 + u * kStep;
      if (sub == 0 && j < n) ps[j] = acc;
    }
  }
  __syncthreads();

  float m = -INFINITY;
  for (int j = threadIdx.x; j < n; j += kThreads) m = fmaxf(m, ps[j]);
  m = block_max(m);
  float l = 0.f;
  for (int j = threadIdx.x; j < n; j += kThreads) {
    const float p = expf(ps[j] - m);
    ps[j] = p;
    l += p;
  }
  l = block_sum(l);  // syncs: every p is in ps

  // ---- o = sum_j p_j v_j: thread (group g, dims sub*8..+8), 4 loads in flight
  const int g = threadIdx.x / LPK;
  float o[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) o[i] = 0.f;
  for (int j0 = g; j0 < n; j0 += 4 * NG) {
    uint4 vv[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const int j = j0 + u * NG;
      if (j < n)  // V rows follow the layer's K rows in the block
        vv[u] = *reinterpret_cast<const uint4*>(kb[j / kKvBlockTokens] + int64_t(kKvBlockTokens + j % kKvBlockTokens) * H +
                                                sub * 8);
      else
        vv[u] = make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const int j = j0 + u * NG;
      const float p = j < n ? ps[j] : 0.f;
      float vf[8];
      unpack16<T>(vv[u], vf);
#pragma unroll
      for (int i = 0; i < 8; ++i) o[i] = fmaf(p, vf[i], o[i]);
    }
  }
#pragma unroll
  for (int i = 0; i < 8; ++i) red[g][sub * 8 + i] = o[i];
  __syncthreads();
  for (int d = threadIdx.x; d < HD; d += kThreads) {
    float acc = 0.f;
#pragma unroll
    for (int gg = 0; gg < NG; ++gg) acc += red[gg][d];
    if (nc == 1)
      out[int64_t(row) * H + int64_t(h) * HD + d] = from_f32<T>(acc / l);
    else
      ws_o[slot * HD + d] = acc;
  }
  if (nc > 1 && threadIdx.x == 0) {
    ws_ml[2 * slot] = m;
    ws_ml[2 * slot + 1] = l;
  }
}

}  // namespace qwen::cu
