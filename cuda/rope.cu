// rope: blocks of up to kRopeHeads q/k heads of one row of the step; a block looks up its slice, evaluates the rot/2
// cos/sin pairs of its position into shared memory (double precision, 64 per row at Qwen shapes), then rotates its
// heads. Memory bound and tiny (rows*2H elements); rows of no slice (gaps) are left alone.
#include "common.cuh"
#include "rope.cuh"
#include "rope_row.cuh"

namespace qwen::cu {

constexpr int kRopeHeads = 8;  // q/k heads per block: one decode row of Qwen-7B (64 heads) took 11 us in ONE block

// grid (rows, ceil(2 * n_heads / kRopeHeads)), block 256.  qkv[row, 0:2H] rotated in place; qkv[row, 0:H] then
// scaled by logn(p).
template <typename T>
static __global__ void rope_kernel(T* __restrict__ qkv, StepView v, int n_heads, int head_dim) {
  __shared__ float cs[128], sn[128];  // [rot/2]
  const int row = blockIdx.x;
  const int si = v.row_slice[row];
  if (si < 0) return;  // uniform over the block: no thread reaches the barrier below
  const DevSlice s = v.slices[si];
  const int p = s.pos0 + (row - s.row0), half = s.rot_dims / 2;
  const float qscale = rope_row_setup(v, s, p, true, cs, sn);  // logN factor of this position, fp32
  __syncthreads();

  const int H = n_heads * head_dim;
  T* r = qkv + int64_t(row) * 3 * H;
  // Work item w = (head, i): head < n_heads are the q heads, n_heads..2*n_heads-1 the k heads (k block starts at H).
  // Block y takes heads [y * kRopeHeads, +kRopeHeads): a decode row is spread over 2 * n_heads / kRopeHeads blocks.
  const int h0 = blockIdx.y * kRopeHeads, h1 = min(2 * n_heads, h0 + kRopeHeads);
  const int pairs = (h1 - h0) * half;
  for (int w = threadIdx.x; w < pairs; w += blockDim.x) {
    const int head = h0 + w / half, i = w % half;
    T* hp = r + int64_t(head) * head_dim;
    const float a = to_f32(hp[i]), b = to_f32(hp[i + half]);
    float ra = a * cs[i] - b * sn[i];
    float rb = b * cs[i] + a * sn[i];
    if (head < n_heads) {
      ra *= qscale;
      rb *= qscale;
    }
    hp[i] = from_f32<T>(ra);
    hp[i + half] = from_f32<T>(rb);
  }
  // q dims beyond rot_dims are not rotated but still take the logn factor.
  const int rest = head_dim - s.rot_dims;
  const int q1 = min(n_heads, h1);  // the q heads of this block
  if (qscale != 1.f && rest > 0 && h0 < q1) {
    for (int w = threadIdx.x; w < (q1 - h0) * rest; w += blockDim.x) {
      const int head = h0 + w / rest, d = s.rot_dims + w % rest;
      T* e = r + int64_t(head) * head_dim + d;
      *e = from_f32<T>(to_f32(*e) * qscale);
    }
  }
}

void rope(DType act, void* qkv, const StepView& step, int n_heads, int head_dim, cudaStream_t stream) {
  if (step.rows <= 0) return;
  if (n_heads <= 0 || head_dim <= 0) throw std::invalid_argument("rope: bad shape");
  dispatch_act(act, [&](auto tag) {
    using E = decltype(tag);
    const dim3 grid(step.rows, ceil_div(2 * n_heads, kRopeHeads));
    rope_kernel<E><<<grid, 256, 0, stream>>>(static_cast<E*>(qkv), step, n_heads, head_dim);
    CUDA_CHECK_LAUNCH("rope_kernel");
  });
}

}  // namespace qwen::cu
