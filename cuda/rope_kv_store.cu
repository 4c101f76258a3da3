// rope_kv_store (see rope_kv_store.cuh): grid (rows, ceil(3 * n_heads / kRkvHeads)), block 256. Block (r, y) takes
// heads [y * kRkvHeads, +kRkvHeads) of the 3 * n_heads q | k | v heads of row r: one decode row of Qwen-7B is 12
// blocks, so the op is spread over SMs like rope was (one block per row took 11 us), and a prefill of 2048 rows is
// 24k small blocks. Blocks holding only v heads skip the cos/sin table.
#include "common.cuh"
#include "rope_kv_store.cuh"
#include "rope_row.cuh"

namespace qwen::cu {

constexpr int kRkvHeads = 8;

template <typename T>
static __global__ void __launch_bounds__(256)
    rope_kv_store_kernel(T* __restrict__ qkv, const T* __restrict__ bias, StepView v, int n_heads, int head_dim,
                         int layer) {
  __shared__ float cs[128], sn[128];  // [rot / 2]
  pdl_wait();  // qkv comes from the QKV linear; the step view was uploaded before (common.cuh: the PDL contract)
  pdl_launch_dependents();
  const int row = blockIdx.x;
  const int si = v.row_slice[row];
  if (si < 0) return;  // uniform over the block: no thread reaches the barrier below
  const DevSlice s = v.slices[si];
  const int p = s.pos0 + (row - s.row0), half = s.rot_dims / 2;
  const int nh2 = 2 * n_heads;
  const int h0 = blockIdx.y * kRkvHeads, h1 = min(3 * n_heads, h0 + kRkvHeads);
  const int hr1 = min(h1, nh2);  // heads [h0, hr1) rotate (q, then k); [max(h0, nh2), h1) are v heads
  const float qscale = rope_row_setup(v, s, p, h0 < hr1, cs, sn);  // logN factor of this position, fp32
  __syncthreads();

  const int H = n_heads * head_dim;
  T* r = qkv + int64_t(row) * 3 * H;
  T* const krow = kv_rows<T>(v, s, p / kKvBlockTokens, layer, 0, H) + int64_t(p % kKvBlockTokens) * H;
  T* const vrow = kv_rows<T>(v, s, p / kKvBlockTokens, layer, 1, H) + int64_t(p % kKvBlockTokens) * H;
  // x = stored activation + bias, in fp32. Offsets o are into the row's 3H elements.
  auto in = [&](int o) { return bias ? to_f32(r[o]) + to_f32(bias[o]) : to_f32(r[o]); };

  // Rotated dims of the q and k heads: pairs (i, i + half).
  if (h0 < hr1) {
    const int pairs = (hr1 - h0) * half;
    for (int w = threadIdx.x; w < pairs; w += blockDim.x) {
      const int head = h0 + w / half, i = w % half;
      const int o = head * head_dim;
      const float a = in(o + i), b = in(o + i + half);
      float ra = a * cs[i] - b * sn[i];
      float rb = b * cs[i] + a * sn[i];
      if (head < n_heads) {
        r[o + i] = from_f32<T>(ra * qscale);
        r[o + i + half] = from_f32<T>(rb * qscale);
      } else {
        krow[o - H + i] = from_f32<T>(ra);
        krow[o - H + i + half] = from_f32<T>(rb);
      }
    }
    // Dims past rot_dims (partial rotary): q takes the bias and the logN factor, k the bias.
    const int rest = head_dim - s.rot_dims;
    for (int w = threadIdx.x; w < (hr1 - h0) * rest; w += blockDim.x) {
      const int head = h0 + w / rest, o = head * head_dim + s.rot_dims + w % rest;
      const float x = in(o);
      if (head < n_heads)
        r[o] = from_f32<T>(x * qscale);
      else
        krow[o - H] = from_f32<T>(x);
    }
  }
  // v heads: bias, then the cache.
  const int hv0 = max(h0, nh2);
  for (int w = threadIdx.x; w < (h1 - hv0) * head_dim; w += blockDim.x) {
    const int o = hv0 * head_dim + w;
    vrow[o - 2 * H] = from_f32<T>(in(o));
  }
}

void rope_kv_store(DType act, void* qkv, const void* bias, const StepView& step, int n_heads, int head_dim, int layer,
                   cudaStream_t stream) {
  if (step.rows <= 0) return;
  if (n_heads <= 0 || head_dim <= 0) throw std::invalid_argument("rope_kv_store: bad shape");
  dispatch_act(act, [&](auto tag) {
    using E = decltype(tag);
    const dim3 grid(step.rows, ceil_div(3 * n_heads, kRkvHeads));
    launch_pdl(rope_kv_store_kernel<E>, grid, dim3(256), 0, stream, static_cast<E*>(qkv), static_cast<const E*>(bias),
               step, n_heads, head_dim, layer);
  });
}

}  // namespace qwen::cu
