// rope: one block per token; the block first evaluates the rot/2 cos/sin pairs of its position into shared memory
// (double precision, 64 per token at Qwen shapes), then rotates 2*n_heads heads. Memory bound and tiny (T*2H elements).
#include "common.cuh"
#include "rope.cuh"

namespace qwen::cu {

// grid (T), block 256.  qkv[t, 0:2H] rotated in place; qkv[t, 0:H] then scaled by logn(pos0 + t).
template <typename T>
static __global__ void rope_kernel(T* __restrict__ qkv, int pos0, int n_heads, int head_dim, RopeParams rp) {
  __shared__ float cs[128], sn[128];  // [rot/2]
  const int t = blockIdx.x, p = pos0 + t, half = rp.rot_dims / 2;
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    const float theta = float(p) * rp.inv_freq[i];  // fp32 product, as the reference
    cs[i] = float(cos(double(theta)));
    sn[i] = float(sin(double(theta)));
  }
  float qscale = 1.f;  // logN factor of this position, fp32
  if (rp.logn_base > 0 && p + 1 > rp.logn_base) qscale = float(log(double(p + 1)) / log(double(rp.logn_base)));
  __syncthreads();

  const int H = n_heads * head_dim;
  T* row = qkv + int64_t(t) * 3 * H;
  // Work item w = (head, i): head < n_heads are the q heads, n_heads..2*n_heads-1 the k heads (k block starts at H).
  const int pairs = 2 * n_heads * half;
  for (int w = threadIdx.x; w < pairs; w += blockDim.x) {
    const int head = w / half, i = w - head * half;
    T* hp = row + int64_t(head) * head_dim;
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
  const int rest = head_dim - rp.rot_dims;
  if (qscale != 1.f && rest > 0) {
    for (int w = threadIdx.x; w < n_heads * rest; w += blockDim.x) {
      const int head = w / rest, d = rp.rot_dims + (w - head * rest);
      T* e = row + int64_t(head) * head_dim + d;
      *e = from_f32<T>(to_f32(*e) * qscale);
    }
  }
}

template <typename T>
static void launch_rope(T* qkv, int T_, int pos0, int n_heads, int head_dim, const RopeParams& rp,
                        cudaStream_t stream) {
  rope_kernel<T><<<T_, 256, 0, stream>>>(qkv, pos0, n_heads, head_dim, rp);
  CUDA_CHECK_LAUNCH("rope_kernel");
}

void rope(DType act, void* qkv, int T, int pos0, int n_heads, int head_dim, const RopeParams& rp,
          cudaStream_t stream) {
  if (T <= 0) return;
  if (rp.rot_dims < 0 || rp.rot_dims % 2 != 0 || rp.rot_dims > head_dim || rp.rot_dims > 256)
    throw std::invalid_argument("rope: rot_dims " + std::to_string(rp.rot_dims) + " must be even, <= head_dim " +
                                std::to_string(head_dim) + " and <= 256");
  if (n_heads <= 0 || head_dim <= 0 || pos0 < 0) throw std::invalid_argument("rope: bad shape");
  dispatch_act(act, [&](auto tag) {
    using E = decltype(tag);
    launch_rope<E>(static_cast<E*>(qkv), T, pos0, n_heads, head_dim, rp, stream);
  });
}

}  // namespace qwen::cu
